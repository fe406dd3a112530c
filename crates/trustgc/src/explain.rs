//! Explanations native to generative classifiers: the decision margin decomposed exactly
//! over the latent dimensions, counterfactuals obtained by inverting the flow, and class
//! prototypes and samples.
//!
//! A generative classifier maps an input `x` to its latent `z = f(x)` with an invertible
//! network and gives each class `y` a unit-covariance Gaussian `N(μ_y, I)` on `z`. Every
//! explanation here is computed from that model itself, not approximated after the fact:
//! the margin is an exact sum, and a counterfactual is a point of latent space mapped back
//! through the exact inverse `f⁻¹`.
//!
//! # Notation
//! `z = (z_fc, z_conv)` has `D` dimensions (`z_fc` the `L` class dimensions first, then
//! `z_conv`); `μ_y = (mu_fc[y], mu_conv[y])` (`mu_conv = mu_t · mu_m` for a low-rank
//! head). `a` is the predicted class, `b` the contrast class (by default the runner-up),
//! `Δ = μ_b − μ_a`; `T` the classifier's posterior temperature (1 without one) and `π` its
//! class prior.
//!
//! - **Margin.** `m = log p(x|a) − log p(x|b) = −½‖z − μ_a‖² + ½‖z − μ_b‖²` (the
//!   log-determinant and the `2π` terms cancel), and exactly
//!   `m = Σ_i m_i` with `m_i = (μ_a,i − μ_b,i)·(z_i − (μ_a,i + μ_b,i)/2)`: positive terms
//!   are the dimensions in which `z` is nearer `a`'s mean than `b`'s
//!   ([`MarginDecomposition`]).
//! - **Counterfactual.** `z(t) = z + t·Δ`, `x(t) = f⁻¹(z(t))`. Along the path,
//!   `log p(x(t)|y) = log p(x|y) + t·μ_y·Δ − t·z·Δ − ½t²‖Δ‖² + (change of log|det J|)`;
//!   every term but `t·μ_y·Δ` is the same for all classes, so the posterior is
//!   `log p(y|x(t)) = log_softmax_y(s_y + t·μ_y·Δ / T)` with `s = log p(·|x)` the
//!   classifier's log-posterior of the input (prior and temperature included). As a
//!   log-softmax of functions affine in `t`, `log p(b|x(t))` is concave in `t`: the steps
//!   where it is `≥ log p` form an interval, whose left end (the minimal step,
//!   [`Counterfactual::step`]) is found by bisection to float precision
//!   ([`Classifier::counterfactual`]; it aims 10⁻³ nats of log-odds above `p` so that the
//!   model's float32 rounding does not leave `x'` a hair below it).
//! - **8-bit counterfactual.** `x'` need not be an image: the inverse leaves `[0, 1]`.
//!   [`ImageCounterfactual`] is the smallest step on the same line whose 8-bit image the
//!   model classifies as `b` with posterior `≥ p` (a grid search and bisection, each step
//!   checked by running the model on the image).
//! - **Prototypes.** `f⁻¹(μ_y)` (the whole latent, `z_conv` included, at the class
//!   mean), and samples `f⁻¹(μ_y + τ·ε)`, `ε ~ N(0, I)` at temperature `τ`
//!   ([`Classifier::prototypes`]).
//! - **Attributions.** Path-integrated gradients of `m` from the counterfactual to the
//!   input, which add up to `m(x) − m(x')`, and their faithfulness measurements
//!   ([`attribution`], [`Classifier::integrated_gradients`]).
//!
//! # Latent groups
//! The flow of this family has one exit: every latent dimension is a coefficient of the
//! 2-D DCT of the final `C × N × N` feature map, coefficient `(u, v)` of channel `c` at
//! index `(v·N + u)·C + c`, the first `L` being the (permuted) class dimensions `z_fc`.
//! There is no per-stage split of the latent, so the natural structure of `z_conv` is its
//! spatial frequency: [`LatentGroup::DctBand`] gathers the `z_conv` coefficients with
//! `u + v = band` (band 0 is the mean of the map over space, larger bands finer detail).
//!
//! # Pictures
//! [`ModelImage`] turns the model's input tensor back into pixels: the normalization
//! undone, and for grayscale models the space-to-depth folding undone and the padding
//! cropped. An inverted latent need not be a valid image (pixels outside `[0, 1]`, a
//! padding that is not black); [`ModelImage::clamped`] and [`ModelImage::quantized`] make
//! it one, and each [`Counterfactual`] reports how the model classifies all three.
//!
//! ```
//! use trustgc::burn::backend::Flex;
//! use trustgc::explain::ExplainSettings;
//! use trustgc::image::{DynamicImage, GrayImage, Luma};
//! use trustgc::{Classifier, Shipped};
//!
//! let classifier = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default())?;
//! // A white bar on black, about the shape of a pair of trousers.
//! let image = DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, _| {
//!     Luma([if (10..18).contains(&x) { 220 } else { 0 }])
//! }));
//! let x = classifier.preprocess(&[image])?;
//! let explanation = classifier.explain(x, &ExplainSettings::default())?;
//! let margin = &explanation.margin;
//! // The per-dimension terms add up to the margin between the two classes.
//! let sum: f64 = margin.terms.iter().sum();
//! assert!((sum - margin.margin).abs() < 1e-9 * margin.margin.abs().max(1.0));
//! let counterfactual = &explanation.counterfactual;
//! println!(
//!     "{} -> {}: step {:.3}, p = {:.3}",
//!     explanation.likelihoods.class_name(margin.predicted),
//!     explanation.likelihoods.class_name(margin.contrast),
//!     counterfactual.step,
//!     counterfactual.exact.posterior,
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::tensor::backend::Backend;
use burn::tensor::{DataError, Int, Tensor, TensorData};
use image::{DynamicImage, GrayImage, RgbImage};
use serde::Serialize;
use trustgc_core::input::InputSpec;
use trustgc_core::{GenerativeClassifier, Mode};

use crate::classifier::{Classifier, ClassifyError, Likelihoods};

pub mod attribution;

pub use attribution::{
    Attribution, AttributionBaseline, AttributionSettings, OrderCurves, PixelMap, area, spearman,
};

/// Why an explanation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The input could not be classified (a wrong shape, non-finite values, no input
    /// representation for images).
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    /// Explanations contrast two classes; the model has fewer.
    #[error("explanations contrast two classes, but the model has {classes}")]
    TooFewClasses {
        /// The model's number of classes.
        classes: usize,
    },
    /// A class index beyond the model's classes.
    #[error("class {class} does not exist: the model has {classes} classes")]
    ClassOutOfRange {
        /// The index given.
        class: usize,
        /// The model's number of classes.
        classes: usize,
    },
    /// A class name that is none of the model's.
    #[error(
        "`{name}` is not a class of the model: give one of its class names or an index below {classes}"
    )]
    UnknownClass {
        /// The name given.
        name: String,
        /// The model's number of classes.
        classes: usize,
    },
    /// The contrast class is the predicted class.
    #[error("the contrast class must differ from the predicted class {class}")]
    SameClass {
        /// The predicted class.
        class: usize,
    },
    /// A batch of other than one input where one is explained at a time.
    #[error("one input is explained at a time; got a batch of {batch}")]
    Batch {
        /// The batch size given.
        batch: usize,
    },
    /// A setting outside its range.
    #[error("setting `{setting}` = {value}: {requirement}")]
    Setting {
        /// The setting's name.
        setting: &'static str,
        /// Its value.
        value: f64,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// The inverse of the flow gave NaN or infinite values (a latent far outside what the
    /// model was trained on).
    #[error("the inverted latent holds {count} non-finite values")]
    NonFiniteInverse {
        /// How many values.
        count: usize,
    },
    /// Pixels whose size does not fit the model's input representation.
    #[error(
        "pixels of {found:?} (width, height, channels) do not fit the model's input {expected:?}"
    )]
    PixelShape {
        /// `(width, height, channels)` the representation takes.
        expected: (usize, usize, usize),
        /// `(width, height, channels)` given.
        found: (usize, usize, usize),
    },
    /// Values read back from the device could not be converted to host floats.
    #[error("cannot read {what} back from the device: {source}")]
    ReadBack {
        /// Which tensor.
        what: &'static str,
        /// burn's error.
        #[source]
        source: DataError,
    },
}

