//! Finding and opening models named on the command line.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use trustgc::{Classifier, ModelDirError};

/// The model shipped in the repository and used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "fashion-mnist";

/// Where the shipped models live.
pub fn weights_dir() -> PathBuf {
    match std::env::var_os("TRUSTGC_WEIGHTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../weights"),
    }
}

/// A model folder from a name (`fashion-mnist`), a path, or a released model on the hub
/// (`hub:beta_8`, `hub:OWNER/NAME/beta_8`, optionally `@REVISION`), downloaded (and
/// converted) on first use. A hub reference that cannot be fetched is reported on stderr
/// and resolves to its own text, which then fails to open with a message naming it.
pub fn resolve(model: &str) -> PathBuf {
    if let Some(reference) = model.strip_prefix("hub:") {
        match fetch_hub(reference) {
            Ok(dir) => return dir,
            Err(e) => {
                eprintln!("error: {model}: {e}");
                std::process::exit(1);
            }
        }
    }
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

/// Downloads a released model from the hub: `VARIANT`, `OWNER/NAME/VARIANT`, with an
/// optional `@REVISION`.
pub fn fetch_hub(reference: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let mut options = trustgc::HubOptions::from_env();
    let (reference, revision) = match reference.split_once('@') {
        Some((r, rev)) => (r, Some(rev)),
        None => (reference, None),
    };
    if let Some(revision) = revision {
        options.revision = revision.to_string();
    }
    let variant = match reference.rsplit_once('/') {
        Some((repo, variant)) => {
            options.repo_id = repo.to_string();
            variant
        }
        None => reference,
    };
    let variant: trustgc::Pretrained = variant.parse()?;
    Ok(trustgc::fetch_model_dir(variant, &options)?)
}

/// Opens a model folder as a [`Classifier`].
pub fn classifier<B: Backend>(
    model: &str,
    device: &B::Device,
) -> Result<Classifier<B>, ModelDirError> {
    Classifier::from_dir(&resolve(model), device)
}

/// Loads the model in `dir` (config and weights, no OOD statistics).
pub use trustgc::classifier::load_model_dir as load;
