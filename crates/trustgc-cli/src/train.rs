//! `trustgc train`, `trustgc finetune` and `trustgc eval`.

use std::path::PathBuf;
use std::sync::Arc;

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use trustgc::{GcConfig, GenerativeClassifier};
use trustgc_backend::{
    AutodiffTask, BackendTask, DeviceSpec, run_on, run_on_autodiff, run_on_autodiff_checkpointed,
};
use trustgc_core::input::InputSpec;
use trustgc_train::config::{BetaSpec, DataConfig, OptimizerConfig, TrainConfig};
use trustgc_train::data::{GrayscaleSamples, IdxSplit, LabeledImages, Samples};
use trustgc_train::eval::{EvalReport, evaluate, ten_crop_accuracy};
use trustgc_train::finetune::{self, FinetuneEvent, FinetuneOptions, FinetuneSummary};
use trustgc_train::fit::{RunSummary, TrainError, run_on_devices};
use trustgc_train::photos::{PhotoSamples, PhotoSpec};
use trustgc_train::progress::{ConsolePrinter, TrainObserver};

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
    /// Epochs [default: the config's; fashion-mnist: 12; with --resume: the run's, a
    /// larger number extends it].
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch [default: the config's; fashion-mnist: 64].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Base learning rate [default: the config's; fashion-mnist: 0.001, cosine to 1 %].
    #[arg(long)]
    lr: Option<f64>,
    /// β of the IB objective: a number ≥ 0 or `inf` [default: the config's;
    /// fashion-mnist: 16].
    #[arg(long)]
    beta: Option<String>,
    /// Seed of initialization, shuffling, noise and augmentation [default: the config's;
    /// fashion-mnist: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Use at most this many training images [default: all].
    #[arg(long)]
    limit: Option<usize>,
    /// Gradient checkpointing (burn's `BalancedCheckpointing`): element-wise results are
    /// recomputed in the backward pass instead of kept. Same gradients; ImageNet
    /// architecture, batch 8 on the CPU: peak memory 3.28 GB → 2.41 GB, slower steps.
    #[arg(long)]
    checkpointing: bool,
    /// `sgd` (momentum 0.9, the reference's) or `adam` [default: the config's;
    /// fashion-mnist: adam].
    #[arg(long)]
    optimizer: Option<String>,
    /// Training images held out for validation [default: the config's; fashion-mnist:
    /// 5000].
    #[arg(long)]
    validation: Option<usize>,
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
    /// The model to start from: a model folder, a shipped model's name (`fashion-mnist`),
    /// a released model on the hub (`hub:beta_8`), or an original `.avg.pt` checkpoint
    /// (converted with `--preset`/`--config`). Not needed with `--resume`.
    #[arg(long, required_unless_present = "resume")]
    from: Option<String>,
    /// The architecture of a `.pt` given to `--from`: `imagenet` (the released models).
    #[arg(long, conflicts_with = "config")]
    preset: Option<String>,
    /// The architecture of a `.pt` given to `--from`, as a config.json.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training data: a folder of class folders (`DATA/<class>/<image>`, class names from
    /// the folder names, sorted) for photo models; a folder of IDX files for grayscale
    /// models. Other classes than the model's get new class means.
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    /// The run folder: a complete model folder at the end (config.json,
    /// model.safetensors, ood.json, checksums.sha256) plus train.json and logs.
    #[arg(long)]
    out: PathBuf,
    /// Train only the class means, on latents computed once (the flow stays
    /// bit-identical): minutes instead of hours.
    #[arg(long)]
    mu_only: bool,
    /// Means only: views per training image whose latents are cached (one plain, the
    /// others RandomResizedCrop + flip).
    #[arg(long, default_value_t = finetune::VIEWS)]
    views: usize,
    /// Images per forward pass when computing latents and scoring held-out images (1 is
    /// fastest on the CPU backend; larger batches pay off on GPUs).
    #[arg(long, default_value_t = finetune::PASS_BATCH)]
    pass_batch: usize,
    /// Continue a full run after its last checkpoint; with a larger --epochs, extend a
    /// finished one.
    #[arg(long)]
    resume: bool,
    /// Epochs [default: 30 with --mu-only, 5 otherwise].
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per batch [default: 64 with --mu-only, 16 otherwise].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Adam's base learning rate, cosine-decayed to 1 % [default: 0.005 with --mu-only,
    /// 0.0001 otherwise].
    #[arg(long)]
    lr: Option<f64>,
    /// β of the IB objective: a number ≥ 0 or `inf` [default: 8].
    #[arg(long)]
    beta: Option<String>,
    /// Label smoothing ε.
    #[arg(long, default_value_t = 0.05)]
    label_smoothing: f64,
    /// Seed of the split, shuffling, noise and augmentation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Training images held out for validation and for fitting ood.json [default: 10 %,
    /// at least 1, at most 5000].
    #[arg(long)]
    validation: Option<usize>,
    /// Use at most this many of the remaining training images.
    #[arg(long)]
    limit: Option<usize>,
    /// Leave out (and report) images that cannot be decoded, instead of failing.
    #[arg(long)]
    skip_bad_images: bool,
    /// Full runs: train BatchNorm on batch statistics and average its statistics over
    /// training batches at the end, as the reference's training does (by default
    /// BatchNorm keeps the model's statistics while the weights train: fine-tuning
    /// batches are small).
    #[arg(long)]
    train_batch_norm: bool,
    /// Full runs: gradient checkpointing (burn's `BalancedCheckpointing`): element-wise
    /// results are recomputed in the backward pass instead of kept. Same gradients;
    /// ImageNet architecture, batch 8 on the CPU: peak memory 3.28 GB → 2.41 GB.
    #[arg(long)]
    checkpointing: bool,
    /// Write no ood.json at the end (by default it is fitted on the held-out images with
    /// the shipped model's rates).
    #[arg(long)]
    no_ood: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
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
    if let Some(n) = o.validation {
        match &mut config.data {
            DataConfig::Idx { validation, .. } | DataConfig::ImageFolder { validation, .. } => {
                *validation = n
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
}

impl AutodiffTask for TrainTask {
    type Output = Result<RunSummary, BoxError>;

    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Self::Output {
        run_on_devices::<B>(&self.config, &self.out, self.resume, None, &devices)
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
    let resuming_own = args.options.resume && args.config.is_none() && args.preset.is_none();
    let mut config: TrainConfig = if resuming_own {
        // Resuming: the run folder's own config, with command-line overrides.
        let path = args.options.out.join("train.json");
        let text = trustgc_io::read_text_capped(&path, trustgc_io::Cap::JSON)?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a training config: {e}", path.display()))?
    } else {
        match (&args.config, args.preset) {
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
        }
    };
    apply(&mut config, &args.options)?;
    let specs = devices(&args.options.device)?;
    let task = TrainTask {
        config,
        out: args.options.out.clone(),
        resume: args.options.resume,
    };
    let summary = if args.options.checkpointing {
        run_on_autodiff_checkpointed(&specs, task)??
    } else {
        run_on_autodiff(&specs, task)??
    };
    report(&summary);
    Ok(())
}

/// Prints fine-tuning events: live bars on a terminal, plain lines when piped.
struct EventPrinter {
    training: ConsolePrinter,
    tty: bool,
    bar: Option<ProgressBar>,
    last_tenth: usize,
}

impl EventPrinter {
    fn new() -> Self {
        Self {
            training: ConsolePrinter::new(),
            tty: std::io::stderr().is_terminal(),
            bar: None,
            last_tenth: usize::MAX,
        }
    }

    fn progress(&mut self, name: &str, done: usize, total: usize) {
        if self.tty {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(total as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:10} {bar:40} {pos}/{len} {elapsed} eta {eta}",
                    )
                    .expect("a valid template"),
                );
                bar.set_message(name.to_string());
                bar
            });
            bar.set_position(done as u64);
            if done >= total {
                bar.finish();
                self.bar = None;
            }
        } else {
            let tenth = 10 * done / total.max(1);
            if tenth != self.last_tenth || done >= total {
                self.last_tenth = tenth;
                eprintln!("{name} {done}/{total}");
            }
            if done >= total {
                self.last_tenth = usize::MAX;
            }
        }
    }

    fn event(&mut self, event: FinetuneEvent) {
        match event {
            FinetuneEvent::Latents { done, total } => self.progress("latents", done, total),
            FinetuneEvent::OodImages { done, total } => self.progress("ood fit", done, total),
            FinetuneEvent::Training(event) => self.training.on_event(&event),
            other => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!("{other}");
            }
        }
    }
}

