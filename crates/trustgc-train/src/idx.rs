//! The IDX files of MNIST and Fashion-MNIST (`*-images-idx3-ubyte[.gz]`,
//! `*-labels-idx1-ubyte[.gz]`), gzip-compressed or not.

use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why an IDX file could not be read.
#[derive(Debug, Error)]
pub enum IdxError {
    /// The file could not be read or decompressed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS or gzip error.
        #[source]
        source: std::io::Error,
    },
    /// The header is not an IDX header of the expected kind.
    #[error("{path} is not an IDX {expected} file (magic number {found:#010x})")]
    Magic {
        /// The file.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
        /// The number found.
        found: u32,
    },
    /// The header's sizes disagree with the data that follows.
    #[error("{path}: the header declares {declared} bytes of data but the file holds {found}")]
    Size {
        /// The file.
        path: PathBuf,
        /// Bytes the header declares.
        declared: u128,
        /// Bytes present.
        found: usize,
    },
    /// An image file declares images of no pixels (rows or columns 0).
    #[error("{path}: the header declares images of {rows}x{cols} pixels")]
    EmptyImages {
        /// The file.
        path: PathBuf,
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },
}

/// Images of an IDX file: `count` images of `rows x cols` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count · rows · cols` pixel values.
    pub pixels: Vec<u8>,
}

/// Largest decompressed file we accept (the Fashion-MNIST training images are 47 MB).
const MAX_BYTES: u64 = 1 << 31;

fn read_bytes(path: &Path) -> Result<Vec<u8>, IdxError> {
    let io = |source| IdxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = trustgc_io::read_capped(path, trustgc_io::Cap::DATASET).map_err(|e| {
        let path = e.path().to_path_buf();
        IdxError::Io {
            path,
            source: e.into_io(),
        }
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .take(MAX_BYTES)
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(
    path: &Path,
    bytes: &[u8],
    magic: u32,
    dims: usize,
    expected: &'static str,
) -> Result<Vec<usize>, IdxError> {
    let word = |i: usize| {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let found = word(0).unwrap_or(0);
    if found != magic {
        return Err(IdxError::Magic {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    let sizes: Option<Vec<usize>> = (1..=dims).map(|i| word(i).map(|w| w as usize)).collect();
    let sizes = sizes.ok_or(IdxError::Size {
        path: path.to_path_buf(),
        declared: 0,
        found: bytes.len(),
    })?;
    let declared: u128 = sizes.iter().map(|&s| s as u128).product();
    let data = bytes.len().saturating_sub(4 * (dims + 1));
    if declared != data as u128 {
        return Err(IdxError::Size {
            path: path.to_path_buf(),
            declared,
            found: data,
        });
    }
    Ok(sizes)
}

/// Reads an `idx3-ubyte` image file.
pub fn read_images(path: &Path) -> Result<IdxImages, IdxError> {
    let bytes = read_bytes(path)?;
    let sizes = header(path, &bytes, 0x0000_0803, 3, "image (idx3-ubyte)")?;
    if sizes[1] == 0 || sizes[2] == 0 {
        return Err(IdxError::EmptyImages {
            path: path.to_path_buf(),
            rows: sizes[1],
            cols: sizes[2],
        });
    }
    Ok(IdxImages {
        count: sizes[0],
        rows: sizes[1],
        cols: sizes[2],
        pixels: bytes[16..].to_vec(),
    })
}

/// Reads an `idx1-ubyte` label file.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, IdxError> {
    let bytes = read_bytes(path)?;
    header(path, &bytes, 0x0000_0801, 1, "label (idx1-ubyte)")?;
    Ok(bytes[8..].to_vec())
}
