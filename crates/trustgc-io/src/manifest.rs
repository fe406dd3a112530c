//! SHA-256 manifests of model folders: `checksums.sha256`, in the format of `sha256sum`
//! (so `sha256sum -c checksums.sha256` checks a folder by hand too).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::read::{Cap, ReadError, open_regular, read_text_capped};
use crate::write::{WriteError, write_file};

/// The manifest's file name in a model folder.
pub const MANIFEST: &str = "checksums.sha256";

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest of a regular file, read in blocks (at most `cap` bytes).
    ///
    /// # Errors
    /// [`ReadError`] naming the file.
    pub fn of_file(path: &Path, cap: Cap) -> Result<Self, ReadError> {
        let mut file = open_regular(path, cap)?.file;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|source| ReadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Self(hasher.finalize().into()))
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            *o = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

/// A SHA-256 computed over data that arrives in pieces (a download).
#[derive(Clone, Debug, Default)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    /// Adds the next piece.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of all pieces.
    pub fn finish(self) -> Sha256Digest {
        Sha256Digest(self.0.finalize().into())
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

/// Why a manifest could not be used or a file did not match it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The manifest could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A line of the manifest is not `<64 hex digits>  <file name>`, or names a path
    /// rather than a file of the folder, or names a file twice.
    #[error("{path}, line {line}: not a `<sha256>  <file name>` line of a file in this folder")]
    Malformed {
        /// The manifest.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
    },
    /// A file's bytes are not those the manifest records: it was changed or corrupted
    /// after the folder was written.
    #[error(
        "{path} is corrupt or was changed: its SHA-256 is {actual}, the folder's {MANIFEST} \
         records {expected}"
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The recorded digest.
        expected: Sha256Digest,
        /// The digest of the bytes read.
        actual: Sha256Digest,
    },
    /// The folder has a manifest that does not list a file that was read.
    #[error("{path} is not listed in the folder's {MANIFEST}, so it cannot be checked")]
    Unlisted {
        /// The file.
        path: PathBuf,
    },
    /// The manifest lists a file the folder no longer has (deleting `ood.json` would
    /// otherwise silently switch the verdicts off).
    #[error("{path} is missing, but the folder's {MANIFEST} lists it")]
    Missing {
        /// The file.
        path: PathBuf,
    },
}

/// A folder's manifest: file name → SHA-256.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The digests by file name.
    pub files: BTreeMap<String, Sha256Digest>,
}

fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0', '\n', '\r'])
}

impl Manifest {
    /// Parses a manifest's text (`path` names it in errors). Lines are `sha256sum`'s:
    /// `<hex>  <name>` or `<hex> *<name>`; blank lines are skipped.
    ///
    /// # Errors
    /// [`ManifestError::Malformed`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let mut files = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let malformed = || ManifestError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
            };
            let (hex, rest) = line.split_at_checked(64).ok_or_else(malformed)?;
            let digest = Sha256Digest::from_hex(hex).ok_or_else(malformed)?;
            let name = rest
                .strip_prefix("  ")
                .or_else(|| rest.strip_prefix(" *"))
                .filter(|n| plain_name(n))
                .ok_or_else(malformed)?;
            if files.insert(name.to_owned(), digest).is_some() {
                return Err(malformed());
            }
        }
        Ok(Self { files })
    }

    /// The manifest's text, one `sha256sum` line per file, sorted by name.
    pub fn to_text(&self) -> String {
        self.files
            .iter()
            .map(|(name, digest)| format!("{digest}  {name}\n"))
            .collect()
    }

    /// Reads `dir/checksums.sha256` if the folder has one.
    ///
    /// # Errors
    /// [`ManifestError::Read`] or [`ManifestError::Malformed`].
    pub fn read(dir: &Path) -> Result<Option<Self>, ManifestError> {
        let path = dir.join(MANIFEST);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => {}
        }
        let text = read_text_capped(&path, Cap::JSON)?;
        Self::parse(&text, &path).map(Some)
    }

    /// Records `bytes` as the content of file `name`.
    pub fn insert(&mut self, name: &str, bytes: &[u8]) {
        self.files.insert(name.to_owned(), Sha256Digest::of(bytes));
    }

    /// Checks the bytes read from `dir/name` against the record.
    ///
    /// # Errors
    /// [`ManifestError::Unlisted`] or [`ManifestError::Mismatch`], naming the file.
    pub fn verify(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ManifestError> {
        let path = dir.join(name);
        let expected = *self
            .files
            .get(name)
            .ok_or(ManifestError::Unlisted { path: path.clone() })?;
        let actual = Sha256Digest::of(bytes);
        if actual != expected {
            return Err(ManifestError::Mismatch {
                path,
                expected,
                actual,
            });
        }
        Ok(())
    }

    /// Writes the manifest into `dir` atomically.
    ///
    /// # Errors
    /// [`ManifestError::Write`].
    pub fn write(&self, dir: &Path) -> Result<(), ManifestError> {
        write_file(&dir.join(MANIFEST), &[], self.to_text().as_bytes())?;
        Ok(())
    }
}
