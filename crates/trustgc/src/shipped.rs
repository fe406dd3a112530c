//! Models shipped inside the crate (feature `shipped`, on by default): loadable by name
//! from any working directory and from an installed binary, with no files and no network.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use trustgc_core::{GcConfig, GenerativeClassifier};

use crate::classifier::Classifier;
use crate::weights::model_dir::write_manifest;
use crate::weights::model_dir::{ModelDirError, ModelFiles};

/// A model embedded in the crate (its folder in the trustgc repository is
/// `weights/<name>`, with a model card).
///
/// ```
/// use trustgc::burn::backend::Flex;
/// use trustgc::{Classifier, Shipped};
///
/// let model: Shipped = "fashion-mnist".parse()?;
/// assert_eq!(model, Shipped::FashionMnist);
/// let classifier = Classifier::<Flex>::shipped(model, &Default::default())?;
/// assert_eq!(classifier.config().class_names[9], "Ankle boot");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shipped {
    /// A small generative classifier (IB-INN) for Fashion-MNIST's 28 × 28 grayscale
    /// images of ten kinds of clothing: 618,867 parameters (2.5 MB), **90.93 %** accuracy
    /// on the Fashion-MNIST test set (1 crop, uniform prior; nll 0.7340 nats/dim,
    /// 8.880 bits/dim), with typicality statistics (`ood.json`) set for a 5 % false-alarm
    /// rate per test, which call 8.8 % of the test images out of distribution. Trained by
    /// the trustgc developers; its card (`weights/fashion-mnist/README.md` in the
    /// repository) says how, and what the verdicts catch and miss.
    FashionMnist,
}

impl Shipped {
    /// Every shipped model.
    pub const ALL: [Shipped; 1] = [Shipped::FashionMnist];

    /// Its name: `fashion-mnist` (also its folder under `weights/` in the repository).
    pub fn name(self) -> &'static str {
        match self {
            Shipped::FashionMnist => "fashion-mnist",
        }
    }

    /// The embedded `config.json`.
    pub fn config_json(self) -> &'static str {
        match self {
            Shipped::FashionMnist => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../weights/fashion-mnist/config.json"
            )),
        }
    }

    /// The embedded `model.safetensors` (trustgc's parameter names).
    pub fn model_safetensors(self) -> &'static [u8] {
        match self {
            Shipped::FashionMnist => include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../weights/fashion-mnist/model.safetensors"
            )),
        }
    }

    /// The embedded `ood.json`, when the model has one.
    pub fn ood_json(self) -> Option<&'static str> {
        match self {
            Shipped::FashionMnist => Some(include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../weights/fashion-mnist/ood.json"
            ))),
        }
    }

    /// The embedded `calibration.json` (the posterior's temperature), when the model has
    /// one.
    pub fn calibration_json(self) -> Option<&'static str> {
        match self {
            Shipped::FashionMnist => Some(include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../weights/fashion-mnist/calibration.json"
            ))),
        }
    }

    /// The embedded `checksums.sha256` (SHA-256 of the files above).
    pub fn manifest(self) -> &'static str {
        match self {
            Shipped::FashionMnist => include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../weights/fashion-mnist/checksums.sha256"
            )),
        }
    }

    /// The embedded files, checked against the embedded manifest.
    fn files(self) -> Result<ModelFiles<'static>, ModelDirError> {
        let dir = match self {
            Shipped::FashionMnist => Path::new("weights/fashion-mnist"),
        };
        let files = ModelFiles {
            dir,
            config: self.config_json(),
            weights: self.model_safetensors(),
            ood: self.ood_json(),
            calibration: self.calibration_json(),
            manifest: Some(self.manifest()),
            optional_read: true,
        };
        // The embedded bytes never change: checked once per process.
        static VERIFIED: [std::sync::OnceLock<bool>; Shipped::ALL.len()] =
            [const { std::sync::OnceLock::new() }; Shipped::ALL.len()];
        let index = Shipped::ALL.iter().position(|&m| m == self).unwrap_or(0);
        if *VERIFIED[index].get_or_init(|| files.verify().is_ok()) {
            Ok(files)
        } else {
            // Failed once: run the check again for its typed error.
            files.verify().map(|()| files)
        }
    }

    /// Its config.
    ///
    /// # Errors
    /// Never for the shipped files (a test checks them); the type is that of
    /// [`Classifier::from_dir`], with paths naming the files in the repository.
    pub fn config(self) -> Result<GcConfig, ModelDirError> {
        self.files()?.config()
    }

    /// The bare model on `device`: [`GenerativeClassifier`] without the classifier API.
    ///
    /// # Errors
    /// As [`Shipped::config`].
    pub fn model<B: Backend>(
        self,
        device: &B::Device,
    ) -> Result<GenerativeClassifier<B>, ModelDirError> {
        Ok(self.files()?.model(device)?.1)
    }

    /// Writes the model folder (`config.json`, `model.safetensors`, `ood.json`,
    /// `calibration.json`, `checksums.sha256`) into `dir`, creating it; existing regular files of those names
    /// are replaced (a link or device of those names is refused).
    ///
    /// # Errors
    /// [`ModelDirError`]: an embedded file that fails its checksum, or the write error
    /// naming the file.
    pub fn write_to(self, dir: &Path) -> Result<(), ModelDirError> {
        let files = self.files()?;
        std::fs::create_dir_all(dir).map_err(trustgc_io::WriteError::io(dir))?;
        let write = |name: &str, bytes: &[u8]| trustgc_io::write_file(&dir.join(name), &[], bytes);
        write("config.json", files.config.as_bytes())?;
        write("model.safetensors", files.weights)?;
        if let Some(ood) = files.ood {
            write("ood.json", ood.as_bytes())?;
        }
        if let Some(calibration) = files.calibration {
            write("calibration.json", calibration.as_bytes())?;
        }
        write_manifest(dir)
    }
}

/// Shows [`Shipped::name`].
impl fmt::Display for Shipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the shipped models.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a shipped model; the shipped models are: fashion-mnist")]
pub struct ParseShippedError {
    /// What was given.
    pub input: String,
}

/// Accepts [`Shipped::name`] (any case, `_` for `-`).
impl FromStr for Shipped {
    type Err = ParseShippedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase().replace('_', "-");
        Shipped::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| ParseShippedError {
                input: s.to_string(),
            })
    }
}

impl<B: Backend> Classifier<B> {
    /// Opens a model shipped inside the crate, with its out-of-distribution statistics:
    /// no files, no network, any working directory.
    ///
    /// ```
    /// use trustgc::burn::backend::Flex;
    /// use trustgc::{Classifier, Shipped};
    ///
    /// let classifier = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default())?;
    /// assert_eq!(classifier.config().input_shape, [4, 16, 16]);
    /// # Ok::<(), trustgc::ModelDirError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Shipped::config`].
    pub fn shipped(model: Shipped, device: &B::Device) -> Result<Self, ModelDirError> {
        model.files()?.classifier(device)
    }
}
