//! Transfer learning: fine-tune a trained or converted generative classifier on your own
//! labelled images, with your own classes.
//!
//! [`finetune`] takes a model (its [`GcConfig`] and network) and a data folder:
//! - for a model with an `image_net` input representation, a folder of class folders
//!   (torchvision's `ImageFolder` layout, `DATA/<class>/<image>`; class names are the
//!   folder names, sorted); for a grayscale model, IDX files (the model's own classes).
//! - When the folder's classes differ from the model's, the class means are replaced: one
//!   Gaussian per new class, its mean the mean latent of that class's training images (the
//!   flow is kept). The config's `class_names` and `n_classes` become the folder's. When
//!   they are the same, the existing means are trained further.
//! - [`FinetuneOptions::mu_only`] trains only the class means. The flow is frozen, so the
//!   latents of the training images (one plain view and `views − 1` augmented views per
//!   image) are computed once, held in memory, and the means are trained on them: minutes,
//!   not hours, for a few hundred photos at 224×224 on a CPU.
//! - Otherwise flow and means are trained together with the IB objective through
//!   burn-train ([`crate::fit`]): β, label smoothing, gradient clipping, resumable with
//!   [`resume`] (which also extends a finished run to more epochs). BatchNorm keeps the
//!   model's statistics by default; [`FinetuneOptions::train_batch_norm`] trains them on
//!   batch statistics and averages them at the end, as the reference's training does.
//! - At the end the run folder is a complete model folder: `config.json`,
//!   `model.safetensors`, `ood.json` (the out-of-distribution statistics fitted on the
//!   held-out training images with the rates of [`FitSettings::without_latent`]: the
//!   latent test needs a Gaussian fitted on other images, which `trustgc fit-ood` adds),
//!   `checksums.sha256`, and `train.json` with the run's settings.
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use trustgc_train::finetune::{FinetuneOptions, finetune};
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! // A converted released model (`trustgc convert`), or any model folder.
//! let (config, model) =
//!     trustgc::weights::model_dir::load_model_dir::<B>("imagenet-beta8".as_ref(), &device)?;
//! let options = FinetuneOptions {
//!     mu_only: true,
//!     ..FinetuneOptions::new("photos/train", "my-run")
//! };
//! let summary = finetune(&config, model, &options, &device, |event| eprintln!("{event}"))?;
//! println!("{} classes, written to {}", summary.classes.len(), summary.dir.display());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use trustgc::image::{self, DynamicImage};
use trustgc::ood::{Calibration, FitSettings, OodCheckError, OodStats};
use trustgc::weights::SaveError;
use trustgc::weights::model_dir::{ModelDirError, write_manifest, write_model_file};
use trustgc::weights::safetensors::to_safetensors_bytes;
use trustgc::{Classifier, ClassifyError};
use trustgc_core::head::{GaussianHead, losses, smoothed_targets};
use trustgc_core::input::InputSpec;
use trustgc_core::rng::{Mt19937, permutation_from};
use trustgc_core::{Beta, GcConfig, GenerativeClassifier, Mode};

use crate::config::{BetaSpec, DataConfig, OptimizerConfig, TrainConfig, TrainConfigError};
use crate::data::{DataError, GrayscaleSamples, IdxSplit, LabeledImages, Samples};
use crate::fit::TrainError;
use crate::photos::{PhotoSamples, PhotoSpec};
use crate::progress::{ParamCount, ProgressEvent};
use crate::schedule::{LrSchedule, ScheduledLr};
use crate::step::Quantity;

/// Default epochs of a means-only run.
pub const MU_ONLY_EPOCHS: usize = 30;
/// Default epochs of a full fine-tuning run.
pub const FULL_EPOCHS: usize = 5;
/// Default batch size of a means-only run (batches of cached latents).
pub const MU_ONLY_BATCH: usize = 64;
/// Default batch size of a full fine-tuning run.
pub const FULL_BATCH: usize = 16;
/// Default Adam learning rate of a means-only run.
pub const MU_ONLY_LR: f64 = 5e-3;
/// Default Adam learning rate of a full fine-tuning run.
pub const FULL_LR: f64 = 1e-4;
/// Default β of the IB objective.
pub const BETA: f64 = 8.0;
/// Default views per training image in a means-only run (one plain, the rest augmented).
pub const VIEWS: usize = 2;
/// Fewer held-out images per class than this make the fitted `ood.json` rest on weak
/// evidence (its 1 % class thresholds are then about the largest distance seen).
pub const WEAK_OOD_IMAGES_PER_CLASS: usize = 100;
/// Default images per forward pass of the latent computation and the out-of-distribution
/// fit: on the CPU backend one image at a time is fastest (ImageNet architecture on 2
/// cores: 0.31 s per image at batch 1, 0.61 at 2, 0.50 at 4; `trustgc bench`).
pub const PASS_BATCH: usize = 1;

/// Everything a fine-tuning run can be told; [`FinetuneOptions::new`] gives the CLI's
/// defaults (`trustgc finetune --help` shows them). `None` fields take the default of the
/// mode (means only or full), or, when resuming, the run's saved value.
#[derive(Clone, Debug, PartialEq)]
pub struct FinetuneOptions {
    /// Training data: a folder of class folders (models with an `image_net` input
    /// representation), or a folder of IDX files (grayscale models).
    pub data: PathBuf,
    /// The run folder (written: the model folder at the end, `train.json`, checkpoints
    /// and logs of a full run).
    pub out: PathBuf,
    /// Train only the class means on cached latents (the flow stays bit-identical).
    pub mu_only: bool,
    /// Epochs ([`MU_ONLY_EPOCHS`] or [`FULL_EPOCHS`]).
    pub epochs: Option<usize>,
    /// Images (means only: cached latents) per batch ([`MU_ONLY_BATCH`] or [`FULL_BATCH`]).
    pub batch_size: Option<usize>,
    /// Adam's base learning rate, cosine-decayed to 1 % ([`MU_ONLY_LR`] or [`FULL_LR`]).
    pub lr: Option<f64>,
    /// The IB objective's β ([`BETA`]).
    pub beta: Option<BetaSpec>,
    /// Label smoothing ε (0.05, the reference's).
    pub label_smoothing: f64,
    /// Seed of the split, shuffling, noise and augmentation.
    pub seed: u64,
    /// Training images held out for validation and for fitting `ood.json`
    /// (`None`: 10 % of them, at least one, at most 5000).
    pub validation: Option<usize>,
    /// Use at most this many of the remaining training images.
    pub limit: Option<usize>,
    /// Leave out (and report) images that cannot be decoded, instead of failing.
    pub skip_bad_images: bool,
    /// Means only: views per training image whose latents are cached (the first is the
    /// evaluation crop, the others RandomResizedCrop + flip as in training).
    pub views: usize,
    /// Images per forward pass when computing latents (means only, and the initial class
    /// means of new classes) and when scoring held-out images for `ood.json`
    /// ([`PASS_BATCH`]; larger batches pay off on GPUs).
    pub pass_batch: usize,
    /// Full runs: train BatchNorm with batch statistics and re-estimate its statistics
    /// at the end over `bn_average_batches` training batches, as the reference's training
    /// does. By default (`false`) BatchNorm keeps the model's statistics (eval mode) while
    /// the weights train: fine-tuning batches are small, and the class means are
    /// initialized on eval-mode latents.
    pub train_batch_norm: bool,
    /// With `train_batch_norm`: batches the statistics are averaged over at the end (at
    /// most one epoch's).
    pub bn_average_batches: usize,
    /// The rates of the out-of-distribution statistics fitted at the end (`None`: no
    /// `ood.json`).
    pub ood: Option<FitSettings>,
}

