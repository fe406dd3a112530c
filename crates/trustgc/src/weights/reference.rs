//! Importing weights saved with the reference's key names (`inn.module_list.N...`, `mu`,
//! `mu_t`, `mu_m`): the authors' `.pt` checkpoints and safetensors files with the same
//! keys, translated through [`trustgc_core::keymap::key_table`].
//!
//! Every key and shape is checked against the config before a tensor is created;
//! permutation matrices become index vectors, and the values pass the checks every loader
//! runs (fixed tensors against their closed forms, BatchNorm statistics, finiteness).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;
use trustgc_checkpoint::{default_keep, read_checkpoint};
use trustgc_core::keymap::{FixedKind, KeyMapping, Role, Transform, is_activation_key, key_table};
use trustgc_core::{GcConfig, GenerativeClassifier};

use super::convert::ConvertError;
use super::safetensors::{FLOAT_DTYPES, finite_floats, float_data, read_expected, read_file};
use super::validate::{build_model, check_values};
use super::{FixedTensorProblem, KeyReport, LoadError, Tensor};

/// Checks the file's keys and shapes against the table; `inn.tmp_var_*` are ignored.
///
/// # Errors
/// [`LoadError::Keys`] listing every missing, unexpected and mis-shaped key.
pub fn check_keys(
    table: &[KeyMapping],
    tensors: &HashMap<String, Tensor>,
) -> Result<(), LoadError> {
    KeyReport::compare(
        table
            .iter()
            .map(|row| (row.reference.as_str(), row.reference_shape.as_slice())),
        tensors,
        is_activation_key,
    )
    .into_result()
}

fn fixed_error(row: &KeyMapping, what: &'static str, reason: FixedTensorProblem) -> LoadError {
    LoadError::FixedTensor {
        key: row.reference.clone(),
        what,
        reason,
    }
}

/// The index vector of a `[C, C, 1, 1]` permutation matrix: `w[i, p[i]] = 1`.
fn permutation_indices(row: &KeyMapping, values: &[f64]) -> Result<Vec<usize>, LoadError> {
    let problem = |reason| fixed_error(row, "permutation matrix", reason);
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
                return Err(problem(FixedTensorProblem::SecondOne { row: i, column: j }));
            } else if v != 0.0 {
                return Err(problem(FixedTensorProblem::NotZeroOrOne {
                    row: i,
                    column: j,
                    value: v,
                }));
            }
        }
        let j = one.ok_or_else(|| problem(FixedTensorProblem::RowWithoutOne { row: i }))?;
        if std::mem::replace(&mut seen[j], true) {
            return Err(problem(FixedTensorProblem::ColumnWithTwoOnes { column: j }));
        }
        indices.push(j);
    }
    Ok(indices)
}

/// The tensor translated to our parameter, after the checks its role requires.
fn translate(row: &KeyMapping, tensor: &Tensor) -> Result<TensorData, LoadError> {
    let shape = row.shape.clone();
    let floats = || finite_floats(&row.reference, tensor, FLOAT_DTYPES);
    match row.role {
        Role::Counter => {
            let values = tensor.values.as_int().ok_or_else(|| LoadError::DType {
                key: row.reference.clone(),
                found: tensor.dtype,
                expected: "an integer dtype (i64)",
            })?;
            Ok(TensorData::new(
                values.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
                shape,
            ))
        }
        Role::Fixed(FixedKind::Permutation | FixedKind::InversePermutation) => {
            debug_assert_eq!(row.transform, Transform::PermutationMatrix);
            let indices = permutation_indices(row, floats()?)?;
            Ok(TensorData::new(
                indices.iter().map(|&i| i as i64).collect::<Vec<i64>>(),
                shape,
            ))
        }
        // Checked against their closed forms by `check_values`.
        Role::Fixed(_) | Role::Trainable | Role::Buffer => Ok(float_data(floats()?, shape)),
    }
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
    tensors: &HashMap<String, Tensor>,
) -> Result<BTreeMap<String, TensorData>, LoadError> {
    config.validate()?;
    let table = key_table(config);
    check_keys(&table, tensors)?;
    let mut values = BTreeMap::new();
    for row in &table {
        values.insert(row.ours.clone(), translate(row, &tensors[&row.reference])?);
    }
    check_values(&table, &values, |row| &row.reference)?;
    Ok(values)
}

/// Builds a model of `config` with the weights in `tensors` (reference key names).
///
/// # Errors
/// As [`reference_to_native`].
pub fn model_from_reference_tensors<B: Backend>(
    config: &GcConfig,
    tensors: &HashMap<String, Tensor>,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    build_model(config, reference_to_native(config, tensors)?, device)
}

/// Loads a safetensors file with the reference's key names (e.g. `mini.safetensors`); the
/// keys and shapes are checked from the header before any value is decoded. Fails as
/// [`reference_to_native`] does, or with [`LoadError::Io`] / [`LoadError::Safetensors`].
pub fn load_reference_safetensors<B>(
    path: &Path,
    config: &GcConfig,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError>
where
    B: Backend,
{
    config.validate()?;
    let bytes = read_file(path)?;
    let table = key_table(config);
    let expected = table
        .iter()
        .map(|row| (row.reference.as_str(), row.reference_shape.as_slice()));
    let tensors = read_expected(&bytes, Some(path), expected, is_activation_key)?;
    model_from_reference_tensors(config, &tensors, device)
}

/// Reads a reference checkpoint's tensors (without `opt` and `inn.tmp_var_*`) with
/// [`trustgc_checkpoint`], which never executes pickled code.
///
/// # Errors
/// [`ConvertError::Read`] when the file is not a checkpoint the reader accepts.
pub fn read_reference_checkpoint(path: &Path) -> Result<HashMap<String, Tensor>, ConvertError> {
    let checkpoint = read_checkpoint(path, default_keep).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(checkpoint.tensors.into_iter().collect())
}

/// Loads a reference checkpoint (`.pt`, zip or legacy) as a model of `config`.
///
/// # Errors
/// [`ConvertError::Read`] or [`ConvertError::Load`].
pub fn load_checkpoint<B: Backend>(
    path: &Path,
    config: &GcConfig,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, ConvertError> {
    let tensors = read_reference_checkpoint(path)?;
    model_from_reference_tensors(config, &tensors, device).map_err(|source| ConvertError::Load {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}
