//! The model embedded in the crate is the one in `weights/fashion-mnist`: same config,
//! same tensors, same out-of-distribution statistics, and it classifies the same.

use std::path::PathBuf;

use burn::backend::Flex;
use trustgc::weights::model_dir::{read_model_config, read_ood};
use trustgc::weights::safetensors::{model_tensors, read_safetensors, read_safetensors_bytes};
use trustgc::{Classifier, OodStats, Shipped};

type B = Flex;

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../weights/fashion-mnist")
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

#[test]
fn the_embedded_model_is_the_shipped_folder() {
    let dir = folder();
    let model = Shipped::FashionMnist;
    assert_eq!(model.name(), "fashion-mnist");
    assert_eq!(model.to_string().parse::<Shipped>(), Ok(model));
    assert!("mnist".parse::<Shipped>().is_err());

    assert_eq!(model.config().unwrap(), read_model_config(&dir).unwrap());
    let ood: OodStats = serde_json::from_str(model.ood_json().unwrap()).unwrap();
    assert_eq!(Some(ood), read_ood(&dir).unwrap());
    let embedded = read_safetensors_bytes(model.model_safetensors()).unwrap();
    let on_disk = read_safetensors(&dir.join("model.safetensors")).unwrap();
    assert_eq!(embedded.len(), on_disk.len());
    assert_eq!(embedded, on_disk, "same keys, shapes, dtypes and values");

    // Loaded, both give the same parameters and the same classifier.
    let device = Default::default();
    let shipped = Classifier::<B>::shipped(model, &device).unwrap();
    let from_dir = Classifier::<B>::from_dir(&dir, &device).unwrap();
    assert_eq!(shipped.config(), from_dir.config());
    assert_eq!(shipped.ood(), from_dir.ood());
    assert_eq!(shipped.temperature(), from_dir.temperature());
    assert!(
        shipped.temperature().is_some(),
        "calibration.json is embedded and applied"
    );
    assert_eq!(
        model_tensors(shipped.model()),
        model_tensors(from_dir.model())
    );
    assert_eq!(
        model_tensors(&model.model::<B>(&device).unwrap()),
        model_tensors(from_dir.model())
    );
}

#[test]
fn the_shipped_model_classifies_like_the_folder() {
    let device = Default::default();
    let shipped = Classifier::<B>::shipped(Shipped::FashionMnist, &device).unwrap();
    let from_dir = Classifier::<B>::from_dir(&folder(), &device).unwrap();
    let image =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/images/ankle-boot.png");
    let a = shipped.likelihoods_file(&image).unwrap();
    let b = from_dir.likelihoods_file(&image).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.predicted().name, "Ankle boot");
}

#[test]
fn written_out_it_opens_as_a_folder() {
    let scratch = Scratch::new("shipped", "written-out");
    let dir = scratch.join("model");
    Shipped::FashionMnist.write_to(&dir).unwrap();
    for name in [
        "config.json",
        "model.safetensors",
        "ood.json",
        "calibration.json",
        "checksums.sha256",
    ] {
        assert_eq!(
            std::fs::read(dir.join(name)).unwrap(),
            std::fs::read(folder().join(name)).unwrap(),
            "{name}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_temperature_changes_the_posterior_and_nothing_else() {
    let device = Default::default();
    let calibrated = Classifier::<B>::shipped(Shipped::FashionMnist, &device).unwrap();
    let t = calibrated.temperature().unwrap().temperature;
    let raw = calibrated.clone().with_temperature(None).unwrap();
    let image =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/images/ankle-boot.png");
    let a = calibrated.likelihoods_file(&image).unwrap();
    let b = raw.likelihoods_file(&image).unwrap();
    assert_eq!(a.temperature, Some(t));
    assert_eq!(b.temperature, None);
    // Densities, distances, the verdict and the ranking are the model's own.
    assert_eq!(a.class_log_likelihoods, b.class_log_likelihoods);
    assert_eq!(a.log_marginal, b.log_marginal);
    assert_eq!(a.verdict, b.verdict);
    assert_eq!(a.predicted().class, b.predicted().class);
    // The posterior is softmax(log p(x|y) / T) (uniform prior), recomputed here.
    let scaled: Vec<f64> = b.class_log_likelihoods.iter().map(|l| l / t).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let norm = max + scaled.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
    for (got, s) in a.log_posterior.iter().zip(&scaled) {
        assert!((got - (s - norm)).abs() < 1e-9, "{got} vs {}", s - norm);
    }
    assert_ne!(a.log_posterior, b.log_posterior);
    // Unusable temperatures are refused.
    let mut bad = calibrated.temperature().unwrap().clone();
    bad.temperature = 0.0;
    assert!(raw.with_temperature(Some(bad)).is_err());
}
