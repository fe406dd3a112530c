//! trustgc's own weight format: a safetensors file with trustgc's parameter paths
//! (`flow.stages.1.blocks.0.subnet.conv_reduce.weight`, `head.mu_fc`, ...), float32
//! values and int64 permutations. It is what `model.safetensors` in a converted or
//! trained model folder holds.
//!
//! Loading checks every path and shape against the config before anything is allocated
//! on the device and refuses non-finite values; saving writes a temporary file and renames
//! it, so a crash never leaves a half-written model behind.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{TensorData, bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use trustgc_core::keymap::{FixedKind, Role, key_table};
use trustgc_core::params::parameter_values;
use trustgc_core::{GcConfig, GenerativeClassifier};

use super::validate::{build_model, check_values};
use super::{DType, KeyReport, LoadError, SaveError, Tensor, Values};

/// The bytes of a weights file ([`LoadError::Io`] naming it).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    Ok(trustgc_io::read_capped(path, trustgc_io::Cap::TENSORS)?)
}

/// Reads every tensor of a safetensors file.
///
/// # Errors
/// [`LoadError::Io`], [`LoadError::Safetensors`], or [`LoadError::UnsupportedDType`] for a
/// tensor of a dtype [`Values`] cannot hold.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, LoadError> {
    let bytes = read_file(path)?;
    tensors_of(&bytes, Some(path))
}

/// Reads every tensor of a safetensors file held in memory; see [`read_safetensors`].
pub fn read_safetensors_bytes(bytes: &[u8]) -> Result<HashMap<String, Tensor>, LoadError> {
    tensors_of(bytes, None)
}

/// Little-endian values of `width` bytes each, decoded by `decode`.
fn decode<T, const N: usize>(data: &[u8], decode: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|chunk| {
            let mut bytes = [0u8; N];
            bytes.copy_from_slice(chunk);
            decode(bytes)
        })
        .collect()
}

fn tensors_of(bytes: &[u8], path: Option<&Path>) -> Result<HashMap<String, Tensor>, LoadError> {
    let file = deserialize(bytes, path)?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| decode_view(&view, &name).map(|tensor| (name, tensor)))
        .collect()
}

fn deserialize<'a>(
    bytes: &'a [u8],
    path: Option<&Path>,
) -> Result<safetensors::SafeTensors<'a>, LoadError> {
    safetensors::SafeTensors::deserialize(bytes).map_err(|source| LoadError::Safetensors {
        path: path.map(Path::to_path_buf),
        source,
    })
}

/// Reads the tensors of a safetensors file in memory after checking its keys and shapes
/// (from the header alone) against `expected`: nothing is decoded from a file that does
/// not fit, and tensors `ignored` accepts are skipped.
///
/// # Errors
/// [`LoadError::Safetensors`], [`LoadError::Keys`] with every wrong key, or
/// [`LoadError::UnsupportedDType`].
pub(crate) fn read_expected<'a>(
    bytes: &[u8],
    path: Option<&Path>,
    expected: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ignored: impl Fn(&str) -> bool,
) -> Result<HashMap<String, Tensor>, LoadError> {
    let file = deserialize(bytes, path)?;
    let views = file.tensors();
    let shapes: HashMap<String, Vec<usize>> = views
        .iter()
        .map(|(name, view)| (name.clone(), view.shape().to_vec()))
        .collect();
    KeyReport::compare(expected, &shapes, &ignored).into_result()?;
    views
        .into_iter()
        .filter(|(name, _)| !ignored(name))
        .map(|(name, view)| decode_view(&view, &name).map(|tensor| (name, tensor)))
        .collect()
}

/// Decodes one tensor's values (floats widened to `f64`, integers to `i64`).
fn decode_view(view: &TensorView<'_>, name: &str) -> Result<Tensor, LoadError> {
    let data = view.data();
    let (dtype, values) = match view.dtype() {
        Dtype::F32 => (
            DType::F32,
            Values::Float(decode(data, |b| f64::from(f32::from_le_bytes(b)))),
        ),
        Dtype::F64 => (DType::F64, Values::Float(decode(data, f64::from_le_bytes))),
        Dtype::F16 => (
            DType::F16,
            Values::Float(decode(data, |b| f16::from_le_bytes(b).to_f64())),
        ),
        Dtype::BF16 => (
            DType::BF16,
            Values::Float(decode(data, |b| bf16::from_le_bytes(b).to_f64())),
        ),
        Dtype::I64 => (DType::I64, Values::Int(decode(data, i64::from_le_bytes))),
        Dtype::I32 => (
            DType::I32,
            Values::Int(decode(data, |b| i64::from(i32::from_le_bytes(b)))),
        ),
        Dtype::I16 => (
            DType::I16,
            Values::Int(decode(data, |b| i64::from(i16::from_le_bytes(b)))),
        ),
        Dtype::I8 => (
            DType::I8,
            Values::Int(data.iter().map(|&b| i64::from(b as i8)).collect()),
        ),
        Dtype::U8 => (
            DType::U8,
            Values::Int(data.iter().map(|&b| i64::from(b)).collect()),
        ),
        Dtype::BOOL => (
            DType::Bool,
            Values::Int(data.iter().map(|&b| i64::from(b != 0)).collect()),
        ),
        found => {
            return Err(LoadError::UnsupportedDType {
                key: name.to_string(),
                found,
            });
        }
    };
    Ok(Tensor {
        shape: view.shape().to_vec(),
        dtype,
        values,
    })
}

