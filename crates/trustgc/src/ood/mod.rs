//! Out-of-distribution verdicts: [`OodStats`], the typicality statistics stored as
//! `ood.json` beside a model, and the [`Verdict`] they give for one input.

use serde::{Deserialize, Serialize};

pub mod latent;

pub use latent::{LatentError, LatentGaussian};

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
        /// The model explains the input no better than a generic image compressor does
        /// (the complexity test, see [`OodStats::complexity_low`]): a simple image of
        /// another family (a digit for a clothing model) whose high likelihood comes from
        /// its simplicity, not from what the model learnt.
        #[serde(default)]
        atypical_complexity: bool,
        /// The latent lies farther from every class than real images do, under the
        /// Gaussian refitted on real images' latents (the latent test, see
        /// [`OodStats::latent`]).
        #[serde(default)]
        atypical_latent: bool,
    },
}

/// Why [`OodStats`] do not fit a model (or cannot be right).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OodCheckError {
    /// Not one class threshold per class.
    #[error("{thresholds} class thresholds for a model of {classes} classes")]
    Classes {
        /// Thresholds in the statistics.
        thresholds: usize,
        /// Classes of the model.
        classes: usize,
    },
    /// `alpha` outside (0, 1).
    #[error("alpha = {alpha} is not in (0, 1)")]
    Alpha {
        /// The value.
        alpha: f64,
    },
    /// `min_posterior` outside (0, 1].
    #[error("min_posterior = {min_posterior} is not in (0, 1]")]
    MinPosterior {
        /// The value.
        min_posterior: f64,
    },
    /// A class threshold that is negative, NaN or infinite (a class without calibration
    /// images has none).
    #[error(
        "the distance threshold of class {class} is {value}; it must be a finite number >= 0 (were there calibration images of every class?)"
    )]
    ClassThreshold {
        /// The class.
        class: usize,
        /// Its threshold.
        value: f64,
    },
    /// The complexity test is half set (a threshold without its rate or the reverse), its
    /// threshold is not finite, or its rate is not in (0, 1).
    #[error(
        "the complexity test is malformed: threshold {complexity_low:?}, alpha_complexity {alpha_complexity:?} (both or neither must be set; a finite threshold, a rate in (0, 1))"
    )]
    Complexity {
        /// The threshold.
        complexity_low: Option<f64>,
        /// Its rate.
        alpha_complexity: Option<f64>,
    },
    /// The calibration scores are not one per image.
    #[error(
        "calibration data of unequal lengths: {labels} labels, {marginal} marginals, {class_distances} distance rows, {log_posteriors} posterior rows, {complexity:?} complexities, {latent:?} latent statistics"
    )]
    Lengths {
        /// Labels.
        labels: usize,
        /// `log p(x)/D` values.
        marginal: usize,
        /// Rows of class distances.
        class_distances: usize,
        /// Rows of log posteriors.
        log_posteriors: usize,
        /// Complexity values, when given.
        complexity: Option<usize>,
        /// Latent statistics, when given.
        latent: Option<usize>,
    },
    /// The latent test is malformed: its Gaussian does not fit the model, its rate is
    /// not in (0, 1), or its threshold is not a finite number.
    #[error("the latent test is malformed: {what}")]
    Latent {
        /// What is wrong.
        what: String,
    },
    /// The typical range of `log p(x)/D` is empty, NaN or unbounded.
    #[error("the typical range [{low}, {high}] is empty or not finite")]
    EmptyRange {
        /// Its lower bound.
        low: f64,
        /// Its upper bound.
        high: f64,
    },
    /// The typical range reaches beyond [`MAX_LOG_DENSITY_PER_DIM`] in magnitude: no model
    /// of images produces such densities, and a range that wide would let every input
    /// pass the marginal test (a silently disabled check).
    #[error(
        "the typical range [{low}, {high}] of log p(x)/D reaches beyond ±{MAX_LOG_DENSITY_PER_DIM} nats per dimension, which no image model produces"
    )]
    ImplausibleRange {
        /// Its lower bound.
        low: f64,
        /// Its upper bound.
        high: f64,
    },
}