impl FinetuneOptions {
    /// The defaults, for `data` and run folder `out`.
    pub fn new(data: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            data: data.into(),
            out: out.into(),
            mu_only: false,
            epochs: None,
            batch_size: None,
            lr: None,
            beta: None,
            label_smoothing: 0.05,
            seed: 1,
            validation: None,
            limit: None,
            skip_bad_images: false,
            views: VIEWS,
            pass_batch: PASS_BATCH,
            train_batch_norm: false,
            bn_average_batches: 200,
            ood: Some(FitSettings::without_latent()),
        }
    }

    fn epochs(&self) -> usize {
        self.epochs.unwrap_or(if self.mu_only {
            MU_ONLY_EPOCHS
        } else {
            FULL_EPOCHS
        })
    }

    fn batch_size(&self) -> usize {
        self.batch_size.unwrap_or(if self.mu_only {
            MU_ONLY_BATCH
        } else {
            FULL_BATCH
        })
    }

    fn lr(&self) -> f64 {
        self.lr
            .unwrap_or(if self.mu_only { MU_ONLY_LR } else { FULL_LR })
    }
}

/// What happens during a run, for a progress display ([`fmt::Display`] gives one line).
#[derive(Clone, Debug, PartialEq)]
pub enum FinetuneEvent {
    /// The data and the model as they will be trained.
    Start {
        /// Class names, in label order.
        classes: Vec<String>,
        /// Whether the class means were replaced (other classes than the model's).
        new_head: bool,
        /// Training images.
        train_images: usize,
        /// Held-out images.
        held_out_images: usize,
        /// Parameters of the model, total and trained (means-only runs; burn-train
        /// reports them for full runs).
        parameters: Option<ParamCount>,
    },
    /// Latents computed so far (`views` per training image, then the held-out images).
    Latents {
        /// Done.
        done: usize,
        /// Of.
        total: usize,
    },
    /// A means-only epoch ended.
    Epoch {
        /// Epoch (1-based).
        epoch: usize,
        /// Of.
        epochs: usize,
        /// Training means over the epoch.
        train: EpochStats,
        /// Held-out means, when there are held-out images.
        valid: Option<EpochStats>,
        /// Seconds the epoch took.
        seconds: f64,
    },
    /// Full runs: burn-train's progress (batches, epochs), as the CLI's
    /// [`ConsolePrinter`](crate::progress::ConsolePrinter) shows it.
    Training(ProgressEvent),
    /// Full runs: training starts on burn-train.
    FullTraining {
        /// Epochs (total).
        epochs: usize,
        /// The epoch it continues after (0: from the start).
        resumed_after: usize,
    },
    /// Held-out images scored for the out-of-distribution fit so far.
    OodImages {
        /// Done.
        done: usize,
        /// Of.
        total: usize,
    },
    /// Something the user should know (e.g. weak evidence behind `ood.json`).
    Warning(String),
}

impl fmt::Display for FinetuneEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinetuneEvent::Start {
                classes,
                new_head,
                train_images,
                held_out_images,
                parameters,
            } => {
                let shown: Vec<&str> = classes.iter().take(8).map(String::as_str).collect();
                let more = if classes.len() > 8 { ", ..." } else { "" };
                write!(
                    f,
                    "{} classes ({}{more}), {}; {train_images} training images, {held_out_images} held out",
                    classes.len(),
                    shown.join(", "),
                    if *new_head {
                        "new class means from the training latents"
                    } else {
                        "the model's own classes"
                    },
                )?;
                if let Some(p) = parameters {
                    write!(
                        f,
                        "; model: {} parameters, {} trained",
                        thousands(p.total),
                        thousands(p.trainable)
                    )?;
                }
                Ok(())
            }
            FinetuneEvent::Latents { done, total } => write!(f, "latents {done}/{total}"),
            FinetuneEvent::Epoch {
                epoch,
                epochs,
                train,
                valid,
                seconds,
            } => {
                write!(
                    f,
                    "epoch {epoch}/{epochs}  loss {:.4}  accuracy {:.2} %",
                    train.loss,
                    100.0 * train.accuracy
                )?;
                if let Some(v) = valid {
                    write!(
                        f,
                        "  | held out: loss {:.4}  accuracy {:.2} %",
                        v.loss,
                        100.0 * v.accuracy
                    )?;
                }
                write!(f, "  ({seconds:.1} s)")
            }
            FinetuneEvent::FullTraining {
                epochs,
                resumed_after,
            } => {
                if *resumed_after > 0 {
                    write!(
                        f,
                        "training flow and means: epochs {}..{epochs}",
                        resumed_after + 1
                    )
                } else {
                    write!(f, "training flow and means: {epochs} epochs")
                }
            }
            FinetuneEvent::OodImages { done, total } => {
                write!(f, "out-of-distribution fit {done}/{total}")
            }
            FinetuneEvent::Training(event) => fmt_progress(f, event),
            FinetuneEvent::Warning(text) => write!(f, "warning: {text}"),
        }
    }
}

