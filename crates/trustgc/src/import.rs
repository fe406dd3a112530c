//! Importing weights saved with the reference's key names (`inn.module_list.N...`, `mu`,
//! `mu_t`, `mu_m`) through [`trustgc_core::keymap::key_table`].
//!
//! Every key and shape is checked against the config before a tensor is created; fixed
//! tensors (permutations, Haar, DCT, unshuffle kernels) are checked against the closed
//! forms, and all values must be finite.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{TensorData, bf16, f16};
use safetensors::{Dtype, SafeTensors};
use trustgc_core::keymap::{FixedKind, KeyMapping, Role, Transform, is_activation_key, key_table};
use trustgc_core::layers::coupling::unshuffle_kernels;
use trustgc_core::layers::dct::{dct_inverse_weight, dct_weight};
use trustgc_core::layers::haar::haar_weights;
use trustgc_core::params::replace_parameters;
use trustgc_core::{GcConfig, GenerativeClassifier};

use crate::error::{KeyReport, LoadError, ShapeMismatch};

/// A tensor as read from a checkpoint: shape and values, floats widened to `f64` so that
/// nothing is lost before the checks.
#[derive(Clone, Debug, PartialEq)]
pub enum RawValues {
    /// Floating-point values (from f16, bf16, f32 or f64).
    Float(Vec<f64>),
    /// Integer values (from int64, int32, ...).
    Int(Vec<i64>),
}

/// One tensor of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    /// Its shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Its dtype, as the file names it.
    pub dtype: String,
    /// Its values in row-major order.
    pub values: RawValues,
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, RawTensor>, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = SafeTensors::deserialize(&bytes).map_err(|source| LoadError::Safetensors {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => RawValues::Float(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                    .collect(),
            ),
            Dtype::F64 => RawValues::Float(
                data.chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ),
            Dtype::F16 => RawValues::Float(
                data.chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f64())
                    .collect(),
            ),
            Dtype::BF16 => RawValues::Float(
                data.chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f64())
                    .collect(),
            ),
            Dtype::I64 => RawValues::Int(
                data.chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect(),
            ),
            Dtype::U8 => RawValues::Int(data.iter().map(|&b| i64::from(b)).collect()),
            Dtype::I32 => RawValues::Int(
                data.chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                    .collect(),
            ),
            other => {
                return Err(LoadError::DType {
                    key: name,
                    found: format!("{other:?}"),
                    expected: "a float (f16, bf16, f32, f64) or integer (u8, i32, i64) dtype",
                });
            }
        };
        out.insert(
            name,
            RawTensor {
                shape: view.shape().to_vec(),
                dtype: format!("{:?}", view.dtype()),
                values,
            },
        );
    }
    Ok(out)
}

/// Checks the file's keys and shapes against the table; `inn.tmp_var_*` are ignored.
pub fn check_keys(
    table: &[KeyMapping],
    tensors: &HashMap<String, RawTensor>,
) -> Result<(), LoadError> {
    let expected: HashSet<&str> = table.iter().map(|row| row.reference.as_str()).collect();
    let mut report = KeyReport::default();
    for row in table {
        match tensors.get(&row.reference) {
            None => report.missing.push(row.reference.clone()),
            Some(tensor) if tensor.shape != row.reference_shape => {
                report.misshaped.push(ShapeMismatch {
                    key: row.reference.clone(),
                    expected: row.reference_shape.clone(),
                    found: tensor.shape.clone(),
                })
            }
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|key| !expected.contains(key.as_str()) && !is_activation_key(key))
        .cloned()
        .collect();
    unexpected.sort();
    report.unexpected = unexpected;
    if report.is_empty() {
        Ok(())
    } else {
        Err(LoadError::Keys { report })
    }
}

fn floats<'a>(row: &KeyMapping, tensor: &'a RawTensor) -> Result<&'a [f64], LoadError> {
    match &tensor.values {
        RawValues::Float(values) => {
            let count = values.iter().filter(|v| !v.is_finite()).count();
            if count > 0 {
                return Err(LoadError::NonFinite {
                    key: row.reference.clone(),
                    count,
                });
            }
            Ok(values)
        }
        RawValues::Int(_) => Err(LoadError::DType {
            key: row.reference.clone(),
            found: tensor.dtype.clone(),
            expected: "a float dtype (f16, bf16, f32, f64)",
        }),
    }
}

