//! `trustgc train`, `trustgc finetune` and `trustgc eval`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use trustgc_backend::{AutodiffTask, BackendTask, DeviceSpec, run_on, run_on_autodiff};
use trustgc_core::input::InputSpec;
use trustgc_train::config::{BetaSpec, DataConfig, OptimizerConfig, TrainConfig};
use trustgc_train::data::{IdxSplit, LabeledImages};
use trustgc_train::eval::{EvalReport, evaluate};
use trustgc_train::fit::{RunSummary, TrainError, run};

use crate::model_dir;

type BoxError = Box<dyn std::error::Error>;

/// Built-in training setups.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// The Fashion-MNIST model shipped in `weights/fashion-mnist`.
    FashionMnist,
}

/// Options shared by `train` and `finetune`.
#[derive(Args, Debug)]
pub struct RunOptions {
    /// Folder with the IDX files (`train-images-idx3-ubyte[.gz]`, ...).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The run folder (checkpoints, metrics.csv, and at the end config.json + model.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Continue after the last complete checkpoint in `--out`.
    #[arg(long)]
    resume: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Base learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// β of the IB objective: a number ≥ 0 or `inf`.
    #[arg(long)]
    beta: Option<String>,
    /// Seed of initialization, shuffling, noise and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// Use at most this many training images.
    #[arg(long)]
    limit: Option<usize>,
    /// `sgd` (momentum 0.9, the reference's) or `adam`.
    #[arg(long)]
    optimizer: Option<String>,
}

/// `trustgc train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A built-in setup (its data folder comes from `--data`).
    #[arg(long, value_enum, conflicts_with = "config")]
    preset: Option<Preset>,
    /// A training config (JSON, as written to `train.json` in a run folder).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    options: RunOptions,
}

/// `trustgc finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The model folder to start from (config.json + model.safetensors).
    #[arg(long)]
    from: PathBuf,
    /// Train only the class means; the flow stays bit-identical.
    #[arg(long)]
    mu_only: bool,
    #[command(flatten)]
    options: RunOptions,
}

/// `trustgc eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The model folder (config.json + model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Folder with the IDX files.
    #[arg(long)]
    data: PathBuf,
    /// `test` (t10k-*) or `train`.
    #[arg(long, default_value = "test")]
    split: String,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

fn device(spec: &Option<String>) -> Result<DeviceSpec, BoxError> {
    Ok(match spec {
        Some(text) => DeviceSpec::parse(text)?,
        None => DeviceSpec::from_env()?,
    })
}

fn apply(config: &mut TrainConfig, o: &RunOptions) -> Result<(), BoxError> {
    if let Some(dir) = &o.data {
        let DataConfig::Idx { dir: data_dir, .. } = &mut config.data;
        *data_dir = dir.clone();
    }
    if let Some(limit) = o.limit {
        let DataConfig::Idx { limit: l, .. } = &mut config.data;
        *l = Some(limit);
    }
    if let Some(epochs) = o.epochs {
        config.epochs = epochs;
    }
    if let Some(batch_size) = o.batch_size {
        config.batch_size = batch_size;
    }
    if let Some(seed) = o.seed {
        config.seed = seed;
    }
    if let Some(beta) = &o.beta {
        config.beta = BetaSpec::parse(beta)
            .ok_or_else(|| format!("--beta {beta}: give a number ≥ 0 or `inf`"))?;
    }
    if let Some(name) = &o.optimizer {
        let lr = config.optimizer.lr();
        config.optimizer = match name.as_str() {
            "sgd" => OptimizerConfig::Sgd {
                lr,
                momentum: 0.9,
                weight_decay: 0.0,
            },
            "adam" => OptimizerConfig::Adam {
                lr,
                weight_decay: 0.0,
            },
            other => return Err(format!("--optimizer {other}: use `sgd` or `adam`").into()),
        };
    }
    if let Some(lr) = o.lr {
        match &mut config.optimizer {
            OptimizerConfig::Sgd { lr: l, .. } | OptimizerConfig::Adam { lr: l, .. } => *l = lr,
        }
    }
    Ok(())
}

struct TrainTask {
    config: TrainConfig,
    out: PathBuf,
    resume: bool,
    from: Option<PathBuf>,
}

