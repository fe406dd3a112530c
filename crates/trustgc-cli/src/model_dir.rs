//! Finding and opening models named on the command line.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use trustgc::classifier::read_model_config;
use trustgc::{Classifier, ModelDirError};
use trustgc_core::GenerativeClassifier;

/// The model shipped in the repository and used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "fashion-mnist";

/// Where the shipped models live.
pub fn weights_dir() -> PathBuf {
    match std::env::var_os("TRUSTGC_WEIGHTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../weights"),
    }
}

/// A model folder from a name (`fashion-mnist`) or a path.
pub fn resolve(model: &str) -> PathBuf {
    let path = Path::new(model);
    if path.is_dir() {
        return path.to_path_buf();
    }
    let shipped = weights_dir().join(model);
    if shipped.is_dir() {
        return shipped;
    }
    path.to_path_buf()
}

/// Opens a model folder as a [`Classifier`].
pub fn classifier<B: Backend>(
    model: &str,
    device: &B::Device,
) -> Result<Classifier<B>, ModelDirError> {
    Classifier::from_dir(&resolve(model), device)
}

/// Loads the model in `dir` (config and weights, no OOD statistics).
pub fn load<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(trustgc_core::GcConfig, GenerativeClassifier<B>), ModelDirError> {
    let config = read_model_config(dir)?;
    let model = trustgc::native::load_safetensors(&dir.join("model.safetensors"), &config, device)?;
    Ok((config, model))
}
