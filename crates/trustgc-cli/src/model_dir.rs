//! A model folder: `config.json` (a `GcConfig`) and `model.safetensors` (trustgc names).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use trustgc::LoadError;
use trustgc::native::load_safetensors;
use trustgc_core::{GcConfig, GenerativeClassifier};

/// Why a model folder could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ModelDirError {
    /// `config.json` is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a valid config.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parse or validation error.
        #[source]
        source: trustgc_core::ConfigError,
    },
    /// The weights could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Reads `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<GcConfig, ModelDirError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ModelDirError::Io {
        path: path.clone(),
        source,
    })?;
    GcConfig::from_json(&text).map_err(|source| ModelDirError::Config { path, source })
}

/// Loads the model in `dir`.
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(GcConfig, GenerativeClassifier<B>), ModelDirError> {
    let config = read_config(dir)?;
    let model = load_safetensors(&dir.join("model.safetensors"), &config, device)?;
    Ok((config, model))
}
