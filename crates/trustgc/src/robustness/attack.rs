//! Adversarial attacks against a generative classifier's posterior, through burn's
//! autodiff: FGSM, PGD and an adaptive PGD that also keeps the input typical.
//!
//! # Notation
//!
//! `x₀` is the clean image in pixel space (values in `[0, 1]`, see the [parent
//! module](super)), `y` its label, `ε` the L∞ budget as a fraction of the pixel range
//! (`ε = e/255` for a budget of `e` 8-bit levels), `Π(x)` the projection onto the ε-ball
//! around `x₀` intersected with `[0, 1]`: `Π(x) = clamp(clamp(x, x₀ − ε, x₀ + ε), 0, 1)`.
//! The attack loss is the cross-entropy of the true class under the model's own posterior
//! (uniform prior, no temperature: the verdict's posterior),
//! `L(x) = −log p(y | x) = −log_softmax(−½ d(x))_y`.
//!
//! - **FGSM** (Goodfellow et al. 2015): `x = Π(x₀ + ε · sign ∇ₓ L(x₀))`.
//! - **PGD** (Madry et al. 2018), L∞: `x₀` as the start (no random start: the attack is
//!   deterministic), then `steps` times `x ← Π(x + α · sign ∇ₓ L(x))`, with the step size
//!   `α = 2.5 ε / steps` by default (Madry et al.'s rule: the attack can cross the ball
//!   and come back). The last iterate is returned.
//! - **Adaptive PGD** (Tramèr et al. 2020, "On Adaptive Attacks to Adversarial Example
//!   Defenses": attack the detector too). PGD on
//!   `L_adaptive(x) = min(L(x), cap) − λ · (P_marginal(x) + P_class(x) + P_latent(x))` where
//!   - `P_marginal = (relu(l' − m(x)) + relu(m(x) − h')) / (h − l)` with `m(x) = log p(x)/D`
//!     and `[l, h]` the typical range of `ood.json`, shrunk by `margin · (h − l)` on each
//!     side to `[l', h']`: zero inside the typical range, growing outside it;
//!   - `P_class = relu(δ_t(x) − (1 − margin) · τ_t) / τ_t` with `δ_t = ‖z_fc − μ_t‖² /
//!     n_loss_dims` the class test's distance to the most probable wrong class `t` (chosen
//!     again at every step) and `τ_t` that class's threshold: zero when `t` would pass
//!     its class test;
//!   - `P_latent = relu(s_t(x) − (1 − margin) · θ) / θ`, with `s_t` the latent test's
//!     statistic for class `t` (the squared Mahalanobis distance per dimension under the
//!     refitted Gaussian) and `θ` its threshold: zero when the latent would pass the
//!     latent test near `t` (present when `ood.json` holds a latent test);
//!   - `cap` stops the push on the posterior once the true class is unlikely enough
//!     (`p(y|x) ≤ e^{−cap}`), so that the remaining steps go to the typicality terms.
//!
//!   The complexity test's PNG size is not differentiable and is not in the loss; the
//!   attack meets it only through `log p(x)`. Of the iterates, each image keeps the last
//!   one that was misclassified with a typical `log p(x)`, a latent passing the latent
//!   test and a wrong class passing its class test (the verdict's differentiable part);
//!   the last iterate otherwise.
//!
//! Every iterate stays in the ε-ball and `[0, 1]`; [`Attacker::attack_images`] rounds the
//! result to 8 bits within the same ball (`⌊e⌋` levels around each clean pixel).

use burn::module::{AutodiffModule, Module};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;
use trustgc_core::head::logsumexp;
use trustgc_core::input::InputSpec;
use trustgc_core::{GenerativeClassifier, Mode};

use super::{RobustnessError, host, pixel_shape, pixels_to_input, to_images, to_tensor};
use crate::Classifier;
use crate::ood::OodStats;
use crate::preprocess::Image8;

/// PGD's default number of steps.
pub const DEFAULT_STEPS: usize = 10;

