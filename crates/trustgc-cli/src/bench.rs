//! `trustgc bench`: how fast a model runs, and how much memory it takes.
//!
//! It times the whole likelihood path of [`trustgc::Classifier::likelihoods_tensor`] on a
//! batch of random model inputs (flow, head with cached class norms, posteriors, the
//! values read back to the host; no image decoding or preprocessing), or with `--train`
//! one training step as `trustgc train` takes it ([`trustgc_train::step`]: train-mode
//! forward, the IB loss on label-smoothed targets, backward, gradient clipping, and the
//! optimizer's update). Warm-up runs come first and are not reported.
//!
//! Per run: milliseconds per image, images per second, GFLOP/s from the analytic count of
//! [`trustgc_core::flops`] (useful operations of the architecture, not what the backend
//! executes), and the peak resident memory of the process during the run (`VmHWM` of
//! `/proc/self/status`, reset before each run through `/proc/self/clear_refs`; it
//! includes the weights, and on a GPU only the host side). The summary is the median run.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, Optimizer, SgdConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use burn::train::TrainStep;
use clap::{Args, ValueEnum};
use serde::Serialize;
use trustgc::{Classifier, GcConfig, GenerativeClassifier};
use trustgc_backend::{
    AutodiffTask, BackendTask, run_on, run_on_autodiff, run_on_autodiff_checkpointed,
};
use trustgc_core::flops::FlopCount;
use trustgc_core::head::smoothed_targets;
use trustgc_core::{Beta, ConfigError};
use trustgc_train::config::{OptimizerConfig, TrainConfig};
use trustgc_train::data::GcBatch;
use trustgc_train::step::{StepSettings, Trainee};

use crate::model_dir;

type BoxError = Box<dyn std::error::Error>;

/// Architectures `bench` builds with random (seeded) weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchPreset {
    /// The released ImageNet architecture (3x224x224, 1000 classes, ~78 M parameters).
    Imagenet,
    /// The mini model of the parity tests (3x112x112, 10 classes).
    Mini,
    /// The shipped Fashion-MNIST architecture (4x16x16 after space-to-depth, 10 classes).
    FashionMnist,
}

impl BenchPreset {
    /// The preset's name as given on the command line.
    fn name(self) -> &'static str {
        match self {
            BenchPreset::Imagenet => "imagenet",
            BenchPreset::Mini => "mini",
            BenchPreset::FashionMnist => "fashion-mnist",
        }
    }

    fn config(self) -> GcConfig {
        match self {
            BenchPreset::Imagenet => GcConfig::imagenet(),
            BenchPreset::Mini => GcConfig::mini(),
            BenchPreset::FashionMnist => TrainConfig::fashion_mnist(Default::default()).model,
        }
    }
}

/// `trustgc bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// An architecture with random weights (seeded by `--seed`).
    #[arg(
        long,
        value_enum,
        required_unless_present = "model",
        conflicts_with = "model"
    )]
    preset: Option<BenchPreset>,
    /// A model with its weights: a model folder, a shipped model's name or `hub:beta_8`.
    #[arg(long)]
    model: Option<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Timed runs (the summary is their median).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Untimed runs before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Time one training step (forward, backward, gradient clipping, optimizer update)
    /// instead of the likelihoods.
    #[arg(long)]
    train: bool,
    /// With `--train`: burn's gradient checkpointing (recompute element-wise operations
    /// in the backward pass instead of keeping their outputs).
    #[arg(long, requires = "train")]
    checkpointing: bool,
    /// Seed of the random weights, inputs and labels.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object on stdout (the per-run lines go to stderr).
    #[arg(long)]
    json: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

/// What `bench` refuses or cannot measure.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The model's outputs are NaN or infinite, so the run measured nothing meaningful.
    #[error("run {run}: the {what} is not finite ({value})")]
    NonFinite {
        /// The run (0-based, warm-up runs first).
        run: u64,
        /// What was checked.
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// The FLOP count of the architecture could not be made.
    #[error("cannot count the FLOPs of the architecture")]
    Flops {
        /// Why.
        #[source]
        source: ConfigError,
    },
}

/// Which model is benchmarked.
#[derive(Clone, Debug)]
enum Source {
    Preset(BenchPreset),
    Model(String),
}

impl Source {
    fn label(&self) -> (Option<&'static str>, Option<String>) {
        match self {
            Source::Preset(p) => (Some(p.name()), None),
            Source::Model(m) => (None, Some(m.clone())),
        }
    }