fn fixed_error(row: &KeyMapping, what: &'static str, reason: String) -> LoadError {
    LoadError::FixedTensor {
        key: row.reference.clone(),
        what,
        reason,
    }
}

/// The index vector of a `[C, C, 1, 1]` permutation matrix: `w[i, p[i]] = 1`.
fn permutation_indices(row: &KeyMapping, values: &[f64]) -> Result<Vec<usize>, LoadError> {
    let c = row.shape[0];
    let mut indices = Vec::with_capacity(c);
    let mut seen = vec![false; c];
    for i in 0..c {
        let line = &values[i * c..(i + 1) * c];
        let mut one = None;
        for (j, &v) in line.iter().enumerate() {
            if v == 1.0 && one.is_none() {
                one = Some(j);
            } else if v == 1.0 {
                return Err(fixed_error(
                    row,
                    "permutation matrix",
                    format!(
                        "row {i} has a second 1 at column {j}; a permutation matrix has a single 1 per row"
                    ),
                ));
            } else if v != 0.0 {
                return Err(fixed_error(
                    row,
                    "permutation matrix",
                    format!(
                        "row {i} holds {v} at column {j}; a permutation matrix has a single 1 per row and zeros elsewhere"
                    ),
                ));
            }
        }
        let j =
            one.ok_or_else(|| fixed_error(row, "permutation matrix", format!("row {i} has no 1")))?;
        if std::mem::replace(&mut seen[j], true) {
            return Err(fixed_error(
                row,
                "permutation matrix",
                format!("column {j} holds two 1s"),
            ));
        }
        indices.push(j);
    }
    Ok(indices)
}

fn check_close(
    row: &KeyMapping,
    what: &'static str,
    values: &[f64],
    expected: &[f64],
    tolerance: f64,
) -> Result<(), LoadError> {
    let (index, error) = values
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0.0f64),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    if error > tolerance {
        return Err(fixed_error(
            row,
            what,
            format!(
                "value {index} is {} but should be {} (tolerance {tolerance})",
                values[index], expected[index]
            ),
        ));
    }
    Ok(())
}

/// The tensor translated to our parameter, after the checks its role requires.
fn translate(row: &KeyMapping, tensor: &RawTensor) -> Result<TensorData, LoadError> {
    let shape = row.shape.clone();
    match row.role {
        Role::Counter => match &tensor.values {
            RawValues::Int(values) => Ok(TensorData::new(
                values.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                shape,
            )),
            RawValues::Float(_) => Err(LoadError::DType {
                key: row.reference.clone(),
                found: tensor.dtype.clone(),
                expected: "an integer dtype (i64)",
            }),
        },
        Role::Fixed(kind @ (FixedKind::Permutation | FixedKind::InversePermutation)) => {
            debug_assert_eq!(row.transform, Transform::PermutationMatrix);
            let _ = kind;
            let indices = permutation_indices(row, floats(row, tensor)?)?;
            Ok(TensorData::new(
                indices.iter().map(|&i| i as i64).collect::<Vec<i64>>(),
                shape,
            ))
        }
        Role::Fixed(kind) => {
            let values = floats(row, tensor)?;
            match kind {
                FixedKind::UnshuffleKernels => {
                    let expected: Vec<f64> = unshuffle_kernels(shape[0] / 4)
                        .into_iter()
                        .map(f64::from)
                        .collect();
                    check_close(row, "one-hot unshuffle kernels", values, &expected, 0.0)?;
                }
                FixedKind::HaarKernels => {
                    let expected: Vec<f64> = haar_weights(shape[0] / 4)
                        .into_iter()
                        .map(f64::from)
                        .collect();
                    check_close(row, "Haar kernels", values, &expected, 0.0)?;
                }
                // The reference builds the DCT matrices with an FFT in float32; they agree
                // with the closed form to ~3e-7 (golden/README.md). Anything beyond 1e-4
                // is another matrix.
                FixedKind::DctWeight => {
                    check_close(row, "DCT matrix", values, &dct_weight(shape[0]), 1e-4)?
                }
                FixedKind::DctInverseWeight => check_close(
                    row,
                    "inverse DCT matrix",
                    values,
                    &dct_inverse_weight(shape[0]),
                    1e-4,
                )?,
                FixedKind::Permutation | FixedKind::InversePermutation => unreachable!(),
            }
            Ok(float_data(values, shape))
        }
        Role::Trainable | Role::Buffer => Ok(float_data(floats(row, tensor)?, shape)),
    }
}

