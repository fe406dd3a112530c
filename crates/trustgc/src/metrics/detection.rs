//! OoD detection metrics: AUROC, AUPR-in/out, FPR at 95 % TPR, the ROC curve and
//! bootstrap intervals (definitions in the [module docs](super)).
//!
//! Everything is computed from one sort: the scores of both sets sorted from high to
//! low and grouped by distinct value (a *group* is one threshold), each group holding
//! how many in-distribution and OoD samples have that score. A bootstrap resample only
//! changes those per-group counts, so each resample costs `O(n_in + n_out)`, not a sort.

use serde::Serialize;
use trustgc_core::rng::SplitMix64;

use super::{BOOTSTRAP_LEVEL, Metric, MetricsError, SampleSet};

/// A point of the ROC curve (in-distribution = positive, accepted when `score ≥
/// threshold`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RocPoint {
    /// The threshold: a score of either set, or `+∞` for the first point, `(0, 0)`
    /// (serialized as `null` by `serde_json`).
    pub threshold: f64,
    /// The fraction of OoD scores `≥ threshold` (false positive rate).
    pub fpr: f64,
    /// The fraction of in-distribution scores `≥ threshold` (true positive rate).
    pub tpr: f64,
}

/// A confidence interval `[low, high]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    /// The lower end.
    pub low: f64,
    /// The upper end.
    pub high: f64,
}

impl Interval {
    /// Whether `value` lies in `[low, high]`.
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }
}

/// How to bootstrap the intervals of a [`DetectionReport`].
///
/// Each of `resamples` resamples draws `n_in` in-distribution and `n_out` OoD scores with
/// replacement, independently from each set, and computes every metric on them; an
/// interval runs from the 2.5th to the 97.5th percentile of those values
/// ([`BOOTSTRAP_LEVEL`]; the percentile method, with NumPy's default linear
/// interpolation between order statistics: the `p` quantile of sorted values `v` is
/// `v[⌊h⌋] + (h − ⌊h⌋)(v[⌊h⌋+1] − v[⌊h⌋])`, `h = (resamples − 1) p`).
///
/// The draws are deterministic: a SplitMix64 generator seeded with `seed` draws, per
/// resample, the `n_in` in-distribution indices and then the `n_out` OoD ones, each by
/// Lemire's unbiased multiply-and-reject method. The same seed and inputs give the same
/// intervals on every platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bootstrap {
    /// How many resamples (at least 2; 1000 by default).
    pub resamples: usize,
    /// The seed of the generator (0 by default).
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            resamples: 1000,
            seed: 0,
        }
    }
}

impl Bootstrap {
    /// 1000 resamples from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            seed,
            ..Self::default()
        }
    }
}

/// Bootstrap intervals of the metrics of a [`DetectionReport`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DetectionIntervals {
    /// Of [`DetectionReport::auroc`].
    pub auroc: Interval,
    /// Of [`DetectionReport::aupr_in`].
    pub aupr_in: Interval,
    /// Of [`DetectionReport::aupr_out`].
    pub aupr_out: Interval,
    /// Of [`DetectionReport::fpr_at_95_tpr`].
    pub fpr_at_95_tpr: Interval,
    /// Their coverage: [`BOOTSTRAP_LEVEL`].
    pub level: f64,
    /// How they were drawn.
    pub bootstrap: Bootstrap,
}

/// How well a score separates in-distribution from OoD inputs (definitions in the
/// [module docs](super)).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DetectionReport {
    /// Area under the ROC curve, in `[0, 1]` (0.5: chance; 1: perfect separation).
    pub auroc: f64,
    /// Average precision with the in-distribution set as positive.
    pub aupr_in: f64,
    /// Average precision with the OoD set as positive (scores negated).
    pub aupr_out: f64,
    /// The fraction of OoD inputs accepted when at least 95 % of the in-distribution
    /// inputs are (lower is better).
    pub fpr_at_95_tpr: f64,
    /// Bootstrap intervals, when asked for.
    pub ci: Option<DetectionIntervals>,
    /// The number of in-distribution scores.
    pub n_in: usize,
    /// The number of OoD scores.
    pub n_out: usize,
}

/// The four detection metrics of one (re)sample.
#[derive(Clone, Copy, Debug)]
struct Point {
    auroc: f64,
    aupr_in: f64,
    aupr_out: f64,
    fpr_at_95_tpr: f64,
}

