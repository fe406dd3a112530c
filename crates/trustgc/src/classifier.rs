//! [`Classifier`]: what users call. A generative classifier with its config, ready to say
//! how likely an image is under each class, which class it is, and whether it looks like
//! anything the model knows.
//!
//! # Units and formulas
//! `D` is the number of input dimensions (`C·H·W` of the model input), `d_y` the squared
//! distance of the latent to class `y`'s mean, `log|det J|` the flow's log-determinant.
//! - `class_log_likelihoods[y] = log p(x|y) = −½ d_y + log|det J| − (D/2) ln 2π`, in nats,
//!   for `x` in the model's input space (after normalization).
//! - `log_posterior[y] = log p(y|x) = log p(x|y) + log π_y − log Σ_y' π_y' p(x|y')`, with
//!   the prior `π` uniform unless set with [`Classifier::with_prior`].
//! - `log_marginal = log p(x) = log Σ_y π_y p(x|y)`, nats.
//! - `bits_per_dim`: `−log p(x)` of the 8-bit image, per dimension, in bits:
//!   `(−log p(x) + D·mean_c ln std_c + D·ln 255) / (D·ln 2)` (the normalization's and the
//!   1/255 scaling's Jacobians; no dequantization noise is added at inference).
//! - `logits = −½ d` are the reference's `logits_tr`.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::DynamicImage;
use serde::{Deserialize, Serialize};
use trustgc_core::head::ClassNorms;
use trustgc_core::{GcConfig, GenerativeClassifier, InputShapeError};

use crate::preprocess::{ImageError, model_input, read_image};

/// Why a classification could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The image could not be read or converted.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The model has no input representation, so it cannot take images (give tensors).
    #[error(
        "the model's config has no `input` representation; pass tensors to `likelihoods_tensor`"
    )]
    NoInputSpec,
    /// A tensor of the wrong shape.
    #[error(transparent)]
    Shape(#[from] InputShapeError),
    /// The input holds NaN or infinite values.
    #[error("input {index} holds {count} non-finite values (NaN or infinity)")]
    NonFinite {
        /// Which input of the batch.
        index: usize,
        /// How many values.
        count: usize,
    },
    /// A prior of the wrong length or with non-positive entries.
    #[error("the class prior needs {classes} positive finite weights")]
    Prior {
        /// The number of classes.
        classes: usize,
    },
}

/// How one input relates to the classes, decided by typicality tests (see [`OodStats`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Typical, and typical of exactly one class.
    Confident {
        /// The class.
        class: usize,
    },
    /// Typical of several classes.
    Ambiguous {
        /// The classes, most likely first.
        classes: Vec<usize>,
    },
    /// Typical of no class: the model has not seen anything like it.
    OutOfDistribution {
        /// `log p(x)/D` was outside the typical range of in-distribution inputs.
        atypical_marginal: bool,
    },
}

/// Reference statistics of in-distribution data for the typicality tests, stored as
/// `ood.json` beside a model (`trustgc fit-ood` computes them).
///
/// Two typicality tests, each with thresholds that are quantiles of the calibration
/// images' scores:
///
/// - the marginal test: `log p(x)/D` (nats per dimension) must lie in the range holding
///   `1 − alpha` of the calibration images (`alpha/2` cut on each side);
/// - the class test of class `y`: the latent's distance from the class mean,
///   `‖z_fc − μ_y‖² / n_loss_dims` ([`Likelihoods::class_distances`]), must not exceed the
///   `1 − alpha` quantile of that distance over calibration images of class `y`.
///
/// `alpha` is the false-alarm rate of each test: the rate at which it calls
/// in-distribution inputs atypical. The class test looks at the class dimensions because
/// `log p(x|y)` of all classes share the flow's log-determinant and the other dimensions'
/// term, which dominate it: an input can have a typical `log p(x)` (the flow compresses
/// it as much as it does real images) while its latent lies far from every class mean.
///
/// A class *agrees* with an input when the input passes that class's test and the class
/// holds at least `min_posterior` of the posterior. The verdict: out of distribution when
/// the marginal test fails or no class agrees; confident when exactly one class agrees;
/// ambiguous when several do.
/// The rate of calibration images whose verdict is not "confident in their own class"
/// (misclassified, ambiguous or called out of distribution) is `false_alarm_rate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OodStats {
    /// The per-test false-alarm rate the thresholds were set for.
    pub alpha: f64,
    /// Typical range of `log p(x)/D`: lower bound (the `alpha/2` quantile).
    pub marginal_low: f64,
    /// Typical range of `log p(x)/D`: upper bound (the `1 − alpha/2` quantile).
    pub marginal_high: f64,
    /// For each class, the `1 − alpha` quantile of `‖z_fc − μ_y‖² / n_loss_dims` over
    /// calibration images of that class: an input at most this far passes the class test.
    pub class_max_distance: Vec<f64>,
    /// The least posterior `p(y|x)` of a class that agrees with an input.
    pub min_posterior: f64,
    /// Calibration images used.
    pub images: usize,
    /// Fraction of calibration images whose verdict was not `Confident` with their own
    /// label (a measured false-alarm rate of the whole procedure).
    pub false_alarm_rate: f64,
    /// Where the calibration images came from.
    pub source: String,
}