/// A tensor's values on the host, as `f64`.
fn host<B: Backend, const D: usize>(
    what: &'static str,
    tensor: Tensor<B, D>,
) -> Result<Vec<f64>, ExplainError> {
    tensor
        .into_data()
        .convert::<f64>()
        .into_vec()
        .map_err(|source| ExplainError::ReadBack { what, source })
}

/// A host matrix `[rows, cols]` as a tensor on `device`.
fn matrix<B: Backend>(
    values: &[f64],
    rows: usize,
    cols: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// Where a latent dimension belongs (see the module docs, *Latent groups*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LatentGroup {
    /// `z_fc`: the `L` class dimensions, where the class means differ most.
    ClassDimensions,
    /// `z_conv` coefficients of DCT frequency `(u, v)` with `u + v = band`.
    DctBand {
        /// `u + v`, from 0 (spatial mean) to `2(N − 1)`.
        band: usize,
    },
}

impl LatentGroup {
    /// A short name: `z_fc`, `z_conv band 3`.
    pub fn name(&self) -> String {
        match self {
            LatentGroup::ClassDimensions => "z_fc".into(),
            LatentGroup::DctBand { band } => format!("z_conv band {band}"),
        }
    }
}

/// How a model's latent is laid out: `L` class dimensions, then `z_conv`, all DCT
/// coefficients of a `C × N × N` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LatentLayout {
    /// `L`, the dimensions of `z_fc`.
    pub n_loss_dims: usize,
    /// `D`, all dimensions.
    pub total_dims: usize,
    /// `C`, channels of the final feature map.
    pub channels: usize,
    /// `N`, side of the final feature map.
    pub side: usize,
}

impl LatentLayout {
    /// The layout of `model`'s latent.
    pub fn of<B: Backend>(model: &GenerativeClassifier<B>) -> Self {
        let plan = &model.flow.plan;
        Self {
            n_loss_dims: plan.n_loss_dims,
            total_dims: model.total_dims,
            channels: plan.final_channels,
            side: plan.final_side,
        }
    }

    /// The group of latent dimension `index` (`0..D`, `z_fc` first).
    pub fn group(&self, index: usize) -> LatentGroup {
        match self.dct_position(index) {
            None => LatentGroup::ClassDimensions,
            Some((u, v, _)) => LatentGroup::DctBand { band: u + v },
        }
    }

    /// `(u, v, channel)` of a `z_conv` dimension in the final DCT; `None` for `z_fc`
    /// (whose dimensions are permuted).
    pub fn dct_position(&self, index: usize) -> Option<(usize, usize, usize)> {
        if index < self.n_loss_dims || self.channels == 0 || self.side == 0 {
            return None;
        }
        let (c, frequency) = (index % self.channels, index / self.channels);
        Some((frequency % self.side, frequency / self.side, c))
    }
}

/// The summed margin terms of one [`LatentGroup`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupTotal {
    /// The group.
    pub group: LatentGroup,
    /// Its short name ([`LatentGroup::name`]).
    pub name: String,
    /// How many latent dimensions it holds.
    pub dims: usize,
    /// `Σ m_i` over its dimensions, nats.
    pub total: f64,
    /// `Σ |m_i|` over its dimensions, nats (how much it pulls either way).
    pub total_abs: f64,
}

/// One latent dimension's margin term.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DimensionTerm {
    /// Index in `0..D` (`z_fc` first, then `z_conv`).
    pub index: usize,
    /// Its group.
    pub group: LatentGroup,
    /// `m_i`, nats.
    pub term: f64,
    /// `z_i`.
    pub z: f64,
    /// `μ_a,i`, the predicted class's mean.
    pub mean_predicted: f64,
    /// `μ_b,i`, the contrast class's mean.
    pub mean_contrast: f64,
}

/// The margin between the predicted class `a` and a contrast class `b`, decomposed over
/// the latent dimensions (module docs: `m = Σ_i m_i`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MarginDecomposition {
    /// `a`.
    pub predicted: usize,
    /// `b`.
    pub contrast: usize,
    /// `m = Σ_i m_i = log p(x|a) − log p(x|b)`, nats, summed in `f64` from the `f32`
    /// latent and means.
    pub margin: f64,
    /// `log p(x|a) − log p(x|b)` as the classifier computes it (`f32` distances by
    /// expansion): equal to `margin` within `f32` rounding.
    pub model_margin: f64,
    /// `log p(a|x) − log p(b|x)`: the margin divided by the temperature, plus the prior's
    /// log-ratio.
    pub posterior_log_odds: f64,
    /// Totals per [`LatentGroup`], `z_fc` first, then the DCT bands in order (only
    /// groups with dimensions).
    pub groups: Vec<GroupTotal>,
    /// The dimensions of largest `|m_i|`, largest first.
    pub top: Vec<DimensionTerm>,
    /// Every `m_i`, `D` values (not serialized).
    #[serde(skip)]
    pub terms: Vec<f64>,
}

impl MarginDecomposition {
    /// Decomposes the margin of latent `z` between classes with means `mean_predicted`
    /// (`μ_a`) and `mean_contrast` (`μ_b`), all of `layout.total_dims` values; `top` is the
    /// number of dimensions to list. `model_margin` and `posterior_log_odds` are left 0.
    pub fn new(
        layout: &LatentLayout,
        z: &[f64],
        mean_predicted: &[f64],
        mean_contrast: &[f64],
        (predicted, contrast): (usize, usize),
        top: usize,
    ) -> Self {
        let terms: Vec<f64> = z
            .iter()
            .zip(mean_predicted.iter().zip(mean_contrast))
            .map(|(&z, (&a, &b))| (a - b) * (z - 0.5 * (a + b)))
            .collect();
        let mut groups: Vec<GroupTotal> = Vec::new();
        for (index, &term) in terms.iter().enumerate() {
            let group = layout.group(index);
            let slot = match groups.iter().position(|g| g.group == group) {
                Some(slot) => slot,
                None => {
                    groups.push(GroupTotal {
                        group,
                        name: group.name(),
                        dims: 0,
                        total: 0.0,
                        total_abs: 0.0,
                    });
                    groups.len() - 1
                }
            };
            let g = &mut groups[slot];
            g.dims += 1;
            g.total += term;
            g.total_abs += term.abs();
        }
        groups.sort_by_key(|g| g.group);
        let mut order: Vec<usize> = (0..terms.len()).collect();
        order.sort_by(|&i, &j| terms[j].abs().total_cmp(&terms[i].abs()).then(i.cmp(&j)));
        let top = order
            .into_iter()
            .take(top)
            .map(|index| DimensionTerm {
                index,
                group: layout.group(index),
                term: terms[index],
                z: z[index],
                mean_predicted: mean_predicted[index],
                mean_contrast: mean_contrast[index],
            })
            .collect();
        Self {
            predicted,
            contrast,
            margin: terms.iter().sum(),
            model_margin: 0.0,
            posterior_log_odds: 0.0,
            groups,
            top,
            terms,
        }
    }
}