/// One line for a burn-train progress event.
fn fmt_progress(f: &mut fmt::Formatter<'_>, event: &ProgressEvent) -> fmt::Result {
    let means = |m: &crate::progress::MetricMeans| {
        format!(
            "loss {:.4}  accuracy {:.2} %",
            m.get(Quantity::Loss).unwrap_or(f64::NAN),
            m.get(Quantity::Accuracy).unwrap_or(f64::NAN)
        )
    };
    match event {
        ProgressEvent::Start {
            first_epoch,
            epochs,
            iterations,
            params,
        } => write!(
            f,
            "epochs {first_epoch}..{epochs}, {iterations} batches each; model: {} parameters, {} trained",
            thousands(params.total),
            thousands(params.trainable)
        ),
        ProgressEvent::Train(step) | ProgressEvent::Valid(step) => {
            let split = if matches!(event, ProgressEvent::Train(_)) {
                "batch"
            } else {
                "validation batch"
            };
            write!(
                f,
                "epoch {}/{}  {split} {}/{}  {}",
                step.epoch,
                step.epochs,
                step.iteration,
                step.iterations,
                means(&step.running)
            )
        }
        ProgressEvent::EpochEnd(end) => write!(
            f,
            "epoch {}/{}  {}  | held out: {}  ({:.1} s)",
            end.epoch,
            end.epochs,
            means(&end.train),
            means(&end.valid),
            (end.train_time + end.valid_time).as_secs_f64()
        ),
        ProgressEvent::End => write!(f, "training done"),
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Means of one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EpochStats {
    /// The objective.
    pub loss: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
}

/// What a run produced.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FinetuneSummary {
    /// The run folder, now a model folder.
    pub dir: PathBuf,
    /// Class names of the fine-tuned model.
    pub classes: Vec<String>,
    /// Whether the class means were replaced.
    pub new_head: bool,
    /// Training images.
    pub train_images: usize,
    /// Held-out images.
    pub held_out_images: usize,
    /// Epochs trained in this call.
    pub epochs_run: usize,
    /// Held-out accuracy of the final model (1 crop), when there are held-out images.
    pub held_out_accuracy: Option<f64>,
    /// Seconds spent computing latents (means only).
    pub latent_seconds: Option<f64>,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// The fitted out-of-distribution statistics' measured false-alarm rate on the
    /// held-out images, when `ood.json` was written.
    pub ood_false_alarm_rate: Option<f64>,
}

/// Why a fine-tuning run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model has no input representation, so it cannot read images.
    #[error(
        "the model has no input representation (config.json `input`): it cannot read images; convert it with one (e.g. --preset imagenet)"
    )]
    NoInput,
    /// A class folder holds no usable image.
    #[error("class folder {dir} holds no usable image (png, jpg, jpeg)")]
    EmptyClass {
        /// The folder.
        dir: PathBuf,
    },
    /// Only one class: a classifier needs two.
    #[error(
        "{dir} holds one class folder ({class}); a classifier needs at least two (one folder per class)"
    )]
    OneClass {
        /// The data folder.
        dir: PathBuf,
        /// The class.
        class: String,
    },
    /// The new classes make an architecture that cannot be built.
    #[error("{classes} classes do not fit this architecture")]
    Classes {
        /// Classes found.
        classes: usize,
        /// Why.
        #[source]
        source: trustgc_core::ConfigError,
    },
    /// No training images are left after the held-out split.
    #[error("no training images left: {images} images, {held_out} held out (lower --validation)")]
    NoTrainingImages {
        /// Images found.
        images: usize,
        /// Held out.
        held_out: usize,
    },
    /// A latent or loss is not finite (NaN or infinite weights or inputs).
    #[error(
        "the model gives non-finite {what} for {item}: its weights or the input hold NaN or infinite values"
    )]
    NonFinite {
        /// What.
        what: &'static str,
        /// The image (file or index).
        item: String,
    },
    /// A device value could not be read back.
    #[error("cannot read {what} back from the device: {source}")]
    ReadBack {
        /// What.
        what: &'static str,
        /// burn's error.
        #[source]
        source: burn::tensor::DataError,
    },
    /// An image could not be read for the latent pass.
    #[error(transparent)]
    Sample(#[from] crate::data::SampleError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] TrainConfigError),
    /// A means-only run is not resumable.
    #[error(
        "{dir} is a means-only run: those are not resumable (they take minutes); start a new run with --from {dir} to train its means further"
    )]
    MuOnlyResume {
        /// The run folder.
        dir: PathBuf,
    },
    /// The run folder cannot be written.
    #[error(transparent)]
    ModelDir(#[from] ModelDirError),
    /// The weights cannot be encoded.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// Scoring the held-out images for `ood.json` failed.
    #[error("cannot score the held-out image {item} for ood.json")]
    Classify {
        /// The image.
        item: String,
        /// Why.
        #[source]
        source: Box<ClassifyError>,
    },
    /// The out-of-distribution statistics could not be fitted.
    #[error("cannot fit ood.json on the held-out images")]
    Ood(#[source] OodCheckError),
    /// `train.json` could not be written or read.
    #[error("cannot use {path}")]
    RunFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The training data of a run: photos or IDX images.
#[derive(Clone)]
enum Data {
    Photos(Arc<PhotoSamples>),
    Idx(Arc<GrayscaleSamples>),
}

impl Data {
    fn open(
        config: &GcConfig,
        dir: &Path,
        skip_bad_images: bool,
    ) -> Result<(Self, Vec<String>), FinetuneError> {
        match &config.input {
            None => Err(FinetuneError::NoInput),
            Some(InputSpec::Grayscale(input)) => {
                let images = LabeledImages::read_idx(dir, IdxSplit::Train, config.n_classes)?;
                let samples = GrayscaleSamples {
                    images,
                    input: input.clone(),
                };
                Ok((Data::Idx(Arc::new(samples)), config.class_names.clone()))
            }
            Some(spec @ InputSpec::ImageNet { .. }) => {
                let spec = PhotoSpec::from_input(spec).expect("an ImageNet spec");
                let photos = PhotoSamples::open(dir, spec, skip_bad_images)?;
                for (label, class) in photos.classes.iter().enumerate() {
                    if !photos.files.iter().any(|(_, l)| *l == label) {
                        return Err(FinetuneError::EmptyClass {
                            dir: dir.join(class),
                        });
                    }
                }
                if photos.classes.len() == 1 {
                    return Err(FinetuneError::OneClass {
                        dir: dir.to_path_buf(),
                        class: photos.classes[0].clone(),
                    });
                }
                let classes = photos.classes.clone();
                Ok((Data::Photos(Arc::new(photos)), classes))
            }
        }
    }

    fn samples(&self) -> Arc<dyn Samples> {
        match self {
            Data::Photos(p) => p.clone(),
            Data::Idx(s) => s.clone(),
        }
    }

    /// Item `i` as the image a user would hand to [`Classifier::likelihoods`].
    fn image(&self, i: usize) -> Result<DynamicImage, FinetuneError> {
        match self {
            Data::Photos(p) => {
                let path = &p.files[i].0;
                trustgc::preprocess::read_image(path).map_err(|source| {
                    FinetuneError::Sample(crate::data::SampleError::Image {
                        path: path.clone(),
                        source: Box::new(source),
                    })
                })
            }
            Data::Idx(s) => {
                let side = s.images.side as u32;
                let pixels = s.images.image(i).to_vec();
                let image = image::GrayImage::from_raw(side, side, pixels)
                    .expect("an IDX image has side² pixels");
                Ok(DynamicImage::ImageLuma8(image))
            }
        }
    }

    fn name(&self, i: usize) -> String {
        match self {
            Data::Photos(p) => p.files[i].0.display().to_string(),
            Data::Idx(_) => format!("training image {i}"),
        }
    }
}

/// Held-out and training indices: `validation` random images held out (seeded), then at
/// most `limit` of the rest.
fn split(
    count: usize,
    validation: Option<usize>,
    limit: Option<usize>,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let held = validation.unwrap_or_else(|| (count / 10).clamp(1, 5000));
    // The split full runs make (crate::fit), so both modes hold out the same images.
    crate::fit::split_indices(count, held, limit, seed)
}

/// Latents of a set of images, on the host.
struct Latents {
    z_fc: Vec<f32>,
    z_conv: Vec<f32>,
    log_det: Vec<f32>,
    labels: Vec<usize>,
    fc: usize,
    conv: usize,
}

impl Latents {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn batch<B: Backend>(
        &self,
        items: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>, Vec<usize>) {
        let (fc, conv) = (self.fc, self.conv);
        let mut z_fc = Vec::with_capacity(items.len() * fc);
        let mut z_conv = Vec::with_capacity(items.len() * conv);
        let mut log_det = Vec::with_capacity(items.len());
        let mut labels = Vec::with_capacity(items.len());
        for &i in items {
            z_fc.extend_from_slice(&self.z_fc[i * fc..(i + 1) * fc]);
            z_conv.extend_from_slice(&self.z_conv[i * conv..(i + 1) * conv]);
            log_det.push(self.log_det[i]);
            labels.push(self.labels[i]);
        }
        let n = items.len();
        (
            Tensor::from_data(TensorData::new(z_fc, [n, fc]), device),
            Tensor::from_data(TensorData::new(z_conv, [n, conv]), device),
            Tensor::from_data(TensorData::new(log_det, [n]), device),
            labels,
        )
    }
}

fn read_f32<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    what: &'static str,
) -> Result<Vec<f32>, FinetuneError> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|source| FinetuneError::ReadBack { what, source })
}

