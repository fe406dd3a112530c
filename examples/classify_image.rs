//! Classify an image with a generative classifier, and say whether it looks like anything
//! the model knows.
//!
//! ```text
//! cargo run --release -p trustgc --example classify_image -- [IMAGE] [MODEL_DIR]
//! ```
//!
//! Defaults: `examples/images/ankle-boot.png` and the Fashion-MNIST model shipped inside
//! the crate (`Shipped::FashionMnist`, the same as `weights/fashion-mnist`).

use std::path::PathBuf;
use std::process::ExitCode;

use trustgc::burn::backend::Flex;
use trustgc::{Classifier, Shipped};

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = std::env::args().skip(1);
    let image = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("examples/images/ankle-boot.png"));
    let model = args.next().map(PathBuf::from);

    let device = Default::default();
    let opened = match &model {
        Some(dir) => Classifier::<Flex>::from_dir(dir, &device),
        None => Classifier::<Flex>::shipped(Shipped::FashionMnist, &device),
    };
    let classifier = match opened {
        Ok(classifier) => classifier,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match classifier.likelihoods_file(&image) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", image.display());
    for score in result.top_k(3) {
        println!(
            "  {:<14} p(y|x) = {:.4}   log p(x|y) = {:.1} nats",
            score.name, score.posterior, score.log_likelihood
        );
    }
    if let Some(bits) = result.bits_per_dim {
        println!(
            "  log p(x) = {:.1} nats, {bits:.3} bits/dim",
            result.log_marginal
        );
    }
    match result.verdict_text() {
        Some(verdict) => println!("  verdict: {verdict}"),
        None => println!("  (the model has no out-of-distribution statistics)"),
    }
    ExitCode::SUCCESS
}
