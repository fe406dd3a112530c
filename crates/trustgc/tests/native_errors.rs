//! The native loader (`model.safetensors`, trustgc's names) refuses tampered weights as
//! the reference import does: fixed tensors must be what the architecture defines,
//! BatchNorm statistics cannot be negative, nothing may be NaN, and the keys are checked
//! against the config before anything is allocated for the model.

use std::collections::HashMap;

use burn::backend::Flex;
use trustgc::weights::safetensors::{model_from_tensors, read_safetensors_bytes};
use trustgc::weights::{FixedTensorProblem, Tensor, Values};
use trustgc::{GcConfig, LoadError, Shipped};

type B = Flex;

fn shipped() -> (GcConfig, HashMap<String, Tensor>) {
    let config = Shipped::FashionMnist.config().unwrap();
    let tensors = read_safetensors_bytes(Shipped::FashionMnist.model_safetensors()).unwrap();
    (config, tensors)
}

fn load(config: &GcConfig, tensors: &HashMap<String, Tensor>) -> Result<(), LoadError> {
    model_from_tensors::<B>(config, tensors, &Default::default()).map(|_| ())
}

fn ints<'a>(tensors: &'a mut HashMap<String, Tensor>, key: &str) -> &'a mut Vec<i64> {
    match &mut tensors.get_mut(key).unwrap().values {
        Values::Int(v) => v,
        Values::Float(_) => panic!("{key} is not an integer tensor"),
    }
}

fn floats<'a>(tensors: &'a mut HashMap<String, Tensor>, key: &str) -> &'a mut Vec<f64> {
    match &mut tensors.get_mut(key).unwrap().values {
        Values::Float(v) => v,
        Values::Int(_) => panic!("{key} is not a float tensor"),
    }
}

/// Tampers with a copy of the shipped weights and expects `check` to accept the error.
fn refused(
    name: &str,
    tamper: impl FnOnce(&mut HashMap<String, Tensor>),
    check: impl FnOnce(&LoadError) -> bool,
) {
    let (config, mut tensors) = shipped();
    tamper(&mut tensors);
    match load(&config, &tensors) {
        Err(error) => {
            println!("{name}: {error}");
            assert!(check(&error), "{name}: unexpected error {error:?}");
        }
        Ok(()) => panic!("{name}: tampered weights were accepted"),
    }
}

fn fixed(
    key: &'static str,
    reason: impl Fn(&FixedTensorProblem) -> bool,
) -> impl Fn(&LoadError) -> bool {
    move |error| matches!(error, LoadError::FixedTensor { key: k, reason: r, .. } if k == key && reason(r))
}

#[test]
fn the_untampered_shipped_weights_load() {
    let (config, tensors) = shipped();
    load(&config, &tensors).unwrap();
}

#[test]
fn tampered_fixed_tensors_are_refused() {
    let perm = "flow.stages.0.blocks.0.permutation";
    let inverse = "flow.stages.0.blocks.0.inverse_permutation";
    refused(
        "permutation of zeros",
        |t| ints(t, perm).iter_mut().for_each(|v| *v = 0),
        fixed(perm, |r| {
            matches!(r, FixedTensorProblem::Repeated { index: 0 })
        }),
    );
    refused(
        "duplicate index",
        |t| {
            let p = ints(t, perm);
            p[1] = p[0];
        },
        fixed(perm, |r| matches!(r, FixedTensorProblem::Repeated { .. })),
    );
    refused(
        "index out of range",
        |t| ints(t, perm)[3] = 1 << 20,
        fixed(perm, |r| {
            matches!(r, FixedTensorProblem::IndexOutOfRange { .. })
        }),
    );
    refused(
        "inverse that is not the inverse",
        |t| ints(t, inverse).swap(0, 1),
        fixed(inverse, |r| {
            matches!(r, FixedTensorProblem::NotInverse { .. })
        }),
    );
    refused(
        "DCT matrix x2",
        |t| {
            floats(t, "flow.dct.weight")
                .iter_mut()
                .for_each(|v| *v *= 2.0)
        },
        fixed("flow.dct.weight", |r| {
            matches!(r, FixedTensorProblem::Value { .. })
        }),
    );
    refused(
        "inverse DCT matrix perturbed",
        |t| floats(t, "flow.dct.inverse_weight")[4] += 0.01,
        fixed("flow.dct.inverse_weight", |r| {
            matches!(r, FixedTensorProblem::Value { .. })
        }),
    );
    refused(
        "Haar kernel sign",
        |t| floats(t, "flow.haar.kernels")[5] *= -1.0,
        fixed("flow.haar.kernels", |r| {
            matches!(r, FixedTensorProblem::Value { .. })
        }),
    );
    refused(
        "unshuffle kernel",
        |t| floats(t, "flow.entry.unshuffle_kernels_2")[0] = 0.0,
        fixed("flow.entry.unshuffle_kernels_2", |r| {
            matches!(r, FixedTensorProblem::Value { .. })
        }),
    );
}