    /// The config and network: random weights for a preset (after seeding the backend).
    fn load<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> Result<(GcConfig, GenerativeClassifier<B>), BoxError> {
        match self {
            Source::Preset(preset) => {
                B::seed(device, seed);
                let config = preset.config();
                let model = GenerativeClassifier::new(&config, device)?;
                Ok((config, model))
            }
            Source::Model(name) => Ok(model_dir::resolve(name)?.load(device)?),
        }
    }
}

/// The settings shared by both kinds of runs.
#[derive(Clone, Debug)]
struct Plan {
    source: Source,
    batch: usize,
    runs: u64,
    warmup: u64,
    seed: u64,
    /// Where the per-run lines go: stderr with `--json`.
    lines_to_stderr: bool,
}

/// One timed run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    ms: f64,
    peak_rss_mb: Option<f64>,
    /// The training loss of the step (training only).
    loss: Option<f64>,
}

/// The process's peak resident memory in MB (`VmHWM`), `None` where there is no procfs.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

/// Resets the peak resident memory to the current one (Linux ≥ 4.0); false when it
/// cannot, and the peaks are then the process's since it started.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `step` `warmup + runs` times on a state it threads through and an input that
/// `prepare` makes before each run (untimed), timing the last `runs`, and prints a line
/// per timed run. `step` may return the run's training loss.
fn measure<S, I>(
    plan: &Plan,
    flops: u64,
    mut state: S,
    mut prepare: impl FnMut(u64) -> I,
    mut step: impl FnMut(S, I, u64) -> Result<(S, Option<f64>), BoxError>,
) -> Result<Vec<Sample>, BoxError> {
    let mut samples = Vec::new();
    for run in 0..plan.warmup + plan.runs {
        let timed = run >= plan.warmup;
        let input = prepare(run);
        if timed {
            reset_peak_rss();
        }
        let start = Instant::now();
        let loss;
        (state, loss) = step(state, input, run)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if timed {
            let sample = Sample {
                ms,
                peak_rss_mb: peak_rss_mb(),
                loss,
            };
            let line = format!(
                "run {}/{}: {}",
                run - plan.warmup + 1,
                plan.runs,
                Summary::of(plan.batch, flops, sample).describe()
            );
            if plan.lines_to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            samples.push(sample);
        }
    }
    Ok(samples)
}

/// The derived figures of one run (or of the median run).
struct Summary {
    ms: f64,
    ms_per_image: f64,
    images_per_s: f64,
    gflops_per_s: f64,
    peak_rss_mb: Option<f64>,
}

impl Summary {
    fn of(batch: usize, flops: u64, sample: Sample) -> Self {
        let seconds = sample.ms / 1e3;
        Self {
            ms: sample.ms,
            ms_per_image: sample.ms / batch as f64,
            images_per_s: batch as f64 / seconds,
            gflops_per_s: flops as f64 / 1e9 / seconds,
            peak_rss_mb: sample.peak_rss_mb,
        }
    }

