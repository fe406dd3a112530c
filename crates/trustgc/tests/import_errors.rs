//! Importing a reference-named safetensors file that does not fit the config gives a
//! typed error that lists what is wrong, and never a panic.

mod common;

use std::collections::HashMap;
use std::path::Path;

use burn::backend::Flex;
use common::*;
use safetensors::tensor::{Dtype, TensorView};
use trustgc::LoadError;
use trustgc::weights::reference::load_reference_safetensors;
use trustgc::weights::safetensors::read_safetensors;
use trustgc::weights::{DType, Tensor as RawTensor, Values as RawValues};

type B = Flex;

fn mini_tensors() -> HashMap<String, RawTensor> {
    read_safetensors(&golden_path("mini/mini.safetensors")).unwrap()
}

#[path = "../../../tests-support/scratch.rs"]
mod support;
use support::{Scratch, ScratchFile};

/// Writes tensors (as f32, or i64 for integers) to a fresh file in the temp directory.
fn write(name: &str, tensors: &HashMap<String, RawTensor>) -> ScratchFile {
    let path = ScratchFile::new("import-errors", name, &format!("{name}.safetensors"));
    let buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(key, t)| match &t.values {
            RawValues::Float(v) if t.dtype == DType::F64 => (
                key.clone(),
                Dtype::F64,
                t.shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            RawValues::Float(v) => (
                key.clone(),
                Dtype::F32,
                t.shape.clone(),
                v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
            ),
            RawValues::Int(v) => (
                key.clone(),
                Dtype::I64,
                t.shape.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
        })
        .collect();
    let views: Vec<(String, TensorView)> = buffers
        .iter()
        .map(|(k, d, s, b)| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn load(path: &Path) -> Result<(), LoadError> {
    load_reference_safetensors::<B>(path, &mini_config(), &Default::default()).map(|_| ())
}

#[test]
fn round_trip_through_a_rewritten_file_loads() {
    let path = write("ok", &mini_tensors());
    load(&path).expect("an unmodified copy loads");
}

#[test]
fn missing_unexpected_and_misshaped_keys_are_all_listed() {
    let mut tensors = mini_tensors();
    tensors.remove("inn.module_list.4.s.2.weight");
    tensors.remove("mu_t");
    let extra = tensors["mu"].clone();
    tensors.insert("inn.module_list.99.w".into(), extra);
    let t = tensors.get_mut("inn.module_list.3.act_norm").unwrap();
    t.shape = vec![1, 24, 2, 1];
    let path = write("keys", &tensors);
    match load(&path) {
        Err(LoadError::Keys { report }) => {
            assert_eq!(
                report.missing,
                vec![
                    "inn.module_list.4.s.2.weight".to_string(),
                    "mu_t".to_string()
                ]
            );
            assert_eq!(report.unexpected, vec!["inn.module_list.99.w".to_string()]);
            assert_eq!(report.misshaped.len(), 1);
            assert_eq!(report.misshaped[0].key, "inn.module_list.3.act_norm");
            assert_eq!(report.misshaped[0].expected, vec![1, 48, 1, 1]);
            let message = LoadError::Keys { report }.to_string();
            assert!(
                message.contains("2 missing")
                    && message.contains("1 unexpected")
                    && message.contains("1 mis-shaped"),
                "{message}"
            );
        }
        other => panic!("expected a key report, got {other:?}"),
    }
}

#[test]
fn activation_keys_are_ignored() {
    let mut tensors = mini_tensors();
    let extra = tensors["mu"].clone();
    tensors.insert("inn.tmp_var_7".into(), extra);
    load(&write("tmp_var", &tensors)).expect("inn.tmp_var_* are ignored");
}

#[test]
fn wrong_dtypes_are_typed_errors() {
    let mut tensors = mini_tensors();
    let t = tensors.get_mut("inn.module_list.4.s.2.weight").unwrap();
    let RawValues::Float(v) = &t.values else {
        unreachable!()
    };
    t.values = RawValues::Int(v.iter().map(|x| *x as i64).collect());
    match load(&write("dtype_weight", &tensors)) {
        Err(LoadError::DType { key, .. }) => assert_eq!(key, "inn.module_list.4.s.2.weight"),
        other => panic!("expected a dtype error, got {other:?}"),
    }
    let mut tensors = mini_tensors();
    let t = tensors
        .get_mut("inn.module_list.4.s.0.num_batches_tracked")
        .unwrap();
    t.values = RawValues::Float(vec![1000.0]);
    match load(&write("dtype_counter", &tensors)) {
        Err(LoadError::DType { key, .. }) => {
            assert_eq!(key, "inn.module_list.4.s.0.num_batches_tracked")
        }
        other => panic!("expected a dtype error, got {other:?}"),
    }
}

#[test]
fn float64_weights_load() {
    let mut tensors = mini_tensors();
    for t in tensors.values_mut() {
        if matches!(t.values, RawValues::Float(_)) {
            t.dtype = DType::F64;
        }
    }
    load(&write("f64", &tensors)).expect("float64 weights are accepted");
}

#[test]
fn non_finite_values_are_rejected() {
    let mut tensors = mini_tensors();
    let t = tensors.get_mut("mu_m").unwrap();
    let RawValues::Float(v) = &mut t.values else {
        unreachable!()
    };
    v[5] = f64::NAN;
    v[9] = f64::INFINITY;
    match load(&write("nan", &tensors)) {
        Err(LoadError::NonFinite { key, count }) => {
            assert_eq!(key, "mu_m");
            assert_eq!(count, 2);
        }
        other => panic!("expected a non-finite error, got {other:?}"),
    }
}

fn expect_fixed(tensors: &HashMap<String, RawTensor>, name: &str, key: &str) {
    match load(&write(name, tensors)) {
        Err(LoadError::FixedTensor { key: k, reason, .. }) => {
            assert_eq!(k, key);
            println!("{key}: {reason}");
        }
        other => panic!("expected a fixed-tensor error for {key}, got {other:?}"),
    }
}

fn floats_mut<'a>(tensors: &'a mut HashMap<String, RawTensor>, key: &str) -> &'a mut Vec<f64> {
    match &mut tensors.get_mut(key).unwrap().values {
        RawValues::Float(v) => v,
        RawValues::Int(_) => unreachable!(),
    }
}

#[test]
fn fixed_tensors_are_checked() {
    // A permutation matrix with a row of two ones.
    let mut tensors = mini_tensors();
    floats_mut(&mut tensors, "inn.module_list.3.w")[0] = 1.0;
    floats_mut(&mut tensors, "inn.module_list.3.w")[1] = 1.0;
    expect_fixed(&tensors, "w_two_ones", "inn.module_list.3.w");
    // A "permutation" with a scaled entry.
    let mut tensors = mini_tensors();
    let w = floats_mut(&mut tensors, "inn.module_list.4.w");
    let one = w.iter().position(|v| *v == 1.0).unwrap();
    w[one] = 0.5;
    expect_fixed(&tensors, "w_scaled", "inn.module_list.4.w");
    // w_inv that is not the transpose of w: swap two of its rows.
    let mut tensors = mini_tensors();
    let w_inv = floats_mut(&mut tensors, "inn.module_list.5.w_inv");
    let c = 192;
    for k in 0..c {
        w_inv.swap(k, c + k);
    }
    expect_fixed(&tensors, "w_inv", "inn.module_list.5.w_inv");
    // Haar kernels, unshuffle kernels and DCT matrices.
    let mut tensors = mini_tensors();
    floats_mut(&mut tensors, "inn.module_list.2.haar_weights")[5] *= -1.0;
    expect_fixed(&tensors, "haar", "inn.module_list.2.haar_weights");
    let mut tensors = mini_tensors();
    floats_mut(&mut tensors, "inn.module_list.1.reshape_kernels.1")[0] = 0.0;
    expect_fixed(&tensors, "unshuffle", "inn.module_list.1.reshape_kernels.1");
    let mut tensors = mini_tensors();
    floats_mut(&mut tensors, "inn.module_list.10.weight")[3] += 0.01;
    expect_fixed(&tensors, "dct", "inn.module_list.10.weight");
}

#[test]
fn unreadable_files_are_typed_errors() {
    let missing = std::env::temp_dir().join("trustgc-definitely-missing.safetensors");
    assert!(matches!(load(&missing), Err(LoadError::Io { .. })));
    let dir = Scratch::new("import-errors", "unreadable");
    // Truncated: the header claims more bytes than the file has.
    let bytes = std::fs::read(golden_path("mini/mini.safetensors")).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        load(&truncated),
        Err(LoadError::Safetensors { .. })
    ));
    // Garbage.
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(
        &garbage,
        b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a safetensors file",
    )
    .unwrap();
    assert!(matches!(load(&garbage), Err(LoadError::Safetensors { .. })));
}
