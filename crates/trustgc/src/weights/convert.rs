//! Converting the authors' original PyTorch checkpoints (the released `beta_X.avg.pt`,
//! see [`Pretrained`]) into a trustgc model folder: `config.json` (the [`GcConfig`]),
//! `model.safetensors` (trustgc's parameter names, permutations as index vectors, Haar and
//! DCT tensors included) and a model card `README.md`.
//!
//! The `.pt` file is read by [`trustgc_checkpoint`], which never executes pickled code;
//! optimizer state and activations saved with the model are skipped unread. Every key,
//! shape and fixed tensor is checked through the key table before anything is written,
//! and the folder appears atomically (written under a temporary name, then renamed), so
//! loading the folder gives bit-identical outputs to loading the `.pt` itself.

use std::path::{Path, PathBuf};

use trustgc_checkpoint::CheckpointError;
use trustgc_core::{Beta, GcConfig};

use super::reference::{read_reference_checkpoint, reference_to_native};
use trustgc_io::{Cap, MANIFEST, Manifest, Sha256Digest};

use super::safetensors::native_to_safetensors_bytes;
use super::{LoadError, SaveError};
use crate::hub::catalog::Pretrained;

/// Why a checkpoint could not be converted (or loaded).
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The `.pt` file could not be read safely.
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        /// The checkpoint.
        path: PathBuf,
        /// The reader's error.
        #[source]
        source: Box<CheckpointError>,
    },
    /// Its tensors do not fit the config.
    #[error("checkpoint {path}: {source}")]
    Load {
        /// The checkpoint.
        path: PathBuf,
        /// What does not fit.
        #[source]
        source: Box<LoadError>,
    },
    /// The output folder already exists.
    #[error("{path} already exists; remove it or choose another --out")]
    Exists {
        /// The folder.
        path: PathBuf,
    },
    /// Writing or encoding the output failed; nothing was left behind.
    #[error(transparent)]
    Write(#[from] SaveError),
    /// The checkpoint is not the file its publisher's SHA-256 names: corrupted in
    /// transit or on disk, or another file.
    #[error(
        "{path} is not the expected file: its SHA-256 is {actual}, expected {expected}; \
         download it again"
    )]
    Digest {
        /// The checkpoint.
        path: PathBuf,
        /// The digest it should have.
        expected: Sha256Digest,
        /// The digest it has.
        actual: Sha256Digest,
    },
}

impl From<trustgc_io::WriteError> for ConvertError {
    fn from(e: trustgc_io::WriteError) -> Self {
        match e {
            trustgc_io::WriteError::Exists { path } => Self::Exists { path },
            other => Self::Write(SaveError::Write(other)),
        }
    }
}

/// What the model card says about the released file, when its name is one of them.
fn card(pt: &Path, config: &GcConfig, bytes: u64, digest: Sha256Digest) -> String {
    let name = pt
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let variant = Pretrained::from_file_name(&name);
    let beta = match variant.map(Pretrained::beta) {
        Some(Beta::Infinity) => "∞".to_string(),
        Some(Beta::Finite(beta)) => beta.to_string(),
        None => "unknown (not a released file name)".to_string(),
    };
    let top1 = match variant {
        Some(variant) => match variant.reported_top1() {
            Some(top1) => format!("{top1:.2} %"),
            None => "not reported".to_string(),
        },
        None => "unknown".to_string(),
    };
    let measured: Vec<String> = Pretrained::ALL
        .into_iter()
        .filter_map(|v| {
            let top1 = v.publicly_measured_top1()?;
            let beta = match v.beta() {
                Beta::Infinity => "∞".to_string(),
                Beta::Finite(beta) => beta.to_string(),
            };
            Some(format!("β={beta} {top1:.2} %"))
        })
        .collect();
    format!(
        "# {name} converted for trustgc\n\n\
         - Source: `{name}` ({bytes} bytes, SHA-256 `{digest}`), a checkpoint of the ImageNet generative classifier (IB-INN) of \
         Mackowiak, Ardizzone, Köthe and Rother, \"Generative Classifiers as a Basis for Trustworthy Image \
         Classification\" (CVPR 2021), released by the authors (https://github.com/RayDeeA/ibinn_imagenet).\n\
         - β of the IB objective: {beta}.\n\
         - Top-1 ImageNet validation accuracy reported in the paper (1 crop): {top1}. A public report \
         (ibinn_imagenet issue #7) measured much lower accuracy for some released files ({}); \
         trustgc has not measured it.\n\
         - Architecture: {} classes, input {:?}, {} loss dimensions, low-rank k = {}.\n\
         - Converted by `trustgc convert`: optimizer state and saved activations dropped; permutation \
         matrices stored as index vectors; every key, shape and fixed tensor checked.\n\
         - Licence: the weights are the authors'; see their repository for the terms under which they \
         are released. trustgc's code is MIT-licensed.\n",
        measured.join(", "),
        config.n_classes,
        config.input_shape,
        config.n_loss_dims,
        config.mu_low_rank_k
    )
}

