//! Model folders: `config.json` (the [`GcConfig`]), `model.safetensors` (trustgc's
//! parameter names, see [`super::safetensors`]) and, optionally, `ood.json` (the
//! [`OodStats`] behind the verdicts). `trustgc convert`, `trustgc train` and the hub all
//! produce them; [`Classifier::from_dir`] opens them.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use trustgc_core::{ConfigError, GcConfig, GenerativeClassifier};

use super::LoadError;
use super::safetensors::load_native_bytes;
use crate::classifier::Classifier;
use crate::ood::{OodCheckError, OodStats};

/// Why a model folder could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ModelDirError {
    /// A file is missing or unreadable.
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
        source: ConfigError,
    },
    /// `ood.json` parses but does not fit the model (or cannot be right).
    #[error("{path} does not fit the model: {source}; refit it with `trustgc fit-ood`")]
    OodMismatch {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: OodCheckError,
    },
    /// `ood.json` is not valid.
    #[error("{path} is not valid out-of-distribution statistics: {source}")]
    Ood {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The weights could not be loaded.
    #[error("{path}: {source}")]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<LoadError>,
    },
}

/// The contents of a model folder's files. `dir` names the folder in errors (for an
/// embedded model, the folder it was embedded from).
pub(crate) struct ModelFiles<'a> {
    pub dir: &'a Path,
    pub config: &'a str,
    pub weights: &'a [u8],
    pub ood: Option<&'a str>,
}

impl ModelFiles<'_> {
    /// Parses `config.json`.
    pub fn config(&self) -> Result<GcConfig, ModelDirError> {
        GcConfig::from_json(self.config).map_err(|source| ModelDirError::Config {
            path: self.dir.join("config.json"),
            source,
        })
    }

    /// Parses `ood.json` (when there is one) and checks it against a model of `classes`.
    pub fn ood(&self, classes: usize) -> Result<Option<OodStats>, ModelDirError> {
        let Some(text) = self.ood else {
            return Ok(None);
        };
        let path = self.dir.join("ood.json");
        let ood: OodStats = serde_json::from_str(text).map_err(|source| ModelDirError::Ood {
            path: path.clone(),
            source,
        })?;
        ood.check(classes)
            .map_err(|source| ModelDirError::OodMismatch { path, source })?;
        Ok(Some(ood))
    }

    /// The config and the model.
    pub fn model<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<(GcConfig, GenerativeClassifier<B>), ModelDirError> {
        let config = self.config()?;
        let path = self.dir.join("model.safetensors");
        let model =
            load_native_bytes(self.weights, Some(&path), &config, device).map_err(|source| {
                ModelDirError::Load {
                    path: path.clone(),
                    source: Box::new(source),
                }
            })?;
        Ok((config, model))
    }

    /// The classifier: model, config and, when present, out-of-distribution statistics.
    pub fn classifier<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<Classifier<B>, ModelDirError> {
        let (config, model) = self.model(device)?;
        let ood = self.ood(config.n_classes)?;
        let classifier = Classifier::new(config, model, device);
        Ok(match ood {
            Some(ood) => classifier.with_ood(ood).map_err(|source| {
                let path = self.dir.join("ood.json");
                ModelDirError::OodMismatch { path, source }
            })?,
            None => classifier,
        })
    }
}

/// A folder's files read from disk.
struct ReadFiles {
    dir: PathBuf,
    config: String,
    weights: Vec<u8>,
    ood: Option<String>,
}

impl ReadFiles {
    fn read(dir: &Path, with_ood: bool) -> Result<Self, ModelDirError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ModelDirError::Io { path, source })
        };
        let text = |name: &str| -> Result<String, ModelDirError> {
            let bytes = read(name)?;
            String::from_utf8(bytes).map_err(|e| ModelDirError::Io {
                path: dir.join(name),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })
        };
        let config = text("config.json")?;
        let weights = read("model.safetensors")?;
        let ood = if with_ood && dir.join("ood.json").exists() {
            Some(text("ood.json")?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            ood,
        })
    }

    fn files(&self) -> ModelFiles<'_> {
        ModelFiles {
            dir: &self.dir,
            config: &self.config,
            weights: &self.weights,
            ood: self.ood.as_deref(),
        }
    }
}

/// Reads `dir/config.json`.
///
/// # Errors
/// [`ModelDirError::Io`] or [`ModelDirError::Config`].
pub fn read_model_config(dir: &Path) -> Result<GcConfig, ModelDirError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ModelDirError::Io {
        path: path.clone(),
        source,
    })?;
    GcConfig::from_json(&text).map_err(|source| ModelDirError::Config { path, source })
}

/// Reads `dir/ood.json` if there is one (without checking it against a model).
///
/// # Errors
/// [`ModelDirError::Io`] or [`ModelDirError::Ood`].
pub fn read_ood(dir: &Path) -> Result<Option<OodStats>, ModelDirError> {
    let path = dir.join("ood.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ModelDirError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| ModelDirError::Ood { path, source })
}

/// Loads the model of a model folder: `config.json` and `model.safetensors` (trustgc
/// names); `ood.json` is not read.
///
/// # Errors
/// [`ModelDirError::Io`], [`ModelDirError::Config`] or [`ModelDirError::Load`].
pub fn load_model_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(GcConfig, GenerativeClassifier<B>), ModelDirError> {
    ReadFiles::read(dir, false)?.files().model(device)
}

impl<B: Backend> Classifier<B> {
    /// Opens a model folder: `config.json`, `model.safetensors` (trustgc names) and, when
    /// present, `ood.json`, which must fit the model.
    ///
    /// ```
    /// use trustgc::burn::backend::Flex;
    /// use trustgc::{Classifier, Shipped};
    ///
    /// // A model folder: here the shipped model, written out first.
    /// let dir = std::env::temp_dir().join(format!("trustgc-doc-from-dir-{}", std::process::id()));
    /// Shipped::FashionMnist.write_to(&dir)?;
    /// let classifier = Classifier::<Flex>::from_dir(&dir, &Default::default())?;
    /// assert_eq!(classifier.config().n_classes, 10);
    /// assert!(classifier.ood().is_some(), "ood.json was found");
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ModelDirError`] naming the file that is missing, unreadable or does not fit.
    pub fn from_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelDirError> {
        ReadFiles::read(dir, true)?.files().classifier(device)
    }
}
