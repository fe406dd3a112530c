//! `trustgc train`, `trustgc finetune` and `trustgc eval`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use trustgc_backend::{AutodiffTask, BackendTask, DeviceSpec, run_on, run_on_autodiff};
use trustgc_core::input::InputSpec;
use trustgc_train::config::{BetaSpec, DataConfig, OptimizerConfig, TrainConfig};
use trustgc_train::data::{GrayscaleSamples, IdxSplit, LabeledImages, Samples};
use trustgc_train::eval::{EvalReport, evaluate, ten_crop_accuracy};
use trustgc_train::fit::{RunSummary, TrainError, run_on_devices};
use trustgc_train::photos::{PhotoSamples, PhotoSpec};

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
    /// The data folder: IDX files (`train-images-idx3-ubyte[.gz]`, ...) or, for a config
    /// with `image_folder` data, the training folder of class folders.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The run folder (checkpoints, metrics.csv, and at the end config.json + model.safetensors).
    #[arg(long)]
    out: PathBuf,
    /// Continue after the last complete checkpoint in `--out`.
    #[arg(long)]
    resume: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu); several
    /// devices of one backend, comma-separated (`cuda:0,cuda:1`), train together.
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
    /// A shipped model's name (built into the binary), a model folder (config.json +
    /// model.safetensors), or a released model on the hub (`hub:beta_8`).
    #[arg(long)]
    model: String,
    /// Folder with the IDX files (grayscale models) or with class folders of photos.
    #[arg(long)]
    data: PathBuf,
    /// Leave out (and report) photos that cannot be decoded, instead of failing.
    #[arg(long)]
    skip_bad_images: bool,
    /// `test` (t10k-*) or `train` (IDX data).
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

fn devices(spec: &Option<String>) -> Result<Vec<DeviceSpec>, BoxError> {
    match spec {
        Some(text) => text.split(',').map(|d| Ok(DeviceSpec::parse(d)?)).collect(),
        None => Ok(vec![DeviceSpec::from_env()?]),
    }
}

fn apply(config: &mut TrainConfig, o: &RunOptions) -> Result<(), BoxError> {
    if let Some(dir) = &o.data {
        match &mut config.data {
            DataConfig::Idx { dir: data_dir, .. } => *data_dir = dir.clone(),
            DataConfig::ImageFolder { train, .. } => *train = dir.clone(),
        }
    }
    if let Some(n) = o.limit {
        match &mut config.data {
            DataConfig::Idx { limit, .. } | DataConfig::ImageFolder { limit, .. } => {
                *limit = Some(n)
            }
        }
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
        config.beta = BetaSpec::parse(beta)?;
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

    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Self::Output {
        let initial = match &self.from {
            Some(dir) if !self.resume => Some(model_dir::load::<B>(dir, &devices[0])?.1),
            _ => None,
        };
        run_on_devices::<B>(&self.config, &self.out, self.resume, initial, &devices)
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
            let text = trustgc_io::read_text_capped(path, trustgc_io::Cap::JSON)?;
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
        let text = trustgc_io::read_text_capped(&path, trustgc_io::Cap::JSON)?;
        config = serde_json::from_str(&text)?;
    }
    apply(&mut config, &args.options)?;
    let specs = devices(&args.options.device)?;
    let task = TrainTask {
        config,
        out: args.options.out.clone(),
        resume: args.options.resume,
        from: None,
    };
    let summary = run_on_autodiff(&specs, task)??;
    report(&summary);
    Ok(())
}

/// `trustgc finetune`.
pub fn finetune(args: FinetuneArgs) -> Result<(), BoxError> {
    let model = trustgc::weights::model_dir::read_model_config(&args.from)?;
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
    let specs = devices(&args.options.device)?;
    let task = TrainTask {
        config,
        out: args.options.out.clone(),
        resume: args.options.resume,
        from: Some(args.from.clone()),
    };
    let summary = run_on_autodiff(&specs, task)??;
    report(&summary);
    Ok(())
}

struct EvalTask {
    args: EvalArgs,
}

impl BackendTask for EvalTask {
    type Output = Result<EvalReport, BoxError>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let (config, model) = model_dir::resolve(&args.model)?.load::<B>(&device)?;
        let show = !args.json;
        let progress = |done: usize, total: usize| {
            if show {
                eprint!("\r{done}/{total} images");
            }
        };
        let mean_log_std = config.input.as_ref().map_or(0.0, InputSpec::mean_log_std);
        let report = match &config.input {
            Some(InputSpec::Grayscale(input)) => {
                let split = match args.split.as_str() {
                    "test" => IdxSplit::Test,
                    "train" => IdxSplit::Train,
                    other => {
                        return Err(
                            format!("--split {other}: use `test` or `train` for IDX data").into(),
                        );
                    }
                };
                let images = LabeledImages::read_idx(&args.data, split, config.n_classes)?;
                let data: Arc<dyn Samples> = Arc::new(GrayscaleSamples {
                    images,
                    input: input.clone(),
                });
                evaluate(
                    &model,
                    data,
                    mean_log_std,
                    args.batch_size.max(1),
                    0,
                    &device,
                    progress,
                )?
            }
            Some(spec @ InputSpec::ImageNet { .. }) => {
                let photos = PhotoSamples::open(
                    &args.data,
                    PhotoSpec::from_input(spec).expect("an ImageNet spec"),
                    args.skip_bad_images,
                )?;
                photos.check_classes(&args.data, config.n_classes)?;
                let photos = Arc::new(photos);
                let mut report = evaluate(
                    &model,
                    photos.clone(),
                    mean_log_std,
                    args.batch_size.max(1),
                    0,
                    &device,
                    progress,
                )?;
                if show {
                    eprintln!();
                }
                report.accuracy_10_crop =
                    Some(ten_crop_accuracy(&model, &photos, &device, progress)?);
                report
            }
            None => {
                return Err(
                    format!("{}: config.json has no input representation", args.model).into(),
                );
            }
        };
        if show {
            eprintln!();
        }
        Ok(report)
    }
}

/// `trustgc eval`.
pub fn eval(args: EvalArgs) -> Result<(), BoxError> {
    let spec = crate::device(&args.device)?;
    let json = args.json;
    let report = run_on(&spec, EvalTask { args })??;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("images        {}", report.images);
        println!("accuracy      {:.2} % (1 crop)", 100.0 * report.accuracy);
        if let Some(ten) = report.accuracy_10_crop {
            println!("accuracy      {:.2} % (10 crops)", 100.0 * ten);
        }
        println!(
            "nll_joint     {:.4} nats/dim (dequantized)",
            report.nll_joint
        );
        println!("bits/dim      {:.4}", report.bits_per_dim);
    }
    Ok(())
}