/// The scores of both sets grouped by distinct value, highest first.
struct Groups {
    /// The distinct scores, descending.
    thresholds: Vec<f64>,
    /// The group of each in-distribution score.
    group_of_in: Vec<usize>,
    /// The group of each OoD score.
    group_of_out: Vec<usize>,
}

impl Groups {
    /// Sorts both sets together (the scores are known to be finite).
    fn new(in_scores: &[f64], out_scores: &[f64]) -> Self {
        // (score, is in-distribution, index in its set)
        let mut all: Vec<(f64, bool, usize)> = in_scores
            .iter()
            .enumerate()
            .map(|(index, &score)| (score, true, index))
            .chain(
                out_scores
                    .iter()
                    .enumerate()
                    .map(|(index, &score)| (score, false, index)),
            )
            .collect();
        // total_cmp puts -0.0 next to 0.0; the `!=` below groups them (they are equal).
        all.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut groups = Self {
            thresholds: Vec::new(),
            group_of_in: vec![0; in_scores.len()],
            group_of_out: vec![0; out_scores.len()],
        };
        for (score, is_in, index) in all {
            if groups.thresholds.last() != Some(&score) {
                groups.thresholds.push(score);
            }
            let group = groups.thresholds.len() - 1;
            if is_in {
                groups.group_of_in[index] = group;
            } else {
                groups.group_of_out[index] = group;
            }
        }
        groups
    }

    /// How many in-distribution and OoD scores each group holds.
    fn counts(&self) -> (Vec<u64>, Vec<u64>) {
        let mut counts_in = vec![0; self.thresholds.len()];
        let mut counts_out = vec![0; self.thresholds.len()];
        for &group in &self.group_of_in {
            counts_in[group] += 1;
        }
        for &group in &self.group_of_out {
            counts_out[group] += 1;
        }
        (counts_in, counts_out)
    }
}

/// The metrics from per-group counts (groups by descending score; both totals > 0).
fn point(counts_in: &[u64], counts_out: &[u64]) -> Point {
    let n_in: u64 = counts_in.iter().sum();
    let n_out: u64 = counts_out.iter().sum();
    // Descending thresholds: accepted in (true positives) and out (false positives).
    let (mut accepted_in, mut accepted_out) = (0_u64, 0_u64);
    // Twice the Mann–Whitney U: 2·#{s⁺ > s⁻} + #{s⁺ = s⁻}, exact in integers.
    let mut twice_u: u128 = 0;
    let mut aupr_in = 0.0;
    let mut fpr_at_95_tpr = None;
    for (&group_in, &group_out) in counts_in.iter().zip(counts_out) {
        twice_u += u128::from(group_out) * (2 * u128::from(accepted_in) + u128::from(group_in));
        accepted_in += group_in;
        accepted_out += group_out;
        if group_in > 0 {
            // recall step (group_in / n_in, divided out below) × precision here
            aupr_in += group_in as f64 * (accepted_in as f64 / (accepted_in + accepted_out) as f64);
        }
        // TPR ≥ 0.95 ⇔ 20·accepted ≥ 19·n_in, exactly.
        if fpr_at_95_tpr.is_none() && 20 * u128::from(accepted_in) >= 19 * u128::from(n_in) {
            fpr_at_95_tpr = Some(accepted_out as f64 / n_out as f64);
        }
    }
    // AUPR-out: OoD positive, scores negated, so thresholds run from the lowest score up.
    let (mut flagged_out, mut flagged_in) = (0_u64, 0_u64);
    let mut aupr_out = 0.0;
    for (&group_in, &group_out) in counts_in.iter().zip(counts_out).rev() {
        flagged_out += group_out;
        flagged_in += group_in;
        if group_out > 0 {
            aupr_out += group_out as f64 * (flagged_out as f64 / (flagged_out + flagged_in) as f64);
        }
    }
    Point {
        auroc: twice_u as f64 / (2 * u128::from(n_in) * u128::from(n_out)) as f64,
        aupr_in: aupr_in / n_in as f64,
        aupr_out: aupr_out / n_out as f64,
        // The last group accepts everything, so the condition holds by then.
        fpr_at_95_tpr: fpr_at_95_tpr.unwrap_or(1.0),
    }
}