/// How a counterfactual is searched.
#[derive(Clone, Debug, PartialEq)]
pub struct ExplainSettings {
    /// The contrast class `b`; `None`: the runner-up (the second most probable class).
    pub contrast: Option<usize>,
    /// The posterior `p` the contrast class must reach, in `[0.5, 1)` (so that it also wins).
    pub target_posterior: f64,
    /// The largest step `t` searched (1: the whole way from `μ_a` to `μ_b`).
    pub max_step: f64,
    /// Frames of the path from the input (`t = 0`) to the counterfactual, both included
    /// (at least 2).
    pub path_frames: usize,
    /// How many dimensions [`MarginDecomposition::top`] lists.
    pub top_dimensions: usize,
    /// The largest step searched for the 8-bit image counterfactual
    /// ([`Counterfactual::image`]); 0 searches none.
    pub image_max_step: f64,
    /// Evenly spaced steps in `(0, image_max_step]` tried for it before bisection.
    pub image_grid: usize,
}

impl Default for ExplainSettings {
    /// Runner-up contrast, posterior 0.9, steps up to 1, 7 path frames, 10 top
    /// dimensions; the 8-bit image counterfactual searched up to step 4 on a grid of 0.1.
    fn default() -> Self {
        Self {
            contrast: None,
            target_posterior: 0.9,
            max_step: 1.0,
            path_frames: 7,
            top_dimensions: 10,
            image_max_step: 4.0,
            image_grid: 40,
        }
    }
}

impl ExplainSettings {
    fn check(&self) -> Result<(), ExplainError> {
        let setting = |setting, value: f64, requirement| ExplainError::Setting {
            setting,
            value,
            requirement,
        };
        if !(0.5..1.0).contains(&self.target_posterior) {
            return Err(setting(
                "target_posterior",
                self.target_posterior,
                "must be in [0.5, 1)",
            ));
        }
        if !(self.max_step.is_finite() && self.max_step > 0.0) {
            return Err(setting(
                "max_step",
                self.max_step,
                "must be finite and positive",
            ));
        }
        if !(self.image_max_step.is_finite() && self.image_max_step >= 0.0) {
            return Err(setting(
                "image_max_step",
                self.image_max_step,
                "must be finite and at least 0",
            ));
        }
        if self.path_frames < 2 {
            return Err(setting(
                "path_frames",
                self.path_frames as f64,
                "must be at least 2 (the input and the counterfactual)",
            ));
        }
        Ok(())
    }
}

/// How the model classifies an input that should be of class `class`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recheck {
    /// The class the input should have.
    pub class: usize,
    /// The class the model predicts.
    pub predicted: usize,
    /// `p(class | input)` (the classifier's posterior: prior and temperature included).
    pub posterior: f64,
    /// Everything the classifier says about the input.
    #[serde(skip)]
    pub likelihoods: Likelihoods,
}

impl Recheck {
    fn new(class: usize, likelihoods: Likelihoods) -> Self {
        Self {
            class,
            predicted: likelihoods.predicted().class,
            posterior: likelihoods.log_posterior[class].exp(),
            likelihoods,
        }
    }

    /// The model predicts `class`.
    pub fn agrees(&self) -> bool {
        self.predicted == self.class
    }

    /// The model predicts `class` with a posterior of at least `p`.
    pub fn agrees_with(&self, p: f64) -> bool {
        self.agrees() && self.posterior >= p
    }
}

/// How far `f(f⁻¹(z'))` is from `z'`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RoundTrip {
    /// `max_i |f(x')_i − z'_i|`.
    pub max_abs_error: f64,
    /// `‖f(x') − z'‖ / ‖z'‖`.
    pub relative_error: f64,
}

impl RoundTrip {
    fn between(found: &[f64], expected: &[f64]) -> Self {
        let (mut max, mut diff, mut norm) = (0f64, 0f64, 0f64);
        for (f, e) in found.iter().zip(expected) {
            max = max.max((f - e).abs());
            diff += (f - e) * (f - e);
            norm += e * e;
        }
        Self {
            max_abs_error: max,
            relative_error: diff.sqrt() / norm.sqrt().max(f64::MIN_POSITIVE),
        }
    }
}

/// The path `x(t) = f⁻¹(z + t·Δ)` from the input to the counterfactual: to the 8-bit
/// image counterfactual when there is one that reaches the target, else to `x'`.
#[derive(Clone, Debug)]
pub struct CounterfactualPath<B: Backend> {
    /// The steps `t`, from 0 to the end, evenly spaced.
    pub steps: Vec<f64>,
    /// `p(b | x(t))` at each step, from the closed form of the module docs.
    pub posteriors: Vec<f64>,
    /// The inputs `x(t)`, `[frames, C, H, W]`, in the model's input space.
    pub inputs: Tensor<B, 4>,
    /// How the model classifies each frame's 8-bit image (the pictures of the path);
    /// `None` without an input representation.
    pub image_checks: Option<Vec<Recheck>>,
}

/// A counterfactual: the input moved in latent space from its class `a` toward `b`
/// until `b` wins with the target posterior, and mapped back through the flow.
#[derive(Clone, Debug)]
pub struct Counterfactual<B: Backend> {
    /// The class moved from, `a`.
    pub predicted: usize,
    /// The class moved to, `b`.
    pub contrast: usize,
    /// The minimal step `t` with `p(b | x(t)) ≥ p` (by the closed form); when `p` cannot
    /// be reached within the largest step searched, the step where `p(b | x(t))` peaks.
    pub step: f64,
    /// The target posterior was reached within the largest step.
    pub reached: bool,
    /// The target posterior `p`.
    pub target_posterior: f64,
    /// `p(b | x(t))` at [`step`](Self::step), from the closed form.
    pub expected_posterior: f64,
    /// `t·‖Δ‖`: how far the latent moved (its distance from `z`).
    pub latent_distance: f64,
    /// `‖Δ‖ = ‖μ_b − μ_a‖`.
    pub mean_distance: f64,
    /// `x' = f⁻¹(z')`, `[1, C, H, W]`, in the model's input space (not clamped).
    pub input: Tensor<B, 4>,
    /// The path from the input to `x'`.
    pub path: CounterfactualPath<B>,
    /// `f(x')` against `z'`.
    pub round_trip: RoundTrip,
    /// How the model classifies `x'` itself.
    pub exact: Recheck,
    /// How it classifies `x'` made a valid image, pixels clamped to `[0, 1]` (and a
    /// grayscale model's padding black); `None` without an input representation.
    pub clamped: Option<Recheck>,
    /// How it classifies the 8-bit image of `x'` (clamped and rounded); `None` without
    /// an input representation.
    pub quantized: Option<Recheck>,
    /// The 8-bit image counterfactual, when the model has an input representation and
    /// [`ExplainSettings::image_max_step`] is not 0.
    pub image: Option<ImageCounterfactual<B>>,
}

/// A counterfactual that is an 8-bit image: the smallest step `t` on the same line
/// `z + t·Δ` whose inverse, made an 8-bit image (clamped to `[0, 1]`, a grayscale
/// model's padding black, rounded), the model classifies as `b` with the target posterior.
///
/// The inverses of the line leave the set of images (pixels outside `[0, 1]`, a grey
/// padding), and clamping them often gives the class back, so the step needed by the
/// image is larger than [`Counterfactual::step`]. The posterior of the images along the
/// line need not rise monotonically: the search tries a grid of steps
/// ([`ExplainSettings::image_grid`] up to [`ExplainSettings::image_max_step`]), takes the
/// first that reaches the target and bisects between it and the grid step before it
/// (keeping an image that reaches the target).
#[derive(Clone, Debug)]
pub struct ImageCounterfactual<B: Backend> {
    /// The image, `[1, C, H, W]` in the model's input space (8-bit values normalized).
    pub input: Tensor<B, 4>,
    /// The image's pixels (multiples of 1/255 in `[0, 1]`).
    pub image: ModelImage,
    /// The step `t`; when the target is not reached, the step of the grid whose image
    /// came nearest (classified as `b`, then highest posterior of `b`).
    pub step: f64,
    /// The model classifies the image as the contrast class with the target posterior.
    pub reached: bool,
    /// Images inverted and classified in the search.
    pub evaluations: usize,
    /// `‖f(x_image) − z‖`: how far the image's latent is from the input's.
    pub latent_distance: f64,
    /// How the model classifies the image.
    pub recheck: Recheck,
}

