//! How well a classifier detects out-of-distribution inputs, and how well its
//! probabilities are calibrated: the numbers OoD and calibration papers report, on plain
//! `f64` slices (no tensors), with typed errors ([`MetricsError`]) for bad input.
//!
//! # Detection
//!
//! A detection score is a number per input where **higher means more
//! in-distribution** (`log p(x)`, a maximum posterior, a negated distance). Negate a
//! score of the other sense (an energy, a distance) before passing it. With `n_in`
//! in-distribution scores `s⁺` and `n_out` OoD scores `s⁻`, an input is *accepted* as
//! in-distribution at threshold `t` when its score is `≥ t`. Then, with
//! `TPR(t) = #{s⁺ ≥ t} / n_in` and `FPR(t) = #{s⁻ ≥ t} / n_out`:
//!
//! - **AUROC** = `P(s⁺ > s⁻) + ½ P(s⁺ = s⁻)` over all pairs: the Mann–Whitney U statistic
//!   over `n_in · n_out`, equal to the area under the ROC curve of [`roc_curve`]
//!   (scikit-learn's `roc_auc_score` with the in-distribution as the positive class, and
//!   the same with the OoD set positive and the scores negated).
//! - **AUPR-in** and **AUPR-out**: average precision, `Σₙ (Rₙ − Rₙ₋₁) Pₙ` over the
//!   thresholds at every distinct score, exactly as scikit-learn's
//!   `average_precision_score` (step-wise, no interpolation); AUPR-in takes the
//!   in-distribution set as positive and the scores as they are, AUPR-out the OoD set
//!   as positive and the scores negated. (OpenOOD reports the trapezoidal area under the
//!   precision–recall curve instead, which can differ slightly.)
//! - **FPR at 95 % TPR**: the fraction of OoD inputs accepted as in-distribution at the
//!   highest threshold that accepts at least 95 % of the in-distribution inputs,
//!   `FPR(t*)` with `t* = max{t : TPR(t) ≥ 0.95}` (the threshold is chosen on the
//!   in-distribution scores alone; it is one of them). Ties count against the detector:
//!   an OoD score equal to `t*` is accepted, and when tied in-distribution scores at `t*`
//!   push the TPR past 95 %, all of them are accepted. This is the in-distribution-
//!   positive `FPR@95` of Liang et al. (ODIN, 2018) and of OpenOOD's `fpr_recall`, and
//!   equals `fpr[argmax(tpr >= 0.95)]` of scikit-learn's
//!   `roc_curve(is_in, score, drop_intermediate=False)`. (OpenOOD v1.5's
//!   `compute_all_metrics` reports the other direction, the OoD set as positive: the
//!   fraction of in-distribution inputs rejected when 95 % of the OoD ones are.)
//!
//! [`detection_report`] computes all four and, optionally, percentile-bootstrap 95 %
//! intervals ([`Bootstrap`]).
//!
//! # Calibration
//!
//! Probabilities come as a flat row-major slice, one row of `n_classes` values per
//! sample, each row a distribution (entries finite and `≥ 0`, sum within
//! [`PROBABILITY_SUM_TOLERANCE`] of 1), with one label per row. The *prediction* of a row
//! is the first class of highest probability, its *confidence* that probability.
//! Equal-width bins are the [`CALIBRATION_BINS`] = 15 intervals
//! `(eᵢ, eᵢ₊₁]` with `eᵢ = i / 15` (computed as `i as f64 / 15.0`), a value of exactly 0
//! falling into the first bin (Guo et al., "On Calibration of Modern Neural Networks",
//! ICML 2017). Over `n` samples and bins `B_b`, with `acc(B)` the fraction of correct
//! predictions and `conf(B)` the mean confidence in a bin:
//!
//! - **ECE** = `Σ_b |B_b|/n · |acc(B_b) − conf(B_b)|` over the equal-width bins
//!   (top-label ECE);
//! - **equal-mass (adaptive) ECE**: the same sum over 15 bins of (nearly) equal count:
//!   the samples sorted by confidence (a stable sort, so ties keep their input order),
//!   then cut into 15 consecutive groups, the first `n mod 15` of them one sample larger
//!   (NumPy's `array_split`); it needs at least 15 samples;
//! - **MCE** = `max_b |acc(B_b) − conf(B_b)|` over the non-empty equal-width bins;
//! - **classwise ECE** (Kull et al., NeurIPS 2019) = `1/K Σ_k ECE_k` where `ECE_k` bins
//!   `p_k` (every sample's probability of class `k`) in the equal-width bins and compares
//!   each bin's mean `p_k` with its fraction of samples labelled `k`;
//! - **NLL** = `mean(−ln p_label)`, in nats, unclipped (`+∞` when a sample gives its label
//!   probability 0; scikit-learn's `log_loss` clips to machine epsilon instead);
//! - **Brier score** = `mean(Σ_k (p_k − 1[label = k])²)` (0 to 2);
//! - **accuracy**, and the reliability diagram ([`ReliabilityBin`], per equal-width bin).
//!
//! [`fit_temperature`] finds the temperature `T` minimizing the NLL of
//! `softmax(logits / T)` (Guo et al.'s temperature scaling), [`apply_temperature`]
//! applies it.
//!
//! ```
//! use trustgc::metrics::{Bootstrap, calibration_report, detection_report};
//!
//! // log p(x) of in-distribution and OoD inputs (higher = more in-distribution).
//! let in_scores = [-3.1, -2.7, -2.9, -3.5, -2.2, -2.8];
//! let out_scores = [-4.0, -3.2, -5.1, -2.6];
//! let report = detection_report(&in_scores, &out_scores, Some(Bootstrap::default()))?;
//! assert!((report.auroc - 18.0 / 24.0).abs() < 1e-12); // 18 of 24 pairs ordered right
//! let ci = report.ci.expect("asked for");
//! assert!(ci.auroc.low <= report.auroc && report.auroc <= ci.auroc.high);
//!
//! // Two classes, 15 samples: posteriors and labels.
//! let probs: Vec<f64> = (0..15).flat_map(|i| [0.5 + i as f64 / 30.0, 0.5 - i as f64 / 30.0]).collect();
//! let labels: Vec<usize> = (0..15).map(|i| usize::from(i % 4 == 0)).collect();
//! let calibration = calibration_report(&probs, 2, &labels)?;
//! println!("ECE {:.3}, NLL {:.3}", calibration.ece, calibration.nll);
//! # Ok::<(), trustgc::metrics::MetricsError>(())
//! ```