    fn describe(&self) -> String {
        let rss = self
            .peak_rss_mb
            .map_or_else(|| "unknown".to_string(), |mb| format!("{mb:.0} MB"));
        format!(
            "{:.1} ms/batch, {:.2} ms/image, {:.2} images/s, {:.2} GFLOP/s, peak RSS {rss}",
            self.ms, self.ms_per_image, self.images_per_s, self.gflops_per_s
        )
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// What a benchmark task hands back.
struct Measured {
    samples: Vec<Sample>,
    flops: u64,
    config: GcConfig,
}

/// Times the likelihoods.
struct InferenceBench {
    plan: Plan,
}

impl BackendTask for InferenceBench {
    type Output = Result<Measured, BoxError>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let plan = self.plan;
        let classifier = match &plan.source {
            Source::Model(name) => model_dir::resolve(name)?.classifier::<B>(&device)?,
            source => {
                let (config, model) = source.load::<B>(plan.seed, &device)?;
                Classifier::new(config, model, &device)
            }
        };
        let config = classifier.config().clone();
        let flops = FlopCount::of(&config)
            .map_err(|source| BenchError::Flops { source })?
            .inference(plan.batch);
        let [c, h, w] = config.input_shape;
        B::seed(&device, plan.seed.wrapping_add(1));
        // A new input for every run, so that nothing computed on one can be reused.
        let prepare = |_run| {
            Tensor::<B, 4>::random(
                [plan.batch, c, h, w],
                Distribution::Normal(0.0, 1.0),
                &device,
            )
        };
        let samples = measure(&plan, flops, (), prepare, |(), x, run| {
            let results = classifier.likelihoods_tensor(x)?;
            for result in &results {
                if !result.log_marginal.is_finite() {
                    return Err(BenchError::NonFinite {
                        run,
                        what: "log-marginal likelihood",
                        value: result.log_marginal,
                    }
                    .into());
                }
            }
            Ok(((), None))
        })?;
        Ok(Measured {
            samples,
            flops,
            config,
        })
    }
}

/// Times training steps.
struct TrainBench {
    plan: Plan,
}

/// The recipe of a step: the Fashion-MNIST preset's own (Adam, β = 16), else the
/// reference's ImageNet one (SGD with momentum 0.9, β = 8); label smoothing 0.05 and
/// gradient clipping at 8 for both, no burn-in.
fn recipe(source: &Source) -> (OptimizerConfig, Beta, f64, Option<f64>) {
    match source {
        Source::Preset(BenchPreset::FashionMnist) => {
            let config = TrainConfig::fashion_mnist(Default::default());
            let beta = config.beta.beta().unwrap_or(Beta::Finite(16.0));
            (
                config.optimizer,
                beta,
                config.label_smoothing,
                config.clip_grad_norm,
            )
        }
        _ => (
            OptimizerConfig::Sgd {
                lr: 0.01,
                momentum: 0.9,
                weight_decay: 0.0,
            },
            Beta::Finite(8.0),
            0.05,
            Some(8.0),
        ),
    }
}

/// `warmup + runs` steps of `optim` on `batch`.
fn train_steps<B: AutodiffBackend, O: Optimizer<Trainee<B>, B>>(
    plan: &Plan,
    flops: u64,
    trainee: Trainee<B>,
    optim: O,
    lr: f64,
    batch: GcBatch<B>,
    device: &B::Device,
) -> Result<Vec<Sample>, BoxError> {
    measure(
        plan,
        flops,
        (trainee, optim),
        // The same batch every step: the weights change between steps anyway.
        |_run| batch.clone(),
        |(trainee, mut optim), batch, run| {
            let output = TrainStep::step(&trainee, batch);
            let stats = output.item.stats()?;
            let trainee = optim.step(lr, trainee, output.grads);
            B::sync(device)?;
            if !stats.loss.is_finite() {
                return Err(BenchError::NonFinite {
                    run,
                    what: "training loss",
                    value: stats.loss,
                }
                .into());
            }
            Ok(((trainee, optim), Some(stats.loss)))
        },
    )
}

impl AutodiffTask for TrainBench {
    type Output = Result<Measured, BoxError>;

    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let plan = self.plan;
        let device = devices[0].clone();
        let (config, model) = plan.source.load::<B>(plan.seed, &device)?;
        let flops = FlopCount::of(&config)
            .map_err(|source| BenchError::Flops { source })?
            .training_step(plan.batch);
        let (optimizer, beta, smoothing, clip_norm) = recipe(&plan.source);
        let settings = StepSettings {
            beta,
            clip_norm,
            burn_in_iterations: 0,
            burn_in_factor: 1.0,
            iteration: Arc::new(AtomicUsize::new(0)),
            mu_only: false,
            freeze_batch_norm: false,
            bits_offset: 0.0,
        };
        let trainee = Trainee { model, settings };
        let [c, h, w] = config.input_shape;
        B::seed(&device, plan.seed.wrapping_add(1));
        let x = Tensor::<B, 4>::random(
            [plan.batch, c, h, w],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let labels: Vec<usize> = (0..plan.batch).map(|i| i % config.n_classes).collect();
        let targets = smoothed_targets::<B>(&labels, config.n_classes, smoothing, &device);
        let batch = GcBatch { x, labels, targets };
        let lr = optimizer.lr();
        let samples = match optimizer {
            OptimizerConfig::Sgd {
                momentum,
                weight_decay,
                ..
            } => {
                let optim = SgdConfig::new()
                    .with_momentum(Some(
                        MomentumConfig::new()
                            .with_momentum(momentum)
                            .with_dampening(0.0)
                            .with_nesterov(false),
                    ))
                    .with_weight_decay(
                        (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)),
                    )
                    .init();
                train_steps(&plan, flops, trainee, optim, lr, batch, &device)?
            }
            OptimizerConfig::Adam { weight_decay, .. } => {
                let optim = AdamConfig::new()
                    .with_weight_decay(
                        (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)),
                    )
                    .init();
                train_steps(&plan, flops, trainee, optim, lr, batch, &device)?
            }
        };
        Ok(Measured {
            samples,
            flops,
            config,
        })
    }
}

