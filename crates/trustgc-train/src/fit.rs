//! A training run: data, model, optimizer and burn-train's supervised loop, with exact
//! resumption from the last checkpoint.
//!
//! A run folder holds `train.json` (the [`TrainConfig`]), `checkpoint/` (model, optimizer
//! and schedule after each epoch, written atomically; the last two are kept),
//! `metrics.csv` (every iteration's metrics), burn-train's own logs, and at the end
//! `config.json` + `model.safetensors` (the trained model in trustgc's format).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use burn::module::{AutodiffModule, Module};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, Optimizer, SgdConfig};
use burn::tensor::backend::AutodiffBackend;
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::logger::FileMetricLogger;
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use trustgc::weights::SaveError;
use trustgc::weights::model_dir::{ModelDirError, write_model_file};
use trustgc::weights::safetensors::to_safetensors_bytes;
use trustgc_core::head::GaussianHeadConfig;
use trustgc_core::rng::{Mt19937, permutation_from};
use trustgc_core::{GenerativeClassifier, InputShapeError};

use crate::config::{DataConfig, OptimizerConfig, TrainConfig, TrainConfigError};
use crate::csv::CsvLogger;
use crate::data::{
    DataError, EpochLoader, GrayscaleSamples, IdxSplit, LabeledImages, LoaderSettings, Samples,
};
use crate::photos::{PhotoSamples, PhotoSpec};
use crate::progress::{ConsolePrinter, ObserverRenderer, ParamCount, ProgressEvent, TrainObserver};
use crate::recorder::AtomicFileRecorder;
use crate::resumed::ResumedEpochs;
use crate::schedule::ScheduledLr;
use crate::step::{GcMetric, Quantity, StepSettings, Trainee};

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The config is invalid.
    #[error("invalid training config")]
    Config(#[from] TrainConfigError),
    /// No device was given.
    #[error("no device to train on")]
    NoDevice,
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The run folder could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `--resume` was asked for a folder that cannot be resumed, or a fresh run for a
    /// folder that already holds one.
    #[error("cannot resume {dir}")]
    Resume {
        /// The run folder.
        dir: PathBuf,
        /// Why.
        #[source]
        reason: ResumeError,
    },
    /// The initial model does not fit the data.
    #[error(transparent)]
    Input(#[from] InputShapeError),
    /// The trained model could not be saved.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// The model folder's files could not be written (the error names the file).
    #[error(transparent)]
    ModelDir(#[from] ModelDirError),
}

/// Why a run folder cannot be resumed (or started afresh).
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// `train.json` cannot be read.
    #[error("no readable train.json")]
    ReadConfig(#[source] trustgc_io::ReadError),
    /// `train.json` is not a training config.
    #[error("train.json is not a training config")]
    ParseConfig(#[source] serde_json::Error),
    /// `train.json` differs from the config of this run (other than by more epochs).
    #[error("its train.json differs from this run's config: {}", differences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    ConfigDiffers {
        /// Each differing field.
        differences: Vec<ConfigDifference>,
    },
    /// There is no complete checkpoint to resume from.
    #[error("it holds no complete checkpoint")]
    NoCheckpoint,
    /// A fresh run was asked for a folder that already holds checkpoints.
    #[error("it already holds checkpoints; pass --resume to continue, or choose another folder")]
    HasCheckpoints,
    /// The run already trained all its epochs.
    #[error("it already finished all {epochs} epochs (pass a larger --epochs to extend it)")]
    Finished {
        /// The epochs of the config.
        epochs: usize,
    },
}

/// A field whose value in `train.json` differs from the run's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDifference {
    /// The field's path, e.g. `optimizer.lr` or `model.class_names[3]`.
    pub field: String,
    /// Its value in `train.json` (JSON; `absent` when missing).
    pub saved: String,
    /// Its value in this run's config.
    pub now: String,
}

impl std::fmt::Display for ConfigDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {} in train.json but {} now",
            self.field, self.saved, self.now
        )
    }
}

