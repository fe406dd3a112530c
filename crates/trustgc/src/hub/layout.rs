//! The cache's layout (the one `huggingface_hub` and hf-hub use) and the only code that
//! writes into it. Every id reaching these functions was checked by
//! [`super::validate`]; the writes never follow a link planted in the cache: files are
//! created with `create_new` after removing what was there, links and refs are put in
//! place by `rename`, and the folders below the repository's are refused when they are
//! links.

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use super::validate::{is_blob_id, is_commit_id};

/// How long to wait for another process's download lock.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A `refs/<revision>` entry of the cache that is not a commit id (what it holds instead).
#[derive(Debug)]
pub(super) struct InvalidRef {
    /// The entry's content, or what it is when it is not a file.
    pub(super) found: String,
}

/// `models--owner--name/` of one repository, and the locks beside it.
pub(super) struct Layout {
    repo_dir: PathBuf,
    locks_dir: PathBuf,
}

/// What the cache says about a snapshot entry.
pub(super) enum Cached {
    /// Not there.
    Absent,
    /// A link to `blobs/<etag>`, which holds a regular file; or a regular file (caches
    /// written on Windows hold copies, with no etag to read back).
    File {
        /// The blob id, when the entry is a link.
        etag: Option<String>,
    },
    /// Something else: a link leaving `blobs/`, a link to a missing blob, a folder, a
    /// device. Its text, for the error.
    Unsafe(String),
}

impl Layout {
    pub(super) fn new(cache_dir: &Path, repo_folder: &str) -> Self {
        Self {
            repo_dir: cache_dir.join(repo_folder),
            locks_dir: cache_dir.join(".locks").join(repo_folder),
        }
    }

    pub(super) fn repo_dir(&self) -> &Path {
        &self.repo_dir
    }

    pub(super) fn blobs_dir(&self) -> PathBuf {
        self.repo_dir.join("blobs")
    }

    pub(super) fn blob(&self, etag: &str) -> PathBuf {
        self.blobs_dir().join(etag)
    }

    pub(super) fn snapshot(&self, commit: &str, file: &str) -> PathBuf {
        self.repo_dir.join("snapshots").join(commit).join(file)
    }

    pub(super) fn lock_path(&self, etag: &str) -> PathBuf {
        self.locks_dir.join(format!("{etag}.lock"))
    }

    fn ref_path(&self, revision: &str) -> PathBuf {
        self.repo_dir.join("refs").join(revision)
    }

    fn no_exist(&self, commit: &str, file: &str) -> PathBuf {
        self.repo_dir.join(".no_exist").join(commit).join(file)
    }

