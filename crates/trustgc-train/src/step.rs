//! One training or validation step of a generative classifier on burn-train.
//!
//! The training step follows the reference (`ibinn_imagenet/train`): train-mode forward
//! (batch-statistics BatchNorm), the IB objective for β on label-smoothed targets, the
//! loss multiplied by 0.05 for the first iterations of a fresh run, and the flow's
//! gradients clipped to a global L2 norm of 8 (`clip_grad_norm_(inn params, 8.0)`; the
//! class means are not clipped).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DataError, Tensor};
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, ItemLazy, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric,
    NumericAttributes, NumericEntry, SerializedEntry,
};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use trustgc_core::head::Losses;
use trustgc_core::{Beta, GenerativeClassifier, Mode};

use crate::data::GcBatch;

/// What a training step does besides the forward pass.
#[derive(Clone, Debug)]
pub struct StepSettings {
    /// The IB objective's β.
    pub beta: Beta,
    /// Clip the flow's gradients to this global L2 norm (`None`: no clipping).
    pub clip_norm: Option<f64>,
    /// Iterations at the start of a fresh run whose loss is scaled down.
    pub burn_in_iterations: usize,
    /// The scale of those iterations' loss (0.05 in the reference).
    pub burn_in_factor: f64,
    /// Training iterations done so far (shared by the clones burn-train makes).
    pub iteration: Arc<AtomicUsize>,
    /// Keep the flow in eval mode and out of the gradient (fine-tune the class means only).
    pub mu_only: bool,
    /// BatchNorm in eval mode (its running statistics, which stay as they are) while the
    /// flow's weights train: the usual choice for fine-tuning with small batches.
    pub freeze_batch_norm: bool,
    /// `(0.5·ln 2π + ln(classes)/D + ln 255 + mean ln std) `: added to `nll_joint` and
    /// divided by ln 2 gives bits per dimension on the 8-bit pixel scale.
    pub bits_offset: f64,
}

/// The model as burn-train sees it: a generative classifier and its step settings.
#[derive(Module, Debug)]
pub struct Trainee<B: Backend> {
    /// The generative classifier being trained.
    pub model: GenerativeClassifier<B>,
    /// How steps are taken (not saved with the model).
    #[module(skip)]
    pub settings: StepSettings,
}

/// Per-batch quantities of a step, still on the device.
pub struct GcStepOutput<B: Backend> {
    /// The (unscaled) objective.
    pub loss: Tensor<B, 1>,
    /// Per-sample losses.
    pub losses: Losses<B>,
    /// See [`StepSettings::bits_offset`].
    pub bits_offset: f64,
}

/// Per-batch means on the host: what the metrics read.
#[derive(Clone, Debug, PartialEq)]
pub struct GcStats {
    /// Samples in the batch.
    pub batch_size: usize,
    /// The objective.
    pub loss: f64,
    /// `nll_joint` (nats per dimension, the reference's definition).
    pub nll_joint: f64,
    /// `nll_class` (nats per dimension).
    pub nll_class: f64,
    /// Cross-entropy of the posterior (nats).
    pub cat_ce: f64,
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Bits per dimension on the 8-bit pixel scale.
    pub bits_per_dim: f64,
}

/// Why a value could not be read back from the device.
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// The tensor's data could not be converted to `f64` values.
    #[error("cannot read the {what} back from the device: {source}")]
    Data {
        /// The quantity read.
        what: &'static str,
        /// burn's error.
        #[source]
        source: DataError,
    },
    /// The tensor read back holds another number of values than expected.
    #[error("the {what} read back from the device has {found} values, {expected} expected")]
    Length {
        /// The quantity read.
        what: &'static str,
        /// Values expected.
        expected: usize,
        /// Values found.
        found: usize,
    },
}

/// Reads `t` back to the host as `N` `f64` values.
fn read_back<B: Backend, const N: usize>(
    t: Tensor<B, 1>,
    what: &'static str,
) -> Result<[f64; N], ReadBackError> {
    let values = t
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .map_err(|source| ReadBackError::Data { what, source })?;
    let found = values.len();
    values.try_into().map_err(|_| ReadBackError::Length {
        what,
        expected: N,
        found,
    })
}

impl<B: Backend> GcStepOutput<B> {
    /// The batch means on the host, read back from the device at once.
    pub fn stats(self) -> Result<GcStats, ReadBackError> {
        let batch_size = self.losses.nll_joint.dims()[0];
        let means = Tensor::cat(
            vec![
                self.loss.mean(),
                self.losses.nll_joint.mean(),
                self.losses.nll_class.mean(),
                self.losses.cat_ce.mean(),
                self.losses.correct.mean(),
            ],
            0,
        );
        let [loss, nll_joint, nll_class, cat_ce, accuracy] = read_back(means, "batch's losses")?;
        Ok(GcStats {
            batch_size,
            loss,
            nll_joint,
            nll_class,
            cat_ce,
            accuracy,
            bits_per_dim: (nll_joint + self.bits_offset) / std::f64::consts::LN_2,
        })
    }
}

impl<B: Backend> ItemLazy for GcStepOutput<B> {
    type ItemSync = GcStats;

    fn sync(self) -> GcStats {
        // burn-train's `ItemLazy::sync` cannot fail; a device that cannot hand back five
        // numbers cannot go on training either (burn's own metrics panic here too).
        self.stats().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Adaptor<GcStats> for GcStats {
    fn adapt(&self) -> GcStats {
        self.clone()
    }
}

/// A quantity of [`GcStats`] shown and logged as a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// The objective.
    Loss,
    /// `nll_joint`.
    NllJoint,
    /// `nll_class`.
    NllClass,
    /// `cat_ce`.
    CatCe,
    /// Accuracy in percent.
    Accuracy,
    /// Bits per dimension.
    BitsPerDim,
}

impl Quantity {
    /// All quantities, in display order.
    pub const ALL: [Quantity; 6] = [
        Quantity::Loss,
        Quantity::NllJoint,
        Quantity::NllClass,
        Quantity::CatCe,
        Quantity::Accuracy,
        Quantity::BitsPerDim,
    ];