/// The largest magnitude of `log p(x)/D` (nats per dimension) an `ood.json` may name.
/// Real models are within a few nats of 0 (the shipped Fashion-MNIST model: −1.87 to
/// −1.46); reaching 10⁴ would take a float32 flow's log-determinant near its overflow on
/// every dimension.
pub const MAX_LOG_DENSITY_PER_DIM: f64 = 1e4;

/// The largest latent-test threshold an `ood.json` may name. The statistic is a squared
/// Mahalanobis distance per dimension, about 1 for real images (the shipped model's
/// threshold is 2.24); 10⁴ would let every input pass (a silently disabled check).
pub const MAX_LATENT_THRESHOLD: f64 = 1e4;

/// Reference statistics of in-distribution data for the typicality tests, stored as
/// `ood.json` beside a model (`trustgc fit-ood` computes them).
///
/// Four typicality tests, each with thresholds that are quantiles of the calibration
/// images' scores:
///
/// - the marginal test: `log p(x)/D` (nats per dimension) must lie in the range holding
///   `1 − alpha` of the calibration images (`alpha/2` cut on each side);
/// - the complexity test (when `complexity_low` is set and the input's 8-bit image is
///   known): `(log₂ p(x) + L(x)) / D` (`L(x)` the PNG size of the image the model sees;
///   up to a constant of the model, the bits per dimension it saves over a PNG encoder,
///   see [`crate::scores::complexity`]), must be at least the `alpha_complexity` quantile of the
///   calibration images'. Flows give simple images of any family a high `log p(x)`
///   (Nalisnick et al. 2019); a generic compressor finds them simple too, so what is left
///   measures what the model knows about its own data (Serrà et al. 2020). One-sided: an
///   input the model explains far better than PNG does is not suspicious for that;
///   noise, which PNG cannot compress, is caught by the marginal test;
/// - the latent test (when `latent` is set and the latent is computed): the latent's
///   squared Mahalanobis distance per dimension to the nearest class, under a Gaussian
///   refitted on real images' latents ([`LatentGaussian`]), must not exceed the
///   `1 − alpha` quantile ([`LatentTest`]) of the calibration images'. The model's own
///   Gaussian is an assumption the trained flow does not meet; the refitted one knows
///   which directions real latents use. It catches other image families whose
///   likelihood looks typical (letters, characters, digits: see `docs/ood.md`);
/// - the class test of class `y`: the latent's distance from the class mean,
///   `‖z_fc − μ_y‖² / n_loss_dims` ([`Likelihoods::class_distances`](crate::Likelihoods::class_distances)), must not exceed the
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
/// the marginal, complexity or latent test fails (checked in that order; the verdict
/// names the first that fails) or no class agrees; confident when exactly one class
/// agrees; ambiguous when several do.
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
    /// The complexity test's threshold: the `alpha_complexity` quantile of
    /// `(log₂ p(x) + L(x)) / D` over the calibration images. `None` (statistics fitted
    /// before the test existed): no complexity test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity_low: Option<f64>,
    /// The complexity test's false-alarm rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_complexity: Option<f64>,
    /// The latent test; `None` (statistics fitted before it existed, or without
    /// fitting latents): no latent test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<LatentTest>,
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
    ///
    /// `complexity` is the input's `(log₂ p(x) + L(x)) / D`
    /// ([`OodScores::complexity`](crate::scores::OodScores::complexity)), `None` when its
    /// 8-bit image is not known (the complexity test is then skipped). `latent` is the
    /// input's [`LatentGaussian::statistic`], `None` when not computed (the latent test is
    /// then skipped).
    pub fn verdict(
        &self,
        log_marginal_per_dim: f64,
        complexity: Option<f64>,
        latent: Option<f64>,
        class_distances: &[f64],
        log_posterior: &[f64],
    ) -> Verdict {
        let atypical = !(log_marginal_per_dim >= self.marginal_low
            && log_marginal_per_dim <= self.marginal_high);
        if atypical {
            return Verdict::OutOfDistribution {
                atypical_marginal: true,
                atypical_complexity: false,
                atypical_latent: false,
            };
        }
        // NaN fails the test, as it fails the marginal test.
        if let (Some(low), Some(value)) = (self.complexity_low, complexity)
            && (value.is_nan() || value < low)
        {
            return Verdict::OutOfDistribution {
                atypical_marginal: false,
                atypical_complexity: true,
                atypical_latent: false,
            };
        }
        // NaN fails this test too.
        if let (Some(test), Some(value)) = (&self.latent, latent)
            && (value.is_nan() || value > test.threshold)
        {
            return Verdict::OutOfDistribution {
                atypical_marginal: false,
                atypical_complexity: false,
                atypical_latent: true,
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
                atypical_complexity: false,
                atypical_latent: false,
            },
            1 => Verdict::Confident { class: agreeing[0] },
            _ => Verdict::Ambiguous { classes: agreeing },
        }
    }

    /// Checks the statistics against a model of `classes` classes: one threshold per
    /// class, `alpha` in (0, 1), `min_posterior` in (0, 1], finite thresholds `>= 0` and a
    /// finite, ordered marginal range within ±[`MAX_LOG_DENSITY_PER_DIM`]; of the latent
    /// test, only its rate, threshold and number of classes.
    /// [`OodStats::check_model`] also checks its Gaussian's shapes against the model,
    /// which the latent test needs before it is used.
    ///
    /// # Errors
    /// The first [`OodCheckError`] found, in that order.
    pub fn check(&self, classes: usize) -> Result<(), OodCheckError> {
        if self.class_max_distance.len() != classes {
            return Err(OodCheckError::Classes {
                thresholds: self.class_max_distance.len(),
                classes,
            });
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(OodCheckError::Alpha { alpha: self.alpha });
        }
        if !(self.min_posterior > 0.0 && self.min_posterior <= 1.0) {
            return Err(OodCheckError::MinPosterior {
                min_posterior: self.min_posterior,
            });
        }
        if let Some((class, &value)) = self
            .class_max_distance
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
        {
            return Err(OodCheckError::ClassThreshold { class, value });
        }
        let (low, high) = (self.marginal_low, self.marginal_high);
        if !(low.is_finite() && high.is_finite() && low <= high) {
            return Err(OodCheckError::EmptyRange { low, high });
        }
        if low.abs() > MAX_LOG_DENSITY_PER_DIM || high.abs() > MAX_LOG_DENSITY_PER_DIM {
            return Err(OodCheckError::ImplausibleRange { low, high });
        }
        let complexity_ok = match (self.complexity_low, self.alpha_complexity) {
            (None, None) => true,
            (Some(low), Some(alpha)) => {
                low.is_finite()
                    && low.abs() <= MAX_LOG_DENSITY_PER_DIM
                    && alpha > 0.0
                    && alpha < 1.0
            }
            _ => false,
        };
        if !complexity_ok {
            return Err(OodCheckError::Complexity {
                complexity_low: self.complexity_low,
                alpha_complexity: self.alpha_complexity,
            });
        }
        if let Some(test) = &self.latent {
            let what = if !(test.alpha > 0.0 && test.alpha < 1.0) {
                Some(format!("its rate {} is not in (0, 1)", test.alpha))
            } else if !(test.threshold.is_finite()
                && test.threshold >= 0.0
                && test.threshold <= MAX_LATENT_THRESHOLD)
            {
                Some(format!(
                    "its threshold {} is not a number in [0, {MAX_LATENT_THRESHOLD}] (a larger one would let every input pass)",
                    test.threshold
                ))
            } else if test.gaussian.class_means.len() != classes {
                Some(format!(
                    "{} class means for {classes} classes",
                    test.gaussian.class_means.len()
                ))
            } else {
                None
            };
            if let Some(what) = what {
                return Err(OodCheckError::Latent { what });
            }
        }
        Ok(())
    }

    /// [`OodStats::check`], and the latent test's Gaussian against the model's latent:
    /// `dims` dimensions (`D`) of which `class_dims` carry the class (`n_loss_dims`).
    ///
    /// # Errors
    /// The first [`OodCheckError`] found.
    pub fn check_model(
        &self,
        classes: usize,
        dims: usize,
        class_dims: usize,
    ) -> Result<(), OodCheckError> {
        self.check(classes)?;
        if let Some(test) = &self.latent {
            test.gaussian
                .check(classes, dims, class_dims)
                .map_err(|e| OodCheckError::Latent {
                    what: match e {
                        LatentError::Malformed { what } => format!("its Gaussian: {what}"),
                        other => other.to_string(),
                    },
                })?;
        }
        Ok(())
    }

    /// Fits the statistics on calibration inputs (see [`Calibration`]) with the rates of
    /// `settings`.
    ///
    /// # Errors
    /// The statistics fail [`OodStats::check`]: e.g. a class without calibration images
    /// ([`OodCheckError::ClassThreshold`]) or no finite scores;
    /// [`OodCheckError::Complexity`] when a complexity rate is given without complexity
    /// scores (or the reverse).
    ///
    /// The latent test is fitted when `latent` holds a Gaussian (fitted on other
    /// in-distribution images, [`LatentGaussian::fit`]), `settings.alpha_latent` is set and
    /// `data.latent` holds each calibration image's statistic under it: its threshold is
    /// their `1 − alpha_latent` quantile. [`OodCheckError::Latent`] when only some of the
    /// three are given.
    pub fn fit(
        settings: &FitSettings,
        data: &Calibration<'_>,
        latent: Option<LatentGaussian>,
        source: String,
    ) -> Result<Self, OodCheckError> {
        let n = data.labels.len();
        let lengths = [
            data.marginal.len(),
            data.class_distances.len(),
            data.log_posteriors.len(),
            data.complexity.map_or(n, <[f64]>::len),
            data.latent.map_or(n, <[f64]>::len),
        ];
        if lengths.iter().any(|&l| l != n) {
            return Err(OodCheckError::Lengths {
                labels: n,
                marginal: data.marginal.len(),
                class_distances: data.class_distances.len(),
                log_posteriors: data.log_posteriors.len(),
                complexity: data.complexity.map(<[f64]>::len),
                latent: data.latent.map(<[f64]>::len),
            });
        }
        let alpha = settings.alpha;
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
        let k = data.class_distances.first().map_or(0, Vec::len);
        let class_max_distance = (0..k)
            .map(|y| {
                let own: Vec<f64> = data
                    .labels
                    .iter()
                    .zip(data.class_distances)
                    .filter(|(l, _)| **l == y)
                    .map(|(_, s)| s[y])
                    .collect();
                quantile(own, 1.0 - alpha)
            })
            .collect();
        let complexity_low = match (settings.alpha_complexity, data.complexity) {
            (Some(a), Some(values)) => Some(quantile(values.to_vec(), a)),
            _ => None,
        };
        let latent = match (latent, settings.alpha_latent, data.latent) {
            (None, None, None) => None,
            (Some(gaussian), Some(alpha), Some(values)) => {
                if values.iter().any(|v| !v.is_finite()) {
                    return Err(OodCheckError::Latent {
                        what: "a calibration image's latent statistic is not finite".into(),
                    });
                }
                Some(LatentTest {
                    alpha,
                    threshold: quantile(values.to_vec(), 1.0 - alpha),
                    gaussian,
                })
            }
            (gaussian, alpha, values) => {
                return Err(OodCheckError::Latent {
                    what: format!(
                        "a Gaussian ({}), a rate ({alpha:?}) and calibration statistics ({}) must all be given or none",
                        if gaussian.is_some() { "given" } else { "none" },
                        if values.is_some() { "given" } else { "none" }
                    ),
                });
            }
        };
        let mut stats = OodStats {
            alpha,
            marginal_low: quantile(data.marginal.to_vec(), alpha / 2.0),
            marginal_high: quantile(data.marginal.to_vec(), 1.0 - alpha / 2.0),
            class_max_distance,
            min_posterior: settings.min_posterior,
            complexity_low,
            alpha_complexity: settings
                .alpha_complexity
                .filter(|_| data.complexity.is_some()),
            latent,
            images: data.labels.len(),
            false_alarm_rate: 0.0,
            source,
        };
        if settings.alpha_complexity.is_some() != data.complexity.is_some() {
            return Err(OodCheckError::Complexity {
                complexity_low: stats.complexity_low,
                alpha_complexity: settings.alpha_complexity,
            });
        }
        let alarms = (0..data.labels.len())
            .filter(|&i| {
                stats.verdict_of(data, i)
                    != Some(Verdict::Confident {
                        class: data.labels[i],
                    })
            })
            .count();
        stats.false_alarm_rate = alarms as f64 / data.labels.len().max(1) as f64;
        stats.check(k)?;
        Ok(stats)
    }

    /// The verdict for calibration input `i` of `data`; `None` when `data` has no input
    /// `i` (or its slices are of unequal lengths).
    pub fn verdict_of(&self, data: &Calibration<'_>, i: usize) -> Option<Verdict> {
        let complexity = match data.complexity {
            Some(c) => Some(*c.get(i)?),
            None => None,
        };
        let latent = match data.latent {
            Some(c) => Some(*c.get(i)?),
            None => None,
        };
        Some(self.verdict(
            *data.marginal.get(i)?,
            complexity,
            latent,
            data.class_distances.get(i)?,
            data.log_posteriors.get(i)?,
        ))
    }
}

