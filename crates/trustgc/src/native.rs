//! trustgc's own weight format: a safetensors file with trustgc's parameter paths
//! (`flow.stages.1.blocks.0.subnet.conv_reduce.weight`, `head.mu_fc`, ...), float32
//! values and int64 permutations. It is what `model.safetensors` in a converted or
//! trained model directory holds.
//!
//! Loading checks every path and shape against the config before anything is allocated
//! and refuses non-finite values; saving writes a temporary file and renames it, so a
//! crash never leaves a half-written model behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use trustgc_core::params::{ParamKind, parameter_shapes, parameter_values, replace_parameters};
use trustgc_core::{GcConfig, GenerativeClassifier};

use crate::error::{KeyReport, LoadError, ShapeMismatch};
use crate::import::{RawTensor, RawValues, read_safetensors};

/// Why a model could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Writing or renaming the file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The safetensors encoder refused the data.
    #[error("cannot encode {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The model's tensors by path, as host values (float32 or int64).
pub fn model_tensors<B: Backend>(model: &GenerativeClassifier<B>) -> BTreeMap<String, TensorData> {
    parameter_values(model)
        .into_iter()
        .map(|(path, data)| {
            let data = match data.dtype {
                DType::F64 | DType::F32 | DType::F16 | DType::BF16 => data.convert::<f32>(),
                _ => data.convert::<i64>(),
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
            let dtype = if data.dtype == DType::I64 {
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
    write_atomically(path, &bytes).map_err(|source| SaveError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds a model of `config` from tensors named with trustgc's paths.
///
/// # Errors
/// [`LoadError::Keys`] listing every missing, unexpected and mis-shaped tensor,
/// [`LoadError::DType`] or [`LoadError::NonFinite`] naming the first offending one.
pub fn model_from_tensors<B: Backend>(
    config: &GcConfig,
    tensors: &HashMap<String, RawTensor>,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    config.validate()?;
    let model = GenerativeClassifier::<B>::new(config, device)?;
    let expected = parameter_shapes::<B, _>(&model);
    let mut report = KeyReport::default();
    let names: HashSet<&str> = expected.iter().map(|p| p.path.as_str()).collect();
    for p in &expected {
        match tensors.get(&p.path) {
            None => report.missing.push(p.path.clone()),
            Some(t) if t.shape != p.shape => report.misshaped.push(ShapeMismatch {
                key: p.path.clone(),
                expected: p.shape.clone(),
                found: t.shape.clone(),
            }),
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !names.contains(k.as_str()))
        .cloned()
        .collect();
    unexpected.sort();
    report.unexpected = unexpected;
    if !report.is_empty() {
        return Err(LoadError::Keys { report });
    }
    let mut values = HashMap::with_capacity(expected.len());
    for p in &expected {
        let t = &tensors[&p.path];
        let data = match (p.kind, &t.values) {
            (ParamKind::Float, RawValues::Float(v)) => {
                let count = v.iter().filter(|x| !x.is_finite()).count();
                if count > 0 {
                    return Err(LoadError::NonFinite {
                        key: p.path.clone(),
                        count,
                    });
                }
                TensorData::new(
                    v.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
                    p.shape.clone(),
                )
            }
            (ParamKind::Int, RawValues::Int(v)) => {
                let n = p.shape.iter().product::<usize>() as i64;
                if let Some(bad) = v.iter().find(|&&i| i < 0 || i >= n) {
                    return Err(LoadError::FixedTensor {
                        key: p.path.clone(),
                        what: "permutation",
                        reason: format!("index {bad} is outside 0..{n}"),
                    });
                }
                TensorData::new(v.clone(), p.shape.clone()).convert::<B::IntElem>()
            }
            (ParamKind::Float, RawValues::Int(_)) => {
                return Err(LoadError::DType {
                    key: p.path.clone(),
                    found: t.dtype.clone(),
                    expected: "a float dtype (f16, bf16, f32, f64)",
                });
            }
            (ParamKind::Int, RawValues::Float(_)) => {
                return Err(LoadError::DType {
                    key: p.path.clone(),
                    found: t.dtype.clone(),
                    expected: "an integer dtype (i32, i64)",
                });
            }
        };
        values.insert(p.path.clone(), data);
    }
    let model = replace_parameters(model, &mut values, device);
    debug_assert!(values.is_empty());
    Ok(model)
}

/// Loads a model saved by [`save_safetensors`] (or a converted `model.safetensors`).
pub fn load_safetensors<B: Backend>(
    path: &Path,
    config: &GcConfig,
    device: &B::Device,
) -> Result<GenerativeClassifier<B>, LoadError> {
    let tensors = read_safetensors(path)?;
    model_from_tensors(config, &tensors, device)
}