#[test]
fn impossible_statistics_and_nan_are_refused() {
    let running_var = "flow.entry.subnet_strided.bn_in.running_var";
    refused(
        "negative running variance",
        |t| floats(t, running_var)[2] = -0.5,
        |e| matches!(e, LoadError::Negative { key, index: 2, .. } if key == running_var),
    );
    let counter = "flow.entry.subnet_strided.bn_in.num_batches_tracked";
    refused(
        "negative batch count",
        |t| floats(t, counter)[0] = -1.0,
        |e| matches!(e, LoadError::Negative { key, .. } if key == counter),
    );
    refused(
        "NaN weight",
        |t| floats(t, "head.mu_fc")[7] = f64::NAN,
        |e| matches!(e, LoadError::NonFinite { key, count: 1 } if key == "head.mu_fc"),
    );
}

/// Peak resident memory of this process, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A config far larger than the weights (3·10⁶ classes: 12 GB of class means) gets the
/// key report naming the head's tensors. Whether the model would have been allocated first
/// cannot be seen from memory here (burn initializes the means lazily, so building it
/// costs ~1 MiB either way); the order is checked by the header test below, which decodes
/// nothing from a file that does not fit.
#[test]
fn a_config_far_larger_than_the_weights_gets_a_key_report() {
    let (mut config, tensors) = shipped();
    config.n_classes = 3_000_000;
    config.class_names.clear();
    config.validate().unwrap();
    match load(&config, &tensors) {
        Err(LoadError::Keys { report }) => {
            let keys: Vec<&str> = report.misshaped.iter().map(|m| m.key.as_str()).collect();
            assert_eq!(keys, ["head.mu_fc", "head.mu_conv"], "{report}");
        }
        other => panic!("expected a key report, got {other:?}"),
    }
}

#[test]
fn a_file_that_does_not_fit_is_refused_from_its_header_without_decoding() {
    use safetensors::tensor::{Dtype, TensorView};
    // The shipped weights plus one unexpected 100 MB tensor of bytes: decoding it would
    // take 800 MB (as i64); the key report must come from the header alone.
    let shipped_bytes = Shipped::FashionMnist.model_safetensors();
    let file = safetensors::SafeTensors::deserialize(shipped_bytes).unwrap();
    let junk = vec![7u8; 100 << 20];
    let mut views: Vec<(String, TensorView<'_>)> = file.tensors();
    views.push((
        "junk".to_string(),
        TensorView::new(Dtype::U8, vec![junk.len()], &junk).unwrap(),
    ));
    let bytes = safetensors::serialize(views, None).unwrap();
    drop(junk);
    let config = Shipped::FashionMnist.config().unwrap();
    let before = peak_rss_kib();
    let result = trustgc::weights::safetensors::load_safetensors_bytes::<B>(
        &bytes,
        &config,
        &Default::default(),
    );
    match result {
        Err(LoadError::Keys { report }) => assert_eq!(report.unexpected, ["junk"], "{report}"),
        other => panic!("expected a key report, got {other:?}"),
    }
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    println!("peak memory grew by {grown_mib} MiB");
    assert!(grown_mib < 64, "refusing the file decoded {grown_mib} MiB");
}
