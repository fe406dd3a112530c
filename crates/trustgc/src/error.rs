//! Errors of loading and saving models.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;
use trustgc_core::ConfigError;

/// A tensor whose shape differs from what the config implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The key in the file.
    pub key: String,
    /// The shape the config implies.
    pub expected: Vec<usize>,
    /// The shape in the file.
    pub found: Vec<usize>,
}

/// The keys of a checkpoint that do not match the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyReport {
    /// Keys the model needs that the file lacks.
    pub missing: Vec<String>,
    /// Keys in the file the model does not have.
    pub unexpected: Vec<String>,
    /// Keys present in both with different shapes.
    pub misshaped: Vec<ShapeMismatch>,
}

impl KeyReport {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        let mut parts = Vec::new();
        let list = |keys: &[String]| {
            let mut text = keys
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if keys.len() > SHOWN {
                text.push_str(&format!(", ... ({} more)", keys.len() - SHOWN));
            }
            text
        };
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} missing: {}",
                self.missing.len(),
                list(&self.missing)
            ));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected: {}",
                self.unexpected.len(),
                list(&self.unexpected)
            ));
        }
        if !self.misshaped.is_empty() {
            let shown: Vec<String> = self
                .misshaped
                .iter()
                .take(SHOWN)
                .map(|m| format!("{} (expected {:?}, found {:?})", m.key, m.expected, m.found))
                .collect();
            let mut text = shown.join(", ");
            if self.misshaped.len() > SHOWN {
                text.push_str(&format!(", ... ({} more)", self.misshaped.len() - SHOWN));
            }
            parts.push(format!("{} mis-shaped: {}", self.misshaped.len(), text));
        }
        write!(f, "{}", parts.join("; "))
    }
}

/// Why a model could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file.
    #[error("{path} is not a valid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The checkpoint's keys or shapes do not match the config.
    #[error(
        "checkpoint does not match the model config: {report} (is it the checkpoint of another architecture, or is the config wrong?)"
    )]
    Keys {
        /// What is missing, unexpected or mis-shaped.
        report: KeyReport,
    },
    /// A tensor has a dtype the model cannot use.
    #[error("tensor `{key}` has dtype {found}; expected {expected}")]
    DType {
        /// The key.
        key: String,
        /// The dtype in the file.
        found: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A tensor holds NaN or infinite values.
    #[error("tensor `{key}` holds {count} non-finite values (NaN or infinity)")]
    NonFinite {
        /// The key.
        key: String,
        /// How many.
        count: usize,
    },
    /// A fixed tensor (permutation, Haar, DCT, unshuffle kernels) is not what the
    /// architecture defines.
    #[error("fixed tensor `{key}` is not the {what} the architecture defines: {reason}")]
    FixedTensor {
        /// The key.
        key: String,
        /// What it should be.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
}