    /// The commit `refs/<revision>` records: `Ok(None)` when there is none (or it cannot
    /// be read), [`InvalidRef`] when it is not a commit id.
    pub(super) fn read_ref(&self, revision: &str) -> Result<Option<String>, InvalidRef> {
        let path = self.ref_path(revision);
        if !self.real_dirs(path.parent()) {
            return Ok(None);
        }
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(InvalidRef {
                    found: format!("{} is not a file", path.display()),
                });
            }
            Err(_) => return Ok(None),
        }
        // A commit id and a newline; a longer file is not one.
        let mut text = String::new();
        let cap = trustgc_io::Cap {
            bytes: 128,
            what: "a cache ref",
        };
        let read = trustgc_io::open_regular(&path, cap)
            .map_err(trustgc_io::ReadError::into_io)
            .and_then(|opened| {
                use std::io::Read;
                opened.file.take(128).read_to_string(&mut text)
            });
        if read.is_err() {
            return Ok(None);
        }
        let commit = text.trim();
        if is_commit_id(commit) {
            Ok(Some(commit.to_string()))
        } else {
            Err(InvalidRef {
                found: commit.to_string(),
            })
        }
    }

    /// Records that `revision` points at `commit`.
    pub(super) fn write_ref(&self, revision: &str, commit: &str) -> io::Result<()> {
        let path = self.ref_path(revision);
        self.make_dirs(path.parent())?;
        replace_with(&path, |tmp| {
            let mut file = File::options().write(true).create_new(true).open(tmp)?;
            io::Write::write_all(&mut file, commit.as_bytes())
        })
    }

    /// The link from `snapshots/<commit>/<file>` to `blobs/<etag>`, relative.
    fn link_target(file: &str, etag: &str) -> PathBuf {
        let depth = file.split('/').count() + 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.join("blobs").join(etag)
    }

    /// What `snapshots/<commit>/<file>` is.
    pub(super) fn cached(&self, commit: &str, file: &str) -> Cached {
        let path = self.snapshot(commit, file);
        if !self.real_dirs(path.parent()) {
            return Cached::Unsafe(format!(
                "{} (a folder on the way is a link)",
                path.display()
            ));
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            return Cached::Absent;
        };
        if meta.is_file() {
            return Cached::File { etag: None };
        }
        if !meta.file_type().is_symlink() {
            return Cached::Unsafe(path.display().to_string());
        }
        let Ok(target) = std::fs::read_link(&path) else {
            return Cached::Absent;
        };
        let etag = target
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_blob_id(n))
            .map(str::to_string);
        match etag {
            Some(etag) if target == Self::link_target(file, &etag) => {
                let blob_ok = self.real_dirs(Some(&self.blobs_dir()))
                    && std::fs::symlink_metadata(self.blob(&etag)).is_ok_and(|m| m.is_file());
                if blob_ok {
                    Cached::File { etag: Some(etag) }
                } else {
                    Cached::Unsafe(target.display().to_string())
                }
            }
            _ => Cached::Unsafe(target.display().to_string()),
        }
    }

    /// Whether `blobs/<etag>` holds a regular file.
    pub(super) fn has_blob(&self, etag: &str) -> bool {
        self.real_dirs(Some(&self.blobs_dir()))
            && std::fs::symlink_metadata(self.blob(etag)).is_ok_and(|m| m.is_file())
    }

    /// Links `snapshots/<commit>/<file>` to `blobs/<etag>` (replacing what was there) and
    /// returns the link.
    pub(super) fn link(&self, commit: &str, file: &str, etag: &str) -> io::Result<PathBuf> {
        let pointer = self.snapshot(commit, file);
        self.make_dirs(pointer.parent())?;
        #[cfg(unix)]
        {
            let target = Self::link_target(file, etag);
            replace_with(&pointer, |tmp| std::os::unix::fs::symlink(&target, tmp))?;
        }
        #[cfg(not(unix))]
        {
            let blob = self.blob(etag);
            replace_with(&pointer, |tmp| std::fs::copy(&blob, tmp).map(|_| ()))?;
        }
        Ok(pointer)
    }

    /// Records that `file` does not exist at `commit`.
    pub(super) fn mark_missing(&self, commit: &str, file: &str) -> io::Result<()> {
        let path = self.no_exist(commit, file);
        self.make_dirs(path.parent())?;
        replace_with(&path, |tmp| {
            File::options()
                .write(true)
                .create_new(true)
                .open(tmp)
                .map(|_| ())
        })
    }

    /// Whether the cache records `file` as absent at `commit` (and has no copy of it).
    pub(super) fn known_missing(&self, commit: &str, file: &str) -> bool {
        let marker = self.no_exist(commit, file);
        self.real_dirs(marker.parent())
            && std::fs::symlink_metadata(&marker).is_ok_and(|m| m.is_file())
            && matches!(self.cached(commit, file), Cached::Absent)
    }

    /// Creates the folders of `dir` below the repository's folder, one at a time,
    /// refusing any that is a link (a link planted there would lead the writes out).
    pub(super) fn make_dirs(&self, dir: Option<&Path>) -> io::Result<()> {
        let dir = dir.unwrap_or(&self.repo_dir);
        std::fs::create_dir_all(&self.repo_dir)?;
        let relative = dir
            .strip_prefix(&self.repo_dir)
            .map_err(|_| io::Error::other("a folder outside the repository's cache folder"))?;
        let mut current = self.repo_dir.clone();
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return Err(io::Error::other(
                    "a path component that is not a plain name",
                ));
            };
            current.push(name);
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is not a folder (a link?)", current.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match std::fs::create_dir(&current) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            if !std::fs::symlink_metadata(&current).is_ok_and(|m| m.is_dir()) {
                                return Err(e);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether every folder from the repository's folder down to `dir` is a real folder
    /// (not a link); `true` when one is missing (nothing there to follow).
    fn real_dirs(&self, dir: Option<&Path>) -> bool {
        let Some(dir) = dir else { return false };
        let Ok(relative) = dir.strip_prefix(&self.repo_dir) else {
            return false;
        };
        let mut current = self.repo_dir.clone();
        for component in relative.components() {
            let Component::Normal(name) = component else {
                return false;
            };
            current.push(name);
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return false,
                Err(_) => return true,
            }
        }
        true
    }

    /// Takes the download lock of `etag`, waiting up to [`LOCK_WAIT`] for another process
    /// (the lock files of `huggingface_hub` and hf-hub, so they and trustgc never write the
    /// same blob at once). `Ok(None)`: still held by another process.
    pub(super) fn lock(&self, etag: &str) -> io::Result<Option<File>> {
        std::fs::create_dir_all(&self.locks_dir)?;
        let path = self.lock_path(etag);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let start = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(file)),
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }

    /// Deletes `blobs/<etag>.incomplete` files left by failed or killed downloads, unless
    /// another process holds the blob's lock (is still writing it).
    pub(super) fn remove_partial_blobs(&self) {
        let blobs = self.blobs_dir();
        if !self.real_dirs(Some(&blobs)) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(etag) = name.strip_suffix(".incomplete") else {
                continue;
            };
            if !is_blob_id(etag) {
                continue;
            }
            let lock = match File::options().write(true).open(self.lock_path(etag)) {
                Ok(file) => match file.try_lock() {
                    Ok(()) => Some(file),
                    Err(_) => continue,
                },
                Err(_) => None,
            };
            let _ = std::fs::remove_file(entry.path());
            drop(lock);
        }
    }
}

/// Puts a new `path` in place: `make` writes a temporary sibling, which is renamed over
/// `path` (replacing a file or link there without following it).
fn replace_with(path: &Path, make: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = make(&tmp).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
