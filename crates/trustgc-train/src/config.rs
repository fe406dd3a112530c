//! [`TrainConfig`]: everything a training run needs, saved as `train.json` in its folder.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use trustgc::hub::catalog::{ParseBetaError, parse_beta};
use trustgc_core::head::{MU_CONV_INIT, MU_INIT};
use trustgc_core::input::{GrayscaleInput, InputSpec};
use trustgc_core::{Beta, ConfigError, GcConfig};

use crate::schedule::LrSchedule;

/// β as written in a config: a number, or `"inf"` for β = ∞.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BetaSpec {
    /// Finite β ≥ 0.
    Finite(f64),
    /// `"inf"` or `"infinity"`.
    Named(String),
}

impl BetaSpec {
    /// The β it names, or `None` when it names nothing valid (text is read by
    /// [`parse_beta`], the one β parser of trustgc).
    pub fn beta(&self) -> Option<Beta> {
        match self {
            BetaSpec::Finite(b) if b.is_finite() && *b >= 0.0 => Some(Beta::Finite(*b)),
            BetaSpec::Finite(_) => None,
            BetaSpec::Named(text) => parse_beta(text).ok(),
        }
    }

    /// Parses a command-line value (`8`, `0.5`, `inf`, `beta_8`) with [`parse_beta`].
    ///
    /// # Errors
    /// [`ParseBetaError`] naming the text when it is no β.
    pub fn parse(text: &str) -> Result<Self, ParseBetaError> {
        Ok(match parse_beta(text)? {
            Beta::Finite(beta) => BetaSpec::Finite(beta),
            Beta::Infinity => BetaSpec::Named("inf".to_string()),
        })
    }
}

/// The optimizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD with momentum, no dampening (PyTorch's `SGD(momentum=0.9)`), the reference's.
    Sgd {
        /// Base learning rate.
        lr: f64,
        /// Momentum.
        momentum: f64,
        /// L2 weight decay (0 in the reference).
        weight_decay: f64,
    },
    /// Adam (PyTorch's defaults: β₁ 0.9, β₂ 0.999, ε 1e-8).
    Adam {
        /// Base learning rate.
        lr: f64,
        /// L2 weight decay.
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adam { lr, .. } => *lr,
        }
    }
}

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// A folder with MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, ...).
    Idx {
        /// The folder.
        dir: PathBuf,
        /// Training images held out (a fixed random subset) to validate on.
        validation: usize,
        /// Use only the first this many remaining training images (`None`: all).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Photos in class folders (`train/<class>/<image>`, the ImageNet layout); the model's
    /// input representation must be `image_net`.
    ImageFolder {
        /// The training folder.
        train: PathBuf,
        /// A validation folder with the same classes; without one, `validation` training
        /// images are held out.
        #[serde(default)]
        valid: Option<PathBuf>,
        /// Training images held out when there is no validation folder.
        #[serde(default)]
        validation: usize,
        /// Use only the first this many training images (`None`: all).
        #[serde(default)]
        limit: Option<usize>,
        /// Leave out (and report) images that cannot be decoded, instead of failing.
        #[serde(default)]
        skip_bad_images: bool,
    },
}

/// A training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The architecture, with the input representation (grayscale for IDX data) and the
    /// class names.
    pub model: GcConfig,
    /// The data.
    pub data: DataConfig,
    /// The IB objective's β.
    pub beta: BetaSpec,
    /// Label smoothing ε (0.05 in the reference).
    pub label_smoothing: f64,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: LrSchedule,
    /// Epochs.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of the initialization, shuffling, noise and augmentation.
    pub seed: u64,
    /// Clip the flow's gradients to this global norm (8 in the reference).
    pub clip_grad_norm: Option<f64>,
    /// Iterations whose loss is scaled by `burn_in_factor` at the start of a fresh run.
    pub burn_in_iterations: usize,
    /// That scale (0.05 in the reference).
    pub burn_in_factor: f64,
    /// Random left-right flips.
    pub flip: bool,
    /// Uniform dequantization noise in training.
    pub dequantize: bool,
    /// Train only the class means (the flow frozen and in eval mode).
    pub mu_only: bool,
    /// Initial class means (`mu_init`, `mu_conv_init` of the reference).
    pub mu_init: f64,
    /// Standard deviation of the initial conv means.
    pub mu_conv_init: f64,
    /// After training, re-estimate BatchNorm statistics as the average over this many
    /// training batches (0: keep the running averages).
    pub bn_average_batches: usize,
    /// Train with BatchNorm in eval mode: its running statistics are used and kept (no
    /// averaging at the end); the flow's weights still train. Fine-tuning's default.
    #[serde(default)]
    pub freeze_batch_norm: bool,
}

