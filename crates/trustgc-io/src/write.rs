//! Atomic writing: a file or folder appears whole or not at all, replaces only a regular
//! file, never an input, and a killed writer's leftovers are removed by the next write.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::read::FileKind;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The OS refused or failed (missing folder, permissions, a full disk).
    #[error("cannot write {path}: {source}")]
    Io {
        /// The output.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The output path exists and is not a regular file: a device, pipe, socket, folder or
    /// symbolic link is never replaced.
    #[error("will not write {path}: it is {kind}; only a regular file is replaced")]
    NotRegularTarget {
        /// The output.
        path: PathBuf,
        /// What is there.
        kind: FileKind,
    },
    /// The output is one of the command's inputs (the same file, by any name).
    #[error("will not write {path}: it is the input {input}; choose another output")]
    WouldOverwriteInput {
        /// The output.
        path: PathBuf,
        /// The input it is.
        input: PathBuf,
    },
    /// A folder output exists already (folders are never merged or replaced).
    #[error("will not write {path}: it exists already; remove it or choose another folder")]
    Exists {
        /// The output.
        path: PathBuf,
    },
}

impl WriteError {
    /// An I/O error about `path`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The output the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::NotRegularTarget { path, .. }
            | Self::WouldOverwriteInput { path, .. }
            | Self::Exists { path } => path,
        }
    }
}

/// Longest file name most file systems take (bytes).
const NAME_MAX: usize = 255;
/// Bytes of a long name kept in its partial's name.
const KEPT_NAME: usize = 200;

/// The part of a partial's name before its process id: `.<name>.partial-`, with a name too
/// long for the suffix cut and given a stable hash of the whole name.
fn partial_prefix(path: &Path) -> Option<(PathBuf, String)> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // ".", ".partial-", a process id of up to 10 digits, "-" and a counter of up to 20.
    let room = NAME_MAX - 1 - 9 - 10 - 1 - 20;
    let short = if name.len() <= room {
        name
    } else {
        let mut cut = KEPT_NAME;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}~{:016x}", &name[..cut], fnv1a(name.as_bytes()))
    };
    Some((dir, format!(".{short}.partial-")))
}

/// FNV-1a, 64 bit: a hash that is the same in every run and build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where `path` is written before it is renamed into place:
/// `.<name>.partial-<pid>-<n>` beside it, `n` counting this process's partials, so two
/// threads writing the same output never share one (a name too long for the suffix is
/// cut and hashed, so a 255-byte name still works).
///
/// # Errors
/// [`WriteError::Io`] when `path` has no file name.
pub fn partial_path(path: &Path) -> Result<PathBuf, WriteError> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (dir, prefix) = partial_prefix(path).ok_or_else(|| WriteError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(dir.join(format!("{prefix}{}-{n}", std::process::id())))
}

/// Removes the partials of `path` (`.<name>.partial-<pid>` or `.<name>.partial-<pid>-<n>`,
/// file or folder) left by processes that no longer run; returns how many were removed. Partials of running
/// processes (a concurrent writer) are kept, and so is everything when liveness cannot be
/// told. Best effort: errors are ignored.
pub fn remove_stale_partials(path: &Path) -> usize {
    let Some((dir, prefix)) = partial_prefix(path) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let own = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| match rest.split_once('-') {
                Some((pid, n)) if digits(n) => Some(pid),
                Some(_) => None,
                None => Some(rest),
            })
            .filter(|pid| digits(pid))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own || process_alive(pid) {
            continue;
        }
        let stale = entry.path();
        // Never follows a link: a link is removed, not what it points to.
        let gone = match std::fs::symlink_metadata(&stale) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&stale),
            Ok(_) => std::fs::remove_file(&stale),
            Err(e) => Err(e),
        };
        if gone.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether process `pid` runs (or might: anything unclear counts as running).
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists; no signal is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn process_alive(_: u32) -> bool {
    true
}

/// Checks that `path` may be written: it does not exist or is a regular file (a link,
/// device, pipe, socket or folder is refused), and it is none of `inputs` (compared as
/// files, so another name or a hard link of an input is caught).
///
/// # Errors
/// [`WriteError::NotRegularTarget`] or [`WriteError::WouldOverwriteInput`].
pub fn check_target(path: &Path, inputs: &[&Path]) -> Result<(), WriteError> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(WriteError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if let Some(kind) = FileKind::of(&target) {
        return Err(WriteError::NotRegularTarget {
            path: path.to_path_buf(),
            kind,
        });
    }
    for input in inputs {
        if let Ok(meta) = std::fs::metadata(input)
            && same_file(&meta, &target)
        {
            return Err(WriteError::WouldOverwriteInput {
                path: path.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.len() == b.len()
        && a.modified().ok() == b.modified().ok()
        && a.created().ok() == b.created().ok()
}

/// Writes `bytes` to `path` atomically ([`write_file_with`]).
///
/// # Errors
/// As [`write_file_with`].
pub fn write_file(path: &Path, inputs: &[&Path], bytes: &[u8]) -> Result<(), WriteError> {
    write_file_with(path, inputs, |out| out.write_all(bytes))
}

/// Writes a file atomically: checks the target ([`check_target`]), removes stale
/// partials ([`remove_stale_partials`]), lets `fill` write a new partial file beside it,
/// flushes it to disk and renames it over `path`. On any error the partial is removed and
/// `path` is as it was.
///
/// # Errors
/// [`WriteError::NotRegularTarget`], [`WriteError::WouldOverwriteInput`], or
/// [`WriteError::Io`] naming `path`.
pub fn write_file_with(
    path: &Path,
    inputs: &[&Path],
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    check_target(path, inputs)?;
    remove_stale_partials(path);
    let tmp = partial_path(path)?;
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let mut out = BufWriter::new(file);
        fill(&mut out)?;
        let file = out
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        file.sync_all()
    })()
    .map_err(WriteError::io(path))
    // The target may have been swapped for a link or device meanwhile: checked again
    // right before the rename.
    .and_then(|()| check_target(path, inputs))
    .and_then(|()| std::fs::rename(&tmp, path).map_err(WriteError::io(path)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        sync_parent(path);
    }
    result
}

/// Writes a folder atomically: `path` must not exist ([`WriteError::Exists`]); `fill`
/// writes the folder's files into a new partial folder beside it, which is then renamed to
/// `path`. On any error the partial folder is removed. Stale partial folders of killed
/// processes are removed first.
///
/// # Errors
/// [`WriteError::Exists`], [`WriteError::Io`] naming `path`, or `fill`'s error.
pub fn write_dir<E: From<WriteError>>(
    path: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {
            return Err(WriteError::Exists {
                path: path.to_path_buf(),
            }
            .into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(WriteError::Io {
                path: path.to_path_buf(),
                source,
            }
            .into());
        }
    }
    remove_stale_partials(path);
    let tmp = partial_path(path)?;
    std::fs::create_dir(&tmp).map_err(WriteError::io(path))?;
    let result = fill(&tmp).and_then(|()| {
        sync_dir_files(&tmp).map_err(WriteError::io(path))?;
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(WriteError::Exists {
                path: path.to_path_buf(),
            }
            .into());
        }
        std::fs::rename(&tmp, path).map_err(|e| WriteError::io(path)(e).into())
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    } else {
        sync_parent(path);
    }
    result
}

/// Flushes every regular file directly in `dir` to disk.
fn sync_dir_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    Ok(())
}

/// Flushes the folder holding `path` (so the rename survives a crash); best effort.
fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