impl AutodiffTask for TrainTask {
    type Output = Result<RunSummary, BoxError>;

    fn run<B: burn::tensor::backend::AutodiffBackend>(self, device: B::Device) -> Self::Output {
        let initial = match &self.from {
            Some(dir) if !self.resume => Some(model_dir::load::<B>(dir, &device)?.1),
            _ => None,
        };
        run::<B>(&self.config, &self.out, self.resume, initial, &device)
            .map_err(|e: TrainError| e.into())
    }
}

fn report(summary: &RunSummary) {
    if summary.resumed_after > 0 {
        println!(
            "resumed after epoch {}; trained {} more",
            summary.resumed_after, summary.epochs_run
        );
    }
    println!("model written to {}", summary.model_path.display());
}

/// `trustgc train`.
pub fn train(args: TrainArgs) -> Result<(), BoxError> {
    let mut config = match (&args.config, args.preset) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{} is not a training config: {e}", path.display()))?
        }
        (None, Some(Preset::FashionMnist)) | (None, None) => {
            let data = args
                .options
                .data
                .clone()
                .ok_or("--data is needed with a preset")?;
            TrainConfig::fashion_mnist(data)
        }
    };
    if args.options.resume && args.config.is_none() && args.preset.is_none() {
        // Resuming: the run folder's own config, with command-line overrides.
        let path = args.options.out.join("train.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        config = serde_json::from_str(&text)?;
    }
    apply(&mut config, &args.options)?;
    let spec = device(&args.options.device)?;
    let task = TrainTask {
        config,
        out: args.options.out.clone(),
        resume: args.options.resume,
        from: None,
    };
    let summary = run_on_autodiff(&spec, task)??;
    report(&summary);
    Ok(())
}

/// `trustgc finetune`.
pub fn finetune(args: FinetuneArgs) -> Result<(), BoxError> {
    let model = trustgc::classifier::read_model_config(&args.from)?;
    let data = args.options.data.clone().ok_or("--data is needed")?;
    let mut config = TrainConfig::fashion_mnist(data);
    config.model = model;
    config.mu_only = args.mu_only;
    config.epochs = 5;
    config.optimizer = OptimizerConfig::Adam {
        lr: 1e-4,
        weight_decay: 0.0,
    };
    config.burn_in_iterations = 0;
    apply(&mut config, &args.options)?;
    let spec = device(&args.options.device)?;
    let task = TrainTask {
        config,
        out: args.options.out.clone(),
        resume: args.options.resume,
        from: Some(args.from.clone()),
    };
    let summary = run_on_autodiff(&spec, task)??;
    report(&summary);
    Ok(())
}

struct EvalTask {
    args: EvalArgs,
}

impl BackendTask for EvalTask {
    type Output = Result<EvalReport, BoxError>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let (config, model) = model_dir::load::<B>(
            &model_dir::resolve(&self.args.model.to_string_lossy()),
            &device,
        )?;
        let Some(InputSpec::Grayscale(input)) = &config.input else {
            return Err(format!(
                "{}: eval on IDX data needs a grayscale input representation in config.json",
                self.args.model.display()
            )
            .into());
        };
        let split = match self.args.split.as_str() {
            "test" => IdxSplit::Test,
            "train" => IdxSplit::Train,
            other => return Err(format!("--split {other}: use `test` or `train`").into()),
        };
        let data = Arc::new(LabeledImages::read_idx(
            &self.args.data,
            split,
            config.n_classes,
        )?);
        let show = !self.args.json;
        let report = evaluate(
            &model,
            input,
            data,
            self.args.batch_size.max(1),
            0,
            &device,
            |done, total| {
                if show {
                    eprint!("\r{done}/{total} images");
                }
            },
        );
        if show {
            eprintln!();
        }
        Ok(report)
    }
}

/// `trustgc eval`.
pub fn eval(args: EvalArgs) -> Result<(), BoxError> {
    let spec = device(&args.device)?;
    let json = args.json;
    let report = run_on(&spec, EvalTask { args })??;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("images        {}", report.images);
        println!("accuracy      {:.2} %", 100.0 * report.accuracy);
        println!(
            "nll_joint     {:.4} nats/dim (dequantized)",
            report.nll_joint
        );
        println!("bits/dim      {:.4}", report.bits_per_dim);
    }
    Ok(())
}
