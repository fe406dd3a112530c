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
    /// The model folder to create (config.json, model.safetensors, README.md).
    #[arg(long)]
    out: PathBuf,
}

/// `trustgc convert`.
pub fn convert(args: ConvertArgs) -> Result<(), BoxError> {
    let config = match (&args.config, args.preset.as_deref()) {
        (Some(file), _) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            GcConfig::from_json(&text)?
        }
        (None, Some("imagenet")) | (None, None) => GcConfig::imagenet(),
        (None, Some(other)) => {
            return Err(format!("--preset {other}: only `imagenet` is built in").into());
        }
    };
    trustgc::weights::convert::convert_checkpoint(&args.checkpoint, &config, &args.out)?;
    println!(
        "wrote {} (config.json, model.safetensors, README.md)",
        args.out.display()
    );
    Ok(())
}