impl OodStats {
    /// The verdict for one input's scores.
    pub fn verdict(
        &self,
        log_marginal_per_dim: f64,
        class_distances: &[f64],
        log_posterior: &[f64],
    ) -> Verdict {
        let atypical = !(log_marginal_per_dim >= self.marginal_low
            && log_marginal_per_dim <= self.marginal_high);
        if atypical {
            return Verdict::OutOfDistribution {
                atypical_marginal: true,
            };
        }
        let min_log_posterior = self.min_posterior.ln();
        let mut agreeing: Vec<usize> = (0..class_distances.len())
            .filter(|&y| {
                self.class_max_distance
                    .get(y)
                    .is_some_and(|&max| class_distances[y] <= max)
                    && log_posterior
                        .get(y)
                        .is_some_and(|&p| p >= min_log_posterior)
            })
            .collect();
        agreeing.sort_by(|&a, &b| log_posterior[b].total_cmp(&log_posterior[a]));
        match agreeing.len() {
            0 => Verdict::OutOfDistribution {
                atypical_marginal: false,
            },
            1 => Verdict::Confident { class: agreeing[0] },
            _ => Verdict::Ambiguous { classes: agreeing },
        }
    }

    /// Checks the statistics against a model of `classes` classes: one threshold per
    /// class, `alpha` in (0, 1), `min_posterior` in (0, 1], an ordered marginal range.
    pub fn check(&self, classes: usize) -> Result<(), String> {
        if self.class_max_distance.len() != classes {
            return Err(format!(
                "{} class thresholds for a model of {classes} classes",
                self.class_max_distance.len()
            ));
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("alpha = {} is not in (0, 1)", self.alpha));
        }
        if !(self.min_posterior > 0.0 && self.min_posterior <= 1.0) {
            return Err(format!(
                "min_posterior = {} is not in (0, 1]",
                self.min_posterior
            ));
        }
        let (low, high) = (self.marginal_low, self.marginal_high);
        if low.is_nan() || high.is_nan() || low > high {
            return Err(format!(
                "the typical range [{}, {}] is empty",
                self.marginal_low, self.marginal_high
            ));
        }
        Ok(())
    }

    /// Fits the statistics on calibration inputs: their `log p(x)/D`, class distances,
    /// log posteriors and labels.
    pub fn fit(
        alpha: f64,
        min_posterior: f64,
        marginal: &[f64],
        class_distances: &[Vec<f64>],
        log_posteriors: &[Vec<f64>],
        labels: &[usize],
        source: String,
    ) -> Self {
        let quantile = |mut v: Vec<f64>, q: f64| -> f64 {
            v.retain(|x| x.is_finite());
            if v.is_empty() {
                return f64::NEG_INFINITY;
            }
            v.sort_by(f64::total_cmp);
            let pos = q * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        let k = class_distances.first().map_or(0, Vec::len);
        let class_max_distance = (0..k)
            .map(|y| {
                let own: Vec<f64> = labels
                    .iter()
                    .zip(class_distances)
                    .filter(|(l, _)| **l == y)
                    .map(|(_, s)| s[y])
                    .collect();
                quantile(own, 1.0 - alpha)
            })
            .collect();
        let mut stats = OodStats {
            alpha,
            marginal_low: quantile(marginal.to_vec(), alpha / 2.0),
            marginal_high: quantile(marginal.to_vec(), 1.0 - alpha / 2.0),
            class_max_distance,
            min_posterior,
            images: labels.len(),
            false_alarm_rate: 0.0,
            source,
        };
        let alarms = labels
            .iter()
            .enumerate()
            .filter(|(i, l)| {
                stats.verdict(marginal[*i], &class_distances[*i], &log_posteriors[*i])
                    != Verdict::Confident { class: **l }
            })
            .count();
        stats.false_alarm_rate = alarms as f64 / labels.len().max(1) as f64;
        stats
    }
}