mod calibration;
mod detection;
mod error;
mod temperature;

pub use calibration::{CalibrationReport, ReliabilityBin, calibration_report};
pub use detection::{
    Bootstrap, DetectionIntervals, DetectionReport, Interval, RocPoint, aupr_in, aupr_out, auroc,
    detection_report, fpr_at_95_tpr, roc_curve,
};
pub use error::{BracketEnd, Input, Metric, MetricsError, RowProblem, SampleSet};
pub use temperature::{apply_temperature, fit_temperature};

/// The number of bins of every binned calibration error (ECE, equal-mass ECE, MCE,
/// classwise ECE, the reliability diagram): 15, as Guo et al. (2017).
pub const CALIBRATION_BINS: usize = 15;

/// How far from 1 the sum of a row of probabilities may be: `1e-3`.
pub const PROBABILITY_SUM_TOLERANCE: f64 = 1e-3;

/// The in-distribution acceptance rate of [`fpr_at_95_tpr`]: 95 %, i.e. at least 19 of
/// every 20 in-distribution inputs.
pub const TPR_TARGET: f64 = 0.95;

/// The coverage of the bootstrap intervals of [`Bootstrap`]: 95 % (the 2.5th and
/// 97.5th percentiles).
pub const BOOTSTRAP_LEVEL: f64 = 0.95;

/// The lowest temperature [`fit_temperature`] considers: `1e-4`.
pub const MIN_TEMPERATURE: f64 = 1e-4;

/// The highest temperature [`fit_temperature`] considers: `1e8` (wide enough for logits
/// that are log-likelihoods of whole images, thousands of nats apart).
pub const MAX_TEMPERATURE: f64 = 1e8;

/// Checks a flat row-major matrix against its labels; returns the number of rows.
fn check_rows(
    input: Input,
    values: &[f64],
    n_classes: usize,
    labels: &[usize],
    least_classes: usize,
) -> Result<usize, MetricsError> {
    if n_classes < least_classes {
        return Err(MetricsError::TooFewClasses {
            n_classes,
            needed: least_classes,
        });
    }
    if labels.is_empty() {
        return Err(MetricsError::Empty {
            set: SampleSet::Labelled,
        });
    }
    if !values.len().is_multiple_of(n_classes) {
        return Err(MetricsError::Ragged {
            input,
            len: values.len(),
            n_classes,
        });
    }
    let rows = values.len() / n_classes;
    if rows != labels.len() {
        return Err(MetricsError::LengthMismatch {
            input,
            rows,
            labels: labels.len(),
        });
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &label)| label >= n_classes)
    {
        return Err(MetricsError::LabelOutOfRange {
            index,
            label,
            n_classes,
        });
    }
    Ok(rows)
}