/// An explanation of one input's classification: its likelihoods, the margin
/// decomposition against the contrast class, and the counterfactual.
#[derive(Clone, Debug)]
pub struct Explanation<B: Backend> {
    /// What the classifier says about the input.
    pub likelihoods: Likelihoods,
    /// The margin between the predicted and the contrast class.
    pub margin: MarginDecomposition,
    /// The counterfactual of the contrast class.
    pub counterfactual: Counterfactual<B>,
}

/// Settings of [`Classifier::prototypes`].
#[derive(Clone, Debug, PartialEq)]
pub struct PrototypeSettings {
    /// The classes to draw, in order; `None`: all.
    pub classes: Option<Vec<usize>>,
    /// Samples per class besides the prototype.
    pub samples: usize,
    /// The temperature `τ` of the samples, `≥ 0`.
    pub temperature: f64,
    /// Seed of the samples' noise.
    pub seed: u64,
}

impl Default for PrototypeSettings {
    /// All classes, 4 samples at `τ = 0.7`, seed 0.
    fn default() -> Self {
        Self {
            classes: None,
            samples: 4,
            temperature: 0.7,
            seed: 0,
        }
    }
}

/// Class prototypes `f⁻¹(μ_y)` and samples `f⁻¹(μ_y + τ·ε)`, with how the model
/// classifies each.
#[derive(Clone, Debug)]
pub struct Prototypes<B: Backend> {
    /// The classes, in order.
    pub classes: Vec<usize>,
    /// Samples per class.
    pub samples_per_class: usize,
    /// The samples' temperature `τ`.
    pub temperature: f64,
    /// The prototypes, `[classes, C, H, W]`, in the model's input space.
    pub prototypes: Tensor<B, 4>,
    /// The samples, `[classes · samples, C, H, W]`, class by class; `None` without
    /// samples.
    pub samples: Option<Tensor<B, 4>>,
    /// How the model classifies each prototype.
    pub prototype_checks: Vec<Recheck>,
    /// How it classifies each prototype's 8-bit image; `None` without an input
    /// representation.
    pub prototype_quantized_checks: Option<Vec<Recheck>>,
    /// How it classifies each sample, class by class.
    pub sample_checks: Vec<Recheck>,
    /// How it classifies each sample's 8-bit image; `None` without an input
    /// representation.
    pub sample_quantized_checks: Option<Vec<Recheck>>,
}

/// An image as the model sees it, back in pixels: values nominally in `[0, 1]`, not
/// clamped (an inverted latent may leave the range).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelImage {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// `height · width · channels` values, row-major, channels last.
    pub pixels: Vec<f32>,
    /// The largest `|value|` of a grayscale model's padding (black, 0, for a real image;
    /// cropped away from `pixels`); 0 for other representations.
    pub padding_max: f32,
}

impl ModelImage {
    /// An image of `width × height × channels` values all `value` (black: 0).
    pub fn constant(width: usize, height: usize, channels: usize, value: f32) -> Self {
        Self {
            width,
            height,
            channels,
            pixels: vec![value; width * height * channels],
            padding_max: 0.0,
        }
    }

    /// Pixels outside `[0, 1]`, counted per value.
    pub fn out_of_range(&self) -> usize {
        self.pixels
            .iter()
            .filter(|v| !(0.0..=1.0).contains(*v))
            .count()
    }

    /// The image with its values clamped to `[0, 1]` (NaN to 0) and its padding black.
    pub fn clamped(&self) -> Self {
        Self {
            pixels: self
                .pixels
                .iter()
                .map(|&v| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) })
                .collect(),
            padding_max: 0.0,
            ..self.clone()
        }
    }

    /// [`clamped`](Self::clamped), then rounded to 8 bits (`k / 255`).
    pub fn quantized(&self) -> Self {
        let mut image = self.clamped();
        for v in &mut image.pixels {
            *v = f32::from(quantize(*v)) / 255.0;
        }
        image
    }

    /// The 8-bit image (grayscale or RGB), values clamped and rounded.
    pub fn to_image(&self) -> DynamicImage {
        let bytes: Vec<u8> = self.pixels.iter().map(|&v| quantize(v)).collect();
        let (w, h) = (self.width as u32, self.height as u32);
        match self.channels {
            1 => DynamicImage::ImageLuma8(
                GrayImage::from_raw(w, h, bytes).expect("width · height values"),
            ),
            _ => DynamicImage::ImageRgb8(
                RgbImage::from_raw(w, h, bytes).expect("width · height · 3 values"),
            ),
        }
    }

    /// `other − self` per pixel, averaged over the channels: `height · width` values.
    ///
    /// # Errors
    /// [`ExplainError::PixelShape`] when the images differ in size.
    pub fn difference(&self, other: &ModelImage) -> Result<Vec<f32>, ExplainError> {
        let size = |i: &ModelImage| (i.width, i.height, i.channels);
        if size(self) != size(other) {
            return Err(ExplainError::PixelShape {
                expected: size(self),
                found: size(other),
            });
        }
        let c = self.channels.max(1);
        Ok(self
            .pixels
            .chunks(c)
            .zip(other.pixels.chunks(c))
            .map(|(a, b)| b.iter().zip(a).map(|(b, a)| b - a).sum::<f32>() / c as f32)
            .collect())
    }
}