/// The adaptive attack's default number of steps (more than PGD's: it has two goals).
pub const DEFAULT_ADAPTIVE_STEPS: usize = 20;

/// Madry et al.'s step-size rule: `α = STEP_FACTOR · ε / steps`.
pub const STEP_FACTOR: f64 = 2.5;

/// Which attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackKind {
    /// One signed-gradient step of size ε.
    Fgsm,
    /// Projected gradient descent, L∞.
    Pgd,
    /// PGD that also keeps `log p(x)` and the class test typical (needs `ood.json`).
    AdaptivePgd,
}

impl AttackKind {
    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            AttackKind::Fgsm => "fgsm",
            AttackKind::Pgd => "pgd",
            AttackKind::AdaptivePgd => "adaptive_pgd",
        }
    }
}

impl std::fmt::Display for AttackKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The adaptive attack's loss weights (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AdaptiveSettings {
    /// `λ`, the weight of the typicality penalties.
    pub weight: f64,
    /// `cap`, in nats: the cross-entropy counts up to this value.
    pub cap: f64,
    /// The fraction of each typical range kept free as a safety margin.
    pub margin: f64,
}

impl Default for AdaptiveSettings {
    /// `λ = 10`, `cap = 5` nats (`p(y|x) ≤ 0.7 %`), a 10 % margin.
    fn default() -> Self {
        Self {
            weight: 10.0,
            cap: 5.0,
            margin: 0.1,
        }
    }
}

/// One attack and its budget.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AttackSettings {
    /// Which attack.
    pub kind: AttackKind,
    /// `ε`, the L∞ budget as a fraction of the pixel range (`e/255`).
    pub epsilon: f64,
    /// Steps (PGD and adaptive PGD; FGSM takes one).
    pub steps: usize,
    /// Step size `α`, a fraction of the pixel range (FGSM: `ε`).
    pub step_size: f64,
    /// The adaptive attack's loss (ignored by the others).
    pub adaptive: AdaptiveSettings,
}

impl AttackSettings {
    /// FGSM with a budget of `levels` 8-bit levels (`ε = levels/255`).
    pub fn fgsm(levels: f64) -> Self {
        let epsilon = levels / 255.0;
        Self {
            kind: AttackKind::Fgsm,
            epsilon,
            steps: 1,
            step_size: epsilon,
            adaptive: AdaptiveSettings::default(),
        }
    }

    /// PGD with a budget of `levels` 8-bit levels, [`DEFAULT_STEPS`] steps of
    /// `2.5 ε / steps`.
    pub fn pgd(levels: f64) -> Self {
        Self::pgd_steps(AttackKind::Pgd, levels, DEFAULT_STEPS)
    }

    /// Adaptive PGD with a budget of `levels` 8-bit levels, [`DEFAULT_ADAPTIVE_STEPS`]
    /// steps of `2.5 ε / steps`, the default loss weights.
    pub fn adaptive(levels: f64) -> Self {
        Self::pgd_steps(AttackKind::AdaptivePgd, levels, DEFAULT_ADAPTIVE_STEPS)
    }

    /// `kind` (PGD or adaptive PGD) with `steps` steps of `2.5 ε / steps`.
    pub fn pgd_steps(kind: AttackKind, levels: f64, steps: usize) -> Self {
        let epsilon = levels / 255.0;
        Self {
            kind,
            epsilon,
            steps,
            step_size: STEP_FACTOR * epsilon / steps.max(1) as f64,
            adaptive: AdaptiveSettings::default(),
        }
    }