/// One class's scores, for top-k lists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    /// Class index.
    pub class: usize,
    /// Class name (the index as text when the config names none).
    pub name: String,
    /// `p(y|x)`.
    pub posterior: f64,
    /// `log p(x|y)`, nats.
    pub log_likelihood: f64,
}

/// What a generative classifier says about one input. See the module docs for units.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Likelihoods {
    /// `log p(x|y)` per class, nats, input space, constants included.
    pub class_log_likelihoods: Vec<f64>,
    /// `‖z_fc − μ_y‖² / n_loss_dims` per class: the mean squared distance of the latent's
    /// loss dimensions from the class mean (about 1 for a sample of the class Gaussian).
    /// It is the class-specific part of `log p(x|y)` in the dimensions that carry the class;
    /// the class test of the verdict uses it.
    pub class_distances: Vec<f64>,
    /// `log p(y|x)` per class (with the classifier's prior).
    pub log_posterior: Vec<f64>,
    /// `log p(x)`, nats.
    pub log_marginal: f64,
    /// Bits per dimension of the 8-bit image (`None` without an input representation).
    pub bits_per_dim: Option<f64>,
    /// The reference's logits `−½ d`.
    pub logits: Vec<f64>,
    /// The verdict, when the model carries [`OodStats`].
    pub verdict: Option<Verdict>,
    /// Class names.
    #[serde(skip)]
    pub class_names: Arc<Vec<String>>,
}

impl Likelihoods {
    /// The `k` most probable classes, most probable first.
    pub fn top_k(&self, k: usize) -> Vec<ClassScore> {
        let mut order: Vec<usize> = (0..self.log_posterior.len()).collect();
        order.sort_by(|&a, &b| self.log_posterior[b].total_cmp(&self.log_posterior[a]));
        order
            .into_iter()
            .take(k)
            .map(|class| ClassScore {
                class,
                name: self.class_name(class),
                posterior: self.log_posterior[class].exp(),
                log_likelihood: self.class_log_likelihoods[class],
            })
            .collect()
    }

    /// The most probable class.
    pub fn predicted(&self) -> ClassScore {
        self.top_k(1).remove(0)
    }

    /// A class's name (its index as text when the config names none).
    pub fn class_name(&self, class: usize) -> String {
        self.class_names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }

    /// The verdict in words (`agrees with Bag`, `ambiguous: Shirt, T-shirt/top`,
    /// `out of distribution: matches no class`), `None` without [`OodStats`].
    pub fn verdict_text(&self) -> Option<String> {
        Some(match self.verdict.as_ref()? {
            Verdict::Confident { class } => format!("agrees with {}", self.class_name(*class)),
            Verdict::Ambiguous { classes } => {
                let names: Vec<String> = classes.iter().map(|&c| self.class_name(c)).collect();
                format!("ambiguous: {}", names.join(", "))
            }
            Verdict::OutOfDistribution { .. } => "out of distribution: matches no class".into(),
        })
    }
}

/// A generative classifier ready for inference.
#[derive(Debug, Clone)]
pub struct Classifier<B: Backend> {
    config: GcConfig,
    model: GenerativeClassifier<B>,
    norms: ClassNorms<B>,
    log_prior: Option<Vec<f64>>,
    ood: Option<OodStats>,
    class_names: Arc<Vec<String>>,
    device: B::Device,
}