/// Converts the PyTorch checkpoint `pt` of a model with architecture `config` into the
/// model folder `out_dir` (`config.json`, `model.safetensors`, `README.md` and the
/// `checksums.sha256` manifest), which must not exist yet. The card records the
/// checkpoint's size and SHA-256.
///
/// # Errors
/// [`ConvertError::Exists`] when `out_dir` exists; [`ConvertError::Read`] or
/// [`ConvertError::Load`] when the checkpoint cannot be read or does not fit `config`;
/// [`ConvertError::Write`] when writing fails (nothing is left
/// behind then).
pub fn convert_checkpoint(
    pt: &Path,
    config: &GcConfig,
    out_dir: &Path,
) -> Result<(), ConvertError> {
    convert_checkpoint_verified(pt, config, out_dir, None)
}

/// [`convert_checkpoint`], first checking that `pt` has the SHA-256 its publisher
/// announced (`expected_sha256`; `None` checks nothing). The legacy (non-zip) checkpoint
/// format has no checksum of its own, so a flipped byte there would otherwise convert into
/// a different model.
///
/// # Errors
/// As [`convert_checkpoint`], and [`ConvertError::Digest`] when the digests differ
/// (checked before anything is parsed or written).
pub fn convert_checkpoint_verified(
    pt: &Path,
    config: &GcConfig,
    out_dir: &Path,
    expected_sha256: Option<Sha256Digest>,
) -> Result<(), ConvertError> {
    if std::fs::symlink_metadata(out_dir).is_ok() {
        return Err(ConvertError::Exists {
            path: out_dir.to_path_buf(),
        });
    }
    let source_digest =
        Sha256Digest::of_file(pt, Cap::TENSORS).map_err(|source| ConvertError::Read {
            path: pt.to_path_buf(),
            source: Box::new(CheckpointError::Open(source)),
        })?;
    if let Some(expected) = expected_sha256
        && expected != source_digest
    {
        return Err(ConvertError::Digest {
            path: pt.to_path_buf(),
            expected,
            actual: source_digest,
        });
    }
    let tensors = read_reference_checkpoint(pt)?;
    let native = reference_to_native(config, &tensors).map_err(|source| ConvertError::Load {
        path: pt.to_path_buf(),
        source: Box::new(source),
    })?;
    drop(tensors);
    let weights = out_dir.join("model.safetensors");
    let bytes = native_to_safetensors_bytes(&native).map_err(|source| SaveError::Encode {
        path: weights.clone(),
        source,
    })?;
    let size = std::fs::metadata(pt).map(|m| m.len()).unwrap_or(0);
    let config_json = config.to_json();
    let mut manifest = Manifest::default();
    manifest.insert("model.safetensors", &bytes);
    manifest.insert("config.json", config_json.as_bytes());
    trustgc_io::write_dir::<ConvertError>(out_dir, |tmp| {
        let write = |name: &str, data: &[u8]| -> Result<(), ConvertError> {
            std::fs::write(tmp.join(name), data).map_err(|source| {
                ConvertError::Write(SaveError::Io {
                    path: out_dir.join(name),
                    source,
                })
            })
        };
        write("model.safetensors", &bytes)?;
        write("config.json", config_json.as_bytes())?;
        write(
            "README.md",
            card(pt, config, size, source_digest).as_bytes(),
        )?;
        write(MANIFEST, manifest.to_text().as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_names_the_released_variant() {
        let card = card(
            Path::new("/x/beta_inf.avg.pt"),
            &GcConfig::imagenet(),
            7,
            Sha256Digest::of(b""),
        );
        assert!(card.contains("β of the IB objective: ∞."), "{card}");
        assert!(card.contains("(1 crop): 76.27 %"), "{card}");
        assert!(
            card.contains("β=2 0.56 %, β=32 36.81 %, β=∞ 74.40 %"),
            "{card}"
        );
        let card = card_of("beta_0.avg.pt");
        assert!(card.contains("IB objective: 0.") && card.contains("not reported"));
        let card = card_of("mine.pt");
        assert!(card.contains("unknown (not a released file name)"));
    }

    fn card_of(name: &str) -> String {
        card(
            Path::new(name),
            &GcConfig::imagenet(),
            1,
            Sha256Digest::of(b""),
        )
    }
}