    /// `ε` in 8-bit levels.
    pub fn levels(&self) -> f64 {
        self.epsilon * 255.0
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`RobustnessError::Setting`] for an `ε` or step size that is not finite or outside
    /// `[0, 1]`, no steps, or adaptive weights that are not finite and `≥ 0` (a margin
    /// below 0.5).
    pub fn check(&self) -> Result<(), RobustnessError> {
        let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
        let fail = |field, value, requirement| {
            Err(RobustnessError::Setting {
                field,
                value,
                requirement,
            })
        };
        if !unit(self.epsilon) {
            return fail("epsilon", self.epsilon, "must be in [0, 1] (e/255)");
        }
        if !unit(self.step_size) {
            return fail("step_size", self.step_size, "must be in [0, 1]");
        }
        if self.steps == 0 {
            return fail("steps", 0.0, "must be at least 1");
        }
        let a = &self.adaptive;
        if !(a.weight.is_finite() && a.weight >= 0.0) {
            return fail("weight", a.weight, "must be finite and >= 0");
        }
        if !(a.cap.is_finite() && a.cap > 0.0) {
            return fail("cap", a.cap, "must be finite and > 0");
        }
        if !(a.margin.is_finite() && (0.0..0.5).contains(&a.margin)) {
            return fail("margin", a.margin, "must be in [0, 0.5)");
        }
        Ok(())
    }
}

/// Runs attacks against one classifier on an autodiff backend.
///
/// ```
/// use trustgc::burn::backend::{Autodiff, Flex};
/// use trustgc::preprocess::Image8;
/// use trustgc::robustness::attack::{AttackSettings, Attacker};
/// use trustgc::{Classifier, Shipped};
///
/// let device = Default::default();
/// let classifier = Classifier::<Autodiff<Flex>>::shipped(Shipped::FashionMnist, &device)?;
/// let attacker = Attacker::new(&classifier)?;
/// // A bright bar of the shape of a pair of trousers (class 1).
/// let image = Image8 {
///     width: 28,
///     height: 28,
///     channels: 1,
///     data: (0..784).map(|i| if (10..18).contains(&(i % 28)) { 220 } else { 0 }).collect(),
/// };
/// let attacked = attacker.attack_images(&[image.clone()], &[1], &AttackSettings::fgsm(8.0), 16)?;
/// // No pixel moved by more than 8 levels.
/// assert!(attacked[0].data.iter().zip(&image.data).all(|(a, b)| a.abs_diff(*b) <= 8));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Attacker<B: AutodiffBackend> {
    model: GenerativeClassifier<B>,
    spec: InputSpec,
    ood: Option<OodStats>,
    classes: usize,
    n_loss_dims: usize,
    total_dims: usize,
    /// The latent test's Gaussian as tensors, when the statistics hold one.
    latent: Option<LatentTensors<B>>,
    device: B::Device,
}

/// The latent test's Gaussian ([`crate::ood::LatentGaussian`]) on the device, for the
/// adaptive attack's penalty.
#[derive(Debug, Clone)]
struct LatentTensors<B: Backend> {
    /// `[classes, D]`: each class's full mean (class part, then the shared part).
    means: Tensor<B, 2>,
    /// `[rank, D]`.
    components: Tensor<B, 2>,
    /// `[rank]`: `1/λ_j − 1/σ²`.
    weights: Tensor<B, 1>,
    /// `1/σ²`.
    residual: f64,
}

impl<B: Backend> LatentTensors<B> {
    fn new(gaussian: &crate::ood::LatentGaussian, device: &B::Device) -> Self {
        let d = gaussian.dims();
        let k = gaussian.class_means.len();
        let rank = gaussian.components.len();
        let means: Vec<f32> = gaussian
            .class_means
            .iter()
            .flat_map(|m| m.iter().chain(&gaussian.shared_mean).copied())
            .collect();
        let components: Vec<f32> = gaussian.components.iter().flatten().copied().collect();
        let residual = 1.0 / gaussian.residual_variance;
        let weights: Vec<f32> = gaussian
            .variances
            .iter()
            .map(|v| (1.0 / v - residual) as f32)
            .collect();
        Self {
            means: Tensor::from_data(TensorData::new(means, [k, d]), device),
            components: Tensor::from_data(TensorData::new(components, [rank, d]), device),
            weights: Tensor::from_data(TensorData::new(weights, [rank]), device),
            residual,
        }
    }