    /// The metric's name (also its CSV column).
    pub fn name(self) -> &'static str {
        match self {
            Quantity::Loss => "loss",
            Quantity::NllJoint => "nll_joint",
            Quantity::NllClass => "nll_class",
            Quantity::CatCe => "cat_ce",
            Quantity::Accuracy => "accuracy",
            Quantity::BitsPerDim => "bits_per_dim",
        }
    }

    fn of(self, stats: &GcStats) -> f64 {
        match self {
            Quantity::Loss => stats.loss,
            Quantity::NllJoint => stats.nll_joint,
            Quantity::NllClass => stats.nll_class,
            Quantity::CatCe => stats.cat_ce,
            Quantity::Accuracy => 100.0 * stats.accuracy,
            Quantity::BitsPerDim => stats.bits_per_dim,
        }
    }
}

/// A numeric metric over one [`Quantity`], averaged over samples.
#[derive(Clone)]
pub struct GcMetric {
    quantity: Quantity,
    name: MetricName,
    state: NumericMetricState,
}

impl GcMetric {
    /// The metric of `quantity`.
    pub fn new(quantity: Quantity) -> Self {
        Self {
            quantity,
            name: Arc::new(quantity.name().to_string()),
            state: NumericMetricState::default(),
        }
    }
}

impl Metric for GcMetric {
    type Input = GcStats;

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn update(&mut self, stats: &GcStats, _metadata: &MetricMetadata) -> SerializedEntry {
        let precision = if self.quantity == Quantity::Accuracy {
            2
        } else {
            4
        };
        self.state.update(
            self.quantity.of(stats),
            stats.batch_size,
            FormatOptions::new(self.name.clone()).precision(precision),
        )
    }

    fn clear(&mut self) {
        self.state.reset();
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: (self.quantity == Quantity::Accuracy).then(|| "%".to_string()),
            higher_is_better: self.quantity == Quantity::Accuracy,
        }
        .into()
    }
}

impl Numeric for GcMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// Sum of squares of the flow's gradients.
struct NormVisitor<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for NormVisitor<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let squares = grad.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(sum) => sum.add(squares),
                None => squares,
            });
        }
    }
}

/// Multiplies the flow's gradients by a factor.
struct ScaleMapper<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for ScaleMapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, grad.mul_scalar(self.factor));
        }
        param
    }
}

/// `clip_grad_norm_(params, max_norm)` over the parameters of `module`: all their
/// gradients are scaled by `min(1, max_norm / (‖g‖ + 1e-6))`.
///
/// # Returns
/// The gradients' global norm before clipping.
///
/// # Errors
/// [`ReadBackError`] when the norm cannot be read back from the device (the gradients
/// are then left as they are).
pub fn clip_grad_norm<B: AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> Result<f64, ReadBackError> {
    let mut visitor = NormVisitor::<B> { grads, sum: None };
    module.visit(&mut visitor);
    let Some(sum) = visitor.sum else {
        return Ok(0.0);
    };
    let [sum] = read_back(sum, "squared gradient norm")?;
    let norm = sum.sqrt();
    let factor = (max_norm / (norm + 1e-6)).min(1.0);
    if factor < 1.0 {
        module.clone().map(&mut ScaleMapper { grads, factor });
    }
    Ok(norm)
}

impl<B: AutodiffBackend> TrainStep for Trainee<B> {
    type Input = GcBatch<B>;
    type Output = GcStepOutput<B>;

    fn step(&self, batch: GcBatch<B>) -> TrainOutput<GcStepOutput<B>> {
        let s = &self.settings;
        let mode = if s.mu_only || s.freeze_batch_norm {
            Mode::Eval
        } else {
            Mode::Train
        };
        let out = self.model.forward(batch.x, mode);
        let losses = out.losses(batch.targets);
        let loss = losses.objective(s.beta);
        let iteration = s.iteration.fetch_add(1, Ordering::SeqCst);
        let scaled = if iteration < s.burn_in_iterations {
            loss.clone().mul_scalar(s.burn_in_factor)
        } else {
            loss.clone()
        };
        let mut grads = GradientsParams::from_grads(scaled.backward(), self);
        if let Some(max_norm) = s.clip_norm {
            // burn-train's `TrainStep::step` cannot fail; training on without the clipping
            // the config asks for would be silently wrong.
            if let Err(e) = clip_grad_norm(&self.model.flow, &mut grads, max_norm) {
                panic!("{e}");
            }
        }
        TrainOutput {
            grads,
            item: GcStepOutput {
                loss: loss.detach(),
                losses: detach(losses),
                bits_offset: s.bits_offset,
            },
        }
    }
}

fn detach<B: Backend>(l: Losses<B>) -> Losses<B> {
    Losses {
        nll_joint: l.nll_joint.detach(),
        nll_class: l.nll_class.detach(),
        cat_ce: l.cat_ce.detach(),
        correct: l.correct.detach(),
    }
}

impl<B: Backend> InferenceStep for Trainee<B> {
    type Input = GcBatch<B>;
    type Output = GcStepOutput<B>;

    fn step(&self, batch: GcBatch<B>) -> GcStepOutput<B> {
        let out = self.model.forward(batch.x, Mode::Eval);
        let losses = out.losses(batch.targets);
        GcStepOutput {
            loss: losses.objective(self.settings.beta),
            losses,
            bits_offset: self.settings.bits_offset,
        }
    }
}