/// Checks that both sets are non-empty and finite.
fn check_scores(in_scores: &[f64], out_scores: &[f64]) -> Result<(), MetricsError> {
    for (set, scores) in [
        (SampleSet::InDistribution, in_scores),
        (SampleSet::OutOfDistribution, out_scores),
    ] {
        if scores.is_empty() {
            return Err(MetricsError::Empty { set });
        }
    }
    for (set, scores) in [
        (SampleSet::InDistribution, in_scores),
        (SampleSet::OutOfDistribution, out_scores),
    ] {
        if let Some((index, &value)) = scores
            .iter()
            .enumerate()
            .find(|(_, value)| !value.is_finite())
        {
            return Err(MetricsError::NonFiniteScore { set, index, value });
        }
    }
    Ok(())
}

/// Checks the scores and computes the four metrics.
fn checked_point(in_scores: &[f64], out_scores: &[f64]) -> Result<Point, MetricsError> {
    check_scores(in_scores, out_scores)?;
    let (counts_in, counts_out) = Groups::new(in_scores, out_scores).counts();
    Ok(point(&counts_in, &counts_out))
}

/// AUROC of a score that is higher for in-distribution inputs: `P(s⁺ > s⁻) + ½ P(s⁺ =
/// s⁻)` ([module docs](super)). `O(n log n)`.
///
/// # Errors
///
/// [`MetricsError::Empty`] for an empty set, [`MetricsError::NonFiniteScore`] for a NaN
/// or infinite score.
pub fn auroc(in_scores: &[f64], out_scores: &[f64]) -> Result<f64, MetricsError> {
    Ok(checked_point(in_scores, out_scores)?.auroc)
}

/// Average precision with the in-distribution set as positive ([module docs](super)).
///
/// # Errors
///
/// As [`auroc`].
pub fn aupr_in(in_scores: &[f64], out_scores: &[f64]) -> Result<f64, MetricsError> {
    Ok(checked_point(in_scores, out_scores)?.aupr_in)
}

/// Average precision with the OoD set as positive and the scores negated ([module
/// docs](super)).
///
/// # Errors
///
/// As [`auroc`].
pub fn aupr_out(in_scores: &[f64], out_scores: &[f64]) -> Result<f64, MetricsError> {
    Ok(checked_point(in_scores, out_scores)?.aupr_out)
}

/// The fraction of OoD scores `≥ t*`, where `t*` is the highest threshold that accepts
/// at least 95 % of the in-distribution scores ([module docs](super); ties count against
/// the detector).
///
/// # Errors
///
/// As [`auroc`].
pub fn fpr_at_95_tpr(in_scores: &[f64], out_scores: &[f64]) -> Result<f64, MetricsError> {
    Ok(checked_point(in_scores, out_scores)?.fpr_at_95_tpr)
}

/// The ROC curve with the in-distribution set as positive: `(0, 0)` at threshold `+∞`,
/// then one point per distinct score of either set, from the highest (thresholds
/// decreasing, both rates non-decreasing) to the lowest, which is `(1, 1)`. The same
/// points as scikit-learn's `roc_curve(is_in, score, drop_intermediate=False)`.
///
/// # Errors
///
/// As [`auroc`].
pub fn roc_curve(in_scores: &[f64], out_scores: &[f64]) -> Result<Vec<RocPoint>, MetricsError> {
    check_scores(in_scores, out_scores)?;
    let groups = Groups::new(in_scores, out_scores);
    let (counts_in, counts_out) = groups.counts();
    let (n_in, n_out) = (in_scores.len() as f64, out_scores.len() as f64);
    let mut curve = Vec::with_capacity(groups.thresholds.len() + 1);
    curve.push(RocPoint {
        threshold: f64::INFINITY,
        fpr: 0.0,
        tpr: 0.0,
    });
    let (mut accepted_in, mut accepted_out) = (0_u64, 0_u64);
    for ((&threshold, &group_in), &group_out) in
        groups.thresholds.iter().zip(&counts_in).zip(&counts_out)
    {
        accepted_in += group_in;
        accepted_out += group_out;
        curve.push(RocPoint {
            threshold,
            fpr: accepted_out as f64 / n_out,
            tpr: accepted_in as f64 / n_in,
        });
    }
    Ok(curve)
}

