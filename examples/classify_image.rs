//! Classify an image with the generative classifier shipped in `weights/`, and say whether
//! it looks like anything the model knows.
//!
//! ```text
//! cargo run --release -p trustgc --example classify_image -- [IMAGE] [MODEL_DIR]
//! ```
//!
//! Defaults: `examples/images/ankle-boot.png` and `weights/fashion-mnist`.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::backend::Flex;
use trustgc::Classifier;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut args = std::env::args().skip(1);
    let image = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("examples/images/ankle-boot.png"));
    let model = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("weights/fashion-mnist"));

    let device = Default::default();
    let classifier = match Classifier::<Flex>::from_dir(&model, &device) {
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
        None => println!(
            "  (no out-of-distribution statistics in {})",
            model.display()
        ),
    }
    ExitCode::SUCCESS
}