    /// The statistic of [`crate::ood::LatentGaussian::statistic`] for every class (not
    /// only the nearest), `[batch, classes]`, differentiable in `z` (`[batch, D]`).
    fn per_class(&self, z: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, d] = z.dims();
        let k = self.means.dims()[0];
        let rank = self.components.dims()[0];
        // ‖z − m_y‖² = ‖z‖² + ‖m_y‖² − 2 z·m_y.
        let squared = z
            .clone()
            .square()
            .sum_dim(1)
            .add(self.means.clone().square().sum_dim(1).transpose())
            .sub(
                z.clone()
                    .matmul(self.means.clone().transpose())
                    .mul_scalar(2.0),
            );
        // (z − m_y)·v_j for every image, class and component: [n, k, rank].
        let along = z
            .matmul(self.components.clone().transpose())
            .reshape([n, 1, rank])
            .sub(
                self.means
                    .clone()
                    .matmul(self.components.clone().transpose())
                    .reshape([1, k, rank]),
            );
        let weighted = along
            .square()
            .mul(self.weights.clone().reshape([1, 1, rank]))
            .sum_dim(2)
            .reshape([n, k]);
        squared
            .mul_scalar(self.residual)
            .add(weighted)
            .div_scalar(d as f64)
    }
}

/// What one forward pass tells the adaptive attack, per image.
struct Forward<B: Backend> {
    /// The loss terms' tensors.
    log_posterior: Tensor<B, 2>,
    log_marginal_per_dim: Tensor<B, 1>,
    fc_distances: Tensor<B, 2>,
    /// The latent test's statistic for every class, `[batch, classes]`, when the
    /// statistics hold a latent test.
    latent_distances: Option<Tensor<B, 2>>,
}

impl<B: AutodiffBackend> Attacker<B> {
    /// An attacker of `classifier`'s model (a copy that tracks no parameter gradients),
    /// with its input representation and OoD statistics.
    ///
    /// # Errors
    /// [`RobustnessError::NoInputSpec`] when the model has no input representation.
    pub fn new(classifier: &Classifier<B>) -> Result<Self, RobustnessError> {
        let config = classifier.config();
        let spec = config.input.clone().ok_or(RobustnessError::NoInputSpec)?;
        Ok(Self {
            model: classifier.model().clone().no_grad(),
            spec,
            ood: classifier.ood().cloned(),
            classes: config.n_classes,
            n_loss_dims: config.n_loss_dims,
            total_dims: config.total_dims(),
            latent: classifier
                .ood()
                .and_then(|o| o.latent.as_ref())
                .map(|t| LatentTensors::new(&t.gaussian, classifier.device())),
            device: classifier.device().clone(),
        })
    }

    /// The pixel space `[C, H, W]` the attacks act in.
    pub fn pixel_shape(&self) -> [usize; 3] {
        pixel_shape(&self.spec)
    }

    /// The model on the backend without autodiff (for evaluating without a graph).
    pub fn inner_model(&self) -> GenerativeClassifier<B::InnerBackend> {
        self.model.valid()
    }

    fn forward(&self, pixels: Tensor<B, 4>) -> Forward<B> {
        let input = pixels_to_input(&self.spec, pixels);
        let out = self.model.forward(input, Mode::Eval);
        let k = self.classes as f64;
        let log_marginal_per_dim = logsumexp(out.class_log_likelihoods())
            .sub_scalar(k.ln())
            .div_scalar(self.total_dims as f64);
        let latent_distances = self.latent.as_ref().map(|latent| {
            latent.per_class(Tensor::cat(vec![out.z_fc.clone(), out.z_conv.clone()], 1))
        });
        let mu = self.model.head.mu_fc.val();
        let z = out.z_fc.clone();
        let fc_distances = z
            .clone()
            .square()
            .sum_dim(1)
            .add(mu.clone().square().sum_dim(1).transpose())
            .sub(z.matmul(mu.transpose()).mul_scalar(2.0))
            .div_scalar(self.n_loss_dims as f64);
        Forward {
            log_posterior: log_softmax(out.logits(), 1),
            log_marginal_per_dim,
            fc_distances,
            latent_distances,
        }
    }