struct FinetuneTask {
    args: FinetuneArgs,
}

impl FinetuneTask {
    fn options(&self) -> Result<FinetuneOptions, BoxError> {
        let a = &self.args;
        let mut options = FinetuneOptions::new(a.data.clone().unwrap_or_default(), a.out.clone());
        options.mu_only = a.mu_only;
        options.views = a.views;
        options.pass_batch = a.pass_batch;
        options.epochs = a.epochs;
        options.batch_size = a.batch_size;
        options.lr = a.lr;
        options.beta = a.beta.as_deref().map(BetaSpec::parse).transpose()?;
        options.label_smoothing = a.label_smoothing;
        options.seed = a.seed;
        options.validation = a.validation;
        options.limit = a.limit;
        options.skip_bad_images = a.skip_bad_images;
        options.train_batch_norm = a.train_batch_norm;
        if a.no_ood {
            options.ood = None;
        }
        Ok(options)
    }

    /// The model named by `--from`, on `device`.
    fn source<B: burn::tensor::backend::Backend>(
        &self,
        from: &str,
        device: &B::Device,
    ) -> Result<(GcConfig, GenerativeClassifier<B>), BoxError> {
        let path = std::path::Path::new(from);
        let is_checkpoint = path.is_file()
            && path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("pt"));
        if !is_checkpoint {
            if self.args.preset.is_some() || self.args.config.is_some() {
                return Err(format!(
                    "--preset/--config describe a .pt checkpoint; {from} is not one (a model folder carries its own config.json)"
                )
                .into());
            }
            return Ok(model_dir::resolve(from)?.load::<B>(device)?);
        }
        let config =
            crate::convert::architecture(self.args.config.as_deref(), self.args.preset.as_deref())?;
        // Converted into a scratch folder of the run, loaded, removed.
        std::fs::create_dir_all(&self.args.out)?;
        let scratch = self
            .args
            .out
            .join(format!(".converting-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let converted = trustgc::weights::convert::convert_checkpoint(path, &config, &scratch)
            .map_err(BoxError::from)
            .and_then(|()| Ok(model_dir::load::<B>(&scratch, device)?));
        let _ = std::fs::remove_dir_all(&scratch);
        converted
    }
}

impl AutodiffTask for FinetuneTask {
    type Output = Result<FinetuneSummary, BoxError>;

    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Self::Output {
        let options = self.options()?;
        let device = &devices[0];
        let mut printer = EventPrinter::new();
        let summary = if self.args.resume {
            finetune::resume::<B>(&options, device, |e| printer.event(e))?
        } else {
            let from = self.args.from.as_deref().ok_or("--from is needed")?;
            let (config, model) = self.source::<B>(from, device)?;
            finetune::finetune(&config, model, &options, device, |e| printer.event(e))?
        };
        Ok(summary)
    }
}

/// `trustgc finetune`.
pub fn finetune(args: FinetuneArgs) -> Result<(), BoxError> {
    let specs = devices(&args.device)?;
    if specs.len() > 1 {
        return Err("finetune runs on one device; give one to --device".into());
    }
    let summary = if args.checkpointing {
        run_on_autodiff_checkpointed(&specs, FinetuneTask { args })??
    } else {
        run_on_autodiff(&specs, FinetuneTask { args })??
    };
    if let Some(seconds) = summary.latent_seconds {
        println!("latents computed in {seconds:.1} s");
    }
    println!(
        "trained {} epochs in {:.1} s",
        summary.epochs_run, summary.train_seconds
    );
    if let Some(accuracy) = summary.held_out_accuracy {
        println!(
            "held-out accuracy {:.2} % on {} images",
            100.0 * accuracy,
            summary.held_out_images
        );
    }
    if let Some(rate) = summary.ood_false_alarm_rate {
        println!(
            "ood.json fitted on the held-out images: {:.2} % of them not confident in their class",
            100.0 * rate
        );
    }
    println!(
        "model folder: {} ({} classes); try `trustgc classify --model {} IMAGE`",
        summary.dir.display(),
        summary.classes.len(),
        summary.dir.display()
    );
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