/// AUROC, AUPR-in, AUPR-out and FPR at 95 % TPR of a score that is higher for
/// in-distribution inputs, with bootstrap intervals when `bootstrap` is given.
///
/// `in_scores` are the scores of in-distribution inputs, `out_scores` those of OoD
/// inputs; negate a score that is higher for OoD inputs first. Definitions in the
/// [module docs](super), the resampling in [`Bootstrap`]. Costs one sort plus
/// `O(resamples · (n_in + n_out))`.
///
/// # Errors
///
/// [`MetricsError::Empty`] for an empty set, [`MetricsError::NonFiniteScore`] for a NaN
/// or infinite score; with a bootstrap, [`MetricsError::Resamples`] for fewer than 2
/// resamples and [`MetricsError::TooFew`] for a set of one score.
pub fn detection_report(
    in_scores: &[f64],
    out_scores: &[f64],
    bootstrap: Option<Bootstrap>,
) -> Result<DetectionReport, MetricsError> {
    check_scores(in_scores, out_scores)?;
    if let Some(bootstrap) = bootstrap {
        if bootstrap.resamples < 2 {
            return Err(MetricsError::Resamples {
                resamples: bootstrap.resamples,
            });
        }
        for (set, len) in [
            (SampleSet::InDistribution, in_scores.len()),
            (SampleSet::OutOfDistribution, out_scores.len()),
        ] {
            if len < 2 {
                return Err(MetricsError::TooFew {
                    metric: Metric::Bootstrap,
                    set,
                    len,
                    needed: 2,
                });
            }
        }
    }
    let groups = Groups::new(in_scores, out_scores);
    let (counts_in, counts_out) = groups.counts();
    let estimate = point(&counts_in, &counts_out);
    Ok(DetectionReport {
        auroc: estimate.auroc,
        aupr_in: estimate.aupr_in,
        aupr_out: estimate.aupr_out,
        fpr_at_95_tpr: estimate.fpr_at_95_tpr,
        ci: bootstrap.map(|bootstrap| intervals(&groups, bootstrap)),
        n_in: in_scores.len(),
        n_out: out_scores.len(),
    })
}

/// The percentile-bootstrap intervals (inputs checked).
fn intervals(groups: &Groups, bootstrap: Bootstrap) -> DetectionIntervals {
    let mut rng = SplitMix64(bootstrap.seed);
    let n_groups = groups.thresholds.len();
    let (mut counts_in, mut counts_out) = (vec![0_u64; n_groups], vec![0_u64; n_groups]);
    let mut values: [Vec<f64>; 4] =
        std::array::from_fn(|_| Vec::with_capacity(bootstrap.resamples));
    for _ in 0..bootstrap.resamples {
        counts_in.fill(0);
        counts_out.fill(0);
        for (counts, group_of) in [
            (&mut counts_in, &groups.group_of_in),
            (&mut counts_out, &groups.group_of_out),
        ] {
            for _ in 0..group_of.len() {
                counts[group_of[rng.below(group_of.len())]] += 1;
            }
        }
        let resampled = point(&counts_in, &counts_out);
        for (values, value) in values.iter_mut().zip([
            resampled.auroc,
            resampled.aupr_in,
            resampled.aupr_out,
            resampled.fpr_at_95_tpr,
        ]) {
            values.push(value);
        }
    }
    let [auroc, aupr_in, aupr_out, fpr_at_95_tpr] = values.map(|mut values| {
        values.sort_unstable_by(f64::total_cmp);
        let tail = (1.0 - BOOTSTRAP_LEVEL) / 2.0;
        Interval {
            low: quantile(&values, tail),
            high: quantile(&values, 1.0 - tail),
        }
    });
    DetectionIntervals {
        auroc,
        aupr_in,
        aupr_out,
        fpr_at_95_tpr,
        level: BOOTSTRAP_LEVEL,
        bootstrap,
    }
}

/// The `p` quantile of sorted, non-empty `values`, interpolating linearly between order
/// statistics (NumPy's default, Hyndman and Fan's type 7).
fn quantile(values: &[f64], p: f64) -> f64 {
    let h = (values.len() - 1) as f64 * p;
    let below = h.floor() as usize;
    let fraction = h - below as f64;
    match values.get(below + 1) {
        Some(&above) if fraction > 0.0 => values[below] + fraction * (above - values[below]),
        _ => values[below],
    }
}
