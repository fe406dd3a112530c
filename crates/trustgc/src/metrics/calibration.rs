//! Calibration metrics of per-sample probability vectors (definitions in the [module
//! docs](super)).

use serde::Serialize;

use super::{
    CALIBRATION_BINS, Input, Metric, MetricsError, PROBABILITY_SUM_TOLERANCE, RowProblem,
    SampleSet, check_rows,
};

/// One equal-width bin of the reliability diagram: the samples whose confidence lies
/// in `(lower, upper]` (the first bin also holds confidence 0).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// The lower edge, `i / 15`.
    pub lower: f64,
    /// The upper edge, `(i + 1) / 15`.
    pub upper: f64,
    /// How many samples fall into the bin.
    pub count: usize,
    /// Their mean confidence (`None` for an empty bin).
    pub mean_confidence: Option<f64>,
    /// The fraction of them predicted right (`None` for an empty bin).
    pub accuracy: Option<f64>,
}

/// How well calibrated a set of probability vectors is (definitions in the [module
/// docs](super)). All errors are fractions in `[0, 1]`, not percentages.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CalibrationReport {
    /// The number of samples.
    pub n_samples: usize,
    /// The number of classes.
    pub n_classes: usize,
    /// The fraction of samples whose most probable class is their label.
    pub accuracy: f64,
    /// Top-label expected calibration error over 15 equal-width bins.
    pub ece: f64,
    /// Top-label expected calibration error over 15 equal-mass bins.
    pub adaptive_ece: f64,
    /// Maximum calibration error over the non-empty equal-width bins.
    pub mce: f64,
    /// Classwise ECE: the mean over classes of each class's ECE.
    pub classwise_ece: f64,
    /// Mean negative log-probability of the label, in nats (`+∞`, serialized as `null`
    /// by `serde_json`, when some label has probability 0).
    pub nll: f64,
    /// Mean over samples of `Σ_k (p_k − 1[label = k])²`.
    pub brier: f64,
    /// The reliability diagram: the 15 equal-width bins, lowest first.
    pub reliability: Vec<ReliabilityBin>,
}

/// The lower edge of equal-width bin `i` (and upper edge of bin `i − 1`).
fn edge(i: usize) -> f64 {
    i as f64 / CALIBRATION_BINS as f64
}

/// The equal-width bin of `value ∈ [0, 1]`: the `i` with `edge(i) < value ≤ edge(i + 1)`,
/// 0 for 0 (values just above 1, allowed by the sum tolerance, go to the last bin).
fn bin_of(value: f64) -> usize {
    (1..CALIBRATION_BINS).filter(|&i| value > edge(i)).count()
}

/// Per-bin sums of a binned calibration error.
#[derive(Clone, Copy, Default)]
struct BinSums {
    count: usize,
    /// Σ of the predicted probabilities (confidences).
    predicted: f64,
    /// Σ of the outcomes (1 when right, else 0).
    observed: f64,
}

impl BinSums {
    fn add(&mut self, predicted: f64, observed: bool) {
        self.count += 1;
        self.predicted += predicted;
        self.observed += f64::from(u8::from(observed));
    }

    /// `|mean outcome − mean prediction|` of a non-empty bin.
    fn gap(&self) -> f64 {
        (self.observed / self.count as f64 - self.predicted / self.count as f64).abs()
    }
}

/// `Σ_b |B_b|/n · gap(B_b)` over the non-empty bins.
fn expected_error(bins: &[BinSums], n: usize) -> f64 {
    bins.iter()
        .filter(|bin| bin.count > 0)
        .map(|bin| bin.count as f64 / n as f64 * bin.gap())
        .sum()
}

/// The equal-width bins of `(predicted, observed)` pairs.
fn equal_width(pairs: impl Iterator<Item = (f64, bool)>) -> Vec<BinSums> {
    let mut bins = vec![BinSums::default(); CALIBRATION_BINS];
    for (predicted, observed) in pairs {
        bins[bin_of(predicted)].add(predicted, observed);
    }
    bins
}

/// Checks that each row is a distribution.
fn check_distributions(probs: &[f64], n_classes: usize) -> Result<(), MetricsError> {
    for (index, row) in probs.chunks_exact(n_classes).enumerate() {
        for (class, &value) in row.iter().enumerate() {
            let problem = if !value.is_finite() {
                RowProblem::NotFinite { class, value }
            } else if value < 0.0 {
                RowProblem::Negative { class, value }
            } else {
                continue;
            };
            return Err(MetricsError::NotADistribution { index, problem });
        }
        let sum: f64 = row.iter().sum();
        if (sum - 1.0).abs() > PROBABILITY_SUM_TOLERANCE {
            return Err(MetricsError::NotADistribution {
                index,
                problem: RowProblem::Sum { sum },
            });
        }
    }
    Ok(())
}