/// The fields in which two training configs differ (at most 20, with their values).
pub fn config_differences(saved: &TrainConfig, now: &TrainConfig) -> Vec<ConfigDifference> {
    fn walk(
        path: &str,
        a: Option<&serde_json::Value>,
        b: Option<&serde_json::Value>,
        out: &mut Vec<ConfigDifference>,
    ) {
        use serde_json::Value;
        if out.len() >= 20 || a == b {
            return;
        }
        let show = |v: Option<&Value>| v.map_or_else(|| "absent".to_string(), Value::to_string);
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(&child, x.get(key), y.get(key), out);
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(&format!("{path}[{i}]"), Some(p), Some(q), out);
                }
            }
            _ => {
                let (mut saved, mut now) = (show(a), show(b));
                for text in [&mut saved, &mut now] {
                    if text.chars().count() > 80 {
                        *text = format!("{}...", text.chars().take(77).collect::<String>());
                    }
                }
                out.push(ConfigDifference {
                    field: path.to_string(),
                    saved,
                    now,
                });
            }
        }
    }
    let a = serde_json::to_value(saved).expect("a TrainConfig serializes");
    let b = serde_json::to_value(now).expect("a TrainConfig serializes");
    let mut out = Vec::new();
    walk("", Some(&a), Some(&b), &mut out);
    out
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// `model.safetensors` of the trained model.
    pub model_path: PathBuf,
    /// Epochs trained in this invocation.
    pub epochs_run: usize,
    /// The epoch training resumed after (0 for a fresh run).
    pub resumed_after: usize,
}

/// The last epoch with a complete checkpoint (model, optimizer and schedule) in `dir`.
pub fn last_checkpoint(dir: &Path) -> Option<usize> {
    let checkpoints = dir.join("checkpoint");
    let entries = std::fs::read_dir(&checkpoints).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("model-")?
                .strip_suffix(".mpk")?
                .parse::<usize>()
                .ok()
        })
        .filter(|epoch| {
            ["optim", "scheduler"]
                .iter()
                .all(|kind| checkpoints.join(format!("{kind}-{epoch}.mpk")).is_file())
        })
        .max()
}

