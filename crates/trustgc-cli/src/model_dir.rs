//! Finding and opening models named on the command line.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use trustgc::{Classifier, GcConfig, GenerativeClassifier, ModelDirError, Shipped};

/// The shipped model used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "fashion-mnist";

/// A model named on the command line.
#[derive(Clone, Debug)]
pub enum ModelRef {
    /// A model shipped inside the binary (no files needed).
    Shipped(Shipped),
    /// A model folder (config.json, model.safetensors, optionally ood.json), given or
    /// downloaded from the hub.
    Dir(PathBuf),
}

/// Why a model named on the command line could not be found or opened.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `hub:REFERENCE` names no released model.
    #[error("hub:{reference}: not a released model")]
    UnknownRelease {
        /// The reference after `hub:`.
        reference: String,
        /// Why it does not parse.
        #[source]
        source: <trustgc::Pretrained as std::str::FromStr>::Err,
    },
    /// The released model could not be downloaded or converted.
    #[error("hub:{reference}: cannot fetch the model")]
    Hub {
        /// The reference after `hub:`.
        reference: String,
        /// Why.
        #[source]
        source: Box<trustgc::HubError>,
    },
    /// A shipped model failed to load.
    #[error("the shipped model {model} does not load")]
    Shipped {
        /// Which.
        model: Shipped,
        /// Why.
        #[source]
        source: Box<ModelDirError>,
    },
    /// A model folder failed to open.
    #[error(transparent)]
    Dir(Box<ModelDirError>),
    /// A command that writes into the model folder was given a shipped model.
    #[error(
        "{model} is the model shipped inside the binary and cannot be written to; give a model folder (its copy in the repository is weights/{model})"
    )]
    ShippedIsReadOnly {
        /// Which.
        model: Shipped,
    },
}

impl From<ModelDirError> for ModelError {
    fn from(e: ModelDirError) -> Self {
        ModelError::Dir(Box::new(e))
    }
}

impl ModelError {
    /// Wraps an error of the shipped `model`.
    fn shipped(model: Shipped) -> impl Fn(ModelDirError) -> ModelError {
        move |source| ModelError::Shipped {
            model,
            source: Box::new(source),
        }
    }
}

/// A model from a folder path, a shipped model's name (`fashion-mnist`, built into the
/// binary), or a released model on the hub (`hub:beta_8`, `hub:OWNER/NAME/beta_8`,
/// optionally `@REVISION`), downloaded (and converted) on first use. A folder of the
/// same name as a shipped model wins. Anything else is taken as a folder, which then
/// fails to open with a message naming it.
pub fn resolve(model: &str) -> Result<ModelRef, ModelError> {
    if let Some(reference) = model.strip_prefix("hub:") {
        return Ok(ModelRef::Dir(fetch_hub(reference)?));
    }
    let path = Path::new(model);
    match model.parse::<Shipped>() {
        Ok(shipped) if !path.is_dir() => Ok(ModelRef::Shipped(shipped)),
        _ => Ok(ModelRef::Dir(path.to_path_buf())),
    }
}

impl ModelRef {
    /// The model folder, for commands that write into it.
    pub fn writable_dir(self) -> Result<PathBuf, ModelError> {
        match self {
            ModelRef::Dir(dir) => Ok(dir),
            ModelRef::Shipped(model) => Err(ModelError::ShippedIsReadOnly { model }),
        }
    }

    /// Opens the model as a [`Classifier`] (with its OOD statistics, if any).
    pub fn classifier<B: Backend>(&self, device: &B::Device) -> Result<Classifier<B>, ModelError> {
        match self {
            &ModelRef::Shipped(model) => {
                Classifier::shipped(model, device).map_err(ModelError::shipped(model))
            }
            ModelRef::Dir(dir) => Ok(Classifier::from_dir(dir, device)?),
        }
    }

    /// The model's config and network (a folder's OOD statistics are not read).
    pub fn load<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<(GcConfig, GenerativeClassifier<B>), ModelError> {
        match self {
            &ModelRef::Shipped(model) => Ok((
                model.config().map_err(ModelError::shipped(model))?,
                model.model(device).map_err(ModelError::shipped(model))?,
            )),
            ModelRef::Dir(dir) => Ok(load(dir, device)?),
        }
    }

    /// The model's config.
    pub fn config(&self) -> Result<GcConfig, ModelError> {
        match self {
            &ModelRef::Shipped(model) => model.config().map_err(ModelError::shipped(model)),
            ModelRef::Dir(dir) => Ok(trustgc::weights::model_dir::read_model_config(dir)?),
        }
    }
}

/// Downloads a released model from the hub: `VARIANT`, `OWNER/NAME/VARIANT`, with an
/// optional `@REVISION`.
pub fn fetch_hub(reference: &str) -> Result<PathBuf, ModelError> {
    let mut options = trustgc::HubOptions::from_env();
    let (name, revision) = match reference.split_once('@') {
        Some((r, rev)) => (r, Some(rev)),
        None => (reference, None),
    };
    if let Some(revision) = revision {
        options.revision = revision.to_string();
    }
    let variant = match name.rsplit_once('/') {
        Some((repo, variant)) => {
            options.repo_id = repo.to_string();
            variant
        }
        None => name,
    };
    let variant: trustgc::Pretrained =
        variant
            .parse()
            .map_err(|source| ModelError::UnknownRelease {
                reference: reference.to_string(),
                source,
            })?;
    trustgc::fetch_model_dir(variant, &options).map_err(|source| ModelError::Hub {
        reference: reference.to_string(),
        source: Box::new(source),
    })
}

/// Loads the model in `dir` (config and weights, no OOD statistics).
pub use trustgc::weights::model_dir::load_model_dir as load;