/// `round(255 · v)` clamped to `0..=255` (NaN to 0).
fn quantize(v: f32) -> u8 {
    if v.is_nan() {
        0
    } else {
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// One input of the model (`C·H·W` values, its layout) back in pixels: the inverse of
/// [`crate::preprocess::model_input`] after resizing (normalization undone; a grayscale
/// model's space-to-depth undone and padding cropped).
pub fn input_to_image(spec: &InputSpec, input: &[f32]) -> ModelImage {
    match spec {
        InputSpec::ImageNet {
            crop, mean, std, ..
        } => {
            let n = crop * crop;
            let mut pixels = vec![0f32; 3 * n];
            for c in 0..3 {
                for i in 0..n {
                    pixels[3 * i + c] = input[c * n + i] * std[c] + mean[c];
                }
            }
            ModelImage {
                width: *crop,
                height: *crop,
                channels: 3,
                pixels,
                padding_max: 0.0,
            }
        }
        InputSpec::Grayscale(g) => {
            let (n, p, s) = (g.size, g.pad, g.space_to_depth);
            let side = g.padded_size();
            let small = side / s;
            let mut pixels = vec![0f32; n * n];
            let mut padding_max = 0f32;
            for y in 0..side {
                for x in 0..side {
                    let channel = s * (y % s) + x % s;
                    let value = input[(channel * small + y / s) * small + x / s] * g.std + g.mean;
                    if y >= p && y < p + n && x >= p && x < p + n {
                        pixels[(y - p) * n + (x - p)] = value;
                    } else {
                        padding_max = padding_max.max(value.abs());
                    }
                }
            }
            ModelImage {
                width: n,
                height: n,
                channels: 1,
                pixels,
                padding_max,
            }
        }
    }
}

/// Pixels back into one input of the model (`C·H·W` values): normalization, and for
/// grayscale models black padding and space-to-depth. The inverse of [`input_to_image`]
/// for images with a black padding; of 8-bit pixels, the same values as
/// [`crate::preprocess::model_input`] of an image already at the model's size.
///
/// # Errors
/// [`ExplainError::PixelShape`] when the image is not of the representation's size.
pub fn image_to_input(spec: &InputSpec, image: &ModelImage) -> Result<Vec<f32>, ExplainError> {
    let expected = match spec {
        InputSpec::ImageNet { crop, .. } => (*crop, *crop, 3),
        InputSpec::Grayscale(g) => (g.size, g.size, 1),
    };
    let found = (image.width, image.height, image.channels);
    if found != expected || image.pixels.len() != found.0 * found.1 * found.2 {
        return Err(ExplainError::PixelShape { expected, found });
    }
    Ok(match spec {
        InputSpec::ImageNet { mean, std, .. } => {
            let n = image.width * image.height;
            let mut out = vec![0f32; 3 * n];
            for c in 0..3 {
                for i in 0..n {
                    out[c * n + i] = (image.pixels[3 * i + c] - mean[c]) / std[c];
                }
            }
            out
        }
        InputSpec::Grayscale(g) => {
            let (n, p, s) = (g.size, g.pad, g.space_to_depth);
            let side = g.padded_size();
            let small = side / s;
            let mut out = vec![0f32; side * side];
            for y in 0..side {
                for x in 0..side {
                    let value = if y >= p && y < p + n && x >= p && x < p + n {
                        image.pixels[(y - p) * n + (x - p)]
                    } else {
                        0.0
                    };
                    let channel = s * (y % s) + x % s;
                    out[(channel * small + y / s) * small + x / s] = (value - g.mean) / g.std;
                }
            }
            out
        }
    })
}

// SplitMix64 with Box–Muller normals: the samples' noise, the same on every backend.
use trustgc_core::rng::SplitMix64 as Noise;

/// `log p(b | x(t)) = log_softmax_b(s + t·h)` with `h_y = μ_y·Δ / T` (module docs).
struct PosteriorPath<'a> {
    scores: &'a [f64],
    slopes: &'a [f64],
    class: usize,
}

impl PosteriorPath<'_> {
    /// `(log p(b | x(t)), d/dt log p(b | x(t)))`.
    fn at(&self, t: f64) -> (f64, f64) {
        let logits: Vec<f64> = self
            .scores
            .iter()
            .zip(self.slopes)
            .map(|(s, h)| s + t * h)
            .collect();
        let norm = crate::classifier::logsumexp(&logits);
        let mean_slope: f64 = logits
            .iter()
            .zip(self.slopes)
            .map(|(l, h)| (l - norm).exp() * h)
            .sum();
        (
            logits[self.class] - norm,
            self.slopes[self.class] - mean_slope,
        )
    }

    /// The minimal `t ∈ [0, max]` with `log p(b | x(t)) ≥ ln p`, and whether it exists;
    /// when it does not, the `t` where `log p(b | x(t))` peaks.
    fn minimal_step(&self, p: f64, max: f64) -> (f64, bool) {
        let target = p.ln();
        if self.at(0.0).0 >= target {
            return (0.0, true);
        }
        // log p(b|x(t)) is concave: its derivative falls; find where it crosses 0.
        let peak = if self.at(max).1 >= 0.0 {
            max
        } else if self.at(0.0).1 <= 0.0 {
            0.0
        } else {
            let (mut lo, mut hi) = (0.0, max);
            for _ in 0..200 {
                let mid = 0.5 * (lo + hi);
                if mid <= lo || mid >= hi {
                    break;
                }
                if self.at(mid).1 >= 0.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        if self.at(peak).0 < target {
            return (peak, false);
        }
        // Rising on [0, peak]: bisect to the crossing, keeping the end that reaches p.
        let (mut lo, mut hi) = (0.0, peak);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if self.at(mid).0 >= target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        (hi, true)
    }
}

/// The inputs of a batch back in pixels.
fn input_images<B: Backend>(
    spec: &InputSpec,
    inputs: Tensor<B, 4>,
) -> Result<Vec<ModelImage>, ExplainError> {
    let batch = inputs.dims()[0];
    let values = host("the inputs", inputs)?;
    let per = values.len() / batch.max(1);
    Ok(values
        .chunks(per.max(1))
        .map(|input| {
            let input: Vec<f32> = input.iter().map(|&v| v as f32).collect();
            input_to_image(spec, &input)
        })
        .collect())
}

/// An 8-bit image on the counterfactual line: its pixels, its input `[1, C, H, W]` and
/// how the model classifies it.
type Checked<B> = (ModelImage, Tensor<B, 4>, Recheck);

/// How many inputs are inverted and classified at a time.
const BATCH: usize = 8;

/// Tries of the closed-form step, each aiming higher than the last (see
/// [`Classifier::counterfactual`]).
const AIM_ATTEMPTS: usize = 4;

/// How far above the target posterior the closed-form step aims, in log-odds (nats):
/// 0.9 becomes 0.90009, above the float32 rounding of the shipped model's class
/// log-likelihoods (measured up to 1e-4).
const AIM_MARGIN: f64 = 1e-3;

/// Bisections of the 8-bit image counterfactual's step (the bracket shrinks 256-fold, to
/// 4e-4 of a grid of 0.1).
const IMAGE_BISECTIONS: usize = 8;

impl<B: Backend> Classifier<B> {
    /// The class named `name`: a class name of the config (exactly, else ignoring case),
    /// or an index.
    ///
    /// # Errors
    /// [`ExplainError::UnknownClass`] for anything else, [`ExplainError::ClassOutOfRange`]
    /// for an index too large.
    pub fn class_index(&self, name: &str) -> Result<usize, ExplainError> {
        let names = &self.config().class_names;
        let classes = self.config().n_classes;
        if let Some(i) = names.iter().position(|n| n == name) {
            return Ok(i);
        }
        if let Some(i) = names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name.trim()))
        {
            return Ok(i);
        }
        match name.trim().parse::<usize>() {
            Ok(class) if class < classes => Ok(class),
            Ok(class) => Err(ExplainError::ClassOutOfRange { class, classes }),
            Err(_) => Err(ExplainError::UnknownClass {
                name: name.to_string(),
                classes,
            }),
        }
    }

    /// The inputs of a batch `[batch, C, H, W]` (the model's input space) back in pixels
    /// ([`input_to_image`]).
    ///
    /// # Errors
    /// [`ClassifyError::NoInputSpec`] (as [`ExplainError::Classify`]) when the model has
    /// no input representation; [`ExplainError::ReadBack`].
    pub fn input_images(&self, inputs: Tensor<B, 4>) -> Result<Vec<ModelImage>, ExplainError> {
        let spec = self
            .config()
            .input
            .as_ref()
            .ok_or(ClassifyError::NoInputSpec)?;
        input_images(spec, inputs)
    }

    /// Pixels back into a batch of inputs `[images.len(), C, H, W]` ([`image_to_input`]).
    ///
    /// # Errors
    /// [`ClassifyError::NoInputSpec`] (as [`ExplainError::Classify`]) without an input
    /// representation; [`ExplainError::PixelShape`] for an image of the wrong size.
    pub fn images_to_inputs(&self, images: &[ModelImage]) -> Result<Tensor<B, 4>, ExplainError> {
        let spec = self
            .config()
            .input
            .as_ref()
            .ok_or(ClassifyError::NoInputSpec)?;
        let [c, h, w] = self.config().input_shape;
        let mut data = Vec::with_capacity(images.len() * c * h * w);
        for image in images {
            data.extend(image_to_input(spec, image)?);
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), c, h, w]),
            self.device(),
        ))
    }

    /// The class means `μ_y` of `classes` on the device: `(mu_fc rows [n, L], mu_conv
    /// rows [n, D − L])`, built from the low-rank factors for these classes only.
    pub fn class_means(
        &self,
        classes: &[usize],
    ) -> Result<(Tensor<B, 2>, Tensor<B, 2>), ExplainError> {
        let n_classes = self.config().n_classes;
        if let Some(&class) = classes.iter().find(|&&c| c >= n_classes) {
            return Err(ExplainError::ClassOutOfRange {
                class,
                classes: n_classes,
            });
        }
        let head = &self.model().head;
        let indices: Vec<i64> = classes.iter().map(|&c| c as i64).collect();
        let indices = Tensor::<B, 1, Int>::from_data(
            TensorData::new(indices, [classes.len()]).convert::<B::IntElem>(),
            self.device(),
        );
        let fc = head.mu_fc.val().select(0, indices.clone());
        let conv = match (&head.mu_t, &head.mu_m, &head.mu_conv) {
            (Some(mu_t), Some(mu_m), _) => mu_t.val().select(0, indices).matmul(mu_m.val()),
            (_, _, Some(mu_conv)) => mu_conv.val().select(0, indices),
            _ => unreachable!("a head has either mu_t and mu_m or mu_conv"),
        };
        Ok((fc, conv))
    }

    /// The latents `z = (z_fc, z_conv)` of a batch on the host, `D` values per input.
    fn latents(&self, x: Tensor<B, 4>) -> Result<Vec<Vec<f64>>, ExplainError> {
        let batch = x.dims()[0];
        let out = self.model().flow.forward(x, Mode::Eval);
        join_latents(batch, out.z_fc, out.z_conv)
    }

    /// Inverts latents given on the host (`D` values each, `z_fc` first).
    fn invert(&self, latents: &[Vec<f64>]) -> Result<Tensor<B, 4>, ExplainError> {
        let l = self.config().n_loss_dims;
        let d = self.config().total_dims();
        let n = latents.len();
        let fc: Vec<f64> = latents
            .iter()
            .flat_map(|z| z[..l].iter().copied())
            .collect();
        let conv: Vec<f64> = latents
            .iter()
            .flat_map(|z| z[l..].iter().copied())
            .collect();
        let device = self.device();
        let (x, _) = self
            .model()
            .inverse(matrix(&fc, n, l, device), matrix(&conv, n, d - l, device));
        let values = host("the inverted latents", x.clone())?;
        let count = values.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(ExplainError::NonFiniteInverse { count });
        }
        Ok(x)
    }

    /// The margin between the predicted class and a contrast class, decomposed over the
    /// latent dimensions (module docs).
    ///
    /// # Shapes
    /// - `x`: `[1, C, H, W]`, in the model's input space ([`Classifier::preprocess`])
    ///
    /// # Errors
    /// As [`Classifier::explain`].
    pub fn decision_margin(
        &self,
        x: Tensor<B, 4>,
        contrast: Option<usize>,
        top: usize,
    ) -> Result<MarginDecomposition, ExplainError> {
        let (likelihoods, z, contrast) = self.encode(x, contrast)?;
        self.margin_of(&likelihoods, &z, contrast, top)
    }

    /// Checks the input and the classes, classifies the input and encodes it.
    fn encode(
        &self,
        x: Tensor<B, 4>,
        contrast: Option<usize>,
    ) -> Result<(Likelihoods, Vec<f64>, usize), ExplainError> {
        let classes = self.config().n_classes;
        if classes < 2 {
            return Err(ExplainError::TooFewClasses { classes });
        }
        if let Some(class) = contrast.filter(|&c| c >= classes) {
            return Err(ExplainError::ClassOutOfRange { class, classes });
        }
        self.model()
            .check_input(&x.dims())
            .map_err(ClassifyError::from)?;
        let batch = x.dims()[0];
        if batch != 1 {
            return Err(ExplainError::Batch { batch });
        }
        let likelihoods = self.likelihoods_tensor(x.clone())?.remove(0);
        let ranked = likelihoods.top_k(2);
        let predicted = ranked[0].class;
        let contrast = contrast.unwrap_or(ranked[1].class);
        if contrast == predicted {
            return Err(ExplainError::SameClass { class: predicted });
        }
        let z = self.latents(x)?.remove(0);
        Ok((likelihoods, z, contrast))
    }

    fn margin_of(
        &self,
        likelihoods: &Likelihoods,
        z: &[f64],
        contrast: usize,
        top: usize,
    ) -> Result<MarginDecomposition, ExplainError> {
        let predicted = likelihoods.predicted().class;
        let means = self.host_means(&[predicted, contrast])?;
        let layout = LatentLayout::of(self.model());
        let mut margin =
            MarginDecomposition::new(&layout, z, &means[0], &means[1], (predicted, contrast), top);
        let ll = &likelihoods.class_log_likelihoods;
        margin.model_margin = ll[predicted] - ll[contrast];
        let lp = &likelihoods.log_posterior;
        margin.posterior_log_odds = lp[predicted] - lp[contrast];
        Ok(margin)
    }

    /// Class means on the host, `D` values each (`z_fc` part first).
    fn host_means(&self, classes: &[usize]) -> Result<Vec<Vec<f64>>, ExplainError> {
        let (fc, conv) = self.class_means(classes)?;
        join_latents(classes.len(), fc, conv)
    }

    /// Explains one input: its [`Likelihoods`], the [`MarginDecomposition`] against the
    /// contrast class, and the [`Counterfactual`] of that class.
    ///
    /// # Shapes
    /// - `x`: `[1, C, H, W]`, in the model's input space ([`Classifier::preprocess`])
    ///
    /// # Errors
    /// [`ExplainError::TooFewClasses`] for a model of one class;
    /// [`ExplainError::Classify`] for an input of the wrong shape or with non-finite
    /// values; [`ExplainError::Batch`] for a batch of other than one;
    /// [`ExplainError::ClassOutOfRange`] and [`ExplainError::SameClass`] for a bad
    /// contrast; [`ExplainError::Setting`] for settings out of range;
    /// [`ExplainError::NonFiniteInverse`] when the flow's inverse overflows.
    pub fn explain(
        &self,
        x: Tensor<B, 4>,
        settings: &ExplainSettings,
    ) -> Result<Explanation<B>, ExplainError> {
        settings.check()?;
        let (likelihoods, z, contrast) = self.encode(x, settings.contrast)?;
        let margin = self.margin_of(&likelihoods, &z, contrast, settings.top_dimensions)?;
        let counterfactual = self.counterfactual_of(&likelihoods, &z, contrast, settings)?;
        Ok(Explanation {
            likelihoods,
            margin,
            counterfactual,
        })
    }

    /// The counterfactual of one input (module docs): the minimal move of its latent from
    /// the predicted class's mean toward the contrast class's that makes the contrast
    /// class win with posterior `settings.target_posterior`, inverted through the flow,
    /// with the path and how the model classifies the result.
    ///
    /// # Shapes
    /// - `x`: `[1, C, H, W]`, in the model's input space
    ///
    /// # Errors
    /// As [`Classifier::explain`].
    pub fn counterfactual(
        &self,
        x: Tensor<B, 4>,
        settings: &ExplainSettings,
    ) -> Result<Counterfactual<B>, ExplainError> {
        settings.check()?;
        let (likelihoods, z, contrast) = self.encode(x, settings.contrast)?;
        self.counterfactual_of(&likelihoods, &z, contrast, settings)
    }

    fn counterfactual_of(
        &self,
        likelihoods: &Likelihoods,
        z: &[f64],
        contrast: usize,
        settings: &ExplainSettings,
    ) -> Result<Counterfactual<B>, ExplainError> {
        let predicted = likelihoods.predicted().class;
        let means = self.host_means(&[predicted, contrast])?;
        let delta: Vec<f64> = means[1].iter().zip(&means[0]).map(|(b, a)| b - a).collect();
        let mean_distance = delta.iter().map(|d| d * d).sum::<f64>().sqrt();
        let slopes = self.slopes(&delta)?;
        let path = PosteriorPath {
            scores: &likelihoods.log_posterior,
            slopes: &slopes,
            class: contrast,
        };
        let target = settings.target_posterior;
        let line = |t: f64| -> Vec<f64> { z.iter().zip(&delta).map(|(z, d)| z + t * d).collect() };

        // The closed form is exact for the latent; the model's float32 distances of x'
        // differ from it by rounding (measured up to 1e-4 nats of log-odds for the shipped
        // model, 1e-2 for the ImageNet-size mini model), which would put half the answers
        // just below the target. Aim AIM_MARGIN above it, and higher by twice what was missed (at least
        // the margin, doubling) until x' itself reaches the target.
        let target_log_odds = (target / (1.0 - target)).ln();
        let mut aim_log_odds = target_log_odds + AIM_MARGIN;
        let mut attempt = 0;
        let (step, reached, input, exact) = loop {
            attempt += 1;
            let aim = 1.0 / (1.0 + (-aim_log_odds).exp());
            let (step, reached) = path.minimal_step(aim, settings.max_step);
            let input = self.invert(&[line(step)])?;
            let exact = Recheck::new(contrast, self.likelihoods_tensor(input.clone())?.remove(0));
            let log_odds = (exact.posterior / (1.0 - exact.posterior)).ln();
            if !reached || exact.agrees_with(target) || attempt == AIM_ATTEMPTS || aim >= 1.0 {
                break (step, reached, input, exact);
            }
            let raise = (2.0 * (target_log_odds - log_odds)).max(AIM_MARGIN);
            aim_log_odds += raise * f64::from(1u32 << attempt);
        };
        let z_back = self.latents(input.clone())?.remove(0);
        let round_trip = RoundTrip::between(&z_back, &line(step));
        let (mut clamped, mut quantized) = (None, None);
        if let Some(spec) = &self.config().input {
            let image = input_images(spec, input.clone())?.remove(0);
            let valid = self.images_to_inputs(&[image.clamped(), image.quantized()])?;
            let mut checks = self.likelihoods_tensor(valid)?.into_iter();
            clamped = checks.next().map(|l| Recheck::new(contrast, l));
            quantized = checks.next().map(|l| Recheck::new(contrast, l));
        }

        let image = match &self.config().input {
            Some(spec) if settings.image_max_step > 0.0 && settings.image_grid > 0 => {
                Some(self.image_counterfactual(spec, z, &line, contrast, settings)?)
            }
            _ => None,
        };

        let end = match &image {
            Some(image) if image.reached => image.step,
            _ => step,
        };
        let frames = settings.path_frames;
        let steps: Vec<f64> = (0..frames)
            .map(|k| match k + 1 == frames {
                true => end,
                false => end * k as f64 / (frames - 1) as f64,
            })
            .collect();
        let posteriors: Vec<f64> = steps.iter().map(|&t| path.at(t).0.exp()).collect();
        let latents: Vec<Vec<f64>> = steps.iter().map(|&t| line(t)).collect();
        let inputs = self.invert(&latents)?;
        let image_checks = match &self.config().input {
            Some(spec) => {
                let images: Vec<ModelImage> = input_images(spec, inputs.clone())?
                    .iter()
                    .map(ModelImage::quantized)
                    .collect();
                let checks = self.likelihoods_tensor(self.images_to_inputs(&images)?)?;
                Some(
                    checks
                        .into_iter()
                        .map(|l| Recheck::new(contrast, l))
                        .collect(),
                )
            }
            None => None,
        };
        Ok(Counterfactual {
            predicted,
            contrast,
            step,
            reached,
            target_posterior: target,
            expected_posterior: path.at(step).0.exp(),
            latent_distance: step * mean_distance,
            mean_distance,
            input,
            path: CounterfactualPath {
                steps,
                posteriors,
                inputs,
                image_checks,
            },
            round_trip,
            exact,
            clamped,
            quantized,
            image,
        })
    }

    /// `h_y = μ_y·Δ / T` for every class (module docs), computed on the device without
    /// materializing the low-rank conv means.
    fn slopes(&self, delta: &[f64]) -> Result<Vec<f64>, ExplainError> {
        let l = self.config().n_loss_dims;
        let d = self.config().total_dims();
        let device = self.device();
        let head = &self.model().head;
        let delta_fc = matrix::<B>(&delta[..l], 1, l, device);
        let delta_conv = matrix::<B>(&delta[l..], 1, d - l, device);
        let conv_dot = match (&head.mu_t, &head.mu_m, &head.mu_conv) {
            (Some(mu_t), Some(mu_m), _) => delta_conv
                .matmul(mu_m.val().transpose())
                .matmul(mu_t.val().transpose()),
            (_, _, Some(mu_conv)) => delta_conv.matmul(mu_conv.val().transpose()),
            _ => unreachable!("a head has either mu_t and mu_m or mu_conv"),
        };
        let dots = host(
            "the class means' projections",
            delta_fc.matmul(head.mu_fc.val().transpose()).add(conv_dot),
        )?;
        let temperature = self.temperature().map_or(1.0, |s| s.temperature);
        Ok(dots.iter().map(|h| h / temperature).collect())
    }

    /// The 8-bit image at `t` on the line: inverted, projected, classified.
    fn image_at(
        &self,
        spec: &InputSpec,
        latents: &[Vec<f64>],
        contrast: usize,
    ) -> Result<Vec<Checked<B>>, ExplainError> {
        let inverted = self.invert(latents)?;
        let images: Vec<ModelImage> = input_images(spec, inverted)?
            .iter()
            .map(ModelImage::quantized)
            .collect();
        let inputs = self.images_to_inputs(&images)?;
        let checks = self.likelihoods_tensor(inputs.clone())?;
        Ok(images
            .into_iter()
            .zip(checks)
            .enumerate()
            .map(|(i, (image, l))| {
                (
                    image,
                    inputs.clone().narrow(0, i, 1),
                    Recheck::new(contrast, l),
                )
            })
            .collect())
    }

    /// [`ImageCounterfactual`]: the first grid step whose 8-bit image reaches the target,
    /// then bisection against the grid step before it.
    fn image_counterfactual(
        &self,
        spec: &InputSpec,
        z: &[f64],
        line: &dyn Fn(f64) -> Vec<f64>,
        contrast: usize,
        settings: &ExplainSettings,
    ) -> Result<ImageCounterfactual<B>, ExplainError> {
        let target = settings.target_posterior;
        let n = settings.image_grid;
        let grid: Vec<f64> = (1..=n)
            .map(|k| settings.image_max_step * k as f64 / n as f64)
            .collect();
        let mut evaluations = 0;
        let mut best: Option<(f64, Checked<B>)> = None;
        let mut bracket = None;
        'scan: for (chunk_index, chunk) in grid.chunks(BATCH).enumerate() {
            let latents: Vec<Vec<f64>> = chunk.iter().map(|&t| line(t)).collect();
            let results = self.image_at(spec, &latents, contrast)?;
            evaluations += chunk.len();
            for (i, result) in results.into_iter().enumerate() {
                let t = chunk[i];
                if result.2.agrees_with(target) {
                    let k = chunk_index * BATCH + i;
                    let before = if k == 0 { 0.0 } else { grid[k - 1] };
                    bracket = Some((before, t, result));
                    break 'scan;
                }
                let better = best.as_ref().is_none_or(|(_, b)| {
                    (result.2.agrees(), result.2.posterior) > (b.2.agrees(), b.2.posterior)
                });
                if better {
                    best = Some((t, result));
                }
            }
        }
        let (step, reached, (image, input, recheck)) = match bracket {
            Some((mut lo, mut hi, mut found)) => {
                for _ in 0..IMAGE_BISECTIONS {
                    let mid = 0.5 * (lo + hi);
                    let result = self.image_at(spec, &[line(mid)], contrast)?.remove(0);
                    evaluations += 1;
                    if result.2.agrees_with(target) {
                        (hi, found) = (mid, result);
                    } else {
                        lo = mid;
                    }
                }
                (hi, true, found)
            }
            None => {
                let (t, result) = best.expect("the grid has at least one step");
                (t, false, result)
            }
        };
        let latent = self.latents(input.clone())?.remove(0);
        let latent_distance = latent
            .iter()
            .zip(z)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        Ok(ImageCounterfactual {
            input,
            image,
            step,
            reached,
            evaluations,
            latent_distance,
            recheck,
        })
    }

    /// Class prototypes `f⁻¹(μ_y)` and samples `f⁻¹(μ_y + τ·ε)` (module docs), each
    /// classified.
    ///
    /// # Errors
    /// [`ExplainError::ClassOutOfRange`] for a class the model does not have,
    /// [`ExplainError::Setting`] for no classes or a negative or non-finite temperature,
    /// [`ExplainError::NonFiniteInverse`] when the inverse overflows.
    pub fn prototypes(&self, settings: &PrototypeSettings) -> Result<Prototypes<B>, ExplainError> {
        let tau = settings.temperature;
        if !(tau.is_finite() && tau >= 0.0) {
            return Err(ExplainError::Setting {
                setting: "temperature",
                value: tau,
                requirement: "must be finite and at least 0",
            });
        }
        let classes: Vec<usize> = match &settings.classes {
            Some(classes) => classes.clone(),
            None => (0..self.config().n_classes).collect(),
        };
        if classes.is_empty() {
            return Err(ExplainError::Setting {
                setting: "classes",
                value: 0.0,
                requirement: "must name at least one class",
            });
        }
        let means = self.host_means(&classes)?;
        let mut noise = Noise(settings.seed);
        let samples: Vec<(usize, Vec<f64>)> = classes
            .iter()
            .zip(&means)
            .flat_map(|(&class, mean)| {
                (0..settings.samples)
                    .map(|_| {
                        let z = mean.iter().map(|m| m + tau * noise.normal()).collect();
                        (class, z)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();

        let prototype_latents: Vec<(usize, Vec<f64>)> =
            classes.iter().copied().zip(means).collect();
        let (prototypes, prototype_checks, prototype_quantized_checks) =
            self.invert_and_check(&prototype_latents)?;
        let (samples, sample_checks, sample_quantized_checks) = if samples.is_empty() {
            (
                None,
                Vec::new(),
                self.config().input.as_ref().map(|_| Vec::new()),
            )
        } else {
            let (inputs, exact, quantized) = self.invert_and_check(&samples)?;
            (Some(inputs), exact, quantized)
        };
        Ok(Prototypes {
            classes,
            samples_per_class: settings.samples,
            temperature: tau,
            prototypes,
            samples,
            prototype_checks,
            prototype_quantized_checks,
            sample_checks,
            sample_quantized_checks,
        })
    }

    /// Inverts `(class, latent)` pairs (at least one) in batches and classifies the
    /// inverses and, with an input representation, their 8-bit images.
    #[allow(clippy::type_complexity)]
    fn invert_and_check(
        &self,
        latents: &[(usize, Vec<f64>)],
    ) -> Result<(Tensor<B, 4>, Vec<Recheck>, Option<Vec<Recheck>>), ExplainError> {
        let spec = self.config().input.as_ref();
        let mut inputs = Vec::new();
        let mut exact = Vec::new();
        let mut quantized = Vec::new();
        for chunk in latents.chunks(BATCH) {
            let z: Vec<Vec<f64>> = chunk.iter().map(|(_, z)| z.clone()).collect();
            let x = self.invert(&z)?;
            let mut batch = vec![x.clone()];
            if let Some(spec) = spec {
                let images: Vec<ModelImage> = input_images(spec, x.clone())?
                    .iter()
                    .map(ModelImage::quantized)
                    .collect();
                batch.push(self.images_to_inputs(&images)?);
            }
            let n = chunk.len();
            for (i, l) in self
                .likelihoods_tensor(Tensor::cat(batch, 0))?
                .into_iter()
                .enumerate()
            {
                let check = Recheck::new(chunk[i % n].0, l);
                if i < n {
                    exact.push(check);
                } else {
                    quantized.push(check);
                }
            }
            inputs.push(x);
        }
        Ok((Tensor::cat(inputs, 0), exact, spec.map(|_| quantized)))
    }
}

/// `(z_fc [n, L], z_conv [n, D − L])` as `n` host vectors of `D` values.
fn join_latents<B: Backend>(
    n: usize,
    z_fc: Tensor<B, 2>,
    z_conv: Tensor<B, 2>,
) -> Result<Vec<Vec<f64>>, ExplainError> {
    let fc = host("the latents", z_fc)?;
    let conv = host("the latents", z_conv)?;
    let (l, c) = (fc.len() / n.max(1), conv.len() / n.max(1));
    Ok((0..n)
        .map(|i| {
            let mut z = Vec::with_capacity(l + c);
            z.extend_from_slice(&fc[i * l..(i + 1) * l]);
            z.extend_from_slice(&conv[i * c..(i + 1) * c]);
            z
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_step_is_where_the_posterior_crosses_the_target() {
        // Three classes; b = 1 gains with t, class 2 gains faster but starts far behind.
        let scores = [0.0f64, -3.0, -20.0];
        let slopes = [0.0f64, 4.0, 6.0];
        let path = PosteriorPath {
            scores: &scores,
            slopes: &slopes,
            class: 1,
        };
        let (t, reached) = path.minimal_step(0.9, 10.0);
        assert!(reached);
        assert!(path.at(t).0 >= 0.9f64.ln());
        assert!(path.at(t - 1e-9).0 < 0.9f64.ln());
        // Reached before class 2 takes over, and concave: it peaks later and falls.
        let (peak, reached) = path.minimal_step(0.9999999, 10.0);
        assert!(!reached);
        assert!(path.at(peak).1.abs() < 1e-6, "{}", path.at(peak).1);
        assert!(path.at(peak).0 > path.at(peak + 1.0).0);
    }

    #[test]
    fn latent_layout_follows_the_dct_flattening() {
        let layout = LatentLayout {
            n_loss_dims: 8,
            total_dims: 4 * 3 * 3,
            channels: 4,
            side: 3,
        };
        assert_eq!(layout.group(7), LatentGroup::ClassDimensions);
        // index (v·N + u)·C + c: 9 = (0·3 + 2)·4 + 1.
        assert_eq!(layout.dct_position(9), Some((2, 0, 1)));
        assert_eq!(layout.dct_position(35), Some((2, 2, 3)));
        assert_eq!(layout.group(35), LatentGroup::DctBand { band: 4 });
    }

    #[test]
    fn pixels_and_inputs_are_inverse() {
        let spec = InputSpec::Grayscale(trustgc_core::input::GrayscaleInput::fashion_mnist());
        let pixels: Vec<u8> = (0..28 * 28).map(|i| (i * 7 % 256) as u8).collect();
        let mut input = vec![0f32; 32 * 32];
        if let InputSpec::Grayscale(g) = &spec {
            g.write(&pixels, None, false, &mut input);
        }
        let image = input_to_image(&spec, &input);
        assert_eq!(image.out_of_range(), 0);
        assert!(image.padding_max < 1e-6);
        assert_eq!(image.to_image().to_luma8().into_raw(), pixels);
        assert_eq!(image_to_input(&spec, &image.quantized()).unwrap(), input);

        let spec = InputSpec::ImageNet {
            resize: 4,
            crop: 2,
            mean: [0.5, 0.4, 0.3],
            std: [0.2, 0.3, 0.4],
        };
        let input: Vec<f32> = (0..12).map(|i| i as f32 / 10.0 - 0.5).collect();
        let back = image_to_input(&spec, &input_to_image(&spec, &input)).unwrap();
        for (a, b) in back.iter().zip(&input) {
            assert!((a - b).abs() < 1e-6);
        }
        let wrong = ModelImage {
            width: 3,
            ..input_to_image(&spec, &input)
        };
        assert!(matches!(
            image_to_input(&spec, &wrong),
            Err(ExplainError::PixelShape { .. })
        ));
    }
}
