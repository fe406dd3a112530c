//! Load a released checkpoint (the authors' `beta_X.avg.pt`, or the same weights as
//! `.safetensors` with the reference's key names) and print each class's log-likelihood
//! for a batch of inputs.
//!
//! ```text
//! cargo run --release -p trustgc --example reference_likelihoods -- \
//!     [WEIGHTS.avg.pt|WEIGHTS.safetensors] [INPUTS.safetensors] [--imagenet]
//! ```
//!
//! Defaults: the golden mini model, saved exactly as the released files are
//! (`../shared/golden/mini/mini.avg.pt`), and its input batch (two Gaussian-noise images,
//! then the chelsea and coffee photos at 112x112). With `--imagenet` the weights are read as
//! the released ImageNet architecture, e.g. `beta_8.avg.pt`. The inputs file must hold a
//! tensor `x` `[batch, channels, height, width]`, already normalized.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use trustgc::weights::Values;
use trustgc::weights::reference::load_checkpoint;
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::weights::safetensors::read_safetensors;
use trustgc::{GcConfig, Mode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let imagenet = args.iter().any(|a| a == "--imagenet");
    let paths: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden/mini");
    let weights = paths
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| golden.join("mini.avg.pt"));
    let inputs = paths
        .get(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| golden.join("golden.safetensors"));
    let config = if imagenet {
        GcConfig::imagenet()
    } else {
        GcConfig::mini()
    };

    let device = Default::default();
    let is_safetensors = weights.extension().is_some_and(|e| e == "safetensors");
    let model = if is_safetensors {
        load_reference_safetensors::<Flex>(&weights, &config, &device).map_err(|e| e.to_string())
    } else {
        load_checkpoint::<Flex>(&weights, &config, &device).map_err(|e| e.to_string())
    };
    let model = match model {
        Ok(model) => model,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let x = match read_safetensors(&inputs).map(|mut t| t.remove("x")) {
        Ok(Some(x)) => x,
        Ok(None) => {
            eprintln!("error: {} holds no tensor `x`", inputs.display());
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (Values::Float(values), [batch, c, h, w]) = (&x.values, x.shape.as_slice()) else {
        eprintln!(
            "error: `x` must be a float tensor [batch, channels, height, width], got {:?}",
            x.shape
        );
        return ExitCode::FAILURE;
    };
    if [*c, *h, *w] != config.input_shape {
        eprintln!(
            "error: `x` has samples of shape {:?}; the model takes {:?}",
            [c, h, w],
            config.input_shape
        );
        return ExitCode::FAILURE;
    }
    let data: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    let x = Tensor::<Flex, 4>::from_data(TensorData::new(data, [*batch, *c, *h, *w]), &device);

    let out = model.forward(x, Mode::Eval);
    let log_likelihoods = out
        .class_log_likelihoods()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let posterior = out
        .log_posterior(None)
        .exp()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let log_det = out.log_det.clone().into_data().to_vec::<f32>().unwrap();
    let classes = config.n_classes;
    println!("weights: {}", weights.display());
    for i in 0..*batch {
        let row = &log_likelihoods[i * classes..(i + 1) * classes];
        let best = (0..classes)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        println!(
            "sample {i}: log|det J| = {:.1}, best class {best} (posterior {:.3}), log p(x|y) in nats:",
            log_det[i],
            posterior[i * classes + best]
        );
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(y, v)| format!("{y}: {v:.1}"))
            .collect();
        println!("  {}", cells.join("  "));
    }
    ExitCode::SUCCESS
}
