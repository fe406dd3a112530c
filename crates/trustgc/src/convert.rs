//! Converting the authors' original PyTorch checkpoints (`beta_X.avg.pt`, REFERENCE.md §5)
//! into a trustgc model folder: `config.json` (the [`GcConfig`]), `model.safetensors`
//! (trustgc's parameter names, permutations as index vectors, Haar and DCT tensors
//! included) and a model card `README.md`.
//!
//! The `.pt` file is read by [`trustgc_checkpoint`], which never executes pickled code;
//! optimizer state and activations saved with the model are skipped unread. Every key,
//! shape and fixed tensor is checked through the key table before anything is written,
//! and the folder appears atomically (written under a temporary name, then renamed), so
//! loading the folder gives bit-identical outputs to loading the `.pt` itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use trustgc_checkpoint::{CheckpointError, Values, default_keep, read_checkpoint};
use trustgc_core::{GcConfig, GenerativeClassifier};

use crate::LoadError;
use crate::import::{RawTensor, RawValues, model_from_reference_tensors, reference_to_native};
use crate::native::native_to_safetensors_bytes;

/// Why a checkpoint could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The `.pt` file could not be read safely.
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        /// The checkpoint.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: Box<CheckpointError>,
    },
    /// Its tensors do not fit the config.
    #[error("checkpoint {path}: {source}")]
    Load {
        /// The checkpoint.
        path: PathBuf,
        /// What does not fit.
        #[source]
        source: Box<LoadError>,
    },
    /// The output folder already exists.
    #[error("{path} already exists; remove it or choose another --out")]
    Exists {
        /// The folder.
        path: PathBuf,
    },
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding `model.safetensors` failed.
    #[error("cannot encode {path}: {source}")]
    Encode {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
}

/// Reads a reference checkpoint's tensors (without `opt` and `inn.tmp_var_*`).
pub fn read_reference_checkpoint(path: &Path) -> Result<HashMap<String, RawTensor>, ConvertError> {
    let checkpoint = read_checkpoint(path, default_keep).map_err(|source| ConvertError::Read {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    Ok(checkpoint
        .tensors
        .into_iter()
        .map(|(key, t)| {
            let values = match t.values {
                Values::Float(v) => RawValues::Float(v),
                Values::Int(v) => RawValues::Int(v),
            };
            (
                key,
                RawTensor {
                    shape: t.shape,
                    dtype: t.dtype.name().to_string(),
                    values,
                },
            )
        })
        .collect())
}

/// Loads a reference checkpoint (`.pt`, zip or legacy) as a model of `config`.
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

/// What the model card says about the released file, when its name is one of them.
fn card(pt: &Path, config: &GcConfig, bytes: u64) -> String {
    let name = pt
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reported: &[(&str, &str, &str)] = &[
        ("beta_0.avg.pt", "0", "not reported"),
        ("beta_1.avg.pt", "1", "67.30 %"),
        ("beta_2.avg.pt", "2", "71.73 %"),
        ("beta_4.avg.pt", "4", "73.69 %"),
        ("beta_8.avg.pt", "8", "74.59 %"),
        ("beta_16.avg.pt", "16", "75.54 %"),
        ("beta_32.avg.pt", "32", "76.18 %"),
        ("beta_inf.avg.pt", "∞", "76.27 %"),
    ];
    let (beta, top1) = reported
        .iter()
        .find(|(file, _, _)| *file == name)
        .map(|(_, b, a)| (b.to_string(), a.to_string()))
        .unwrap_or_else(|| {
            (
                "unknown (not a released file name)".into(),
                "unknown".into(),
            )
        });
    format!(
        "# {name} converted for trustgc\n\n\
         - Source: `{name}` ({bytes} bytes), a checkpoint of the ImageNet generative classifier (IB-INN) of \
         Mackowiak, Ardizzone, Köthe and Rother, \"Generative Classifiers as a Basis for Trustworthy Image \
         Classification\" (CVPR 2021), released by the authors (https://github.com/RayDeeA/ibinn_imagenet).\n\
         - β of the IB objective: {beta}.\n\
         - Top-1 ImageNet validation accuracy reported in the paper (1 crop): {top1}. A public report \
         (ibinn_imagenet issue #7) measured much lower accuracy for some released files (β=2 0.56 %, \
         β=32 36.81 %, β=∞ 74.40 %); trustgc has not measured it.\n\
         - Architecture: {} classes, input {:?}, {} loss dimensions, low-rank k = {}.\n\
         - Converted by `trustgc convert`: optimizer state and saved activations dropped; permutation \
         matrices stored as index vectors; every key, shape and fixed tensor checked.\n\
         - Licence: the weights are the authors'; see their repository for the terms under which they \
         are released. trustgc's code is MIT-licensed.\n",
        config.n_classes, config.input_shape, config.n_loss_dims, config.mu_low_rank_k
    )
}

/// Converts the PyTorch checkpoint `pt` of a model with architecture `config` into the
/// model folder `out_dir` (`config.json`, `model.safetensors`, `README.md`), which must
/// not exist yet.
pub fn convert_checkpoint(
    pt: &Path,
    config: &GcConfig,
    out_dir: &Path,
) -> Result<(), ConvertError> {
    if out_dir.exists() {
        return Err(ConvertError::Exists {
            path: out_dir.to_path_buf(),
        });
    }
    let tensors = read_reference_checkpoint(pt)?;
    let native = reference_to_native(config, &tensors).map_err(|source| ConvertError::Load {
        path: pt.to_path_buf(),
        source: Box::new(source),
    })?;
    drop(tensors);
    let weights = out_dir.join("model.safetensors");
    let bytes = native_to_safetensors_bytes(&native).map_err(|source| ConvertError::Encode {
        path: weights.clone(),
        source,
    })?;
    let size = std::fs::metadata(pt).map(|m| m.len()).unwrap_or(0);

    let parent = out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io { path, source }
    };
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    let result = (|| {
        std::fs::write(partial.join("model.safetensors"), &bytes).map_err(io(&weights))?;
        std::fs::write(partial.join("config.json"), config.to_json())
            .map_err(io(&out_dir.join("config.json")))?;
        std::fs::write(partial.join("README.md"), card(pt, config, size))
            .map_err(io(&out_dir.join("README.md")))?;
        std::fs::File::open(partial.join("model.safetensors"))
            .and_then(|f| f.sync_all())
            .map_err(io(&weights))?;
        std::fs::rename(&partial, out_dir).map_err(io(out_dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}
