//! Scratch folders for tests, shared by every test crate of the workspace through
//! `#[path = ".../tests-support/scratch.rs"] mod scratch;`.
//!
//! A [`Scratch`] folder lives under the system's temporary directory, named after the test
//! crate's prefix, the process and the test. It is removed when the value is dropped, unless
//! the thread is panicking (a failing test): then it is kept and its path printed, so that
//! what the failing test wrote can be looked at.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

/// A scratch folder, removed on drop when the test passed (see the module docs).
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty folder `trustgc-{prefix}-{pid}-{name}` (an older one is removed first).
    pub fn new(prefix: &str, name: &str) -> Self {
        let scratch = Self::absent(prefix, name);
        std::fs::create_dir_all(&scratch.0).expect("create a scratch folder");
        scratch
    }

    /// The same path, not created: for a tool that must create the folder itself.
    pub fn absent(prefix: &str, name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("trustgc-{prefix}-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "scratch folder kept for the failing test: {}",
                self.0.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<OsStr> for Scratch {
    fn as_ref(&self) -> &OsStr {
        self.0.as_os_str()
    }
}

/// A file path inside a [`Scratch`] folder of its own, removed with it.
#[derive(Debug)]
pub struct ScratchFile {
    path: PathBuf,
    _folder: Scratch,
}

impl ScratchFile {
    /// `file_name` in a fresh folder `trustgc-{prefix}-{pid}-{name}`; the file is not created.
    pub fn new(prefix: &str, name: &str, file_name: &str) -> Self {
        let folder = Scratch::new(prefix, name);
        Self {
            path: folder.join(file_name),
            _folder: folder,
        }
    }
}

impl Deref for ScratchFile {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for ScratchFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}
