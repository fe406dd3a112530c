//! [`MetricsError`] and the small enums its variants name.

use std::fmt;

use super::{CALIBRATION_BINS, MAX_TEMPERATURE, MIN_TEMPERATURE, PROBABILITY_SUM_TOLERANCE};

/// Why a metric could not be computed. Every function of [`metrics`](super) checks its
/// whole input first and returns one of these rather than a panic, a NaN or a silent 0.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// A set of samples with no element.
    #[error("the {set} set is empty")]
    Empty {
        /// The set.
        set: SampleSet,
    },
    /// A set with fewer samples than a metric needs.
    #[error("{metric} needs at least {needed} {set} samples; there are {len}")]
    TooFew {
        /// The metric that needs more.
        metric: Metric,
        /// The set that is too small.
        set: SampleSet,
        /// Its size.
        len: usize,
        /// The least size the metric accepts.
        needed: usize,
    },
    /// A detection score that is NaN or infinite.
    #[error("{set} score {index} is {value}; scores must be finite")]
    NonFiniteScore {
        /// The set it belongs to.
        set: SampleSet,
        /// Its index in that set.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A class label that is not below the number of classes.
    #[error(
        "the label of sample {index} is {label}; labels must be below {n_classes}, the number of classes"
    )]
    LabelOutOfRange {
        /// The sample.
        index: usize,
        /// Its label.
        label: usize,
        /// The number of classes.
        n_classes: usize,
    },
    /// A row of probabilities that is not a probability distribution.
    #[error("probability row {index} is not a distribution: {problem}")]
    NotADistribution {
        /// The row (sample).
        index: usize,
        /// What is wrong with it.
        problem: RowProblem,
    },
    /// A flat row-major matrix whose length is not a multiple of the number of classes.
    #[error("{len} {input} do not make whole rows of {n_classes} classes")]
    Ragged {
        /// Which input.
        input: Input,
        /// Its length.
        len: usize,
        /// The number of classes (row length).
        n_classes: usize,
    },
    /// A matrix with a different number of rows than there are labels.
    #[error("{rows} rows of {input} but {labels} labels")]
    LengthMismatch {
        /// Which input.
        input: Input,
        /// Its number of rows.
        rows: usize,
        /// The number of labels.
        labels: usize,
    },
    /// Fewer classes than the computation needs (0 for anything, 1 to fit a temperature).
    #[error("{n_classes} classes; this needs at least {needed}")]
    TooFewClasses {
        /// The number of classes given.
        n_classes: usize,
        /// The least number accepted.
        needed: usize,
    },
    /// A logit that is NaN or infinite.
    #[error("logit {class} of sample {index} is {value}; logits must be finite")]
    NonFiniteLogit {
        /// The sample.
        index: usize,
        /// The class.
        class: usize,
        /// The value.
        value: f64,
    },
    /// A temperature that is not a finite number > 0.
    #[error("temperature {value} is not a finite number > 0")]
    Temperature {
        /// The value.
        value: f64,
    },
    /// A bootstrap with fewer than 2 resamples (no interval can come of it).
    #[error("the bootstrap needs at least 2 resamples; {resamples} were asked for")]
    Resamples {
        /// The number asked for.
        resamples: usize,
    },
    /// The NLL keeps decreasing up to an end of the temperature bracket
    /// [[`MIN_TEMPERATURE`], [`MAX_TEMPERATURE`]], so no temperature inside it is best:
    /// at the lower end, sharpening always helps (as when every label is its row's arg
    /// max); at the upper end, flattening always helps (as when the labels score below
    /// their rows' mean logit).
    #[error(
        "the NLL is lowest at the {end} end of the temperature bracket [{MIN_TEMPERATURE:e}, {MAX_TEMPERATURE:e}] or beyond; no temperature inside it fits these logits"
    )]
    TemperatureAtBound {
        /// The end of the bracket.
        end: BracketEnd,
    },
    /// Every row of logits has all its values equal: the NLL is `ln K` whatever the
    /// temperature, so there is nothing to fit.
    #[error("every row of logits is constant; the NLL does not depend on the temperature")]
    ConstantLogits,
}

/// A set of samples a metric reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleSet {
    /// The in-distribution scores of a detection metric.
    InDistribution,
    /// The out-of-distribution scores of a detection metric.
    OutOfDistribution,
    /// The labelled samples of a calibration metric or a temperature fit.
    Labelled,
}

impl fmt::Display for SampleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InDistribution => "in-distribution",
            Self::OutOfDistribution => "out-of-distribution",
            Self::Labelled => "labelled",
        })
    }
}

/// A metric with a least sample size of its own (named by [`MetricsError::TooFew`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// The bootstrap intervals of [`detection_report`](super::detection_report): a
    /// resample of a one-element set is always that set, so the interval would say
    /// nothing about the spread.
    Bootstrap,
    /// The equal-mass ECE: every one of its [`CALIBRATION_BINS`] bins must hold a
    /// sample.
    AdaptiveEce,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bootstrap => f.write_str("the bootstrap"),
            Self::AdaptiveEce => write!(f, "the equal-mass ECE ({CALIBRATION_BINS} bins)"),
        }
    }
}

/// What makes a row of probabilities not a distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowProblem {
    /// A NaN or infinite entry.
    NotFinite {
        /// The class.
        class: usize,
        /// The value.
        value: f64,
    },
    /// A negative entry.
    Negative {
        /// The class.
        class: usize,
        /// The value.
        value: f64,
    },
    /// Entries that sum to more than [`PROBABILITY_SUM_TOLERANCE`] away from 1.
    Sum {
        /// Their sum.
        sum: f64,
    },
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFinite { class, value } => {
                write!(f, "the probability of class {class} is {value}")
            }
            Self::Negative { class, value } => {
                write!(f, "the probability of class {class} is negative ({value})")
            }
            Self::Sum { sum } => write!(
                f,
                "it sums to {sum}, more than {PROBABILITY_SUM_TOLERANCE} away from 1"
            ),
        }
    }
}

/// An input matrix, as named by [`MetricsError::Ragged`] and
/// [`MetricsError::LengthMismatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Per-sample probability vectors.
    Probabilities,
    /// Per-sample logits.
    Logits,
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Probabilities => "probabilities",
            Self::Logits => "logits",
        })
    }
}

/// An end of the temperature bracket [[`MIN_TEMPERATURE`], [`MAX_TEMPERATURE`]].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BracketEnd {
    /// [`MIN_TEMPERATURE`]: sharper than any temperature in the bracket.
    Lower,
    /// [`MAX_TEMPERATURE`]: flatter than any temperature in the bracket.
    Upper,
}

impl fmt::Display for BracketEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lower => "lower",
            Self::Upper => "upper",
        })
    }
}
