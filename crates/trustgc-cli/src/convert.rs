//! `trustgc convert`: an original `.avg.pt` checkpoint → a trustgc model folder.

use std::path::PathBuf;

use clap::Args;
use trustgc_core::GcConfig;

type BoxError = Box<dyn std::error::Error>;

/// `trustgc convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The checkpoint (`beta_8.avg.pt`, zip or legacy PyTorch format).
    checkpoint: PathBuf,
    /// A built-in architecture: `imagenet` (the released models).
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// The architecture as a config.json.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The checkpoint's SHA-256 as its publisher gives it (64 hex digits): checked before
    /// anything is read or written. The legacy checkpoint format has no checksum of its
    /// own, so without this a corrupted file could convert into a different model.
    #[arg(long, value_parser = parse_sha256)]
    sha256: Option<trustgc_io::Sha256Digest>,
    /// The model folder to create (config.json, model.safetensors, README.md).
    #[arg(long)]
    out: PathBuf,
}

/// `trustgc convert`.
pub fn convert(args: ConvertArgs) -> Result<(), BoxError> {
    let config = architecture(args.config.as_deref(), args.preset.as_deref())?;
    trustgc::weights::convert::convert_checkpoint_verified(
        &args.checkpoint,
        &config,
        &args.out,
        args.sha256,
    )?;
    println!(
        "wrote {} (config.json, model.safetensors, README.md, checksums.sha256)",
        args.out.display()
    );
    Ok(())
}

/// The architecture of a `.pt` checkpoint: a config.json (`--config`) or a built-in one
/// (`--preset`, default `imagenet`: the released models).
pub(crate) fn architecture(
    config: Option<&std::path::Path>,
    preset: Option<&str>,
) -> Result<GcConfig, BoxError> {
    match (config, preset) {
        (Some(file), _) => {
            let text = trustgc_io::read_text_capped(file, trustgc_io::Cap::JSON)?;
            Ok(
                GcConfig::from_json(&text).map_err(|source| trustgc::ModelDirError::Config {
                    path: file.to_path_buf(),
                    source,
                })?,
            )
        }
        (None, Some("imagenet")) | (None, None) => Ok(GcConfig::imagenet()),
        (None, Some(other)) => Err(format!("--preset {other}: only `imagenet` is built in").into()),
    }
}

/// `--sha256`: 64 hex digits.
fn parse_sha256(text: &str) -> Result<trustgc_io::Sha256Digest, String> {
    trustgc_io::Sha256Digest::from_hex(text.trim())
        .ok_or_else(|| format!("`{text}` is not a SHA-256 (64 hex digits)"))
}
