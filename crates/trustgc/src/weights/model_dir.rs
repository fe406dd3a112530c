//! Model folders: `config.json` (the [`GcConfig`]), `model.safetensors` (trustgc's
//! parameter names, see [`super::safetensors`]), optionally `ood.json` (the
//! [`OodStats`] behind the verdicts) and `calibration.json` (the temperature of
//! [`crate::calibration`]), and `checksums.sha256`, the SHA-256 of each of those files in `sha256sum`'s format ([`trustgc_io::Manifest`]). `trustgc convert`,
//! `trustgc train` and the hub all produce them; [`Classifier::from_dir`] opens them.
//!
//! Integrity: when a folder has a manifest, every file read from it must be listed there
//! with the SHA-256 of the bytes read ([`ModelDirError::Manifest`] names the file
//! otherwise), so a flipped byte in the weights is an error, not a different model. A
//! folder without a manifest (made by hand, or by trustgc before 0.1) still loads; write
//! one with [`write_manifest`]. Files are read only if they are regular files under the
//! size caps of [`trustgc_io::Cap`].

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use trustgc_core::{ConfigError, GcConfig, GenerativeClassifier};

use trustgc_io::{Cap, MANIFEST, Manifest, read_capped, read_text_capped};

use super::LoadError;
use super::safetensors::load_native_bytes;
use crate::calibration::TemperatureScaling;
use crate::classifier::Classifier;
use crate::ood::{OodCheckError, OodStats};

