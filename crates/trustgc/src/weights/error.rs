//! Errors of loading and saving weights, and the report of keys that do not fit.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use thiserror::Error;
use trustgc_core::ConfigError;

use super::{DType, Tensor};

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

/// Anything with a shape: a decoded [`Tensor`], or just the shape read from a header.
pub trait Shaped {
    /// The shape.
    fn shape(&self) -> &[usize];
}

impl Shaped for Tensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl Shaped for Vec<usize> {
    fn shape(&self) -> &[usize] {
        self
    }
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
    /// Compares the keys and shapes a model needs (`expected`, in order) with the tensors
    /// of a file. Keys of the file that `ignored` accepts are neither used nor unexpected.
    /// `missing` and `misshaped` follow `expected`'s order, `unexpected` is sorted.
    ///
    /// Both the native and the reference loaders build their report here.
    pub fn compare<'a, T: Shaped>(
        expected: impl IntoIterator<Item = (&'a str, &'a [usize])>,
        tensors: &HashMap<String, T>,
        ignored: impl Fn(&str) -> bool,
    ) -> Self {
        let mut report = KeyReport::default();
        let mut known = HashSet::new();
        for (key, shape) in expected {
            known.insert(key);
            match tensors.get(key) {
                None => report.missing.push(key.to_string()),
                Some(tensor) if tensor.shape() != shape => report.misshaped.push(ShapeMismatch {
                    key: key.to_string(),
                    expected: shape.to_vec(),
                    found: tensor.shape().to_vec(),
                }),
                Some(_) => {}
            }
        }
        report.unexpected = tensors
            .keys()
            .filter(|key| !known.contains(key.as_str()) && !ignored(key))
            .cloned()
            .collect();
        report.unexpected.sort();
        report
    }

    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }

    /// `Ok` when nothing is wrong, else [`LoadError::Keys`] with this report.
    pub fn into_result(self) -> Result<(), LoadError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Keys { report: self })
        }
    }
}

/// At most this many keys of each kind are shown in a report's message.
const SHOWN: usize = 10;

/// Writes `items` separated by commas, at most [`SHOWN`] of them, then how many more.
fn write_list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    mut item: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for (i, value) in items.iter().take(SHOWN).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        item(f, value)?;
    }
    if items.len() > SHOWN {
        write!(f, ", ... ({} more)", items.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut separator = |f: &mut fmt::Formatter<'_>| {
            let result = if first { Ok(()) } else { f.write_str("; ") };
            first = false;
            result
        };
        if !self.missing.is_empty() {
            separator(f)?;
            write!(f, "{} missing: ", self.missing.len())?;
            write_list(f, &self.missing, |f, key| f.write_str(key))?;
        }
        if !self.unexpected.is_empty() {
            separator(f)?;
            write!(f, "{} unexpected: ", self.unexpected.len())?;
            write_list(f, &self.unexpected, |f, key| f.write_str(key))?;
        }
        if !self.misshaped.is_empty() {
            separator(f)?;
            write!(f, "{} mis-shaped: ", self.misshaped.len())?;
            write_list(f, &self.misshaped, |f, m| {
                write!(
                    f,
                    "{} (expected {:?}, found {:?})",
                    m.key, m.expected, m.found
                )
            })?;
        }
        Ok(())
    }
}

/// What is wrong with a fixed tensor (a permutation, Haar, DCT or unshuffle kernel).
#[derive(Clone, Debug, PartialEq, Error)]
pub enum FixedTensorProblem {
    /// A permutation index outside `0..len`.
    #[error("index {index} is outside 0..{len}")]
    IndexOutOfRange {
        /// The index.
        index: i64,
        /// The number of channels.
        len: usize,
    },
    /// A row of a permutation matrix with a second 1.
    #[error(
        "row {row} has a second 1 at column {column}; a permutation matrix has a single 1 per row"
    )]
    SecondOne {
        /// The row.
        row: usize,
        /// The column of the second 1.
        column: usize,
    },
    /// An entry of a permutation matrix that is neither 0 nor 1.
    #[error(
        "row {row} holds {value} at column {column}; a permutation matrix has a single 1 per row and zeros elsewhere"
    )]
    NotZeroOrOne {
        /// The row.
        row: usize,
        /// The column.
        column: usize,
        /// The value.
        value: f64,
    },
    /// A row of a permutation matrix without a 1.
    #[error("row {row} has no 1")]
    RowWithoutOne {
        /// The row.
        row: usize,
    },
    /// A column of a permutation matrix with two 1s.
    #[error("column {column} holds two 1s")]
    ColumnWithTwoOnes {
        /// The column.
        column: usize,
    },
    /// A value further from the closed form than the tolerance (the worst one).
    #[error("value {index} is {found} but should be {expected} (tolerance {tolerance})")]
    Value {
        /// Its position, row-major.
        index: usize,
        /// The value in the file.
        found: f64,
        /// The closed form's value.
        expected: f64,
        /// The tolerance.
        tolerance: f64,
    },
    /// A permutation that holds an index twice.
    #[error("index {index} appears twice; a permutation holds each index once")]
    Repeated {
        /// The repeated index.
        index: i64,
    },
    /// An inverse permutation that does not undo its permutation.
    #[error("it does not undo the permutation (`w`, `permutation`) at channel {channel}")]
    NotInverse {
        /// The first channel where it does not.
        channel: usize,
    },
}

/// Why a model could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read (missing, unreadable, not a regular file, too large).
    #[error(transparent)]
    Io(#[from] trustgc_io::ReadError),
    /// The file (or buffer) is not a valid safetensors file.
    #[error("{} is not a valid safetensors file: {source}", WhereFrom(.path))]
    Safetensors {
        /// The file; `None` for bytes in memory.
        path: Option<PathBuf>,
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
    /// A safetensors tensor whose dtype no loader reads (unsigned wider than 8 bits, 8-bit
    /// floats, ...).
    #[error(
        "tensor `{key}` has dtype {found:?}; expected a float (f16, bf16, f32, f64) or integer (bool, u8, i8, i16, i32, i64) dtype"
    )]
    UnsupportedDType {
        /// The key.
        key: String,
        /// The dtype in the file.
        found: safetensors::Dtype,
    },
    /// A tensor has a dtype the model cannot use.
    #[error("tensor `{key}` has dtype {found}; expected {expected}")]
    DType {
        /// The key.
        key: String,
        /// The dtype in the file.
        found: DType,
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
    /// A tensor that cannot be negative (a BatchNorm running variance or batch count)
    /// holds a negative value.
    #[error("tensor `{key}` is {what} but holds {value} at index {index}; it cannot be negative")]
    Negative {
        /// The key.
        key: String,
        /// What the tensor is.
        what: &'static str,
        /// The first negative value's position.
        index: usize,
        /// The value.
        value: f64,
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
        reason: FixedTensorProblem,
    },
}

/// Shows a file's path, or says that the bytes came from memory.
struct WhereFrom<'a>(&'a Option<PathBuf>);

impl fmt::Display for WhereFrom<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}", path.display()),
            None => f.write_str("the buffer"),
        }
    }
}

/// Why a model could not be saved.
#[derive(Debug, Error)]
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
    /// The output was refused or could not be written atomically.
    #[error(transparent)]
    Write(#[from] trustgc_io::WriteError),
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
