//! The checks every loaded model passes, whatever format it came in, and the one place a
//! model is built from checked values.
//!
//! The key table ([`trustgc_core::keymap::key_table`]) says what each tensor is; from that
//! role follow the checks: fixed tensors must be what the architecture defines
//! (permutations are permutations of `0..C`, each inverse permutation undoes its
//! permutation, Haar and unshuffle kernels are exact, the DCT matrices match the closed
//! form to 1e-4), BatchNorm running variances and counters are not negative. Finiteness
//! is checked when the values are decoded. A file that fails any of them is refused, so a
//! tampered file cannot make a model that silently classifies wrongly.

use std::collections::{BTreeMap, HashMap};

use burn::tensor::backend::Backend;
use burn::tensor::{DType as BurnDType, TensorData};
use trustgc_core::keymap::{FixedKind, KeyMapping, Role};
use trustgc_core::layers::coupling::unshuffle_kernels;
use trustgc_core::layers::dct::{dct_inverse_weight, dct_weight};
use trustgc_core::layers::haar::haar_weights;
use trustgc_core::params::replace_parameters;
use trustgc_core::{GcConfig, GenerativeClassifier};

use super::{FixedTensorProblem, LoadError};

/// Values by our parameter path: float32 data, or int64 for permutations.
pub(crate) type NativeValues = BTreeMap<String, TensorData>;

fn fixed_error(key: &str, what: &'static str, reason: FixedTensorProblem) -> LoadError {
    LoadError::FixedTensor {
        key: key.to_string(),
        what,
        reason,
    }
}

/// The worst deviation from `expected`, as an error when it exceeds `tolerance`.
fn check_close(
    key: &str,
    what: &'static str,
    values: &[f32],
    expected: &[f64],
    tolerance: f64,
) -> Result<(), LoadError> {
    let (index, error) = values
        .iter()
        .zip(expected)
        .map(|(&a, &b)| (f64::from(a) - b).abs())
        .enumerate()
        .fold(
            (0, 0.0f64),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    if error > tolerance {
        return Err(fixed_error(
            key,
            what,
            FixedTensorProblem::Value {
                index,
                found: f64::from(values[index]),
                expected: expected[index],
                tolerance,
            },
        ));
    }
    Ok(())
}

/// `indices` is a permutation of `0..len`.
fn check_permutation(key: &str, indices: &[i64]) -> Result<(), LoadError> {
    let len = indices.len();
    let mut seen = vec![false; len];
    for &index in indices {
        let slot = usize::try_from(index)
            .ok()
            .filter(|&i| i < len)
            .ok_or_else(|| {
                fixed_error(
                    key,
                    "permutation",
                    FixedTensorProblem::IndexOutOfRange { index, len },
                )
            })?;
        if std::mem::replace(&mut seen[slot], true) {
            return Err(fixed_error(
                key,
                "permutation",
                FixedTensorProblem::Repeated { index },
            ));
        }
    }
    Ok(())
}

/// The closed form a fixed float tensor of `shape` must match, and the tolerance.
fn closed_form(kind: FixedKind, shape: &[usize]) -> (&'static str, Vec<f64>, f64) {
    let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
    match kind {
        FixedKind::UnshuffleKernels => (
            "one-hot unshuffle kernels",
            widen(unshuffle_kernels(shape[0] / 4)),
            0.0,
        ),
        FixedKind::HaarKernels => ("Haar kernels", widen(haar_weights(shape[0] / 4)), 0.0),
        // The reference builds the DCT matrices with an FFT in float32; they agree with the
        // closed form to ~3e-7. Anything beyond 1e-4 is another matrix.
        FixedKind::DctWeight => ("DCT matrix", dct_weight(shape[0]), 1e-4),
        FixedKind::DctInverseWeight => ("inverse DCT matrix", dct_inverse_weight(shape[0]), 1e-4),
        FixedKind::Permutation | FixedKind::InversePermutation => {
            unreachable!("permutations are integer tensors")
        }
    }
}

fn floats<'a>(values: &'a NativeValues, row: &KeyMapping) -> &'a [f32] {
    values[&row.ours]
        .as_slice::<f32>()
        .expect("the loaders decode floats to float32")
}

fn ints<'a>(values: &'a NativeValues, row: &KeyMapping) -> &'a [i64] {
    values[&row.ours]
        .as_slice::<i64>()
        .expect("the loaders decode permutations to int64")
}

/// Checks every value against what its role in `table` requires. Errors name the key
/// `key_of` gives for the row (the file's own key name).
///
/// `values` must hold every row's path (the loaders check the keys first).
pub(crate) fn check_values(
    table: &[KeyMapping],
    values: &NativeValues,
    key_of: impl Fn(&KeyMapping) -> &str,
) -> Result<(), LoadError> {
    for row in table {
        let key = key_of(row);
        match row.role {
            Role::Fixed(FixedKind::Permutation) => check_permutation(key, ints(values, row))?,
            Role::Fixed(FixedKind::InversePermutation) => {
                let inverse = ints(values, row);
                check_permutation(key, inverse)?;
                let forward_path = row.ours.replace("inverse_permutation", "permutation");
                let forward = values[&forward_path]
                    .as_slice::<i64>()
                    .expect("the loaders decode permutations to int64");
                // Both are permutations of 0..len, so the lookups are in range.
                if let Some(channel) =
                    (0..forward.len()).find(|&i| inverse[forward[i] as usize] != i as i64)
                {
                    return Err(fixed_error(
                        key,
                        "inverse permutation",
                        FixedTensorProblem::NotInverse { channel },
                    ));
                }
            }
            Role::Fixed(kind) => {
                let (what, expected, tolerance) = closed_form(kind, &row.shape);
                check_close(key, what, floats(values, row), &expected, tolerance)?;
            }
            Role::Buffer if row.ours.ends_with("running_var") => {
                not_negative(key, "a BatchNorm running variance", floats(values, row))?
            }
            Role::Counter => not_negative(key, "a BatchNorm batch count", floats(values, row))?,
            Role::Buffer | Role::Trainable => {}
        }
    }
    Ok(())
}

fn not_negative(key: &str, what: &'static str, values: &[f32]) -> Result<(), LoadError> {
    match values.iter().position(|&v| v < 0.0) {
        Some(index) => Err(LoadError::Negative {
            key: key.to_string(),
            what,
            index,
            value: f64::from(values[index]),
        }),
        None => Ok(()),
    }
}

/// Builds the model of `config` and puts the checked `values` in. Building is lazy, so the
/// only large allocations are the values themselves.
pub(crate) fn build_model<B: Backend>(
    config: &GcConfig,
    values: NativeValues,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    let mut values: HashMap<String, TensorData> = values
        .into_iter()
        .map(|(path, data)| {
            let data = if data.dtype == BurnDType::I64 {
                data.convert::<B::IntElem>()
            } else {
                data
            };
            (path, data)
        })
        .collect();
    let model = GenerativeClassifier::new(config, device)?;
    let model = replace_parameters(model, &mut values, device);
    // The key table and the model's parameters are the same set (tests/architecture.rs).
    assert!(
        values.is_empty(),
        "key table paths not in the model: {:?}",
        values.keys().collect::<Vec<_>>()
    );
    Ok(model)
}