/// The model's tensors by path, as host values (float32 or int64).
pub fn model_tensors<B: Backend>(model: &GenerativeClassifier<B>) -> BTreeMap<String, TensorData> {
    parameter_values(model)
        .into_iter()
        .map(|(path, data)| {
            let data = if data.dtype.is_float() {
                data.convert::<f32>()
            } else {
                data.convert::<i64>()
            };
            (path, data)
        })
        .collect()
}

/// Serializes parameters (path → float32 or int64 data) to safetensors bytes.
pub fn native_to_safetensors_bytes(
    tensors: &BTreeMap<String, TensorData>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(path, data)| {
            let dtype = if data.dtype == burn::tensor::DType::I64 {
                Dtype::I64
            } else {
                Dtype::F32
            };
            TensorView::new(dtype, data.shape.as_slice().to_vec(), data.as_bytes())
                .map(|view| (path.clone(), view))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, None)
}

/// Serializes a model to safetensors bytes with trustgc's parameter names.
pub fn to_safetensors_bytes<B: Backend>(
    model: &GenerativeClassifier<B>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    native_to_safetensors_bytes(&model_tensors(model))
}

/// Saves a model as `path` (safetensors, trustgc names), atomically.
pub fn save_safetensors<B: Backend>(
    model: &GenerativeClassifier<B>,
    path: &Path,
) -> Result<(), SaveError> {
    let bytes = to_safetensors_bytes(model).map_err(|source| SaveError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    trustgc_io::write_file(path, &[], &bytes)?;
    Ok(())
}

/// The float values of `tensor`, all finite.
pub(crate) fn finite_floats<'a>(
    key: &str,
    tensor: &'a Tensor,
    expected: &'static str,
) -> Result<&'a [f64], LoadError> {
    let values = tensor.values.as_float().ok_or_else(|| LoadError::DType {
        key: key.to_string(),
        found: tensor.dtype,
        expected,
    })?;
    let count = values.iter().filter(|v| !v.is_finite()).count();
    if count > 0 {
        return Err(LoadError::NonFinite {
            key: key.to_string(),
            count,
        });
    }
    Ok(values)
}

/// Float32 data of `shape`.
pub(crate) fn float_data(values: &[f64], shape: Vec<usize>) -> TensorData {
    TensorData::new(
        values.iter().map(|&v| v as f32).collect::<Vec<f32>>(),
        shape,
    )
}

/// What [`LoadError::DType`] says a float tensor may be.
pub(crate) const FLOAT_DTYPES: &str = "a float dtype (f16, bf16, f32, f64)";

/// Builds a model of `config` from tensors named with trustgc's paths.
///
/// The keys and shapes are checked against the config's key table before anything is
/// allocated for the model, then the values pass the checks every loader runs (fixed
/// tensors are what the architecture defines, BatchNorm statistics are not negative).
///
/// # Errors
/// [`LoadError::Keys`] listing every missing, unexpected and mis-shaped tensor;
/// [`LoadError::DType`], [`LoadError::NonFinite`], [`LoadError::FixedTensor`] or
/// [`LoadError::Negative`] naming the first offending one.
pub fn model_from_tensors<B: Backend>(
    config: &GcConfig,
    tensors: &HashMap<String, Tensor>,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    config.validate()?;
    let table = key_table(config);
    KeyReport::compare(
        table
            .iter()
            .map(|row| (row.ours.as_str(), row.shape.as_slice())),
        tensors,
        |_| false,
    )
    .into_result()?;
    let mut values = BTreeMap::new();
    for row in &table {
        let tensor = &tensors[&row.ours];
        let data = match row.role {
            Role::Fixed(FixedKind::Permutation | FixedKind::InversePermutation) => {
                let indices = tensor.values.as_int().ok_or_else(|| LoadError::DType {
                    key: row.ours.clone(),
                    found: tensor.dtype,
                    expected: "an integer dtype (i32, i64)",
                })?;
                TensorData::new(indices.to_vec(), row.shape.clone())
            }
            _ => float_data(
                finite_floats(&row.ours, tensor, FLOAT_DTYPES)?,
                row.shape.clone(),
            ),
        };
        values.insert(row.ours.clone(), data);
    }
    check_values(&table, &values, |row| &row.ours)?;
    build_model(config, values, device)
}

/// Loads a model saved by [`save_safetensors`] (or a converted `model.safetensors`).
///
/// # Errors
/// [`LoadError::Io`], then as [`load_safetensors_bytes`].
pub fn load_safetensors<B: Backend>(
    path: &Path,
    config: &GcConfig,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    load_native_bytes(&read_file(path)?, Some(path), config, device)
}

/// Loads a model from the bytes of a `model.safetensors` (trustgc names), e.g. weights
/// embedded in a binary with `include_bytes!`. [`load_safetensors`] is this on a file's
/// bytes. The keys and shapes are checked from the header before any value is decoded.
///
/// # Errors
/// [`LoadError::Safetensors`], [`LoadError::Keys`], then as [`model_from_tensors`].
pub fn load_safetensors_bytes<B: Backend>(
    bytes: &[u8],
    config: &GcConfig,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    load_native_bytes(bytes, None, config, device)
}

/// [`load_safetensors_bytes`] naming `path` in its errors.
pub(crate) fn load_native_bytes<B: Backend>(
    bytes: &[u8],
    path: Option<&Path>,
    config: &GcConfig,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    config.validate()?;
    let table = key_table(config);
    let expected = table
        .iter()
        .map(|row| (row.ours.as_str(), row.shape.as_slice()));
    let tensors = read_expected(bytes, path, expected, |_| false)?;
    model_from_tensors(config, &tensors, device)
}