/// The JSON object `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    preset: Option<&'static str>,
    model: Option<String>,
    device: String,
    train: bool,
    checkpointing: bool,
    batch: usize,
    runs: u64,
    warmup: u64,
    input_shape: [usize; 3],
    threads: Option<usize>,
    /// Median milliseconds per batch.
    median_ms: f64,
    ms_per_image: f64,
    images_per_s: f64,
    /// FLOPs per batch (analytic; a training step counts 3x the forward).
    gflop_per_batch: f64,
    gflops_per_s: f64,
    /// The largest per-run peak resident memory, MB.
    peak_rss_mb: Option<f64>,
    run_ms: Vec<f64>,
    run_peak_rss_mb: Vec<Option<f64>>,
    /// The loss of each timed training step (before its update), with `--train`.
    #[serde(skip_serializing_if = "Option::is_none")]
    run_loss: Option<Vec<f64>>,
}

/// `trustgc bench`.
pub fn bench(args: BenchArgs) -> Result<(), BoxError> {
    let spec = crate::device(&args.device)?;
    let source = match (&args.model, args.preset) {
        (Some(model), _) => Source::Model(model.clone()),
        (None, Some(preset)) => Source::Preset(preset),
        (None, None) => unreachable!("clap requires --preset or --model"),
    };
    let plan = Plan {
        source: source.clone(),
        batch: usize::try_from(args.batch)?,
        runs: args.runs,
        warmup: args.warmup,
        seed: args.seed,
        lines_to_stderr: args.json,
    };
    let measured = if args.train {
        let task = TrainBench { plan: plan.clone() };
        if args.checkpointing {
            run_on_autodiff_checkpointed(&[spec], task)??
        } else {
            run_on_autodiff(&[spec], task)??
        }
    } else {
        run_on(&spec, InferenceBench { plan: plan.clone() })??
    };

    let run_ms: Vec<f64> = measured.samples.iter().map(|s| s.ms).collect();
    let median_ms = median(&run_ms);
    let peak = measured
        .samples
        .iter()
        .filter_map(|s| s.peak_rss_mb)
        .reduce(f64::max);
    let summary = Summary::of(
        plan.batch,
        measured.flops,
        Sample {
            ms: median_ms,
            peak_rss_mb: peak,
            loss: None,
        },
    );
    let (preset, model) = source.label();
    let what = if args.train {
        "training step"
    } else {
        "likelihoods"
    };
    let line = format!(
        "median of {} ({what}, {}, batch {}, {:.3} GFLOP/image): {}",
        plan.runs,
        spec,
        plan.batch,
        measured.flops as f64 / 1e9 / plan.batch as f64,
        summary.describe()
    );
    if args.json {
        eprintln!("{line}");
        let report = Report {
            preset,
            model,
            device: spec.to_string(),
            train: args.train,
            checkpointing: args.checkpointing,
            batch: plan.batch,
            runs: plan.runs,
            warmup: plan.warmup,
            input_shape: measured.config.input_shape,
            threads: std::thread::available_parallelism().ok().map(Into::into),
            median_ms,
            ms_per_image: summary.ms_per_image,
            images_per_s: summary.images_per_s,
            gflop_per_batch: measured.flops as f64 / 1e9,
            gflops_per_s: summary.gflops_per_s,
            peak_rss_mb: peak,
            run_ms,
            run_peak_rss_mb: measured.samples.iter().map(|s| s.peak_rss_mb).collect(),
            run_loss: measured.samples.iter().map(|s| s.loss).collect(),
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn presets_are_valid_architectures() {
        for preset in [
            BenchPreset::Imagenet,
            BenchPreset::Mini,
            BenchPreset::FashionMnist,
        ] {
            let config = preset.config();
            config.validate().unwrap();
            assert!(FlopCount::of(&config).unwrap().inference(1) > 0);
        }
    }
}