    /// One-hot rows `[n, classes]` of `classes_of`.
    fn one_hot(&self, classes_of: &[usize]) -> Tensor<B, 2> {
        let k = self.classes;
        let mut data = vec![0f32; classes_of.len() * k];
        for (i, &c) in classes_of.iter().enumerate() {
            data[i * k + c] = 1.0;
        }
        Tensor::from_data(TensorData::new(data, [classes_of.len(), k]), &self.device)
    }

    /// `log p(y | x)` of each image's label under the model's own posterior (uniform
    /// prior, no temperature), the quantity the attacks lower.
    ///
    /// # Errors
    /// [`RobustnessError::PixelShape`], [`RobustnessError::PixelRange`],
    /// [`RobustnessError::Labels`], [`RobustnessError::Label`], [`RobustnessError::ReadBack`].
    pub fn true_class_log_posterior(
        &self,
        pixels: Tensor<B::InnerBackend, 4>,
        labels: &[usize],
    ) -> Result<Vec<f64>, RobustnessError> {
        self.check_batch(&pixels, labels)?;
        let values = host(
            "the log posteriors",
            self.forward(Tensor::from_inner(pixels)).log_posterior,
        )?;
        let k = self.classes;
        Ok(labels
            .iter()
            .enumerate()
            .map(|(i, &y)| f64::from(values[i * k + y]))
            .collect())
    }

    fn check_batch(
        &self,
        pixels: &Tensor<B::InnerBackend, 4>,
        labels: &[usize],
    ) -> Result<(), RobustnessError> {
        let dims = pixels.dims();
        let expected = self.pixel_shape();
        if dims[0] == 0 || dims[1..] != expected {
            return Err(RobustnessError::PixelShape {
                expected,
                found: dims.to_vec(),
            });
        }
        if labels.len() != dims[0] {
            return Err(RobustnessError::Labels {
                images: dims[0],
                labels: labels.len(),
            });
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= self.classes)
        {
            return Err(RobustnessError::Label {
                index,
                label,
                classes: self.classes,
            });
        }
        let values = host("the pixels", pixels.clone())?;
        let count = values
            .iter()
            .filter(|v| !(v.is_finite() && (0.0..=1.0).contains(*v)))
            .count();
        if count > 0 {
            return Err(RobustnessError::PixelRange { count });
        }
        Ok(())
    }

