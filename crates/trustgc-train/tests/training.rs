//! Training behaviour on a tiny model and a committed Fashion-MNIST subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn::tensor::TensorData;
use trustgc::GcConfig;
use trustgc::weights::safetensors::read_safetensors;
use trustgc_core::GenerativeClassifier;
use trustgc_core::params::parameter_values;
use trustgc_train::config::{DataConfig, OptimizerConfig, TrainConfig};
use trustgc_train::fit::{last_checkpoint, run};
use trustgc_train::schedule::LrSchedule;

type B = Autodiff<Flex>;

fn subset_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fashion-mnist-subset")
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::Scratch;

fn scratch(name: &str) -> Scratch {
    Scratch::absent("train", name)
}

fn tiny_config() -> TrainConfig {
    let mut config = TrainConfig::fashion_mnist(subset_dir());
    config.model = GcConfig {
        input_shape: [4, 16, 16],
        n_classes: 10,
        n_loss_dims: 16,
        mu_low_rank_k: 0,
        base_width: 8,
        planes: vec![16],
        blocks: vec![1],
        strides: vec![1],
        entry_1x1_hidden: 16,
        ..config.model
    };
    config.data = DataConfig::Idx {
        dir: subset_dir(),
        validation: 64,
        limit: Some(256),
    };
    config.epochs = 2;
    config.batch_size = 32;
    config.bn_average_batches = 0;
    config.optimizer = OptimizerConfig::Adam {
        lr: 2e-3,
        weight_decay: 0.0,
    };
    config.schedule = LrSchedule::Constant;
    config
}

/// Mean of a column of metrics.csv for a split and epoch.
fn csv_mean(dir: &Path, split: &str, epoch: usize, column: &str) -> f64 {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == column).unwrap();
    let values: Vec<f64> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|cells| cells[2] == split && cells[1] == epoch.to_string())
        .map(|cells| cells[col].parse().unwrap())
        .collect();
    assert!(!values.is_empty(), "no {split} rows for epoch {epoch}");
    values.iter().sum::<f64>() / values.len() as f64
}

fn tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    // Raw bytes: comparisons below are bit for bit.
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect()
}

#[test]
fn a_few_epochs_reduce_the_loss() {
    let dir = scratch("loss");
    let mut config = tiny_config();
    config.epochs = 3;
    let summary = run::<B>(&config, &dir, false, None, &Default::default()).unwrap();
    assert_eq!(summary.epochs_run, 3);
    let first = csv_mean(&dir, "train", 1, "loss");
    let last = csv_mean(&dir, "train", 3, "loss");
    println!("train loss: epoch 1 {first:.4}, epoch 3 {last:.4}");
    assert!(last < first, "loss did not decrease: {first} -> {last}");
    let valid_first = csv_mean(&dir, "valid", 1, "nll_joint");
    let valid_last = csv_mean(&dir, "valid", 3, "nll_joint");
    println!("valid nll_joint: epoch 1 {valid_first:.4}, epoch 3 {valid_last:.4}");
    assert!(valid_last < valid_first);
    // The run folder holds what the docs promise.
    for file in [
        "train.json",
        "config.json",
        "model.safetensors",
        "metrics.csv",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    assert_eq!(last_checkpoint(&dir), Some(3));
    let loaded = read_safetensors(&dir.join("model.safetensors")).unwrap();
    assert!(loaded.contains_key("head.mu_fc"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resuming_equals_an_uninterrupted_run() {
    let config = tiny_config();
    let whole = scratch("whole");
    run::<B>(&config, &whole, false, None, &Default::default()).unwrap();

    // The same run "interrupted" after epoch 1: its folder as it was then.
    let resumed = scratch("resumed");
    std::fs::create_dir_all(resumed.join("checkpoint")).unwrap();
    std::fs::copy(whole.join("train.json"), resumed.join("train.json")).unwrap();
    for kind in ["model", "optim", "scheduler"] {
        let name = format!("{kind}-1.mpk");
        std::fs::copy(
            whole.join("checkpoint").join(&name),
            resumed.join("checkpoint").join(&name),
        )
        .unwrap();
    }
    // Its metrics.csv as it was then: epoch 1's rows and a row torn by the interruption.
    let whole_csv = std::fs::read_to_string(whole.join("metrics.csv")).unwrap();
    let epoch1: String = whole_csv
        .split_inclusive('\n')
        .filter(|l| l.split(',').nth(1) != Some("2"))
        .collect();
    std::fs::write(
        resumed.join("metrics.csv"),
        format!("{epoch1}123.4,2,train,1,0.5"),
    )
    .unwrap();
    let summary = run::<B>(&config, &resumed, true, None, &Default::default()).unwrap();
    assert_eq!(summary.resumed_after, 1);
    // The resumed log reads like the uninterrupted one: same epochs, same values (the
    // seconds column aside), nothing torn; burn-train's own logs go to epoch-2, not epoch-1.
    let without_seconds = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_once(',').map_or(l, |(_, rest)| rest).to_string())
            .collect()
    };
    let resumed_csv = std::fs::read_to_string(resumed.join("metrics.csv")).unwrap();
    assert_eq!(without_seconds(&resumed_csv), without_seconds(&whole_csv));
    assert!(resumed.join("train").join("epoch-2").is_dir());
    assert!(!resumed.join("train").join("epoch-1").exists());
    assert!(!resumed.join("valid").join("epoch-1").exists());
    assert_eq!(summary.epochs_run, 1);

    let a = tensors(&whole.join("model.safetensors"));
    let b = tensors(&resumed.join("model.safetensors"));
    assert_eq!(a.len(), b.len());
    let differing: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(
        differing.is_empty(),
        "tensors differ after resuming: {differing:?}"
    );
    // Resuming a finished run, or a folder with another config, is refused.
    assert!(run::<B>(&config, &whole, true, None, &Default::default()).is_err());
    let mut other = config.clone();
    other.seed = 99;
    assert!(run::<B>(&other, &resumed, true, None, &Default::default()).is_err());
    // A fresh run into a folder with checkpoints is refused too.
    assert!(run::<B>(&config, &resumed, false, None, &Default::default()).is_err());
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&resumed);
}

#[test]
fn mu_only_training_leaves_the_flow_bit_identical() {
    let device = Default::default();
    let mut config = tiny_config();
    config.mu_only = true;
    config.epochs = 1;
    let initial = GenerativeClassifier::<B>::new(&config.model, &device).unwrap();
    let before: BTreeMap<String, TensorData> = parameter_values(&initial).into_iter().collect();
    let dir = scratch("mu-only");
    run::<B>(&config, &dir, false, Some(initial), &device).unwrap();
    let after = read_safetensors(&dir.join("model.safetensors")).unwrap();
    let mut flow = 0;
    let mut head_changed = false;
    for (path, data) in &before {
        let raw = &after[path];
        let values: Vec<f64> = match &raw.values {
            trustgc::weights::Values::Float(v) => v.clone(),
            trustgc::weights::Values::Int(v) => v.iter().map(|&i| i as f64).collect(),
        };
        let original: Vec<f64> = data.clone().convert::<f64>().to_vec::<f64>().unwrap();
        if path.starts_with("flow.") {
            assert_eq!(values, original, "{path} changed in mu-only training");
            flow += 1;
        } else if values != original {
            head_changed = true;
        }
    }
    assert!(flow > 50, "compared {flow} flow tensors");
    assert!(head_changed, "the class means did not move");
    let _ = std::fs::remove_dir_all(&dir);
}