/// Why a model folder could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ModelDirError {
    /// A file is missing, unreadable, not a regular file or over its size cap.
    #[error(transparent)]
    Io(#[from] trustgc_io::ReadError),
    /// A file does not match the folder's `checksums.sha256` (or is not listed there), or
    /// the manifest is malformed.
    #[error(transparent)]
    Manifest(#[from] trustgc_io::ManifestError),
    /// A file of the folder could not be written (the error names it).
    #[error(transparent)]
    Write(#[from] trustgc_io::WriteError),
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
    /// [`write_model_file`] was asked for a file that is not one of [`MODEL_FILES`].
    #[error("`{name}` is not one of a model folder's files ({})", MODEL_FILES.join(", "))]
    NotAModelFile {
        /// The name given.
        name: String,
    },
    /// `calibration.json` is not valid temperature scaling.
    #[error("{path} is not a valid calibration: {source}")]
    Calibration {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// `calibration.json` parses but cannot be right.
    #[error("{path}: {source}; refit it with `trustgc calibrate`")]
    CalibrationCheck {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: crate::calibration::CalibrationCheckError,
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
    /// `calibration.json`, when the folder has one.
    pub calibration: Option<&'a str>,
    /// `checksums.sha256`, when the folder has one.
    pub manifest: Option<&'a str>,
    /// Whether `ood.json` and `calibration.json` were looked for (a listed one that is
    /// absent is then an error).
    pub optional_read: bool,
}

impl ModelFiles<'_> {
    /// Checks every file against the manifest, when there is one.
    pub fn verify(&self) -> Result<(), ModelDirError> {
        let Some(text) = self.manifest else {
            return Ok(());
        };
        let manifest = Manifest::parse(text, &self.dir.join(MANIFEST))?;
        manifest.verify(self.dir, "config.json", self.config.as_bytes())?;
        manifest.verify(self.dir, "model.safetensors", self.weights)?;
        for (name, file) in [
            ("ood.json", self.ood),
            ("calibration.json", self.calibration),
        ] {
            match file {
                Some(text) => manifest.verify(self.dir, name, text.as_bytes())?,
                None if self.optional_read && manifest.files.contains_key(name) => {
                    return Err(trustgc_io::ManifestError::Missing {
                        path: self.dir.join(name),
                    }
                    .into());
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Parses and checks `calibration.json`, when there is one.
    pub fn calibration(&self) -> Result<Option<TemperatureScaling>, ModelDirError> {
        let Some(text) = self.calibration else {
            return Ok(None);
        };
        let path = self.dir.join("calibration.json");
        let scaling: TemperatureScaling =
            serde_json::from_str(text).map_err(|source| ModelDirError::Calibration {
                path: path.clone(),
                source,
            })?;
        scaling
            .check()
            .map_err(|source| ModelDirError::CalibrationCheck { path, source })?;
        Ok(Some(scaling))
    }

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
        let calibration = self.calibration()?;
        let classifier = Classifier::new(config, model, device)
            .with_temperature(calibration)
            .map_err(|source| ModelDirError::CalibrationCheck {
                path: self.dir.join("calibration.json"),
                source,
            })?;
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
    calibration: Option<String>,
    manifest: Option<String>,
    with_ood: bool,
}

/// Whether `path` names something (a link to nothing counts: reading it then fails loudly).
fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

impl ReadFiles {
    /// Reads the folder's files and checks them against its manifest.
    fn read(dir: &Path, with_ood: bool) -> Result<Self, ModelDirError> {
        let text = |name: &str| read_text_capped(&dir.join(name), Cap::JSON);
        let optional = |name: &str| -> Result<Option<String>, ModelDirError> {
            Ok(if present(&dir.join(name)) {
                Some(text(name)?)
            } else {
                None
            })
        };
        let files = Self {
            dir: dir.to_path_buf(),
            config: text("config.json")?,
            weights: read_capped(&dir.join("model.safetensors"), Cap::TENSORS)?,
            ood: if with_ood {
                optional("ood.json")?
            } else {
                None
            },
            calibration: if with_ood {
                optional("calibration.json")?
            } else {
                None
            },
            manifest: optional(MANIFEST)?,
            with_ood,
        };
        files.files().verify()?;
        Ok(files)
    }

    fn files(&self) -> ModelFiles<'_> {
        ModelFiles {
            dir: &self.dir,
            config: &self.config,
            weights: &self.weights,
            ood: self.ood.as_deref(),
            calibration: self.calibration.as_deref(),
            manifest: self.manifest.as_deref(),
            optional_read: self.with_ood,
        }
    }
}

/// `dir/name` as text, checked against the folder's manifest when it has one.
fn verified_text(dir: &Path, name: &str) -> Result<String, ModelDirError> {
    let text = read_text_capped(&dir.join(name), Cap::JSON)?;
    if let Some(manifest) = Manifest::read(dir)? {
        manifest.verify(dir, name, text.as_bytes())?;
    }
    Ok(text)
}

/// The files of a model folder that [`write_model_file`] writes and the manifest covers.
pub const MODEL_FILES: [&str; 4] = [
    "config.json",
    "model.safetensors",
    "ood.json",
    "calibration.json",
];

/// Writes (or rewrites) `dir/checksums.sha256` for the folder's model files as they are
/// now: those of `config.json`, `model.safetensors`, `ood.json` and `calibration.json`
/// (the files a load reads) that are present. Call it after changing one of them by hand.
///
/// # Errors
/// [`ModelDirError::Io`] for a file that cannot be read, [`ModelDirError::Manifest`] when
/// the manifest cannot be written.
pub fn write_manifest(dir: &Path) -> Result<(), ModelDirError> {
    let mut manifest = Manifest::default();
    for name in MODEL_FILES {
        let cap = if name == "model.safetensors" {
            Cap::TENSORS
        } else {
            Cap::JSON
        };
        let path = dir.join(name);
        if !present(&path) {
            continue;
        }
        let digest = trustgc_io::Sha256Digest::of_file(&path, cap)?;
        manifest.files.insert(name.to_owned(), digest);
    }
    manifest.write(dir)?;
    Ok(())
}

/// Writes one model file of `dir` atomically (`name` is one of [`MODEL_FILES`]) and
/// records its digest in the folder's manifest:
/// the one entry is updated when there is a manifest, else a manifest of all the
/// folder's model files is written.
///
/// # Errors
/// [`ModelDirError::Write`], [`ModelDirError::Manifest`] or [`ModelDirError::Io`].
pub fn write_model_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ModelDirError> {
    if !MODEL_FILES.contains(&name) {
        return Err(ModelDirError::NotAModelFile {
            name: name.to_string(),
        });
    }
    trustgc_io::write_file(&dir.join(name), &[], bytes)?;
    match Manifest::read(dir)? {
        Some(mut manifest) => {
            manifest.insert(name, bytes);
            manifest.write(dir)?;
            Ok(())
        }
        None => write_manifest(dir),
    }
}

/// Reads `dir/config.json`.
///
/// # Errors
/// [`ModelDirError::Io`] or [`ModelDirError::Config`].
pub fn read_model_config(dir: &Path) -> Result<GcConfig, ModelDirError> {
    let path = dir.join("config.json");
    let text = verified_text(dir, "config.json")?;
    GcConfig::from_json(&text).map_err(|source| ModelDirError::Config { path, source })
}

/// Reads `dir/ood.json` if there is one (without checking it against a model).
///
/// # Errors
/// [`ModelDirError::Io`] or [`ModelDirError::Ood`].
pub fn read_ood(dir: &Path) -> Result<Option<OodStats>, ModelDirError> {
    let path = dir.join("ood.json");
    if !present(&path) {
        return Ok(None);
    }
    let text = verified_text(dir, "ood.json")?;
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
    /// present, `ood.json` (which must fit the model) and `calibration.json` (the
    /// posterior's temperature), all checked against `checksums.sha256` when the folder
    /// has one.
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