impl TrainConfig {
    /// The Fashion-MNIST generative classifier shipped in `weights/fashion-mnist`.
    pub fn fashion_mnist(data_dir: PathBuf) -> Self {
        let input = GrayscaleInput::fashion_mnist();
        Self {
            model: GcConfig {
                input_shape: input.model_shape(),
                n_classes: 10,
                n_loss_dims: 128,
                mu_low_rank_k: 0,
                base_width: 32,
                planes: vec![128, 128],
                blocks: vec![4, 4],
                strides: vec![1, 1],
                clamp: 0.7,
                act_norm: 0.7,
                entry_1x1_hidden: 64,
                haar_rebalance: 0.5,
                dct_rebalance: 0.5,
                permute_seed: 0,
                bn_momentum: 0.05,
                bn_eps: 1e-5,
                class_names: [
                    "T-shirt/top",
                    "Trouser",
                    "Pullover",
                    "Dress",
                    "Coat",
                    "Sandal",
                    "Shirt",
                    "Sneaker",
                    "Bag",
                    "Ankle boot",
                ]
                .map(String::from)
                .to_vec(),
                input: Some(InputSpec::Grayscale(input)),
            },
            data: DataConfig::Idx {
                dir: data_dir,
                validation: 5000,
                limit: None,
            },
            beta: BetaSpec::Finite(16.0),
            label_smoothing: 0.05,
            optimizer: OptimizerConfig::Adam {
                lr: 1e-3,
                weight_decay: 0.0,
            },
            schedule: LrSchedule::Cosine { min_factor: 0.01 },
            epochs: 12,
            batch_size: 64,
            seed: 1,
            clip_grad_norm: Some(8.0),
            burn_in_iterations: 10,
            burn_in_factor: 0.05,
            flip: true,
            dequantize: true,
            mu_only: false,
            mu_init: MU_INIT,
            mu_conv_init: MU_CONV_INIT,
            bn_average_batches: 200,
            freeze_batch_norm: false,
        }
    }

    /// The grayscale representation IDX images need.
    pub fn grayscale(&self) -> Result<&GrayscaleInput, TrainConfigError> {
        match &self.model.input {
            Some(InputSpec::Grayscale(g)) => Ok(g),
            other => Err(TrainConfigError::NotGrayscale {
                found: other.clone(),
            }),
        }
    }

    /// `mean ln std` of the input normalization (for bits per dimension).
    pub fn mean_log_std(&self) -> f64 {
        self.model
            .input
            .as_ref()
            .map_or(0.0, InputSpec::mean_log_std)
    }

    /// The config with its data folders made absolute (relative to the current folder;
    /// links are not resolved).
    pub fn with_absolute_paths(mut self) -> Self {
        let absolute = |p: &mut PathBuf| {
            if let Ok(abs) = std::path::absolute(&*p) {
                *p = abs;
            }
        };
        match &mut self.data {
            DataConfig::Idx { dir, .. } => absolute(dir),
            DataConfig::ImageFolder { train, valid, .. } => {
                absolute(train);
                if let Some(valid) = valid {
                    absolute(valid);
                }
            }
        }
        self
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), TrainConfigError> {
        self.model.validate()?;
        match &self.data {
            DataConfig::Idx { .. } => {
                self.grayscale()?;
            }
            DataConfig::ImageFolder { .. } => {
                if !matches!(self.model.input, Some(InputSpec::ImageNet { .. })) {
                    return Err(TrainConfigError::NotImageNet {
                        found: self.model.input.clone(),
                    });
                }
            }
        }
        if self.beta.beta().is_none() {
            return Err(TrainConfigError::Beta {
                beta: self.beta.clone(),
            });
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(TrainConfigError::Empty {
                epochs: self.epochs,
                batch_size: self.batch_size,
            });
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(TrainConfigError::LabelSmoothing {
                label_smoothing: self.label_smoothing,
            });
        }
        if !(self.optimizer.lr() > 0.0 && self.optimizer.lr().is_finite()) {
            return Err(TrainConfigError::LearningRate {
                lr: self.optimizer.lr(),
            });
        }
        Ok(())
    }
}

/// Why a [`TrainConfig`] cannot be trained with.
#[derive(Debug, thiserror::Error)]
pub enum TrainConfigError {
    /// The architecture (`model`) is invalid.
    #[error("invalid model architecture")]
    Model(#[from] ConfigError),
    /// IDX data with a model whose input representation is not grayscale.
    #[error("IDX data needs a grayscale input representation in model.input, got {found:?}")]
    NotGrayscale {
        /// The model's input representation.
        found: Option<InputSpec>,
    },
    /// Image folders with a model whose input representation is not `image_net`.
    #[error("image folders need an `image_net` input representation in model.input, got {found:?}")]
    NotImageNet {
        /// The model's input representation.
        found: Option<InputSpec>,
    },
    /// β is neither a number ≥ 0 nor `"inf"`.
    #[error("beta {beta:?} is neither a number ≥ 0 nor \"inf\"")]
    Beta {
        /// The β given.
        beta: BetaSpec,
    },
    /// No epochs or empty batches.
    #[error("epochs ({epochs}) and batch_size ({batch_size}) must be at least 1")]
    Empty {
        /// The epochs given.
        epochs: usize,
        /// The batch size given.
        batch_size: usize,
    },
    /// Label smoothing outside `[0, 1)`.
    #[error("label_smoothing {label_smoothing} must be in [0, 1)")]
    LabelSmoothing {
        /// The value given.
        label_smoothing: f64,
    },
    /// A learning rate that is not a positive number.
    #[error("the learning rate {lr} must be a positive number")]
    LearningRate {
        /// The value given.
        lr: f64,
    },
}
