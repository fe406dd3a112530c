//! Write a model folder with freshly initialized (random, reference-initialized) weights
//! of a built-in architecture, for timing runs where the released weights cannot be had.
//!
//! ```text
//! cargo run --release -p trustgc --example random_model -- imagenet OUT_DIR [SEED]
//! ```
//!
//! Architectures: `imagenet` (the released ImageNet model's, with its input
//! representation and class names) and `mini` (the parity tests' mini model, given the
//! ImageNet input representation at 112×112). The weights classify nothing: use the
//! folder to measure time and memory, not accuracy.

use std::path::PathBuf;
use std::process::ExitCode;

use trustgc::burn::backend::Flex;
use trustgc::burn::tensor::backend::Backend;
use trustgc::core::input::InputSpec;
use trustgc::weights::model_dir::write_model_file;
use trustgc::weights::safetensors::to_safetensors_bytes;
use trustgc::{GcConfig, GenerativeClassifier};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: random_model (imagenet|mini) OUT_DIR [SEED]");
        return ExitCode::from(2);
    };
    let config = match name.as_str() {
        "imagenet" => GcConfig::imagenet(),
        "mini" => GcConfig {
            input: Some(InputSpec::ImageNet {
                resize: 128,
                crop: 112,
                mean: [0.485, 0.456, 0.406],
                std: [0.229, 0.224, 0.225],
            }),
            class_names: (0..10).map(|i| format!("class {i}")).collect(),
            ..GcConfig::mini()
        },
        other => {
            eprintln!("unknown architecture {other}: use imagenet or mini");
            return ExitCode::from(2);
        }
    };
    let seed = match args.get(2).map(|s| s.parse::<u64>()) {
        None => 0,
        Some(Ok(seed)) => seed,
        Some(Err(e)) => {
            eprintln!("SEED: {e}");
            return ExitCode::from(2);
        }
    };
    let device = Default::default();
    Flex::seed(&device, seed);
    let out = PathBuf::from(out);
    let written = GenerativeClassifier::<Flex>::new(&config, &device)
        .map_err(|e| e.to_string())
        .and_then(|model| to_safetensors_bytes(&model).map_err(|e| e.to_string()))
        .and_then(|weights| {
            std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            write_model_file(&out, "config.json", config.to_json().as_bytes())
                .and_then(|()| write_model_file(&out, "model.safetensors", &weights))
                .map_err(|e| e.to_string())
        });
    match written {
        Ok(()) => {
            println!("wrote {} (random weights)", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