/// Computes the latents of `items` (each `views` times: the first plain, the others
/// augmented with the item's seeded generator) with the flow in eval mode.
#[allow(clippy::too_many_arguments)]
fn compute_latents<B: Backend>(
    model: &GenerativeClassifier<B>,
    data: &Data,
    items: &[usize],
    views: usize,
    batch: usize,
    seed: u64,
    device: &B::Device,
    done_before: usize,
    total: usize,
    on_event: &mut dyn FnMut(FinetuneEvent),
) -> Result<Latents, FinetuneError> {
    let samples = data.samples();
    let [c, h, w] = samples.shape();
    let per_item = c * h * w;
    let jobs: Vec<(usize, usize)> = items
        .iter()
        .flat_map(|&i| (0..views.max(1)).map(move |v| (i, v)))
        .collect();
    let mut out = Latents {
        z_fc: Vec::new(),
        z_conv: Vec::new(),
        log_det: Vec::new(),
        labels: Vec::new(),
        fc: 0,
        conv: 0,
    };
    let mut sample = vec![0f32; per_item];
    let batch = batch.max(1);
    for (b, chunk) in jobs.chunks(batch).enumerate() {
        let mut x = Vec::with_capacity(chunk.len() * per_item);
        for &(i, view) in chunk {
            if view == 0 {
                samples.write(i, None, false, &mut sample)?;
            } else {
                let mut rng = Mt19937::new(crate::data::mix(&[seed, view as u64, i as u64]));
                samples.write(i, Some(&mut rng), true, &mut sample)?;
            }
            x.extend_from_slice(&sample);
            out.labels.push(samples.label(i));
        }
        let x = Tensor::<B, 4>::from_data(TensorData::new(x, [chunk.len(), c, h, w]), device);
        let output = model.forward(x, Mode::Eval);
        out.fc = output.z_fc.dims()[1];
        out.conv = output.z_conv.dims()[1];
        let z_fc = read_f32(output.z_fc, "latents")?;
        let z_conv = read_f32(output.z_conv, "latents")?;
        let log_det = read_f32(output.log_det, "log-determinants")?;
        for (k, &(i, _)) in chunk.iter().enumerate() {
            let finite = log_det[k].is_finite()
                && z_fc[k * out.fc..(k + 1) * out.fc]
                    .iter()
                    .all(|v| v.is_finite())
                && z_conv[k * out.conv..(k + 1) * out.conv]
                    .iter()
                    .all(|v| v.is_finite());
            if !finite {
                return Err(FinetuneError::NonFinite {
                    what: "latents",
                    item: data.name(i),
                });
            }
        }
        out.z_fc.extend_from_slice(&z_fc);
        out.z_conv.extend_from_slice(&z_conv);
        out.log_det.extend_from_slice(&log_det);
        let done = (b * batch + chunk.len()).min(jobs.len());
        on_event(FinetuneEvent::Latents {
            done: done_before + done,
            total,
        });
    }
    Ok(out)
}

/// Per-class means of the latents: `([K, fc], [K, conv])`, row-major.
fn class_means(latents: &Latents, classes: usize) -> (Vec<f32>, Vec<f32>) {
    let (fc, conv) = (latents.fc, latents.conv);
    let mut sum_fc = vec![0f64; classes * fc];
    let mut sum_conv = vec![0f64; classes * conv];
    let mut count = vec![0usize; classes];
    for (i, &y) in latents.labels.iter().enumerate() {
        count[y] += 1;
        for (s, &v) in sum_fc[y * fc..(y + 1) * fc]
            .iter_mut()
            .zip(&latents.z_fc[i * fc..(i + 1) * fc])
        {
            *s += f64::from(v);
        }
        for (s, &v) in sum_conv[y * conv..(y + 1) * conv]
            .iter_mut()
            .zip(&latents.z_conv[i * conv..(i + 1) * conv])
        {
            *s += f64::from(v);
        }
    }
    let mean = |sums: Vec<f64>, width: usize| -> Vec<f32> {
        sums.chunks(width)
            .zip(&count)
            .flat_map(|(row, &n)| row.iter().map(move |s| (s / n.max(1) as f64) as f32))
            .collect()
    };
    (mean(sum_fc, fc), mean(sum_conv, conv))
}

/// Solves `A X = B` for symmetric positive definite `A` (`k x k`) and `B` (`k x m`) by
/// Cholesky, in f64, with a small ridge for safety.
fn spd_solve(a: &[f64], b: &[f64], k: usize, m: usize) -> Vec<f64> {
    let trace: f64 = (0..k).map(|i| a[i * k + i]).sum();
    let ridge = 1e-9 * (trace / k as f64).max(1e-30);
    let mut l = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut s = a[i * k + j] + if i == j { ridge } else { 0.0 };
            for p in 0..j {
                s -= l[i * k + p] * l[j * k + p];
            }
            l[i * k + j] = if i == j {
                s.max(1e-300).sqrt()
            } else {
                s / l[j * k + j]
            };
        }
    }
    let mut x = b.to_vec();
    for col in 0..m {
        // L y = b
        for i in 0..k {
            let mut s = x[i * m + col];
            for p in 0..i {
                s -= l[i * k + p] * x[p * m + col];
            }
            x[i * m + col] = s / l[i * k + i];
        }
        // Lᵀ x = y
        for i in (0..k).rev() {
            let mut s = x[i * m + col];
            for p in i + 1..k {
                s -= l[p * k + i] * x[p * m + col];
            }
            x[i * m + col] = s / l[i * k + i];
        }
    }
    x
}