    /// Attacks a batch of pixels `[batch, C, H, W]` in `[0, 1]` with labels `labels`.
    ///
    /// # Shapes
    /// `pixels`: `[batch, C, H, W]` of the model's pixel space ([`Attacker::pixel_shape`]);
    /// returns the attacked pixels, same shape, within `ε` of `pixels` and in `[0, 1]`.
    ///
    /// # Errors
    /// [`AttackSettings::check`]'s errors, [`RobustnessError::PixelShape`],
    /// [`RobustnessError::PixelRange`] (NaN pixels among them), label errors,
    /// [`RobustnessError::NoOodStats`] for the adaptive attack of a model without
    /// `ood.json`, [`RobustnessError::NonFiniteLoss`], [`RobustnessError::NoGradient`].
    pub fn attack(
        &self,
        pixels: Tensor<B::InnerBackend, 4>,
        labels: &[usize],
        settings: &AttackSettings,
    ) -> Result<Tensor<B::InnerBackend, 4>, RobustnessError> {
        settings.check()?;
        self.check_batch(&pixels, labels)?;
        let adaptive = match settings.kind {
            AttackKind::AdaptivePgd => Some(self.ood.clone().ok_or(RobustnessError::NoOodStats)?),
            _ => None,
        };
        let eps = settings.epsilon as f32;
        let (low, high) = (
            pixels.clone().sub_scalar(eps).clamp_min(0.0),
            pixels.clone().add_scalar(eps).clamp_max(1.0),
        );
        let project =
            |x: Tensor<B::InnerBackend, 4>| x.max_pair(low.clone()).min_pair(high.clone());
        let (steps, alpha) = match settings.kind {
            AttackKind::Fgsm => (1, eps),
            _ => (settings.steps, settings.step_size as f32),
        };
        let targets = self.one_hot(labels);
        let n = labels.len();
        let per = pixels.dims()[1..].iter().product::<usize>();
        // The adaptive attack's pick per image: the last iterate that evaded the verdict's
        // differentiable tests.
        let mut evading: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut x = pixels.clone();
        for step in 0..=steps {
            let last = step == steps;
            if last && adaptive.is_none() {
                break;
            }
            let tracked = Tensor::<B, 4>::from_inner(x.clone()).require_grad();
            let forward = self.forward(tracked.clone());
            let cross_entropy = forward
                .log_posterior
                .clone()
                .mul(targets.clone())
                .sum_dim(1)
                .neg()
                .squeeze_dim::<1>(1);
            let loss = match &adaptive {
                None => cross_entropy,
                Some(ood) => {
                    let (loss, evades) =
                        self.adaptive_loss(&forward, cross_entropy, labels, ood, settings)?;
                    if evades.iter().any(|e| *e) {
                        let values = host("the pixels", x.clone())?;
                        for (i, e) in evades.iter().enumerate() {
                            if *e {
                                evading[i] = Some(values[i * per..(i + 1) * per].to_vec());
                            }
                        }
                    }
                    loss
                }
            };
            if last {
                break;
            }
            let total = loss.sum();
            let value = host("the loss", total.clone())?;
            if !value.iter().all(|v| v.is_finite()) {
                return Err(RobustnessError::NonFiniteLoss { step });
            }
            let grads = total.backward();
            let gradient = tracked.grad(&grads).ok_or(RobustnessError::NoGradient)?;
            // sign(NaN) would carry a NaN pixel into the projection and, silently, into
            // the 8-bit image.
            let count = host("the gradient", gradient.clone())?
                .iter()
                .filter(|g| !g.is_finite())
                .count();
            if count > 0 {
                return Err(RobustnessError::NonFiniteGradient { step, count });
            }
            x = project(x.add(gradient.sign().mul_scalar(alpha)));
        }
        if evading.iter().all(Option::is_none) {
            return Ok(x);
        }
        let mut values = host("the pixels", x.clone())?;
        for (i, pick) in evading.into_iter().enumerate() {
            if let Some(pick) = pick {
                values[i * per..(i + 1) * per].copy_from_slice(&pick);
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(values, pixels.dims()),
            &pixels.device(),
        ))
    }