fn logsumexp(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

impl<B: Backend> Classifier<B> {
    /// Wraps a model and its config.
    pub fn new(config: GcConfig, model: GenerativeClassifier<B>, device: &B::Device) -> Self {
        let norms = model.head.class_norms();
        let class_names = Arc::new(config.class_names.clone());
        Self {
            config,
            model,
            norms,
            log_prior: None,
            ood: None,
            class_names,
            device: device.clone(),
        }
    }

    /// Attaches out-of-distribution statistics (enables verdicts).
    pub fn with_ood(mut self, ood: OodStats) -> Self {
        self.ood = Some(ood);
        self
    }

    /// Sets a class prior `π` (weights, normalized here); `None` restores the uniform one.
    pub fn with_prior(mut self, prior: Option<&[f64]>) -> Result<Self, ClassifyError> {
        self.log_prior = match prior {
            None => None,
            Some(p) => {
                let k = self.config.n_classes;
                if p.len() != k || p.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
                    return Err(ClassifyError::Prior { classes: k });
                }
                let total: f64 = p.iter().sum();
                Some(p.iter().map(|w| (w / total).ln()).collect())
            }
        };
        Ok(self)
    }

    /// The config.
    pub fn config(&self) -> &GcConfig {
        &self.config
    }

    /// The model.
    pub fn model(&self) -> &GenerativeClassifier<B> {
        &self.model
    }

    /// The out-of-distribution statistics, if any.
    pub fn ood(&self) -> Option<&OodStats> {
        self.ood.as_ref()
    }

    /// Likelihoods of one decoded image.
    ///
    /// ```
    /// # use burn::backend::Flex;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::path::Path;
    /// use trustgc::{Classifier, Verdict};
    ///
    /// // The Fashion-MNIST model shipped in the repository's `weights/`.
    /// let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    /// let classifier = Classifier::<Flex>::from_dir(&repo.join("weights/fashion-mnist"), &Default::default())?;
    /// let image = trustgc::preprocess::read_image(&repo.join("examples/images/ankle-boot.png"))?;
    /// let result = classifier.likelihoods(&image)?;
    /// let best = result.predicted();
    /// println!("{} (p = {:.3}), log p(x|y) = {:.1} nats", best.name, best.posterior, best.log_likelihood);
    /// assert_eq!(best.name, "Ankle boot");
    /// assert_eq!(result.verdict, Some(Verdict::Confident { class: best.class }));
    /// // log p(x) = log Σ_y p(x|y) p(y), here with the uniform prior p(y) = 1/10.
    /// assert!(result.log_marginal <= best.log_likelihood);
    /// # Ok(()) }
    /// ```
    pub fn likelihoods(&self, image: &DynamicImage) -> Result<Likelihoods, ClassifyError> {
        Ok(self
            .likelihoods_batch(std::slice::from_ref(image))?
            .remove(0))
    }

    /// Likelihoods of an image file.
    pub fn likelihoods_file(&self, path: &Path) -> Result<Likelihoods, ClassifyError> {
        let image = read_image(path)?;
        let spec = self
            .config
            .input
            .as_ref()
            .ok_or(ClassifyError::NoInputSpec)?;
        let x = model_input(&image, spec, path)?;
        let [c, h, w] = self.config.input_shape;
        let x = Tensor::<B, 4>::from_data(TensorData::new(x, [1, c, h, w]), &self.device);
        Ok(self.likelihoods_tensor(x)?.remove(0))
    }

    /// Likelihoods of several decoded images, in one batch.
    pub fn likelihoods_batch(
        &self,
        images: &[DynamicImage],
    ) -> Result<Vec<Likelihoods>, ClassifyError> {
        let spec = self
            .config
            .input
            .as_ref()
            .ok_or(ClassifyError::NoInputSpec)?;
        let [c, h, w] = self.config.input_shape;
        let mut data = Vec::with_capacity(images.len() * c * h * w);
        for image in images {
            data.extend(model_input(image, spec, Path::new("<image>"))?);
        }
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(data, [images.len(), c, h, w]), &self.device);
        self.likelihoods_tensor(x)
    }

    /// Likelihoods of a batch tensor `[batch, C, H, W]`, already preprocessed.
    pub fn likelihoods_tensor(&self, x: Tensor<B, 4>) -> Result<Vec<Likelihoods>, ClassifyError> {
        self.model.check_input(&x.dims())?;
        let batch = x.dims()[0];
        let values: Vec<f32> = x
            .clone()
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        let per = values.len() / batch.max(1);
        for index in 0..batch {
            let count = values[index * per..(index + 1) * per]
                .iter()
                .filter(|v| !v.is_finite())
                .count();
            if count > 0 {
                return Err(ClassifyError::NonFinite { index, count });
            }
        }
        let out = self.model.forward_with_norms(x, &self.norms);
        let k = self.config.n_classes;
        let host = |t: Tensor<B, 2>| -> Vec<f64> {
            t.into_data().convert::<f64>().to_vec().unwrap_or_default()
        };
        let ll = host(out.class_log_likelihoods());
        let logits = host(out.logits());
        // ‖z_fc − μ_y‖² / n_loss_dims = (‖z_fc‖² − 2 z_fc·μ_y + ‖μ_y‖²) / n_loss_dims.
        let n_loss = self.config.n_loss_dims as f64;
        let z_fc = out.z_fc.clone();
        let cross = z_fc.clone().matmul(self.model.head.mu_fc.val().transpose());
        let z_norm = z_fc.square().sum_dim(1);
        let distances = host(
            (z_norm + self.norms.fc.clone().unsqueeze_dim(0) - cross.mul_scalar(2.0))
                .div_scalar(n_loss),
        );
        let d = self.config.total_dims() as f64;
        let bits_offset = self
            .config
            .input
            .as_ref()
            .map(|spec| spec.mean_log_std() + 255f64.ln());
        let mut results = Vec::with_capacity(batch);
        for i in 0..batch {
            let class_ll = ll[i * k..(i + 1) * k].to_vec();
            let joint: Vec<f64> = match &self.log_prior {
                Some(prior) => class_ll.iter().zip(prior).map(|(l, p)| l + p).collect(),
                None => class_ll.iter().map(|l| l - (k as f64).ln()).collect(),
            };
            let log_marginal = logsumexp(&joint);
            let log_posterior: Vec<f64> = joint.iter().map(|j| j - log_marginal).collect();
            let bits_per_dim =
                bits_offset.map(|offset| (-log_marginal / d + offset) / std::f64::consts::LN_2);
            let class_distances = distances[i * k..(i + 1) * k].to_vec();
            let verdict = self
                .ood
                .as_ref()
                .map(|ood| ood.verdict(log_marginal / d, &class_distances, &log_posterior));
            results.push(Likelihoods {
                class_log_likelihoods: class_ll,
                class_distances,
                log_posterior,
                log_marginal,
                bits_per_dim,
                logits: logits[i * k..(i + 1) * k].to_vec(),
                verdict,
                class_names: self.class_names.clone(),
            });
        }
        Ok(results)
    }
}