/// Indices of the validation and training images: a fixed random subset of
/// `validation` images is held out (seeded), then at most `limit` of the rest are used.
pub fn split_indices(
    count: usize,
    validation: usize,
    limit: Option<usize>,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = Mt19937::new((seed as u32) ^ 0x5eed_0001);
    let order = permutation_from(&mut rng, count);
    let validation = validation.min(count);
    let mut valid = order[..validation].to_vec();
    let mut train = order[validation..].to_vec();
    valid.sort_unstable();
    train.sort_unstable();
    if let Some(limit) = limit {
        train.truncate(limit);
    }
    (valid, train)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The training and validation samples and which of their items each uses.
type OpenedData = (Arc<dyn Samples>, Arc<dyn Samples>, Vec<usize>, Vec<usize>);

fn open_data(config: &TrainConfig) -> Result<OpenedData, TrainError> {
    match &config.data {
        DataConfig::Idx {
            dir,
            validation,
            limit,
        } => {
            let images = LabeledImages::read_idx(dir, IdxSplit::Train, config.model.n_classes)?;
            let input = config.grayscale()?.clone();
            let (valid, train) = split_indices(images.len(), *validation, *limit, config.seed);
            let samples: Arc<dyn Samples> = Arc::new(GrayscaleSamples { images, input });
            Ok((samples.clone(), samples, train, valid))
        }
        DataConfig::ImageFolder {
            train,
            valid,
            validation,
            limit,
            skip_bad_images,
        } => {
            let spec = config
                .model
                .input
                .as_ref()
                .and_then(PhotoSpec::from_input)
                .ok_or_else(|| TrainConfigError::NotImageNet {
                    found: config.model.input.clone(),
                })?;
            let photos = PhotoSamples::open(train, spec.clone(), *skip_bad_images)?;
            photos.check_classes(train, config.model.n_classes)?;
            let train_samples: Arc<dyn Samples> = Arc::new(photos);
            match valid {
                Some(valid) => {
                    let valid_photos = PhotoSamples::open(valid, spec, *skip_bad_images)?;
                    let n = train_samples.len();
                    let mut train_indices: Vec<usize> = (0..n).collect();
                    if let Some(limit) = limit {
                        train_indices.truncate(*limit);
                    }
                    let valid_indices = (0..valid_photos.len()).collect();
                    Ok((
                        train_samples,
                        Arc::new(valid_photos),
                        train_indices,
                        valid_indices,
                    ))
                }
                None => {
                    let (valid_indices, train_indices) =
                        split_indices(train_samples.len(), *validation, *limit, config.seed);
                    Ok((
                        train_samples.clone(),
                        train_samples,
                        train_indices,
                        valid_indices,
                    ))
                }
            }
        }
    }
}

/// Trains (or resumes training) into `dir`.
///
/// `initial` starts from a given model (fine-tuning) instead of a fresh one; it must have
/// `config.model`'s architecture. With `resume`, the run continues after the last complete
/// checkpoint in `dir`, with the same batches, noise and schedule as an uninterrupted run.
pub fn run<B: AutodiffBackend>(
    config: &TrainConfig,
    dir: &Path,
    resume: bool,
    initial: Option<GenerativeClassifier<B>>,
    device: &B::Device,
) -> Result<RunSummary, TrainError> {
    run_on_devices(config, dir, resume, initial, std::slice::from_ref(device))
}

/// [`run`] on several devices of one backend at once (burn-train's multi-device
/// strategy: each batch is split across the devices and the optimizer steps on the
/// first). `devices` must not be empty.
///
/// Progress goes to stderr ([`ConsolePrinter`]).
pub fn run_on_devices<B: AutodiffBackend>(
    config: &TrainConfig,
    dir: &Path,
    resume: bool,
    initial: Option<GenerativeClassifier<B>>,
    devices: &[B::Device],
) -> Result<RunSummary, TrainError> {
    let observer = Box::new(ConsolePrinter::new());
    run_with_observer(config, dir, resume, initial, devices, observer)
}

/// [`run_on_devices`] reporting its progress to `observer` instead of stderr.
///
/// The observer gets a [`ProgressEvent`] at the start (with the parameter count), after
/// each training and validation batch, at each epoch's end and at the end of training;
/// see [`crate::progress`].
pub fn run_with_observer<B: AutodiffBackend>(
    config: &TrainConfig,
    dir: &Path,
    resume: bool,
    initial: Option<GenerativeClassifier<B>>,
    devices: &[B::Device],
    observer: Box<dyn TrainObserver>,
) -> Result<RunSummary, TrainError> {
    let device = devices.first().ok_or(TrainError::NoDevice)?;
    config.validate()?;
    // Data paths are stored absolute: a resumed run finds its data from any folder, and
    // `data` vs `/abs/data` is no difference.
    let config = &config.clone().with_absolute_paths();
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let config_path = dir.join("train.json");
    let config_json = serde_json::to_string_pretty(config).expect("a TrainConfig serializes");
    let resume_error = |reason| TrainError::Resume {
        dir: dir.to_path_buf(),
        reason,
    };
    let resumed_after = if resume {
        let saved = trustgc_io::read_text_capped(&config_path, trustgc_io::Cap::JSON)
            .map_err(|e| resume_error(ResumeError::ReadConfig(e)))?;
        let saved: TrainConfig =
            serde_json::from_str(&saved).map_err(|e| resume_error(ResumeError::ParseConfig(e)))?;
        let saved = saved.with_absolute_paths();
        // More epochs than saved extend the run; anything else must be as saved.
        let extended = TrainConfig {
            epochs: config.epochs,
            ..saved.clone()
        };
        if config.epochs < saved.epochs || &extended != config {
            let mut differences = config_differences(&extended, config);
            if config.epochs < saved.epochs {
                differences.insert(
                    0,
                    ConfigDifference {
                        field: "epochs".into(),
                        saved: saved.epochs.to_string(),
                        now: format!("{} (fewer epochs cannot be resumed)", config.epochs),
                    },
                );
            }
            return Err(resume_error(ResumeError::ConfigDiffers { differences }));
        }
        let last = last_checkpoint(dir).ok_or_else(|| resume_error(ResumeError::NoCheckpoint))?;
        if config.epochs > saved.epochs && last < config.epochs {
            // Extending: train.json records the new length.
            trustgc_io::write_file(&config_path, &[], config_json.as_bytes())
                .map_err(|e| TrainError::Save(SaveError::Write(e)))?;
        }
        last
    } else {
        if last_checkpoint(dir).is_some() {
            return Err(resume_error(ResumeError::HasCheckpoints));
        }
        trustgc_io::write_file(&config_path, &[], config_json.as_bytes())
            .map_err(|e| TrainError::Save(SaveError::Write(e)))?;
        0
    };
    if resumed_after >= config.epochs {
        return Err(resume_error(ResumeError::Finished {
            epochs: config.epochs,
        }));
    }

    let (train_data, valid_data, train_indices, valid_indices) = open_data(config)?;
    let iterations_per_epoch = train_indices.len().div_ceil(config.batch_size);

    B::seed(device, config.seed);
    let model = match initial {
        Some(model) => model,
        None => {
            let mut model = GenerativeClassifier::<B>::new(&config.model, device)
                .map_err(TrainConfigError::from)?;
            model.head = GaussianHeadConfig::of(&config.model)
                .with_mu_init(config.mu_init)
                .with_mu_conv_init(config.mu_conv_init)
                .init(device);
            model
        }
    };
    let [c, h, w] = train_data.shape();
    model.check_input(&[1, c, h, w])?;
    let mut model = model;
    if config.mu_only {
        model.flow = model.flow.no_grad();
    }

    let beta = config.beta.beta().expect("validated");
    let bits_offset = crate::eval::bits_offset(
        config.model.n_classes,
        config.model.total_dims(),
        config.mean_log_std(),
    );
    let settings = StepSettings {
        beta,
        clip_norm: config.clip_grad_norm,
        burn_in_iterations: config.burn_in_iterations,
        burn_in_factor: config.burn_in_factor,
        // A resumed run is past the burn-in, as the reference's `not resume` condition says.
        iteration: Arc::new(AtomicUsize::new(resumed_after * iterations_per_epoch)),
        mu_only: config.mu_only,
        freeze_batch_norm: config.freeze_batch_norm,
        bits_offset,
    };
    let trainee = Trainee { model, settings };

    let train_settings = LoaderSettings {
        batch_size: config.batch_size,
        shuffle: Some(config.seed),
        dequantize: config.dequantize.then_some(config.seed.wrapping_add(1)),
        noise_per_epoch: true,
        flip: config.flip,
        label_smoothing: config.label_smoothing,
        classes: config.model.n_classes,
    };
    let valid_settings = LoaderSettings {
        shuffle: None,
        noise_per_epoch: false,
        flip: false,
        label_smoothing: 0.0,
        ..train_settings.clone()
    };
    let train_loader = Arc::new(EpochLoader::<B>::new(
        train_data.clone(),
        train_indices.clone(),
        train_settings.clone(),
        resumed_after,
        device.clone(),
    ));
    let valid_loader = Arc::new(EpochLoader::<B::InnerBackend>::new(
        valid_data,
        valid_indices,
        valid_settings,
        0,
        device.clone(),
    ));

    let schedule = ScheduledLr::new(
        config.optimizer.lr(),
        config.schedule.clone(),
        iterations_per_epoch,
        config.epochs,
    );
    let trained = match &config.optimizer {
        OptimizerConfig::Sgd {
            momentum,
            weight_decay,
            ..
        } => {
            let optim = SgdConfig::new()
                .with_momentum(Some(
                    MomentumConfig::new()
                        .with_momentum(*momentum)
                        .with_dampening(0.0)
                        .with_nesterov(false),
                ))
                .with_weight_decay(
                    (*weight_decay > 0.0).then(|| WeightDecayConfig::new(*weight_decay as f32)),
                )
                .init();
            launch(
                config,
                dir,
                resumed_after,
                trainee,
                optim,
                schedule,
                train_loader,
                valid_loader,
                devices,
                observer,
            )?
        }
        OptimizerConfig::Adam { weight_decay, .. } => {
            let optim = AdamConfig::new()
                .with_beta_1(0.9)
                .with_beta_2(0.999)
                .with_epsilon(1e-8)
                .with_weight_decay(
                    (*weight_decay > 0.0).then(|| WeightDecayConfig::new(*weight_decay as f32)),
                )
                .init();
            launch(
                config,
                dir,
                resumed_after,
                trainee,
                optim,
                schedule,
                train_loader,
                valid_loader,
                devices,
                observer,
            )?
        }
    };

    let mut model = trained.model;
    if config.bn_average_batches > 0 && !config.mu_only && !config.freeze_batch_norm {
        // Training batches with the training noise, without flips: the statistics the
        // released `.avg` files were re-estimated from.
        let loader = EpochLoader::<B::InnerBackend>::new(
            train_data,
            train_indices,
            LoaderSettings {
                flip: false,
                ..train_settings
            },
            config.epochs,
            device.clone(),
        );
        let batches = burn::data::dataloader::DataLoader::iter(&loader)
            .take(config.bn_average_batches)
            .map(|batch| batch.x);
        model.average_batch_norm_statistics(batches);
    }
    // The model folder: config, weights and their manifest (checksums.sha256).
    let model_path = dir.join("model.safetensors");
    let weights = to_safetensors_bytes(&model).map_err(|source| SaveError::Encode {
        path: model_path.clone(),
        source,
    })?;
    write_model_file(dir, "config.json", config.model.to_json().as_bytes())?;
    write_model_file(dir, "model.safetensors", &weights)?;
    Ok(RunSummary {
        model_path,
        epochs_run: config.epochs - resumed_after,
        resumed_after,
    })
}

#[allow(clippy::too_many_arguments)]
fn launch<B, O>(
    config: &TrainConfig,
    dir: &Path,
    resumed_after: usize,
    trainee: Trainee<B>,
    optim: O,
    schedule: ScheduledLr,
    train_loader: Arc<EpochLoader<B>>,
    valid_loader: Arc<EpochLoader<B::InnerBackend>>,
    devices: &[B::Device],
    observer: Box<dyn TrainObserver>,
) -> Result<Trainee<B::InnerBackend>, TrainError>
where
    B: AutodiffBackend,
    O: Optimizer<Trainee<B>, B> + 'static,
    Trainee<B>: AutodiffModule<B, InnerModule = Trainee<B::InnerBackend>>,
{
    let csv_path = dir.join("metrics.csv");
    let columns: Vec<&str> = Quantity::ALL.iter().map(|q| q.name()).collect();
    let csv = CsvLogger::open(&csv_path, &columns, resumed_after).map_err(io_error(&csv_path))?;
    // burn-train's own renderer prints `Debug` dumps of its progress structs, and its
    // summary the whole model: the observer gets readable events instead.
    let mut renderer = ObserverRenderer::new(observer, config.batch_size);
    renderer.emit(&ProgressEvent::Start {
        first_epoch: resumed_after + 1,
        epochs: config.epochs,
        iterations: burn::data::dataloader::DataLoader::num_items(&*train_loader)
            .div_ceil(config.batch_size.max(1)),
        params: ParamCount::of(&trainee),
    });
    let mut training = SupervisedTraining::new(dir, train_loader, valid_loader);
    for quantity in Quantity::ALL {
        training = training
            .metric_train_numeric(GcMetric::new(quantity))
            .metric_valid_numeric(GcMetric::new(quantity));
    }
    let mut training = training
        .with_file_checkpointer(AtomicFileRecorder::new())
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(2))
        .with_metric_logger(ResumedEpochs::new(
            FileMetricLogger::new(dir),
            resumed_after,
        ))
        .with_metric_logger(ResumedEpochs::new(csv, resumed_after))
        .num_epochs(config.epochs)
        .renderer(renderer);
    if resumed_after > 0 {
        training = training.checkpoint(resumed_after);
    }
    if devices.len() > 1 {
        training = training.with_training_strategy(
            ExecutionStrategy::MultiDevice(devices.to_vec(), MultiDeviceOptim::OptimMainDevice)
                .into(),
        );
    }
    let result = training.launch(Learner::new(trainee, optim, schedule));
    Ok(result.model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_differences_name_each_field_with_both_values() {
        let saved = TrainConfig::fashion_mnist(PathBuf::from("/data"));
        assert!(config_differences(&saved, &saved).is_empty());
        let mut now = saved.clone();
        now.optimizer = OptimizerConfig::Adam {
            lr: 0.5,
            weight_decay: 0.0,
        };
        now.model.class_names[3] = "Gown".into();
        now.data = DataConfig::Idx {
            dir: PathBuf::from("/elsewhere"),
            validation: 5000,
            limit: None,
        };
        let found: Vec<String> = config_differences(&saved, &now)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                r#"data.dir is "/data" in train.json but "/elsewhere" now"#,
                r#"model.class_names[3] is "Dress" in train.json but "Gown" now"#,
                "optimizer.lr is 0.001 in train.json but 0.5 now",
            ]
        );
    }

    #[test]
    fn relative_data_paths_become_absolute() {
        let config = TrainConfig::fashion_mnist(PathBuf::from("some/data")).with_absolute_paths();
        match config.data {
            DataConfig::Idx { dir, .. } => {
                assert!(dir.is_absolute());
                assert!(dir.ends_with("some/data"));
            }
            other => panic!("{other:?}"),
        }
    }
}