/// Accuracy, ECE (equal-width and equal-mass), MCE, classwise ECE, NLL, Brier score and
/// the reliability diagram of probability vectors and their labels.
///
/// `probs` holds one row of `n_classes` probabilities per sample, row-major (so
/// `probs.len() == labels.len() * n_classes`); `labels[i]` is the class of sample `i`.
/// Definitions, bin edges and tie rules in the [module docs](super).
///
/// # Errors
///
/// [`MetricsError::TooFewClasses`] for 0 classes, [`MetricsError::Empty`] for no labels,
/// [`MetricsError::Ragged`] or [`MetricsError::LengthMismatch`] when `probs` does not
/// hold one row per label, [`MetricsError::LabelOutOfRange`],
/// [`MetricsError::TooFew`] for fewer than 15 samples (the equal-mass ECE needs one per
/// bin), and [`MetricsError::NotADistribution`] for a row with a NaN, infinite or
/// negative entry or a sum more than [`PROBABILITY_SUM_TOLERANCE`] away from 1.
pub fn calibration_report(
    probs: &[f64],
    n_classes: usize,
    labels: &[usize],
) -> Result<CalibrationReport, MetricsError> {
    let n = check_rows(Input::Probabilities, probs, n_classes, labels, 1)?;
    if n < CALIBRATION_BINS {
        return Err(MetricsError::TooFew {
            metric: Metric::AdaptiveEce,
            set: SampleSet::Labelled,
            len: n,
            needed: CALIBRATION_BINS,
        });
    }
    check_distributions(probs, n_classes)?;
    let rows = || probs.chunks_exact(n_classes).zip(labels.iter().copied());

    // Top label: the first class of highest probability.
    let top: Vec<(f64, bool)> = rows()
        .map(|(row, label)| {
            let (prediction, confidence) =
                row.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, row[0]),
                        |best, (class, p)| if p > best.1 { (class, p) } else { best },
                    );
            (confidence, prediction == label)
        })
        .collect();
    let accuracy = top.iter().filter(|&&(_, right)| right).count() as f64 / n as f64;

    let bins = equal_width(top.iter().copied());
    let ece = expected_error(&bins, n);
    let mce = bins
        .iter()
        .filter(|bin| bin.count > 0)
        .map(BinSums::gap)
        .fold(0.0, f64::max);
    let reliability = bins
        .iter()
        .enumerate()
        .map(|(i, bin)| {
            let mean = |sum: f64| (bin.count > 0).then(|| sum / bin.count as f64);
            ReliabilityBin {
                lower: edge(i),
                upper: edge(i + 1),
                count: bin.count,
                mean_confidence: mean(bin.predicted),
                accuracy: mean(bin.observed),
            }
        })
        .collect();

    // Equal mass: a stable sort by confidence, cut as NumPy's array_split does.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| top[a].0.total_cmp(&top[b].0));
    let (size, larger) = (n / CALIBRATION_BINS, n % CALIBRATION_BINS);
    let mut start = 0;
    let mut adaptive_ece = 0.0;
    for bin in 0..CALIBRATION_BINS {
        let end = start + size + usize::from(bin < larger);
        let mut sums = BinSums::default();
        for &sample in &order[start..end] {
            sums.add(top[sample].0, top[sample].1);
        }
        adaptive_ece += sums.count as f64 / n as f64 * sums.gap();
        start = end;
    }

    let classwise_ece = (0..n_classes)
        .map(|class| {
            let bins = equal_width(rows().map(|(row, label)| (row[class], label == class)));
            expected_error(&bins, n)
        })
        .sum::<f64>()
        / n_classes as f64;

    let nll = rows().map(|(row, label)| -row[label].ln()).sum::<f64>() / n as f64;
    let brier = rows()
        .map(|(row, label)| {
            row.iter()
                .enumerate()
                .map(|(class, &p)| {
                    let miss = p - f64::from(u8::from(class == label));
                    miss * miss
                })
                .sum::<f64>()
        })
        .sum::<f64>()
        / n as f64;

    Ok(CalibrationReport {
        n_samples: n,
        n_classes,
        accuracy,
        ece,
        adaptive_ece,
        mce,
        classwise_ece,
        nll,
        brier,
        reliability,
    })
}