/// The class means of a new head: `mu_fc` the class means of `z_fc`; the conv means the
/// class means of `z_conv`, exactly when the rank allows (`K ≤ k`: `mu_t = [I | ε]`,
/// `mu_m = [M; ε]` with the reference's small initial noise ε), else their least-squares
/// fit on the model's learned conv basis `mu_m` (`mu_t = M mu_mᵀ (mu_m mu_mᵀ)⁻¹`).
fn head_from_means<B: Backend>(
    old: &GaussianHead<B>,
    means: (Vec<f32>, Vec<f32>),
    classes: usize,
    conv_init: f64,
    seed: u64,
    device: &B::Device,
) -> Result<GaussianHead<B>, FinetuneError> {
    let (fc_means, conv_means) = means;
    let fc = fc_means.len() / classes;
    let conv = conv_means.len() / classes;
    let mu_fc = Tensor::<B, 2>::from_data(TensorData::new(fc_means, [classes, fc]), device);
    let mut rng = Mt19937::new((seed as u32) ^ 0x0bea_d5ed);
    let mut noise = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                // Box-Muller from two uniforms in (0, 1].
                let u1 = (f64::from(rng.next_u32()) + 1.0) / 4_294_967_296.0;
                let u2 = f64::from(rng.next_u32()) / 4_294_967_296.0;
                ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * conv_init) as f32
            })
            .collect()
    };
    let head = match (&old.mu_t, &old.mu_m) {
        (Some(_), Some(old_m)) => {
            let k = old_m.val().dims()[0];
            let (mu_t, mu_m) = if classes <= k {
                let mut t = noise(classes * k);
                for y in 0..classes {
                    t[y * k..(y + 1) * k].iter_mut().for_each(|v| *v = 0.0);
                    t[y * k + y] = 1.0;
                }
                let mut m = conv_means;
                m.extend(noise((k - classes) * conv));
                (t, m)
            } else {
                let basis = old_m.val();
                let gram = read_f32(basis.clone().matmul(basis.clone().transpose()), "head")?;
                let means =
                    Tensor::<B, 2>::from_data(TensorData::new(conv_means, [classes, conv]), device);
                // P = M mu_mᵀ, [K, k]; mu_tᵀ = G⁻¹ Pᵀ.
                let p = read_f32(means.matmul(basis.clone().transpose()), "head")?;
                let gram: Vec<f64> = gram.into_iter().map(f64::from).collect();
                let mut pt = vec![0f64; k * classes];
                for y in 0..classes {
                    for j in 0..k {
                        pt[j * classes + y] = f64::from(p[y * k + j]);
                    }
                }
                let xt = spd_solve(&gram, &pt, k, classes);
                let mut t = vec![0f32; classes * k];
                for y in 0..classes {
                    for j in 0..k {
                        t[y * k + j] = xt[j * classes + y] as f32;
                    }
                }
                (t, read_f32(basis, "head")?)
            };
            GaussianHead {
                mu_fc: Param::from_tensor(mu_fc),
                mu_t: Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(mu_t, [classes, k]),
                    device,
                ))),
                mu_m: Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(mu_m, [k, conv]),
                    device,
                ))),
                mu_conv: None,
            }
        }
        _ => GaussianHead {
            mu_fc: Param::from_tensor(mu_fc),
            mu_t: None,
            mu_m: None,
            mu_conv: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(conv_means, [classes, conv]),
                device,
            ))),
        },
    };
    Ok(head)
}

/// Settings of a run as saved in `train.json`: the full run's [`TrainConfig`], or a
/// means-only run's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MuOnlyRecord {
    /// Always `"mu_only"`.
    pub kind: String,
    /// The fine-tuned architecture and classes.
    pub model: GcConfig,
    /// The data folder (absolute).
    pub data: PathBuf,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam's base learning rate (cosine to 1 %).
    pub lr: f64,
    /// β.
    pub beta: BetaSpec,
    /// Label smoothing.
    pub label_smoothing: f64,
    /// Seed.
    pub seed: u64,
    /// Held-out images.
    pub held_out: usize,
    /// Training images.
    pub train_images: usize,
    /// Views per training image.
    pub views: usize,
}

/// Fine-tunes `model` (of `config`) on `options.data` into `options.out`; see the
/// [module](self) documentation. `on_event` is told what happens (the CLI prints it).
///
/// # Errors
/// [`FinetuneError`] naming what is wrong: unreadable or unusable data (an empty class
/// folder, a single class), a model without input representation, a run folder that
/// already holds a run, non-finite latents, a failed write.
pub fn finetune<B: AutodiffBackend>(
    config: &GcConfig,
    model: GenerativeClassifier<B>,
    options: &FinetuneOptions,
    device: &B::Device,
    mut on_event: impl FnMut(FinetuneEvent),
) -> Result<FinetuneSummary, FinetuneError> {
    let on_event: &mut dyn FnMut(FinetuneEvent) = &mut on_event;
    let data_dir = absolute(&options.data);
    let (data, classes) = Data::open(config, &data_dir, options.skip_bad_images)?;
    let count = data.samples().len();
    let (held_out, train) = split(count, options.validation, options.limit, options.seed);
    if train.is_empty() {
        return Err(FinetuneError::NoTrainingImages {
            images: count,
            held_out: held_out.len(),
        });
    }
    let new_head = classes != config.class_names || classes.len() != config.n_classes;
    let mut new_config = config.clone();
    if new_head {
        new_config.n_classes = classes.len();
        new_config.class_names = classes.clone();
        new_config
            .validate()
            .map_err(|source| FinetuneError::Classes {
                classes: classes.len(),
                source,
            })?;
    }
    std::fs::create_dir_all(&options.out).map_err(|e| FinetuneError::RunFile {
        path: options.out.clone(),
        source: Box::new(e),
    })?;
    if options.out.join("train.json").exists() {
        return Err(FinetuneError::Train(TrainError::Resume {
            dir: options.out.clone(),
            reason: crate::fit::ResumeError::HasCheckpoints,
        }));
    }

    let parameters = options.mu_only.then(|| ParamCount {
        total: model.num_params(),
        trainable: model.head.num_params(),
    });
    on_event(FinetuneEvent::Start {
        classes: classes.clone(),
        new_head,
        train_images: train.len(),
        held_out_images: held_out.len(),
        parameters,
    });

    let started = Instant::now();
    let (mut model, latent_seconds, epochs_run, held_out_accuracy) = if options.mu_only {
        let inner = model.valid();
        let views = options.views.max(1);
        let total = train.len() * views + held_out.len();
        let train_latents = compute_latents(
            &inner,
            &data,
            &train,
            views,
            options.pass_batch,
            options.seed,
            device,
            0,
            total,
            on_event,
        )?;
        let held_latents = compute_latents(
            &inner,
            &data,
            &held_out,
            1,
            options.pass_batch,
            options.seed,
            device,
            train.len() * views,
            total,
            on_event,
        )?;
        let latent_seconds = started.elapsed().as_secs_f64();
        let mut model = model;
        if new_head {
            let means = class_means(&train_latents, classes.len());
            model.head = head_from_means(
                &model.head,
                means,
                classes.len(),
                trustgc_core::head::MU_CONV_INIT,
                options.seed,
                device,
            )?;
        }
        let record = MuOnlyRecord {
            kind: "mu_only".to_string(),
            model: new_config.clone(),
            data: data_dir.clone(),
            epochs: options.epochs(),
            batch_size: options.batch_size(),
            lr: options.lr(),
            beta: options.beta.clone().unwrap_or(BetaSpec::Finite(BETA)),
            label_smoothing: options.label_smoothing,
            seed: options.seed,
            held_out: held_out.len(),
            train_images: train.len(),
            views,
        };
        write_run_file(&options.out, &record)?;
        let beta = record.beta.beta().ok_or(TrainConfigError::Beta {
            beta: record.beta.clone(),
        })?;
        let (head, held_accuracy) = train_means(
            model.head,
            &train_latents,
            &held_latents,
            &record,
            beta,
            new_config.total_dims(),
            device,
            on_event,
        )?;
        model.head = head;
        (model, Some(latent_seconds), record.epochs, held_accuracy)
    } else {
        let mut model = model;
        if new_head {
            // The new means start at the class means of the plain training latents.
            let inner = model.valid();
            let total = train.len();
            let latents = compute_latents(
                &inner,
                &data,
                &train,
                1,
                options.pass_batch,
                options.seed,
                device,
                0,
                total,
                on_event,
            )?;
            let means = class_means(&latents, classes.len());
            model.head = head_from_means(
                &model.head,
                means,
                classes.len(),
                trustgc_core::head::MU_CONV_INIT,
                options.seed,
                device,
            )?;
        }
        let train_config = full_config(&new_config, &data_dir, options, held_out.len(), &train);
        on_event(FinetuneEvent::FullTraining {
            epochs: train_config.epochs,
            resumed_after: 0,
        });
        run_reporting(
            &train_config,
            &options.out,
            false,
            Some(model),
            device,
            on_event,
        )?;
        let model = trustgc::weights::model_dir::load_model_dir::<B>(&options.out, device)?.1;
        (model, None, train_config.epochs, None)
    };
    let train_seconds = started.elapsed().as_secs_f64() - latent_seconds.unwrap_or(0.0);
    model = model.no_grad();
    finish(FinishArgs {
        out: &options.out,
        config: &new_config,
        model,
        data: &data,
        held_out: &held_out,
        ood: options.ood,
        pass_batch: options.pass_batch,
        device,
        summary: FinetuneSummary {
            dir: options.out.clone(),
            classes,
            new_head,
            train_images: train.len(),
            held_out_images: held_out.len(),
            epochs_run,
            held_out_accuracy,
            latent_seconds,
            train_seconds,
            ood_false_alarm_rate: None,
        },
        on_event,
    })
}