    /// The adaptive loss of one forward pass, and which images evade the verdict's
    /// differentiable tests there.
    fn adaptive_loss(
        &self,
        forward: &Forward<B>,
        cross_entropy: Tensor<B, 1>,
        labels: &[usize],
        ood: &OodStats,
        settings: &AttackSettings,
    ) -> Result<(Tensor<B, 1>, Vec<bool>), RobustnessError> {
        let k = self.classes;
        let a = settings.adaptive;
        let log_post = host("the log posteriors", forward.log_posterior.clone())?;
        let marginal = host("log p(x)/D", forward.log_marginal_per_dim.clone())?;
        let distances = host("the class distances", forward.fc_distances.clone())?;
        let latent = match (&forward.latent_distances, &ood.latent) {
            (Some(values), Some(test)) => Some((
                host("the latent statistics", values.clone())?,
                test.threshold,
            )),
            _ => None,
        };
        let (low, high) = (ood.marginal_low, ood.marginal_high);
        let width = (high - low).max(f64::MIN_POSITIVE);
        let mut wrong = Vec::with_capacity(labels.len());
        let mut evades = Vec::with_capacity(labels.len());
        for (i, &y) in labels.iter().enumerate() {
            let row = &log_post[i * k..(i + 1) * k];
            let best_wrong = (0..k)
                .filter(|&c| c != y)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(y);
            let predicted = (0..k)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(y);
            let m = f64::from(marginal[i]);
            let d = f64::from(distances[i * k + predicted]);
            // The latent test looks at the nearest class, whichever it is.
            let latent_passes = latent.as_ref().is_none_or(|(values, threshold)| {
                values[i * k..(i + 1) * k]
                    .iter()
                    .any(|&v| f64::from(v) <= *threshold)
            });
            evades.push(
                predicted != y
                    && (low..=high).contains(&m)
                    && d <= ood.class_max_distance[predicted]
                    && f64::from(row[predicted]) >= ood.min_posterior.ln()
                    && latent_passes,
            );
            wrong.push(best_wrong);
        }
        let thresholds: Vec<f32> = wrong
            .iter()
            .map(|&c| ood.class_max_distance[c].max(f64::MIN_POSITIVE) as f32)
            .collect();
        let n = labels.len();
        let thresholds = Tensor::<B, 1>::from_data(TensorData::new(thresholds, [n]), &self.device);
        let target_distance = forward
            .fc_distances
            .clone()
            .mul(self.one_hot(&wrong))
            .sum_dim(1)
            .squeeze_dim::<1>(1);
        let class_penalty =
            relu(target_distance.sub(thresholds.clone().mul_scalar(1.0 - a.margin)))
                .div(thresholds);
        let m = forward.log_marginal_per_dim.clone();
        let (low_in, high_in) = (low + a.margin * width, high - a.margin * width);
        let marginal_penalty = relu(m.clone().neg().add_scalar(low_in))
            .add(relu(m.sub_scalar(high_in)))
            .div_scalar(width);
        // The latent test: the latent pulled toward the target class under the refitted
        // Gaussian, as the class penalty pulls `z_fc` toward its mean.
        let penalties = match (&forward.latent_distances, &ood.latent) {
            (Some(values), Some(test)) => {
                let threshold = test.threshold.max(f64::MIN_POSITIVE);
                let target = values
                    .clone()
                    .mul(self.one_hot(&wrong))
                    .sum_dim(1)
                    .squeeze_dim::<1>(1);
                let latent_penalty =
                    relu(target.sub_scalar(threshold * (1.0 - a.margin))).div_scalar(threshold);
                marginal_penalty.add(class_penalty).add(latent_penalty)
            }
            _ => marginal_penalty.add(class_penalty),
        };
        let loss = cross_entropy
            .clamp_max(a.cap)
            .sub(penalties.mul_scalar(a.weight));
        Ok((loss, evades))
    }

    /// Attacks 8-bit images of the model's pixel space in batches of `batch`, and rounds
    /// the results to 8 bits within the ε-ball (`⌊ε · 255⌋` levels around each clean
    /// pixel, and `[0, 255]`).
    ///
    /// # Errors
    /// [`RobustnessError::Empty`], [`RobustnessError::ImageShape`], and
    /// [`Attacker::attack`]'s errors.
    pub fn attack_images(
        &self,
        images: &[Image8],
        labels: &[usize],
        settings: &AttackSettings,
        batch: usize,
    ) -> Result<Vec<Image8>, RobustnessError> {
        settings.check()?;
        if images.is_empty() {
            return Err(RobustnessError::Empty { what: "attack" });
        }
        if labels.len() != images.len() {
            return Err(RobustnessError::Labels {
                images: images.len(),
                labels: labels.len(),
            });
        }
        let shape = self.pixel_shape();
        let budget = (settings.epsilon * 255.0 + 1e-6).floor() as i32;
        let mut out = Vec::with_capacity(images.len());
        for (chunk, chunk_labels) in images.chunks(batch.max(1)).zip(labels.chunks(batch.max(1))) {
            let pixels = to_tensor::<B::InnerBackend>(chunk, shape, &self.device)?;
            let attacked = to_images(self.attack(pixels, chunk_labels, settings)?)?;
            for (mut image, clean) in attacked.into_iter().zip(chunk) {
                for (v, &c) in image.data.iter_mut().zip(&clean.data) {
                    let c = i32::from(c);
                    *v = i32::from(*v).clamp(c - budget, c + budget).clamp(0, 255) as u8;
                }
                out.push(image);
            }
        }
        Ok(out)
    }
}

