//! A checkpoint recorder that never leaves a half-written file: it writes to a temporary
//! file in the same folder, syncs it, and renames it into place.

use std::path::PathBuf;

use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError,
};
use burn::tensor::backend::Backend;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Full-precision named MessagePack files, written atomically.
#[derive(Debug, Default, Clone)]
pub struct AtomicFileRecorder {
    inner: NamedMpkFileRecorder<FullPrecisionSettings>,
}

impl AtomicFileRecorder {
    /// A new recorder.
    pub fn new() -> Self {
        Self::default()
    }
}

const EXTENSION: &str = "mpk";

impl<B: Backend> Recorder<B> for AtomicFileRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, file: PathBuf) -> Result<(), RecorderError> {
        let final_path = file.with_extension(EXTENSION);
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = file.with_file_name(format!(".partial-{name}"));
        Recorder::<B>::save_item(&self.inner, item, partial.clone())?;
        let written = partial.with_extension(EXTENSION);
        let io = |e: std::io::Error| {
            RecorderError::Unknown(format!(
                "cannot finish checkpoint {}: {e}",
                final_path.display()
            ))
        };
        std::fs::File::open(&written)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&written, &final_path).map_err(io)?;
        Ok(())
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        Recorder::<B>::load_item(&self.inner, file)
    }
}

impl<B: Backend> FileRecorder<B> for AtomicFileRecorder {
    fn file_extension() -> &'static str {
        EXTENSION
    }
}