/// The [`TrainConfig`] of a full fine-tuning run.
fn full_config(
    model: &GcConfig,
    data_dir: &Path,
    options: &FinetuneOptions,
    held_out: usize,
    train: &[usize],
) -> TrainConfig {
    let data = match model.input {
        Some(InputSpec::Grayscale(_)) => DataConfig::Idx {
            dir: data_dir.to_path_buf(),
            validation: held_out,
            limit: options.limit,
        },
        _ => DataConfig::ImageFolder {
            train: data_dir.to_path_buf(),
            valid: None,
            validation: held_out,
            limit: options.limit,
            skip_bad_images: options.skip_bad_images,
        },
    };
    let batch_size = options.batch_size();
    let mut config = TrainConfig::fashion_mnist(data_dir.to_path_buf());
    config.model = model.clone();
    config.data = data;
    config.beta = options.beta.clone().unwrap_or(BetaSpec::Finite(BETA));
    config.label_smoothing = options.label_smoothing;
    config.optimizer = OptimizerConfig::Adam {
        lr: options.lr(),
        weight_decay: 0.0,
    };
    config.schedule = LrSchedule::Cosine { min_factor: 0.01 };
    config.epochs = options.epochs();
    config.batch_size = batch_size;
    config.seed = options.seed;
    config.burn_in_iterations = 0;
    config.freeze_batch_norm = !options.train_batch_norm;
    config.bn_average_batches = options
        .bn_average_batches
        .min(train.len().div_ceil(batch_size));
    config
}

/// Continues the full fine-tuning run in `options.out` after its last checkpoint (the
/// same batches, noise and schedule as an uninterrupted run); with more epochs than the
/// run was started with, extends a finished run (the cosine schedule is stretched to the
/// new length from where it stands). The options `epochs`, `batch_size`, `lr`, `beta`
/// given (`Some`) and a non-empty `data` override the saved ones, the others are the
/// run's; a difference other than more epochs is an error naming each field and both
/// values.
///
/// # Errors
/// As [`finetune`]; [`FinetuneError::MuOnlyResume`] for a means-only run.
pub fn resume<B: AutodiffBackend>(
    options: &FinetuneOptions,
    device: &B::Device,
    mut on_event: impl FnMut(FinetuneEvent),
) -> Result<FinetuneSummary, FinetuneError> {
    let on_event: &mut dyn FnMut(FinetuneEvent) = &mut on_event;
    let path = options.out.join("train.json");
    let text = trustgc_io::read_text_capped(&path, trustgc_io::Cap::JSON).map_err(|e| {
        FinetuneError::RunFile {
            path: path.clone(),
            source: Box::new(e),
        }
    })?;
    if serde_json::from_str::<MuOnlyRecord>(&text).is_ok() {
        return Err(FinetuneError::MuOnlyResume {
            dir: options.out.clone(),
        });
    }
    let mut config: TrainConfig =
        serde_json::from_str(&text).map_err(|e| FinetuneError::RunFile {
            path: path.clone(),
            source: Box::new(e),
        })?;
    let given = FinetuneOptions::new(PathBuf::new(), PathBuf::new());
    if options.data != given.data {
        let dir = absolute(&options.data);
        match &mut config.data {
            DataConfig::Idx { dir: d, .. } => *d = dir,
            DataConfig::ImageFolder { train, .. } => *train = dir,
        }
    }
    if let Some(epochs) = options.epochs {
        config.epochs = epochs;
    }
    if let Some(batch_size) = options.batch_size {
        config.batch_size = batch_size;
    }
    if let Some(lr) = options.lr {
        match &mut config.optimizer {
            OptimizerConfig::Sgd { lr: l, .. } | OptimizerConfig::Adam { lr: l, .. } => *l = lr,
        }
    }
    if let Some(beta) = &options.beta {
        config.beta = beta.clone();
    }
    let resumed_after = crate::fit::last_checkpoint(&options.out).unwrap_or(0);
    on_event(FinetuneEvent::FullTraining {
        epochs: config.epochs,
        resumed_after,
    });
    let started = Instant::now();
    let run_summary = run_reporting::<B>(&config, &options.out, true, None, device, on_event)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let skip = match &config.data {
        DataConfig::ImageFolder {
            skip_bad_images, ..
        } => *skip_bad_images,
        DataConfig::Idx { .. } => false,
    };
    let data_dir = match &config.data {
        DataConfig::Idx { dir, .. } => dir.clone(),
        DataConfig::ImageFolder { train, .. } => train.clone(),
    };
    let (data, classes) = Data::open(&config.model, &data_dir, skip)?;
    let (validation, limit) = match &config.data {
        DataConfig::Idx {
            validation, limit, ..
        }
        | DataConfig::ImageFolder {
            validation, limit, ..
        } => (*validation, *limit),
    };
    let (held_out, train) = split(data.samples().len(), Some(validation), limit, config.seed);
    let model = trustgc::weights::model_dir::load_model_dir::<B>(&options.out, device)?.1;
    finish(FinishArgs {
        out: &options.out,
        config: &config.model,
        model: model.no_grad(),
        data: &data,
        held_out: &held_out,
        ood: options.ood,
        pass_batch: options.pass_batch,
        device,
        summary: FinetuneSummary {
            dir: options.out.clone(),
            classes,
            new_head: false,
            train_images: train.len(),
            held_out_images: held_out.len(),
            epochs_run: run_summary.epochs_run,
            held_out_accuracy: None,
            latent_seconds: None,
            train_seconds,
            ood_false_alarm_rate: None,
        },
        on_event,
    })
}