/// Why a model folder could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ModelDirError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a valid config.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// The parse or validation error.
        #[source]
        source: trustgc_core::ConfigError,
    },
    /// `ood.json` parses but does not fit the model (or cannot be right).
    #[error("{path} does not fit the model: {reason}; refit it with `trustgc fit-ood`")]
    OodMismatch {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `ood.json` is not valid.
    #[error("{path} is not valid out-of-distribution statistics: {source}")]
    Ood {
        /// The file.
        path: std::path::PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The weights could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::LoadError),
}

/// Reads `dir/config.json`.
pub fn read_model_config(dir: &Path) -> Result<GcConfig, ModelDirError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|source| ModelDirError::Io {
        path: path.clone(),
        source,
    })?;
    GcConfig::from_json(&text).map_err(|source| ModelDirError::Config { path, source })
}

/// Reads `dir/ood.json` if there is one.
pub fn read_ood(dir: &Path) -> Result<Option<OodStats>, ModelDirError> {
    let path = dir.join("ood.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|source| ModelDirError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| ModelDirError::Ood { path, source })
}

/// Loads the model of a model folder: `config.json` and `model.safetensors` (trustgc
/// names); `ood.json` is not read.
pub fn load_model_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(GcConfig, GenerativeClassifier<B>), ModelDirError> {
    let config = read_model_config(dir)?;
    let model = crate::native::load_safetensors(&dir.join("model.safetensors"), &config, device)?;
    Ok((config, model))
}

impl<B: Backend> Classifier<B> {
    /// Opens a model folder: `config.json`, `model.safetensors` (trustgc names) and, when
    /// present, `ood.json`.
    pub fn from_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelDirError> {
        let (config, model) = load_model_dir(dir, device)?;
        let classes = config.n_classes;
        let classifier = Self::new(config, model, device);
        Ok(match read_ood(dir)? {
            Some(ood) => {
                ood.check(classes)
                    .map_err(|reason| ModelDirError::OodMismatch {
                        path: dir.join("ood.json"),
                        reason,
                    })?;
                classifier.with_ood(ood)
            }
            None => classifier,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loss dimensions of the synthetic inputs: posteriors are `softmax(−D/2 · distance)`.
    const D: f64 = 100.0;

    fn log_posterior(distances: &[f64]) -> Vec<f64> {
        let joint: Vec<f64> = distances.iter().map(|d| -0.5 * D * d).collect();
        let norm = logsumexp(&joint);
        joint.iter().map(|j| j - norm).collect()
    }

    /// `log p(x)/D`, class distances, log posteriors, labels.
    type Calibration = (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<usize>);

    /// Calibration scores of two well separated classes.
    fn calibration() -> Calibration {
        let (mut marginal, mut distances, mut posteriors, mut labels) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..200 {
            let label = i % 2;
            let jitter = (i as f64 * 0.37).sin() * 0.1;
            let (own, other) = (1.0 + jitter, 3.0 + jitter);
            marginal.push(-1.2 + jitter);
            let d = if label == 0 {
                vec![own, other]
            } else {
                vec![other, own]
            };
            posteriors.push(log_posterior(&d));
            distances.push(d);
            labels.push(label);
        }
        (marginal, distances, posteriors, labels)
    }

    #[test]
    fn verdicts_follow_the_typicality_tests() {
        let (marginal, distances, posteriors, labels) = calibration();
        let stats = OodStats::fit(
            0.02,
            0.1,
            &marginal,
            &distances,
            &posteriors,
            &labels,
            "synthetic".into(),
        );
        assert!(stats.marginal_low < stats.marginal_high);
        assert!(
            stats
                .class_max_distance
                .iter()
                .all(|&d| d > 1.05 && d <= 1.1)
        );
        // At most the two tails of the marginal and one class tail fail: ≤ 2·alpha here.
        assert!(stats.false_alarm_rate <= 0.04, "{}", stats.false_alarm_rate);
        let verdict = |marginal: f64, d: &[f64]| stats.verdict(marginal, d, &log_posterior(d));
        assert_eq!(verdict(-1.2, &[1.0, 3.0]), Verdict::Confident { class: 0 });
        assert_eq!(verdict(-1.2, &[3.0, 1.0]), Verdict::Confident { class: 1 });
        // Both classes near, posteriors 0.51 and 0.49: ambiguous, likelier first.
        assert_eq!(
            verdict(-1.2, &[1.001, 1.0]),
            Verdict::Ambiguous {
                classes: vec![1, 0]
            }
        );
        // Both classes near (1.08 passes class 1's test), but class 1 holds 1.8 % of the
        // posterior: not a live alternative.
        assert!(1.08 <= stats.class_max_distance[1]);
        assert_eq!(verdict(-1.2, &[1.0, 1.08]), Verdict::Confident { class: 0 });
        // Far too unlikely, or suspiciously likely: out of distribution either way.
        for marginal in [-9.0, 5.0, f64::NAN] {
            assert_eq!(
                verdict(marginal, &[1.0, 3.0]),
                Verdict::OutOfDistribution {
                    atypical_marginal: true
                },
                "{marginal}"
            );
        }
        // A typical log p(x), but a latent far from every class mean.
        assert_eq!(
            verdict(-1.2, &[5.0, 5.0]),
            Verdict::OutOfDistribution {
                atypical_marginal: false
            }
        );
        // Fitted statistics pass their own check; statistics of another model do not.
        assert_eq!(stats.check(2), Ok(()));
        assert!(stats.check(3).unwrap_err().contains("2 class thresholds"));
        let mut broken = stats.clone();
        broken.min_posterior = 0.0;
        assert!(broken.check(2).unwrap_err().contains("min_posterior"));
        let mut broken = stats.clone();
        broken.marginal_low = f64::NAN;
        assert!(broken.check(2).is_err());
        // The statistics survive a JSON round trip (they are stored as ood.json).
        let back: OodStats = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((logsumexp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }
}
