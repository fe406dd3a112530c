//! Shared helpers of the golden tests: where the reference data lives, how to read it,
//! and the relative error every comparison uses.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::backend::Flex;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use trustgc::image::{DynamicImage, GrayImage};
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::weights::safetensors::read_safetensors;
use trustgc::weights::{Tensor as RawTensor, Values as RawValues};
use trustgc::{Classifier, GcConfig, Shipped};

/// `../shared/golden` beside the checkout, or `$TRUSTGC_GOLDEN`. Panics (fails the test)
/// when it is missing: golden tests never skip.
pub fn golden_dir() -> PathBuf {
    let dir = match std::env::var_os("TRUSTGC_GOLDEN") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
    };
    assert!(
        dir.join("README.md").is_file(),
        "golden data not found at {} (expected ../shared/golden beside the checkout, or set TRUSTGC_GOLDEN)",
        dir.display()
    );
    dir
}

pub fn golden_path(relative: &str) -> PathBuf {
    let path = golden_dir().join(relative);
    assert!(path.is_file(), "golden file missing: {}", path.display());
    path
}

/// `mini/golden.safetensors`, read once per test binary.
pub fn golden() -> &'static HashMap<String, RawTensor> {
    static GOLDEN: OnceLock<HashMap<String, RawTensor>> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        read_safetensors(&golden_path("mini/golden.safetensors")).expect("golden.safetensors")
    })
}

/// A golden tensor's values as f64.
pub fn values(key: &str) -> Vec<f64> {
    let tensor = golden()
        .get(key)
        .unwrap_or_else(|| panic!("golden key {key} missing"));
    match &tensor.values {
        RawValues::Float(v) => v.clone(),
        RawValues::Int(v) => v.iter().map(|&i| i as f64).collect(),
    }
}

pub fn shape(key: &str) -> Vec<usize> {
    golden()[key].shape.clone()
}

/// A golden float tensor on a backend.
pub fn tensor<B: Backend, const D: usize>(key: &str, device: &B::Device) -> Tensor<B, D> {
    let data: Vec<f32> = values(key).into_iter().map(|v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, shape(key)), device)
}

/// Values of a tensor as f64.
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm
}

pub fn max_abs_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Asserts `rel_err(actual, golden) <= tolerance`, printing the error either way.
pub fn assert_rel(name: &str, actual: &[f64], expected: &[f64], tolerance: f64) {
    let err = rel_err(actual, expected);
    println!("{name:<48} rel err {err:.3e} (tolerance {tolerance:.0e})");
    assert!(
        err <= tolerance,
        "{name}: relative error {err:.3e} > {tolerance:.0e}"
    );
}

/// The golden mini model's config, translated from `mini/config.json` (which describes it
/// in the reference's own words).
pub fn mini_config() -> GcConfig {
    let text = std::fs::read_to_string(golden_path("mini/config.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = |x: &serde_json::Value| x.as_u64().unwrap() as usize;
    let list = |x: &serde_json::Value| x.as_array().unwrap().iter().map(n).collect::<Vec<_>>();
    let backbone = &v["backbone"];
    let dims = list(&v["input_dims"]);
    GcConfig {
        input_shape: [dims[0], dims[1], dims[2]],
        n_classes: n(&v["n_classes"]),
        n_loss_dims: n(&v["n_loss_dims_1d"]),
        mu_low_rank_k: n(&v["mu_low_rank_k"]),
        base_width: n(&backbone["base_width"]),
        planes: list(&backbone["planes"]),
        blocks: list(&backbone["blocks"]),
        strides: list(&backbone["strides"]),
        clamp: backbone["clamp"].as_f64().unwrap(),
        act_norm: backbone["act_norm"].as_f64().unwrap(),
        entry_1x1_hidden: n(&backbone["entry_1x1_subnet_hidden"]),
        haar_rebalance: v["haar"]["rebalance"].as_f64().unwrap(),
        dct_rebalance: v["head"]["dct_rebalance"].as_f64().unwrap(),
        permute_seed: n(&v["head"]["permute_random_seed"]) as u32,
        bn_momentum: backbone["bn_momentum"].as_f64().unwrap(),
        bn_eps: backbone["bn_eps"].as_f64().unwrap(),
        class_names: Vec::new(),
        input: None,
    }
}

/// The reference's mini config JSON, parsed.
pub fn mini_reference_json() -> serde_json::Value {
    let text = std::fs::read_to_string(golden_path("mini/config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Reads a text file of one integer per line.
pub fn integers(relative: &str) -> Vec<usize> {
    std::fs::read_to_string(golden_path(relative))
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect()
}

/// The shipped Fashion-MNIST model as a classifier on the CPU.
pub fn shipped_classifier() -> Classifier<Flex> {
    Classifier::shipped(Shipped::FashionMnist, &Default::default()).unwrap()
}

/// The golden mini model (ImageNet architecture, random weights) as a classifier.
pub fn mini_classifier() -> Classifier<Flex> {
    let device = Default::default();
    let config = mini_config();
    let model =
        load_reference_safetensors::<Flex>(&golden_path("mini/mini.safetensors"), &config, &device)
            .expect("mini.safetensors loads");
    Classifier::new(config, model, &device)
}

/// The first `n` Fashion-MNIST test images of the committed subset (the first 200 of the
/// test set: held out, the shipped model was trained on the training split), decoded.
pub fn fashion_mnist_test_images(n: usize) -> Vec<DynamicImage> {
    use std::io::Read;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../trustgc-train/tests/data/fashion-mnist-subset/t10k-images-idx3-ubyte.gz");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    assert_eq!(word(0), 0x803, "IDX images");
    let (count, rows, cols) = (word(1), word(2), word(3));
    assert!(count >= n, "{count} images");
    (0..n)
        .map(|i| {
            let start = 16 + i * rows * cols;
            let pixels = bytes[start..start + rows * cols].to_vec();
            DynamicImage::ImageLuma8(GrayImage::from_raw(cols as u32, rows as u32, pixels).unwrap())
        })
        .collect()
}
