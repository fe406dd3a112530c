//! Guarded reading: regular files only, with a size cap, opened without blocking.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What a path that is not a regular file turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A folder.
    Directory,
    /// A named pipe (FIFO): reading it could block forever.
    Fifo,
    /// A character device (`/dev/zero`, a terminal): endless or blocking.
    CharDevice,
    /// A block device (a disk).
    BlockDevice,
    /// A Unix socket.
    Socket,
    /// A symbolic link (only reported where a link itself is refused: an output target).
    Symlink,
    /// Anything else the OS reports.
    Other,
}

impl FileKind {
    /// The kind of a non-regular file from its metadata (`None` for a regular file).
    pub fn of(meta: &std::fs::Metadata) -> Option<Self> {
        let ft = meta.file_type();
        if ft.is_file() {
            return None;
        }
        Some(if ft.is_dir() {
            Self::Directory
        } else if ft.is_symlink() {
            Self::Symlink
        } else {
            special_kind(&ft)
        })
    }
}

#[cfg(unix)]
fn special_kind(ft: &std::fs::FileType) -> FileKind {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_char_device() {
        FileKind::CharDevice
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Other
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::FileType) -> FileKind {
    FileKind::Other
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Directory => "a folder",
            Self::Fifo => "a named pipe (FIFO)",
            Self::CharDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Socket => "a socket",
            Self::Symlink => "a symbolic link",
            Self::Other => "not a regular file",
        })
    }
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The OS refused or failed (missing file, permissions, an I/O error).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The path (after following links) is not a regular file: devices, pipes, sockets
    /// and folders are refused before a byte is read.
    #[error("cannot read {path}: it is {kind}, not a regular file")]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
    },
    /// The file is larger than what this kind of file may be.
    #[error("cannot read {path}: it holds {size} bytes, over the limit of {cap} bytes for {what}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (at least; a file that grows while read reports what was seen).
        size: u64,
        /// The limit.
        cap: u64,
        /// What kind of file the limit is for ("a JSON file", "an image").
        what: &'static str,
    },
    /// The file is under its cap but larger than the memory that could be reserved.
    #[error("cannot read {path}: its {size} bytes do not fit in memory")]
    OutOfMemory {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A text file is not UTF-8.
    #[error("cannot read {path}: it is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
}

/// A size limit for one kind of file, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// Most bytes.
    pub bytes: u64,
    /// What kind of file ("a JSON file"), for messages.
    pub what: &'static str,
}

impl Cap {
    /// JSON and other small text files (configs, OoD statistics, run settings): 16 MiB,
    /// room for a config naming 100,000 classes.
    pub const JSON: Self = Self {
        bytes: 16 << 20,
        what: "a JSON file",
    };
    /// Image files: 1 GiB (the decoder separately bounds the decoded size).
    pub const IMAGE: Self = Self {
        bytes: 1 << 30,
        what: "an image file",
    };
    /// Tensor files given to `infer` and model weights: 64 GiB (a released ImageNet
    /// checkpoint is about 570 MB; the loaders check every file against the size its
    /// header or the model's config implies).
    pub const TENSORS: Self = Self {
        bytes: 64 << 30,
        what: "a tensor file",
    };
    /// Data sets (IDX files): 16 GiB.
    pub const DATASET: Self = Self {
        bytes: 16 << 30,
        what: "a data set file",
    };
}

/// A regular file opened for reading, with its size when opened.
#[derive(Debug)]
pub struct Opened {
    /// The file.
    pub file: File,
    /// Its size in bytes.
    pub len: u64,
}

/// Opens `path` for reading if it is a regular file (links are followed) of at most
/// `cap` bytes.
///
/// The file is opened without blocking (`O_NONBLOCK`, so a FIFO swapped in after a check
/// cannot hang the open) and the checks are made on the opened handle, not on the path,
/// so nothing can change between check and read.
///
/// # Errors
/// [`ReadError::Io`], [`ReadError::NotRegular`] or [`ReadError::TooLarge`], naming `path`.
pub fn open_regular(path: &Path, cap: Cap) -> Result<Opened, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A cheap refusal of what is obviously not a file, before any open (opening some
    // devices has side effects).
    let meta = std::fs::metadata(path).map_err(io)?;
    if let Some(kind) = FileKind::of(&meta) {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let file = open_nonblocking(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if let Some(kind) = FileKind::of(&meta) {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    let len = meta.len();
    if len > cap.bytes {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: len,
            cap: cap.bytes,
            what: cap.what,
        });
    }
    Ok(Opened { file, len })
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Reads a whole regular file of at most `cap` bytes ([`open_regular`]); a file that grows
/// past the cap while it is read is refused too.
///
/// # Errors
/// As [`open_regular`].
pub fn read_capped(path: &Path, cap: Cap) -> Result<Vec<u8>, ReadError> {
    let Opened { file, len } = open_regular(path, cap)?;
    let mut bytes = Vec::new();
    // A large (or sparse) file the machine cannot hold is an error, not an abort.
    bytes
        .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
        .map_err(|_| ReadError::OutOfMemory {
            path: path.to_path_buf(),
            size: len,
        })?;
    file.take(cap.bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > cap.bytes {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            cap: cap.bytes,
            what: cap.what,
        });
    }
    Ok(bytes)
}

/// Reads a whole regular UTF-8 text file of at most `cap` bytes.
///
/// # Errors
/// As [`read_capped`], or [`ReadError::NotUtf8`].
pub fn read_text_capped(path: &Path, cap: Cap) -> Result<String, ReadError> {
    String::from_utf8(read_capped(path, cap)?).map_err(|_| ReadError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

impl ReadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::NotRegular { path, .. }
            | Self::TooLarge { path, .. }
            | Self::OutOfMemory { path, .. }
            | Self::NotUtf8 { path } => path,
        }
    }

    /// The error as an [`std::io::Error`], for APIs that carry one (its message names the
    /// problem; the kind is `InvalidInput` for refusals).
    pub fn into_io(self) -> std::io::Error {
        match self {
            Self::Io { source, .. } => source,
            other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other),
        }
    }
}
