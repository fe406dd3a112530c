//! File input and output for trustgc, in one guarded place.
//!
//! Every file trustgc reads goes through [`read::open_regular`] or [`read::read_capped`]:
//! regular files only (links are followed; folders, pipes, devices and sockets are refused
//! before a byte is read, and the open never blocks), with a size cap per kind of file
//! ([`read::Cap`]). Every output goes through [`write::write_file_with`] or
//! [`write::write_dir`]: written beside the target and renamed into place, so it appears
//! whole or not at all; only a missing target or a regular file is replaced, never a link,
//! device or pipe, and never one of the command's inputs; errors name the output; long
//! names work; and the partial files of killed writers are removed by the next write.
//! Model folders carry a SHA-256 manifest ([`manifest::Manifest`]) checked on load.

pub mod manifest;
pub mod read;
pub mod write;

pub use manifest::{MANIFEST, Manifest, ManifestError, Sha256Digest, Sha256Stream};
pub use read::{Cap, FileKind, Opened, ReadError, open_regular, read_capped, read_text_capped};
pub use write::{
    WriteError, check_target, partial_path, remove_stale_partials, write_dir, write_file,
    write_file_with,
};