fn float_data(values: &[f64], shape: Vec<usize>) -> TensorData {
    TensorData::new(
        values.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
        shape,
    )
}

/// Checks that each node's `w_inv` is the inverse of its `w`.
fn check_inverse_permutations(
    table: &[KeyMapping],
    values: &HashMap<String, TensorData>,
) -> Result<(), LoadError> {
    for row in table
        .iter()
        .filter(|r| r.role == Role::Fixed(FixedKind::InversePermutation))
    {
        let forward_path = row.ours.replace("inverse_permutation", "permutation");
        let (Some(inverse), Some(forward)) = (values.get(&row.ours), values.get(&forward_path))
        else {
            continue;
        };
        let inverse: Vec<i64> = inverse.to_vec().expect("int data");
        let forward: Vec<i64> = forward.to_vec().expect("int data");
        for (i, &p) in forward.iter().enumerate() {
            if inverse[p as usize] != i as i64 {
                return Err(fixed_error(
                    row,
                    "inverse permutation (w_inv = wᵀ)",
                    format!("w_inv does not undo w at channel {i}"),
                ));
            }
        }
    }
    Ok(())
}

/// Translates tensors with the reference's key names into trustgc's parameters (path →
/// float32 or int64 data), after every check of the key table.
///
/// # Errors
/// [`LoadError::Keys`] listing every missing, unexpected and mis-shaped key;
/// [`LoadError::DType`], [`LoadError::NonFinite`] or [`LoadError::FixedTensor`] naming
/// the first offending tensor.
pub fn reference_to_native(
    config: &GcConfig,
    tensors: &HashMap<String, RawTensor>,
) -> Result<std::collections::BTreeMap<String, TensorData>, LoadError> {
    config.validate()?;
    let table = key_table(config);
    check_keys(&table, tensors)?;
    let mut values = std::collections::BTreeMap::new();
    for row in &table {
        values.insert(row.ours.clone(), translate(row, &tensors[&row.reference])?);
    }
    let as_map: HashMap<String, TensorData> =
        values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    check_inverse_permutations(&table, &as_map)?;
    Ok(values)
}

/// Builds a model of `config` with the weights in `tensors` (reference key names).
///
/// # Errors
/// As [`reference_to_native`].
pub fn model_from_reference_tensors<B: Backend>(
    config: &GcConfig,
    tensors: &HashMap<String, RawTensor>,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    let native = reference_to_native(config, tensors)?;
    let mut values: HashMap<String, TensorData> = native
        .into_iter()
        .map(|(path, data)| {
            let data = if data.dtype == burn::tensor::DType::I64 {
                data.convert::<B::IntElem>()
            } else {
                data
            };
            (path, data)
        })
        .collect();
    let model = GenerativeClassifier::new(config, device)?;
    let model = replace_parameters(model, &mut values, device);
    assert!(
        values.is_empty(),
        "key table paths not in the model: {:?}",
        values.keys().collect::<Vec<_>>()
    );
    Ok(model)
}

/// Loads a safetensors file with the reference's key names (e.g. `mini.safetensors`).
pub fn load_reference_safetensors<B: Backend>(
    path: &Path,
    config: &GcConfig,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    let tensors = read_safetensors(path)?;
    model_from_reference_tensors(config, &tensors, device)
}
