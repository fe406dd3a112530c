//! Temperature scaling (Guo et al., 2017): one scalar `T > 0` dividing the logits,
//! fitted to minimize the NLL of the labels.
//!
//! With `β = 1/T` and `a_k = z_k − max_j z_j` (the shifted logits of one sample), the NLL
//! of a sample is `f(β) = ln Σ_k exp(β a_k) − β a_y`, whose derivatives are
//! `f'(β) = E_p[a] − a_y` and `f''(β) = Var_p[a] ≥ 0`, under `p = softmax(β a)`. The mean
//! NLL is therefore convex in `β`, and its minimum is the root of the increasing `f'`.

use super::{BracketEnd, Input, MAX_TEMPERATURE, MIN_TEMPERATURE, MetricsError, check_rows};

/// The most iterations of the root finder; bisection alone would need about 45 to narrow
/// the bracket to machine precision.
const MAX_ITERATIONS: usize = 200;

/// Checks that every logit is finite.
fn check_logits(logits: &[f64], n_classes: usize) -> Result<(), MetricsError> {
    for (index, row) in logits.chunks_exact(n_classes).enumerate() {
        if let Some((class, &value)) = row.iter().enumerate().find(|(_, value)| !value.is_finite())
        {
            return Err(MetricsError::NonFiniteLogit {
                index,
                class,
                value,
            });
        }
    }
    Ok(())
}

/// The temperature `T` that minimizes the mean NLL of `softmax(logits / T)` for these
/// labels.
///
/// `logits` holds one row of `n_classes` logits per sample, row-major; `labels[i]` is
/// the class of sample `i`. The search runs over `β = 1/T` in
/// `[1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE]` (so `T` in [[`MIN_TEMPERATURE`],
/// [`MAX_TEMPERATURE`]] = `[1e-4, 1e8]`), where the mean NLL is convex: a safeguarded
/// Newton iteration on its derivative, falling back to bisection (geometric mean of the
/// bracket) whenever a Newton step leaves the bracket, until a step changes `β` by no
/// more than a few ulps. Deterministic; converges to machine precision.
///
/// # Errors
///
/// [`MetricsError::TooFewClasses`] for fewer than 2 classes, [`MetricsError::Empty`]
/// for no labels, [`MetricsError::Ragged`] or [`MetricsError::LengthMismatch`] when
/// `logits` does not hold one row per label, [`MetricsError::LabelOutOfRange`],
/// [`MetricsError::NonFiniteLogit`], [`MetricsError::ConstantLogits`] when the NLL does
/// not depend on `T`, and [`MetricsError::TemperatureAtBound`] when the NLL is lowest at
/// an end of the bracket or beyond (every sample already classified right with a margin:
/// the NLL keeps falling as `T → 0`; labels below the row's mean logit on average:
/// it keeps falling as `T → ∞`).
pub fn fit_temperature(
    logits: &[f64],
    n_classes: usize,
    labels: &[usize],
) -> Result<f64, MetricsError> {
    check_rows(Input::Logits, logits, n_classes, labels, 2)?;
    check_logits(logits, n_classes)?;
    // Shifted logits a = z − max z (≤ 0), so exp(β a) never overflows.
    let shifted: Vec<f64> = logits
        .chunks_exact(n_classes)
        .flat_map(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.iter().map(move |&z| z - max)
        })
        .collect();
    if shifted.iter().all(|&a| a == 0.0) {
        return Err(MetricsError::ConstantLogits);
    }
    let derivatives = |beta: f64| -> (f64, f64) {
        let (mut slope, mut curvature) = (0.0, 0.0);
        let mut weights = vec![0.0; n_classes];
        for (row, &label) in shifted.chunks_exact(n_classes).zip(labels) {
            for (weight, &a) in weights.iter_mut().zip(row) {
                *weight = (beta * a).exp();
            }
            let total: f64 = weights.iter().sum();
            let mean = weights.iter().zip(row).map(|(w, a)| w * a).sum::<f64>() / total;
            let variance = weights
                .iter()
                .zip(row)
                .map(|(w, a)| w * (a - mean) * (a - mean))
                .sum::<f64>()
                / total;
            slope += mean - row[label];
            curvature += variance;
        }
        let n = labels.len() as f64;
        (slope / n, curvature / n)
    };

    let (mut low, mut high) = (1.0 / MAX_TEMPERATURE, 1.0 / MIN_TEMPERATURE);
    // f' increasing: its root is inside the bracket iff f'(low) < 0 < f'(high).
    if derivatives(low).0 >= 0.0 {
        return Err(MetricsError::TemperatureAtBound {
            end: BracketEnd::Upper,
        });
    }
    if derivatives(high).0 <= 0.0 {
        return Err(MetricsError::TemperatureAtBound {
            end: BracketEnd::Lower,
        });
    }
    let mut beta: f64 = 1.0;
    for _ in 0..MAX_ITERATIONS {
        let (slope, curvature) = derivatives(beta);
        if slope == 0.0 {
            break;
        }
        if slope < 0.0 {
            low = beta;
        } else {
            high = beta;
        }
        let newton = beta - slope / curvature;
        let next = if curvature > 0.0 && newton > low && newton < high {
            newton
        } else {
            (low * high).sqrt()
        };
        let converged = (next - beta).abs() <= 4.0 * f64::EPSILON * beta;
        beta = next;
        if converged {
            break;
        }
    }
    Ok(1.0 / beta)
}

/// `softmax(logits / temperature)` of every row: the calibrated probabilities, row-major
/// like `logits` (rows of `n_classes`). Computed as `softmax((z − max z) / T)`, so large
/// logits or small temperatures do not overflow. No rows give no probabilities.
///
/// # Errors
///
/// [`MetricsError::TooFewClasses`] for 0 classes, [`MetricsError::Ragged`] when
/// `logits.len()` is not a multiple of `n_classes`, [`MetricsError::Temperature`] for a
/// temperature that is not a finite number > 0, [`MetricsError::NonFiniteLogit`].
pub fn apply_temperature(
    logits: &[f64],
    n_classes: usize,
    temperature: f64,
) -> Result<Vec<f64>, MetricsError> {
    if n_classes == 0 {
        return Err(MetricsError::TooFewClasses {
            n_classes,
            needed: 1,
        });
    }
    if !logits.len().is_multiple_of(n_classes) {
        return Err(MetricsError::Ragged {
            input: Input::Logits,
            len: logits.len(),
            n_classes,
        });
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(MetricsError::Temperature { value: temperature });
    }
    check_logits(logits, n_classes)?;
    let mut probs = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(n_classes) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let start = probs.len();
        probs.extend(row.iter().map(|&z| ((z - max) / temperature).exp()));
        let total: f64 = probs[start..].iter().sum();
        for p in &mut probs[start..] {
            *p /= total;
        }
    }
    Ok(probs)
}