/// One attack's outcome on a labelled set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttackResult {
    /// The attack.
    pub settings: AttackSettings,
    /// Accuracy, verdict flags and calibration on the attacked images.
    pub summary: super::SetSummary,
    /// How well each OoD score tells the attacked images from the clean ones.
    pub detection: super::ShiftDetection,
    /// The mean L∞ distance of the attacked 8-bit images from the clean ones, in 8-bit
    /// levels.
    pub mean_linf_levels: f64,
}

/// Attacks `images` (8-bit, the model's pixel space) with `settings` and measures the
/// result with `evaluator` (the same model without autodiff): accuracy, the verdict's flag
/// rate and AUROC clean vs attacked for every OoD score. `clean_scores` are the clean
/// images' scores ([`super::evaluate`]); `progress` is called with the number of images
/// done after each batch.
///
/// # Errors
/// [`Attacker::attack_images`]'s, [`super::evaluate`]'s, [`super::summarize`]'s and
/// [`super::shift_detection`]'s errors.
#[allow(clippy::too_many_arguments)]
pub fn run_attack<B: AutodiffBackend>(
    attacker: &Attacker<B>,
    evaluator: &Classifier<B::InnerBackend>,
    images: &[Image8],
    labels: &[usize],
    clean_scores: &[crate::scores::OodScores],
    settings: &AttackSettings,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<AttackResult, RobustnessError> {
    super::check_labels(images.len(), labels, attacker.classes)?;
    let mut attacked = Vec::with_capacity(images.len());
    for (chunk, chunk_labels) in images.chunks(batch.max(1)).zip(labels.chunks(batch.max(1))) {
        attacked.extend(attacker.attack_images(chunk, chunk_labels, settings, batch)?);
        progress(attacked.len());
    }
    let (results, scores) = super::evaluate(evaluator, &attacked, batch)?;
    let mean_linf_levels = attacked
        .iter()
        .zip(images)
        .map(|(a, c)| {
            a.data
                .iter()
                .zip(&c.data)
                .map(|(a, c)| a.abs_diff(*c))
                .max()
                .map_or(0.0, f64::from)
        })
        .sum::<f64>()
        / images.len() as f64;
    Ok(AttackResult {
        settings: *settings,
        summary: super::summarize(&results, labels)?,
        detection: super::shift_detection(clean_scores, &scores)?,
        mean_linf_levels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ood::LatentGaussian;
    use burn::backend::Flex;

    /// The adaptive attack's tensor form of the latent statistic agrees with the verdict's
    /// host form: its minimum over classes is [`LatentGaussian::statistic`].
    #[test]
    fn the_tensor_latent_statistic_matches_the_verdicts() {
        let (d, classes) = (10, 3);
        let value = |i: usize, j: usize| ((i * 31 + j * 17) % 23) as f32 / 7.0 - 1.5;
        let latents: Vec<Vec<f32>> = (0..90)
            .map(|i| {
                (0..d)
                    .map(|j| value(i, j) * (1.0 + (j % 3) as f32))
                    .collect()
            })
            .collect();
        let labels: Vec<usize> = (0..90).map(|i| i % classes).collect();
        let gaussian = LatentGaussian::fit(&latents, &labels, classes, 4, 3).unwrap();
        let device = Default::default();
        let tensors = LatentTensors::<Flex>::new(&gaussian, &device);
        let probes: Vec<Vec<f32>> = (0..5)
            .map(|i| (0..d).map(|j| value(i + 200, j) * 2.0).collect())
            .collect();
        let z = Tensor::<Flex, 2>::from_data(
            TensorData::new(probes.concat(), [probes.len(), d]),
            &device,
        );
        let per_class: Vec<f32> = tensors.per_class(z).into_data().into_vec().unwrap();
        for (i, probe) in probes.iter().enumerate() {
            let min = per_class[i * classes..(i + 1) * classes]
                .iter()
                .fold(f64::INFINITY, |m, &v| m.min(f64::from(v)));
            let host = gaussian.statistic(probe);
            assert!(
                (min - host).abs() <= 1e-4 * host.abs().max(1.0),
                "probe {i}: tensor {min} vs host {host}"
            );
        }
    }
}