/// The false-alarm rates [`OodStats::fit`] sets the thresholds for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitSettings {
    /// The marginal test's rate (both tails together) and each class test's.
    pub alpha: f64,
    /// The complexity test's rate; `None`: no complexity test.
    pub alpha_complexity: Option<f64>,
    /// The least posterior of a class that agrees with an input.
    pub min_posterior: f64,
    /// The latent test's rate; `None`: no latent test.
    pub alpha_latent: Option<f64>,
}

/// The latent test: the input's latent must lie no farther from the nearest class than
/// `1 − alpha` of real images' latents do, under a Gaussian refitted on real latents
/// ([`LatentGaussian`]; the statistic is [`LatentGaussian::statistic`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentTest {
    /// The test's false-alarm rate.
    pub alpha: f64,
    /// The `1 − alpha` quantile of the statistic over the calibration images.
    pub threshold: f64,
    /// The Gaussian, fitted on other in-distribution images than the calibration ones.
    pub gaussian: LatentGaussian,
}

impl Default for FitSettings {
    /// The rates of the shipped model: 1 % for the marginal test, 1 % for each class
    /// test, 1 % for the complexity test and 2 % for the latent test. They add up to 5 %:
    /// by the union bound, at most about 5 % of correctly classified in-distribution
    /// inputs are called out of distribution whatever the tests' correlation (the class
    /// test may also reject a misclassified input). A class agrees from 10 % of the
    /// posterior. `docs/ood.md` says what they catch and miss, measured.
    fn default() -> Self {
        Self {
            alpha: 0.01,
            alpha_complexity: Some(0.01),
            min_posterior: 0.1,
            alpha_latent: Some(0.02),
        }
    }
}

