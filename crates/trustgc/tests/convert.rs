//! The authors' `.pt` checkpoints: read safely, loaded with parity, converted to a model
//! folder that gives bit-identical outputs.

mod common;

use burn::backend::Flex;
use burn::tensor::Tensor;
use common::*;
use trustgc::weights::convert::{ConvertError, convert_checkpoint};
use trustgc::weights::reference::load_checkpoint;
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::weights::safetensors::load_safetensors;
use trustgc::{GenerativeClassifier, Mode};

type B = Flex;

fn outputs(model: &GenerativeClassifier<B>) -> Vec<Vec<f64>> {
    let out = model.forward(tensor("x", &Default::default()), Mode::Eval);
    let logits = host(out.logits());
    vec![host(out.z_fc), host(out.z_conv), host(out.log_det), logits]
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

fn scratch(name: &str) -> Scratch {
    Scratch::new("convert", name)
}

#[test]
fn every_golden_checkpoint_loads_with_parity() {
    let device = Default::default();
    let config = mini_config();
    let reference = outputs(
        &load_reference_safetensors::<B>(&golden_path("mini/mini.safetensors"), &config, &device)
            .unwrap(),
    );
    // The same tolerances as golden_mini.rs: latents and logits 1e-5, log-det 1e-6.
    assert_rel("z_fc", &reference[0], &values("z_fc"), 1e-5);
    for file in [
        "mini.avg.pt",
        "mini_legacy.avg.pt",
        "mini_clean.avg.pt",
        "mini_cudaloc.avg.pt",
    ] {
        let model =
            load_checkpoint::<B>(&golden_path(&format!("mini/{file}")), &config, &device).unwrap();
        // The .pt files hold the same float32 values as mini.safetensors: identical outputs.
        assert_eq!(outputs(&model), reference, "{file}");
        let out = model.forward(tensor("x", &device), Mode::Eval);
        assert_rel(
            &format!("{file}: z_conv"),
            &host(out.z_conv),
            &values("z_conv"),
            1e-5,
        );
        assert_rel(
            &format!("{file}: log_jac"),
            &host(out.log_det),
            &values("log_jac"),
            1e-6,
        );
    }
}

#[test]
fn the_converted_folder_gives_bit_identical_outputs() {
    let device = Default::default();
    let config = mini_config();
    let dir = scratch("folder");
    let out = dir.join("beta_8");
    let pt = golden_path("mini/mini.avg.pt");
    convert_checkpoint(&pt, &config, &out).unwrap();
    for name in ["config.json", "model.safetensors", "README.md"] {
        assert!(out.join(name).is_file(), "{name}");
    }
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains("mini.avg.pt") && card.contains("Licence"),
        "{card}"
    );
    let from_pt = load_checkpoint::<B>(&pt, &config, &device).unwrap();
    let saved_config =
        trustgc::GcConfig::from_json(&std::fs::read_to_string(out.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(saved_config, config);
    let from_folder =
        load_safetensors::<B>(&out.join("model.safetensors"), &saved_config, &device).unwrap();
    assert_eq!(outputs(&from_folder), outputs(&from_pt));
    // The inverse too.
    let (a, _) = from_folder.inverse(tensor("z_fc", &device), tensor("z_conv", &device));
    let (b, _): (Tensor<B, 4>, _) =
        from_pt.inverse(tensor("z_fc", &device), tensor("z_conv", &device));
    assert_eq!(host(a), host(b));
    // Converting into an existing folder is refused; no partial folder is left behind.
    assert!(matches!(
        convert_checkpoint(&pt, &config, &out),
        Err(ConvertError::Exists { .. })
    ));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["beta_8".to_string()]);
}

#[test]
fn broken_checkpoints_are_typed_errors_and_leave_nothing() {
    let config = mini_config();
    let dir = scratch("broken");
    let bytes = std::fs::read(golden_path("mini/mini.avg.pt")).unwrap();
    let truncated = dir.join("truncated.pt");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = convert_checkpoint(&truncated, &config, &dir.join("out")).unwrap_err();
    assert!(matches!(err, ConvertError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("truncated.pt"), "{err}");
    assert!(!dir.join("out").exists());
    // The right file for the wrong architecture: the key report says what does not fit.
    let err = convert_checkpoint(
        &golden_path("mini/mini.avg.pt"),
        &trustgc::GcConfig::imagenet(),
        &dir.join("out"),
    )
    .unwrap_err();
    assert!(matches!(err, ConvertError::Load { .. }), "{err:?}");
    assert!(err.to_string().contains("mis-shaped"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}