/// [`crate::fit::run_with_observer`] on a scoped thread, its progress handed to
/// `on_event` on this one (burn-train's observer must be `'static`; `on_event` need not).
fn run_reporting<B: AutodiffBackend>(
    config: &TrainConfig,
    dir: &Path,
    resume: bool,
    initial: Option<GenerativeClassifier<B>>,
    device: &B::Device,
    on_event: &mut dyn FnMut(FinetuneEvent),
) -> Result<crate::fit::RunSummary, TrainError> {
    use std::sync::mpsc::{RecvTimeoutError, channel};
    let (sender, receiver) = channel::<ProgressEvent>();
    let observer = move |event: &ProgressEvent| {
        // The receiver only goes away once training has returned.
        let _ = sender.send(event.clone());
    };
    std::thread::scope(|scope| {
        let training = scope.spawn(move || {
            crate::fit::run_with_observer(
                config,
                dir,
                resume,
                initial,
                std::slice::from_ref(device),
                Box::new(observer),
            )
        });
        loop {
            match receiver.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(event) => on_event(FinetuneEvent::Training(event)),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if training.is_finished() => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        while let Ok(event) = receiver.try_recv() {
            on_event(FinetuneEvent::Training(event));
        }
        training
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `std::path::absolute`, falling back to the path as given.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn write_run_file<T: Serialize>(dir: &Path, value: &T) -> Result<(), FinetuneError> {
    let path = dir.join("train.json");
    let text = serde_json::to_string_pretty(value).expect("run records serialize");
    trustgc_io::write_file(&path, &[], text.as_bytes()).map_err(|e| FinetuneError::RunFile {
        path,
        source: Box::new(e),
    })
}

/// Trains the class means on cached latents with Adam (cosine to 1 %); returns the head
/// and the final held-out accuracy.
#[allow(clippy::too_many_arguments)]
fn train_means<B: AutodiffBackend>(
    mut head: GaussianHead<B>,
    train: &Latents,
    held_out: &Latents,
    record: &MuOnlyRecord,
    beta: Beta,
    total_dims: usize,
    device: &B::Device,
    on_event: &mut dyn FnMut(FinetuneEvent),
) -> Result<(GaussianHead<B>, Option<f64>), FinetuneError> {
    let classes = record.model.n_classes;
    let batch = record.batch_size.max(1);
    let iterations_per_epoch = train.len().div_ceil(batch);
    let schedule = ScheduledLr::new(
        record.lr,
        LrSchedule::Cosine { min_factor: 0.01 },
        iterations_per_epoch,
        record.epochs,
    );
    let mut optim = AdamConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .init::<B, GaussianHead<B>>();
    let mut iteration = 0usize;
    let mut held_accuracy = None;
    for epoch in 0..record.epochs {
        let started = Instant::now();
        let mut rng = Mt19937::new(crate::data::mix(&[record.seed, 0x6d75, epoch as u64]));
        let order = permutation_from(&mut rng, train.len());
        let (mut loss_sum, mut correct_sum, mut n) = (0f64, 0f64, 0usize);
        for items in order.chunks(batch) {
            let (z_fc, z_conv, log_det, labels) = train.batch::<B>(items, device);
            let targets = smoothed_targets(&labels, classes, record.label_smoothing, device);
            let distances = head.distances(z_fc, z_conv);
            let l = losses(distances, log_det, targets, total_dims);
            let loss = l.objective(beta);
            let stats = read_f32(
                Tensor::cat(vec![loss.clone(), l.correct.sum()], 0).detach(),
                "loss",
            )?;
            if !stats[0].is_finite() {
                return Err(FinetuneError::NonFinite {
                    what: "loss",
                    item: format!("epoch {}", epoch + 1),
                });
            }
            loss_sum += f64::from(stats[0]) * items.len() as f64;
            correct_sum += f64::from(stats[1]);
            n += items.len();
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(schedule.rate_at(iteration), head, grads);
            iteration += 1;
        }
        let train_stats = EpochStats {
            loss: loss_sum / n.max(1) as f64,
            accuracy: correct_sum / n.max(1) as f64,
        };
        let valid = if held_out.len() > 0 {
            let stats = evaluate_means(&head.valid(), held_out, beta, total_dims, device)?;
            held_accuracy = Some(stats.accuracy);
            Some(stats)
        } else {
            None
        };
        on_event(FinetuneEvent::Epoch {
            epoch: epoch + 1,
            epochs: record.epochs,
            train: train_stats,
            valid,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok((head, held_accuracy))
}

/// Loss (one-hot targets) and accuracy of `head` on cached latents.
fn evaluate_means<B: Backend>(
    head: &GaussianHead<B>,
    latents: &Latents,
    beta: Beta,
    total_dims: usize,
    device: &B::Device,
) -> Result<EpochStats, FinetuneError> {
    let classes = head.mu_fc.val().dims()[0];
    let (mut loss_sum, mut correct_sum) = (0f64, 0f64);
    let all: Vec<usize> = (0..latents.len()).collect();
    for items in all.chunks(256) {
        let (z_fc, z_conv, log_det, labels) = latents.batch::<B>(items, device);
        let targets = smoothed_targets(&labels, classes, 0.0, device);
        let l = losses(head.distances(z_fc, z_conv), log_det, targets, total_dims);
        let stats = read_f32(
            Tensor::cat(vec![l.objective(beta), l.correct.sum()], 0),
            "loss",
        )?;
        loss_sum += f64::from(stats[0]) * items.len() as f64;
        correct_sum += f64::from(stats[1]);
    }
    let n = latents.len().max(1) as f64;
    Ok(EpochStats {
        loss: loss_sum / n,
        accuracy: correct_sum / n,
    })
}

struct FinishArgs<'a, B: AutodiffBackend> {
    out: &'a Path,
    config: &'a GcConfig,
    model: GenerativeClassifier<B>,
    data: &'a Data,
    held_out: &'a [usize],
    ood: Option<FitSettings>,
    pass_batch: usize,
    device: &'a B::Device,
    summary: FinetuneSummary,
    on_event: &'a mut dyn FnMut(FinetuneEvent),
}

/// Writes the model folder: config, weights, `ood.json` fitted on the held-out images
/// (stale `ood.json`/`calibration.json` of an earlier model removed first), manifest.
fn finish<B: AutodiffBackend>(args: FinishArgs<'_, B>) -> Result<FinetuneSummary, FinetuneError> {
    let FinishArgs {
        out,
        config,
        model,
        data,
        held_out,
        ood,
        pass_batch,
        device,
        mut summary,
        on_event,
    } = args;
    let model = model.valid();
    for stale in ["ood.json", "calibration.json"] {
        let path = out.join(stale);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|e| FinetuneError::RunFile {
                path: path.clone(),
                source: Box::new(e),
            })?;
        }
    }
    let weights_path = out.join("model.safetensors");
    let weights = to_safetensors_bytes(&model).map_err(|source| SaveError::Encode {
        path: weights_path,
        source,
    })?;
    write_model_file(out, "config.json", config.to_json().as_bytes())?;
    write_model_file(out, "model.safetensors", &weights)?;
    write_manifest(out)?;

    let classifier = Classifier::new(config.clone(), model, device);
    let settings = match ood {
        Some(settings) if !held_out.is_empty() => settings,
        Some(_) => {
            on_event(FinetuneEvent::Warning(
                "no held-out images: ood.json was not written (pass --validation N)".into(),
            ));
            return Ok(summary);
        }
        None => return Ok(summary),
    };
    let d = config.total_dims() as f64;
    let (mut marginal, mut complexity, mut distances, mut posteriors, mut labels) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let samples = data.samples();
    let mut correct = 0usize;
    let batch = pass_batch.max(1);
    for (b, chunk) in held_out.chunks(batch).enumerate() {
        let images = chunk
            .iter()
            .map(|&i| data.image(i))
            .collect::<Result<Vec<_>, _>>()?;
        let results =
            classifier
                .likelihoods_batch(&images)
                .map_err(|source| FinetuneError::Classify {
                    item: data.name(chunk[0]),
                    source: Box::new(source),
                })?;
        // The complexity test's PNG sizes, of the 8-bit images the model sees.
        let bits: Vec<Option<f64>> = images
            .iter()
            .map(|image| {
                let spec = config.input.as_ref()?;
                trustgc::scores::model_pixels(image, spec)
                    .ok()
                    .map(|pixels| trustgc::scores::png_bits(&pixels))
            })
            .collect();
        for (k, (&i, result)) in chunk.iter().zip(results).enumerate() {
            if !result.log_marginal.is_finite() {
                return Err(FinetuneError::NonFinite {
                    what: "log-likelihood",
                    item: data.name(i),
                });
            }
            let label = samples.label(i);
            if result.predicted().class == label {
                correct += 1;
            }
            marginal.push(result.log_marginal / d);
            complexity.push(bits[k].map_or(f64::NAN, |bits| {
                trustgc::scores::complexity(result.log_marginal, bits, config.total_dims())
            }));
            distances.push(result.class_distances);
            posteriors.push(result.log_posterior);
            labels.push(label);
        }
        on_event(FinetuneEvent::OodImages {
            done: (b * batch + chunk.len()).min(held_out.len()),
            total: held_out.len(),
        });
    }
    summary.held_out_accuracy = Some(correct as f64 / held_out.len() as f64);
    let with_complexity = settings.alpha_complexity.is_some();
    let settings = FitSettings {
        alpha_complexity: settings
            .alpha_complexity
            .filter(|_| complexity.iter().all(|c| c.is_finite())),
        ..settings
    };
    if settings.alpha_latent.is_some() {
        on_event(FinetuneEvent::Warning(
            "fine-tuning fits no latent test (it needs a Gaussian fitted on other images than the held-out ones): refit ood.json with `trustgc fit-ood` to add it".into(),
        ));
    }
    let settings = FitSettings {
        alpha_latent: None,
        ..settings
    };
    if with_complexity && settings.alpha_complexity.is_none() {
        on_event(FinetuneEvent::Warning(
            "some held-out images have no complexity score: ood.json has no complexity test".into(),
        ));
    }
    let fit = Calibration {
        marginal: &marginal,
        complexity: settings.alpha_complexity.map(|_| complexity.as_slice()),
        class_distances: &distances,
        log_posteriors: &posteriors,
        latent: None,
        labels: &labels,
    };
    let source = format!(
        "{} held-out training images of {}",
        held_out.len(),
        summary.dir.display()
    );
    let stats = OodStats::fit(&settings, &fit, None, source).map_err(FinetuneError::Ood)?;
    let classes = config.n_classes;
    let fewest = (0..classes)
        .map(|y| labels.iter().filter(|&&l| l == y).count())
        .min()
        .unwrap_or(0);
    if fewest < WEAK_OOD_IMAGES_PER_CLASS {
        on_event(FinetuneEvent::Warning(format!(
            "ood.json rests on few images: the smallest class has {fewest} held-out images (fewer than {WEAK_OOD_IMAGES_PER_CLASS}), so its {} % class threshold is about the largest distance seen; hold out more (--validation) or refit with `trustgc fit-ood`",
            100.0 * stats.alpha
        )));
    }
    write_model_file(
        out,
        "ood.json",
        serde_json::to_string_pretty(&stats)
            .expect("OodStats serialize")
            .as_bytes(),
    )?;
    summary.ood_false_alarm_rate = Some(stats.false_alarm_rate);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_small_system() {
        // A = [[4, 2], [2, 3]], X = [[1, 0], [0, 2]] → B = A X.
        let a = [4.0, 2.0, 2.0, 3.0];
        let b = [4.0, 4.0, 2.0, 6.0];
        let x = spd_solve(&a, &b, 2, 2);
        for (got, want) in x.iter().zip([1.0, 0.0, 0.0, 2.0]) {
            assert!((got - want).abs() < 1e-7, "{x:?}");
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(123_456_789), "123,456,789");
    }

    #[test]
    fn the_split_is_seeded_and_disjoint() {
        let (held, train) = split(100, None, None, 3);
        assert_eq!(held.len(), 10);
        assert_eq!(train.len(), 90);
        assert!(held.iter().all(|i| !train.contains(i)));
        assert_eq!(split(100, None, None, 3), (held, train));
        let (held, train) = split(5, Some(2), Some(1), 3);
        assert_eq!((held.len(), train.len()), (2, 1));
    }
}