impl FitSettings {
    /// The rates without a latent test (for callers that have no fitting latents): 1 %
    /// marginal, 1 % per class, 3 % complexity, adding up to 5 % as in
    /// [`FitSettings::default`].
    pub fn without_latent() -> Self {
        Self {
            alpha: 0.01,
            alpha_complexity: Some(0.03),
            min_posterior: 0.1,
            alpha_latent: None,
        }
    }
}

/// The rank of the latent test's covariance that `trustgc fit-ood` fits by default.
pub const DEFAULT_LATENT_RANK: usize = 64;

/// Scores of calibration inputs (in-distribution images with labels), one entry per
/// image in each slice.
#[derive(Clone, Copy, Debug)]
pub struct Calibration<'a> {
    /// `log p(x)/D`.
    pub marginal: &'a [f64],
    /// `(log₂ p(x) + L(x)) / D` ([`crate::scores::OodScores::complexity`]); `None`
    /// without 8-bit images.
    pub complexity: Option<&'a [f64]>,
    /// `‖z_fc − μ_y‖² / n_loss_dims` per class.
    pub class_distances: &'a [Vec<f64>],
    /// `log p(y|x)` per class.
    pub log_posteriors: &'a [Vec<f64>],
    /// [`LatentGaussian::statistic`] of each image's latent; `None` without a latent test.
    pub latent: Option<&'a [f64]>,
    /// The true classes.
    pub labels: &'a [usize],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classifier::logsumexp;

    /// Loss dimensions of the synthetic inputs: posteriors are `softmax(−D/2 · distance)`.
    const D: f64 = 100.0;

    fn log_posterior(distances: &[f64]) -> Vec<f64> {
        let joint: Vec<f64> = distances.iter().map(|d| -0.5 * D * d).collect();
        let norm = logsumexp(&joint);
        joint.iter().map(|j| j - norm).collect()
    }

    /// `log p(x)/D`, class distances, log posteriors, labels.
    type Synthetic = (Vec<f64>, Vec<Vec<f64>>, Vec<Vec<f64>>, Vec<usize>);

    /// Calibration scores of two well separated classes.
    fn calibration() -> Synthetic {
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

    /// [`OodStats::fit`] on the synthetic calibration scores with `labels`.
    fn fit_with(alpha: f64, labels: &[usize]) -> Result<OodStats, OodCheckError> {
        let (marginal, distances, posteriors, _) = calibration();
        let settings = FitSettings {
            alpha,
            alpha_complexity: None,
            min_posterior: 0.1,
            alpha_latent: None,
        };
        let data = Calibration {
            marginal: &marginal,
            complexity: None,
            class_distances: &distances,
            log_posteriors: &posteriors,
            latent: None,
            labels,
        };
        OodStats::fit(&settings, &data, None, "synthetic".into())
    }

    #[test]
    fn verdicts_follow_the_typicality_tests() {
        let (_, _, _, labels) = calibration();
        let stats = fit_with(0.02, &labels).unwrap();
        assert!(stats.marginal_low < stats.marginal_high);
        assert!(
            stats
                .class_max_distance
                .iter()
                .all(|&d| d > 1.05 && d <= 1.1)
        );
        // At most the two tails of the marginal and one class tail fail: ≤ 2·alpha here.
        assert!(stats.false_alarm_rate <= 0.04, "{}", stats.false_alarm_rate);
        let verdict =
            |marginal: f64, d: &[f64]| stats.verdict(marginal, None, None, d, &log_posterior(d));
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
                    atypical_marginal: true,
                    atypical_complexity: false,
                    atypical_latent: false,
                },
                "{marginal}"
            );
        }
        // A typical log p(x), but a latent far from every class mean.
        assert_eq!(
            verdict(-1.2, &[5.0, 5.0]),
            Verdict::OutOfDistribution {
                atypical_marginal: false,
                atypical_complexity: false,
                atypical_latent: false,
            }
        );
        // Fitted statistics pass their own check; statistics of another model do not.
        assert_eq!(stats.check(2), Ok(()));
        let error = stats.check(3).unwrap_err();
        assert_eq!(
            error,
            OodCheckError::Classes {
                thresholds: 2,
                classes: 3
            }
        );
        assert!(error.to_string().contains("2 class thresholds"));
        let mut broken = stats.clone();
        broken.min_posterior = 0.0;
        let error = broken.check(2).unwrap_err();
        assert!(matches!(error, OodCheckError::MinPosterior { .. }));
        assert!(error.to_string().contains("min_posterior"));
        let mut broken = stats.clone();
        broken.marginal_low = f64::NAN;
        assert!(broken.check(2).is_err());
        // The statistics survive a JSON round trip (they are stored as ood.json).
        let back: OodStats = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);
    }

    #[test]
    fn the_complexity_test_flags_inputs_the_model_explains_no_better_than_png() {
        let (marginal, distances, posteriors, labels) = calibration();
        // Calibration complexities 1.0 ..= 2.99 bits per dimension.
        let complexity: Vec<f64> = (0..labels.len()).map(|i| 1.0 + i as f64 / 100.0).collect();
        let settings = FitSettings {
            alpha: 0.02,
            alpha_complexity: Some(0.05),
            min_posterior: 0.1,
            alpha_latent: None,
        };
        let data = Calibration {
            marginal: &marginal,
            complexity: Some(&complexity),
            class_distances: &distances,
            log_posteriors: &posteriors,
            latent: None,
            labels: &labels,
        };
        let stats = OodStats::fit(&settings, &data, None, "synthetic".into()).unwrap();
        let low = stats.complexity_low.unwrap();
        assert!((low - (1.0 + 0.05 * 1.99)).abs() < 1e-9, "{low}");
        assert_eq!(stats.alpha_complexity, Some(0.05));
        let d = [1.0, 3.0];
        let verdict = |c: Option<f64>| stats.verdict(-1.2, c, None, &d, &log_posterior(&d));
        assert_eq!(verdict(Some(2.0)), Verdict::Confident { class: 0 });
        // Unknown complexity (a tensor input): the test is skipped.
        assert_eq!(verdict(None), Verdict::Confident { class: 0 });
        for c in [0.5, f64::NAN] {
            assert_eq!(
                verdict(Some(c)),
                Verdict::OutOfDistribution {
                    atypical_marginal: false,
                    atypical_complexity: true,
                    atypical_latent: false,
                }
            );
        }
        // A rate without scores, and a half-set test in a file, are errors.
        let no_scores = Calibration {
            complexity: None,
            ..data
        };
        assert!(matches!(
            OodStats::fit(&settings, &no_scores, None, String::new()),
            Err(OodCheckError::Complexity { .. })
        ));
        let short = Calibration {
            marginal: &marginal[1..],
            ..data
        };
        assert!(matches!(
            OodStats::fit(&settings, &short, None, String::new()),
            Err(OodCheckError::Lengths { .. })
        ));
        assert_eq!(stats.verdict_of(&short, labels.len() - 1), None);
        let mut half = stats.clone();
        half.alpha_complexity = None;
        assert!(matches!(
            half.check(2),
            Err(OodCheckError::Complexity { .. })
        ));
        // Old ood.json files (no complexity fields) still read, with no complexity test.
        let mut old = serde_json::to_value(&stats).unwrap();
        let object = old.as_object_mut().unwrap();
        object.remove("complexity_low");
        object.remove("alpha_complexity");
        let old: OodStats = serde_json::from_value(old).unwrap();
        assert_eq!(old.complexity_low, None);
        assert_eq!(old.check(2), Ok(()));
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert!((logsumexp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert_eq!(logsumexp(&[f64::NEG_INFINITY]), f64::NEG_INFINITY);
    }

    #[test]
    fn a_class_without_calibration_images_is_an_error_not_a_silent_threshold() {
        let labels = vec![0; calibration().3.len()];
        let error = fit_with(0.05, &labels).unwrap_err();
        assert!(
            matches!(error, OodCheckError::ClassThreshold { class: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn impossible_statistics_fail_the_check() {
        let good = fit_with(0.05, &calibration().3).unwrap();
        let mut negative = good.clone();
        negative.class_max_distance[0] = -1.0;
        assert!(matches!(
            negative.check(2),
            Err(OodCheckError::ClassThreshold { class: 0, .. })
        ));
        let mut unbounded = good.clone();
        unbounded.marginal_high = f64::INFINITY;
        assert!(matches!(
            unbounded.check(2),
            Err(OodCheckError::EmptyRange { .. })
        ));
        assert!(matches!(good.check(3), Err(OodCheckError::Classes { .. })));
        let mut everything = good.clone();
        (everything.marginal_low, everything.marginal_high) = (-1e308, 1e308);
        assert!(matches!(
            everything.check(2),
            Err(OodCheckError::ImplausibleRange { .. })
        ));
    }

    /// A one-dimension-per-part Gaussian for two classes (the statistic is not used by
    /// these tests, only stored).
    fn tiny_gaussian() -> LatentGaussian {
        LatentGaussian {
            class_dims: 1,
            class_means: vec![vec![0.0], vec![1.0]],
            shared_mean: vec![0.0],
            components: vec![vec![1.0, 0.0]],
            variances: vec![1.0],
            residual_variance: 1.0,
            images: 2,
        }
    }

    #[test]
    fn the_latent_test_flags_latents_farther_than_real_ones() {
        let (marginal, distances, posteriors, labels) = calibration();
        // Calibration statistics 0.5 ..= 2.49.
        let latent: Vec<f64> = (0..labels.len()).map(|i| 0.5 + i as f64 / 100.0).collect();
        let settings = FitSettings {
            alpha: 0.02,
            alpha_complexity: None,
            min_posterior: 0.1,
            alpha_latent: Some(0.05),
        };
        let data = Calibration {
            marginal: &marginal,
            complexity: None,
            class_distances: &distances,
            log_posteriors: &posteriors,
            latent: Some(&latent),
            labels: &labels,
        };
        let stats =
            OodStats::fit(&settings, &data, Some(tiny_gaussian()), "synthetic".into()).unwrap();
        let test = stats.latent.as_ref().unwrap();
        assert!(
            (test.threshold - (0.5 + 0.95 * 1.99)).abs() < 1e-9,
            "{}",
            test.threshold
        );
        assert_eq!(test.alpha, 0.05);
        // Its 5 % of calibration images add to the others' false alarms (≤ 2·alpha).
        assert!(stats.false_alarm_rate > 0.04 && stats.false_alarm_rate <= 0.09);
        let d = [1.0, 3.0];
        let verdict = |l: Option<f64>| stats.verdict(-1.2, None, l, &d, &log_posterior(&d));
        assert_eq!(verdict(Some(1.0)), Verdict::Confident { class: 0 });
        assert_eq!(
            verdict(None),
            Verdict::Confident { class: 0 },
            "not computed: skipped"
        );
        for l in [3.0, f64::NAN] {
            assert_eq!(
                verdict(Some(l)),
                Verdict::OutOfDistribution {
                    atypical_marginal: false,
                    atypical_complexity: false,
                    atypical_latent: true,
                },
                "{l}"
            );
        }
        // The statistics check the Gaussian against the model.
        assert_eq!(stats.check_model(2, 2, 1), Ok(()));
        assert!(matches!(
            stats.check_model(2, 3, 1),
            Err(OodCheckError::Latent { .. })
        ));
        let mut broken = stats.clone();
        broken.latent.as_mut().unwrap().alpha = 1.5;
        assert!(matches!(broken.check(2), Err(OodCheckError::Latent { .. })));
        let mut broken = stats.clone();
        broken.latent.as_mut().unwrap().threshold = f64::NAN;
        assert!(matches!(broken.check(2), Err(OodCheckError::Latent { .. })));
        let back: OodStats = serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);
        // A rate without a Gaussian, a Gaussian without statistics, non-finite
        // statistics: errors, not a silently missing test.
        assert!(matches!(
            OodStats::fit(&settings, &data, None, String::new()),
            Err(OodCheckError::Latent { .. })
        ));
        let no_values = Calibration {
            latent: None,
            ..data
        };
        assert!(matches!(
            OodStats::fit(&settings, &no_values, Some(tiny_gaussian()), String::new()),
            Err(OodCheckError::Latent { .. })
        ));
        let mut nan = latent.clone();
        nan[7] = f64::NAN;
        let with_nan = Calibration {
            latent: Some(&nan),
            ..data
        };
        assert!(matches!(
            OodStats::fit(&settings, &with_nan, Some(tiny_gaussian()), String::new()),
            Err(OodCheckError::Latent { .. })
        ));
    }
}
