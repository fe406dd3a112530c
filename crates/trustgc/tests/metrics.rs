//! `trustgc::metrics` against the reference implementations, and its edge cases.
//!
//! `tests/data/metrics/expected.json` holds inputs and the values scikit-learn, SciPy and
//! the NumPy code of `tests/data/metrics/make_expected.py` computed from them (the
//! script says how to regenerate it).

use std::path::PathBuf;

use serde::Deserialize;
use trustgc::metrics::{
    Bootstrap, BracketEnd, CALIBRATION_BINS, Input, MAX_TEMPERATURE, MIN_TEMPERATURE, Metric,
    MetricsError, RowProblem, SampleSet, apply_temperature, aupr_in, aupr_out, auroc,
    calibration_report, detection_report, fit_temperature, fpr_at_95_tpr, roc_curve,
};

/// Relative tolerance against the reference: both sides compute the same sums of a few
/// hundred terms in f64, in different orders (NumPy sums pairwise), so they agree to a
/// few hundred ulps at most; 1e-12 leaves room for that and nothing else.
const RELATIVE: f64 = 1e-12;

#[derive(Deserialize)]
struct Expected {
    generator: String,
    detection: Vec<DetectionCase>,
    calibration: Vec<CalibrationCase>,
    temperature: Vec<TemperatureCase>,
}

#[derive(Deserialize)]
struct DetectionCase {
    name: String,
    in_scores: Vec<f64>,
    out_scores: Vec<f64>,
    auroc: f64,
    aupr_in: f64,
    aupr_out: f64,
    fpr_at_95_tpr: f64,
    roc_thresholds: Vec<f64>,
    roc_fpr: Vec<f64>,
    roc_tpr: Vec<f64>,
}

#[derive(Deserialize)]
struct CalibrationCase {
    name: String,
    n_classes: usize,
    probs: Vec<f64>,
    labels: Vec<usize>,
    accuracy: f64,
    ece: f64,
    adaptive_ece: f64,
    mce: f64,
    classwise_ece: f64,
    nll: f64,
    brier: f64,
    reliability: Vec<ExpectedBin>,
}

#[derive(Deserialize)]
struct ExpectedBin {
    count: usize,
    mean_confidence: Option<f64>,
    accuracy: Option<f64>,
}

#[derive(Deserialize)]
struct TemperatureCase {
    name: String,
    n_classes: usize,
    logits: Vec<f64>,
    labels: Vec<usize>,
    temperature: f64,
}

fn expected() -> Expected {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/metrics/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let expected: Expected = serde_json::from_str(&text).expect("expected.json");
    assert!(
        expected.generator.contains("scikit-learn"),
        "{}",
        expected.generator
    );
    expected
}

#[track_caller]
fn assert_close(actual: f64, expected: f64, relative: f64, what: &str) {
    let error = (actual - expected).abs();
    assert!(
        error <= relative * actual.abs().max(expected.abs()),
        "{what}: {actual} vs reference {expected} (error {error:e}, allowed {relative:e} relative)"
    );
}

#[test]
fn detection_matches_scikit_learn() {
    let expected = expected();
    assert!(expected.detection.len() >= 8);
    for case in &expected.detection {
        let name = &case.name;
        let report = detection_report(&case.in_scores, &case.out_scores, None).unwrap();
        assert_eq!(
            (report.n_in, report.n_out),
            (case.in_scores.len(), case.out_scores.len())
        );
        assert!(report.ci.is_none());
        assert_close(report.auroc, case.auroc, RELATIVE, &format!("{name} auroc"));
        assert_close(
            report.aupr_in,
            case.aupr_in,
            RELATIVE,
            &format!("{name} aupr_in"),
        );
        assert_close(
            report.aupr_out,
            case.aupr_out,
            RELATIVE,
            &format!("{name} aupr_out"),
        );
        // A ratio of two counts, computed identically on both sides.
        assert_eq!(report.fpr_at_95_tpr, case.fpr_at_95_tpr, "{name} fpr@95");
        // The single-metric functions agree with the report.
        let (scores_in, scores_out) = (&case.in_scores[..], &case.out_scores[..]);
        assert_eq!(auroc(scores_in, scores_out).unwrap(), report.auroc);
        assert_eq!(aupr_in(scores_in, scores_out).unwrap(), report.aupr_in);
        assert_eq!(aupr_out(scores_in, scores_out).unwrap(), report.aupr_out);
        assert_eq!(
            fpr_at_95_tpr(scores_in, scores_out).unwrap(),
            report.fpr_at_95_tpr
        );
    }
}

#[test]
fn roc_curve_matches_scikit_learn() {
    for case in &expected().detection {
        let curve = roc_curve(&case.in_scores, &case.out_scores).unwrap();
        assert_eq!(curve.len(), case.roc_fpr.len(), "{}", case.name);
        assert_eq!(curve[0].threshold, f64::INFINITY);
        for (i, point) in curve.iter().enumerate() {
            // Exact: the same count divided by the same total.
            assert_eq!(point.fpr, case.roc_fpr[i], "{} fpr[{i}]", case.name);
            assert_eq!(point.tpr, case.roc_tpr[i], "{} tpr[{i}]", case.name);
            if i > 0 {
                assert_eq!(
                    point.threshold,
                    case.roc_thresholds[i - 1],
                    "{} threshold[{i}]",
                    case.name
                );
            }
        }
        let last = curve.last().unwrap();
        assert_eq!((last.fpr, last.tpr), (1.0, 1.0));
    }
}

#[test]
fn calibration_matches_reference() {
    let expected = expected();
    assert!(expected.calibration.len() >= 4);
    for case in &expected.calibration {
        let name = &case.name;
        let report = calibration_report(&case.probs, case.n_classes, &case.labels).unwrap();
        assert_eq!(
            (report.n_samples, report.n_classes),
            (case.labels.len(), case.n_classes)
        );
        assert_close(
            report.accuracy,
            case.accuracy,
            RELATIVE,
            &format!("{name} accuracy"),
        );
        assert_close(report.ece, case.ece, RELATIVE, &format!("{name} ece"));
        assert_close(
            report.adaptive_ece,
            case.adaptive_ece,
            RELATIVE,
            &format!("{name} adaptive_ece"),
        );
        assert_close(report.mce, case.mce, RELATIVE, &format!("{name} mce"));
        assert_close(
            report.classwise_ece,
            case.classwise_ece,
            RELATIVE,
            &format!("{name} classwise_ece"),
        );
        assert_close(report.nll, case.nll, RELATIVE, &format!("{name} nll"));
        assert_close(report.brier, case.brier, RELATIVE, &format!("{name} brier"));
        assert_eq!(report.reliability.len(), CALIBRATION_BINS);
        for (i, (bin, reference)) in report.reliability.iter().zip(&case.reliability).enumerate() {
            assert_eq!(bin.count, reference.count, "{name} bin {i} count");
            assert_eq!(bin.lower, i as f64 / 15.0);
            assert_eq!(bin.upper, (i + 1) as f64 / 15.0);
            for (actual, reference, what) in [
                (
                    bin.mean_confidence,
                    reference.mean_confidence,
                    "mean confidence",
                ),
                (bin.accuracy, reference.accuracy, "accuracy"),
            ] {
                match (actual, reference) {
                    (Some(actual), Some(reference)) => assert_close(
                        actual,
                        reference,
                        RELATIVE,
                        &format!("{name} bin {i} {what}"),
                    ),
                    (actual, reference) => assert_eq!(actual, reference, "{name} bin {i} {what}"),
                }
            }
        }
    }
}

#[test]
fn temperature_matches_scipy() {
    for case in &expected().temperature {
        let fitted = fit_temperature(&case.logits, case.n_classes, &case.labels).unwrap();
        // SciPy's bounded Brent search stops within about sqrt(machine epsilon) of the
        // minimum in log T (a flat minimum limits any search on the function's values);
        // ours solves dNLL/dβ = 0 to machine precision. 1e-6 covers SciPy's side.
        assert_close(
            fitted,
            case.temperature,
            1e-6,
            &format!("{} temperature", case.name),
        );
    }
}

#[test]
fn auroc_of_ties_and_separations() {
    // Identical distributions made of ties: every pair is a tie or balanced.
    assert_eq!(auroc(&[0.3; 10], &[0.3; 7]).unwrap(), 0.5);
    assert_eq!(
        auroc(&[1.0, 2.0, 2.0, 3.0], &[3.0, 2.0, 1.0, 2.0]).unwrap(),
        0.5
    );
    // Perfect separation, either way.
    assert_eq!(auroc(&[2.0, 3.0, 2.5], &[1.0, 0.0]).unwrap(), 1.0);
    assert_eq!(auroc(&[1.0, 0.0], &[2.0, 3.0, 2.5]).unwrap(), 0.0);
    // -0.0 and 0.0 are one score.
    assert_eq!(auroc(&[0.0], &[-0.0]).unwrap(), 0.5);
    // One tie among four pairs.
    assert_eq!(auroc(&[1.0, 2.0], &[1.0, 0.0]).unwrap(), 3.5 / 4.0);
}

#[test]
fn fpr_at_95_tpr_counts_ties_against_the_detector() {
    // 20 in-distribution scores 1..=20: t* = 2 accepts 19 of them (95 %).
    let in_scores: Vec<f64> = (1..=20).map(f64::from).collect();
    // OoD scores at t* are accepted, below it rejected.
    assert_eq!(
        fpr_at_95_tpr(&in_scores, &[2.0, 1.5, 1.0, 0.0]).unwrap(),
        0.25
    );
    // 19 in-distribution scores: 95 % of 19 is 18.05, so t* must accept all 19.
    assert_eq!(
        fpr_at_95_tpr(&in_scores[1..], &[2.0, 1.5, 1.0, 0.0]).unwrap(),
        0.25
    );
    assert_eq!(
        fpr_at_95_tpr(&in_scores[1..], &[2.5, 1.99, 1.0, 0.0]).unwrap(),
        0.25
    );
    // Tied in-distribution scores at the threshold are all accepted (TPR 100 % here).
    assert_eq!(fpr_at_95_tpr(&[1.0; 20], &[1.0, 0.5]).unwrap(), 0.5);
}

fn near_ood() -> DetectionCase {
    expected()
        .detection
        .into_iter()
        .find(|case| case.name == "near_ood")
        .expect("near_ood case")
}

#[test]
fn bootstrap_intervals_are_deterministic_and_contain_the_estimate() {
    let case = near_ood();
    let report = detection_report(
        &case.in_scores,
        &case.out_scores,
        Some(Bootstrap::with_seed(7)),
    )
    .unwrap();
    let ci = report.ci.expect("asked for");
    assert_eq!(ci.level, 0.95);
    assert_eq!(
        ci.bootstrap,
        Bootstrap {
            resamples: 1000,
            seed: 7
        }
    );
    for (interval, estimate, name) in [
        (ci.auroc, report.auroc, "auroc"),
        (ci.aupr_in, report.aupr_in, "aupr_in"),
        (ci.aupr_out, report.aupr_out, "aupr_out"),
        (ci.fpr_at_95_tpr, report.fpr_at_95_tpr, "fpr@95"),
    ] {
        assert!(
            interval.contains(estimate),
            "{name}: {estimate} outside {interval:?}"
        );
        assert!(
            0.0 <= interval.low && interval.high <= 1.0,
            "{name}: {interval:?}"
        );
        // 250 + 250 samples: a real spread, neither nothing nor everything.
        let width = interval.high - interval.low;
        assert!((0.01..0.5).contains(&width), "{name}: width {width}");
    }
    // The standard error of this AUROC is about 0.024 (Hanley and McNeil), so a 95 %
    // interval is about 0.09 wide.
    let width = ci.auroc.high - ci.auroc.low;
    assert!(
        (0.06..0.13).contains(&width),
        "auroc interval width {width}"
    );

    // Same seed, same intervals; another seed, other intervals.
    let again = detection_report(
        &case.in_scores,
        &case.out_scores,
        Some(Bootstrap::with_seed(7)),
    )
    .unwrap();
    assert_eq!(again, report);
    let other = detection_report(
        &case.in_scores,
        &case.out_scores,
        Some(Bootstrap::with_seed(8)),
    )
    .unwrap();
    assert_eq!(
        (other.auroc, other.fpr_at_95_tpr),
        (report.auroc, report.fpr_at_95_tpr)
    );
    assert_ne!(other.ci, report.ci);
}

#[test]
fn bootstrap_of_perfect_separation_is_certain() {
    let in_scores: Vec<f64> = (0..30).map(|i| 20.0 + f64::from(i)).collect();
    let out_scores: Vec<f64> = (0..20).map(f64::from).collect();
    let bootstrap = Bootstrap {
        resamples: 200,
        seed: 1,
    };
    let report = detection_report(&in_scores, &out_scores, Some(bootstrap)).unwrap();
    let ci = report.ci.unwrap();
    for interval in [ci.auroc, ci.aupr_in, ci.aupr_out] {
        assert_eq!((interval.low, interval.high), (1.0, 1.0));
    }
    assert_eq!((ci.fpr_at_95_tpr.low, ci.fpr_at_95_tpr.high), (0.0, 0.0));
}

#[test]
fn report_serializes() {
    let report = detection_report(&[1.0, 2.0], &[0.0, 1.5], Some(Bootstrap::default())).unwrap();
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["auroc"], 0.75);
    assert_eq!(json["n_in"], 2);
    assert!(json["ci"]["auroc"]["low"].is_number());
    assert_eq!(json["ci"]["bootstrap"]["resamples"], 1000);
}

// SplitMix64, for synthetic data.
use trustgc::core::rng::SplitMix64 as Rng;

/// `n` rows of `k` logits uniform in [-4, 4], and labels drawn from
/// softmax(logits / temperature).
fn synthetic(n: usize, k: usize, temperature: f64, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let mut rng = Rng(seed);
    let logits: Vec<f64> = (0..n * k).map(|_| 8.0 * rng.uniform() - 4.0).collect();
    let probs = apply_temperature(&logits, k, temperature).unwrap();
    let labels = probs
        .chunks_exact(k)
        .map(|row| {
            let u = rng.uniform();
            let mut cumulative = 0.0;
            row.iter()
                .position(|&p| {
                    cumulative += p;
                    u < cumulative
                })
                .unwrap_or(k - 1)
        })
        .collect();
    (logits, labels)
}

fn nll(logits: &[f64], k: usize, labels: &[usize], temperature: f64) -> f64 {
    let probs = apply_temperature(logits, k, temperature).unwrap();
    calibration_report(&probs, k, labels).unwrap().nll
}

#[test]
fn temperature_scaling_recovers_the_temperature() {
    for (t_true, seed) in [(0.5, 1), (1.0, 2), (2.5, 3)] {
        let (logits, labels) = synthetic(20_000, 5, t_true, seed);
        let fitted = fit_temperature(&logits, 5, &labels).unwrap();
        // 20 000 samples pin β = 1/T to about ±1.5 % (one standard error is under 0.6 %
        // for these logits); 5 % is a wide margin that a wrong fit still cannot meet.
        assert_close(
            fitted,
            t_true,
            0.05,
            &format!("temperature of data drawn at T = {t_true}"),
        );
        // The fit is the minimum of the empirical NLL, whatever the noise.
        let at_fit = nll(&logits, 5, &labels, fitted);
        for factor in [0.999, 1.001] {
            assert!(
                at_fit < nll(&logits, 5, &labels, fitted * factor),
                "T = {t_true}: not a minimum"
            );
        }
        assert!(at_fit <= nll(&logits, 5, &labels, t_true));
    }
}

#[test]
fn apply_temperature_gives_distributions() {
    let logits = [1.0, 2.0, 3.0, 1e300, -1e300, 0.0];
    let probs = apply_temperature(&logits, 3, 1.0).unwrap();
    let softmax: Vec<f64> = {
        let exps: Vec<f64> = logits[..3].iter().map(|z| z.exp()).collect();
        let sum: f64 = exps.iter().sum();
        exps.iter().map(|e| e / sum).collect()
    };
    for (p, q) in probs[..3].iter().zip(&softmax) {
        assert_close(*p, *q, 1e-15, "softmax");
    }
    assert_eq!(&probs[3..], &[1.0, 0.0, 0.0]);
    // A tiny temperature neither overflows nor gives NaN: the arg max takes everything.
    let sharp = apply_temperature(&logits[..3], 3, 1e-300).unwrap();
    assert_eq!(sharp, vec![0.0, 0.0, 1.0]);
    // A huge one flattens.
    let flat = apply_temperature(&logits[..3], 3, 1e300).unwrap();
    for p in flat {
        assert_close(p, 1.0 / 3.0, 1e-15, "flat");
    }
    assert_eq!(apply_temperature(&[], 4, 2.0).unwrap(), Vec::<f64>::new());
}

/// 15 two-class rows, for error tests.
fn rows() -> (Vec<f64>, Vec<usize>) {
    let probs = (0..15)
        .flat_map(|i| [0.9 - f64::from(i) * 0.05, 0.1 + f64::from(i) * 0.05])
        .collect();
    (probs, vec![0; 15])
}

#[test]
fn detection_errors() {
    assert_eq!(
        detection_report(&[], &[1.0], None),
        Err(MetricsError::Empty {
            set: SampleSet::InDistribution
        })
    );
    assert_eq!(
        auroc(&[1.0], &[]),
        Err(MetricsError::Empty {
            set: SampleSet::OutOfDistribution
        })
    );
    let nan = detection_report(&[1.0, 2.0, f64::NAN], &[0.0], None).unwrap_err();
    assert!(matches!(
        nan,
        MetricsError::NonFiniteScore { set: SampleSet::InDistribution, index: 2, value } if value.is_nan()
    ));
    assert!(
        nan.to_string().contains("in-distribution score 2 is NaN"),
        "{nan}"
    );
    assert_eq!(
        roc_curve(&[1.0], &[0.0, f64::NEG_INFINITY]),
        Err(MetricsError::NonFiniteScore {
            set: SampleSet::OutOfDistribution,
            index: 1,
            value: f64::NEG_INFINITY
        })
    );
    assert_eq!(
        fpr_at_95_tpr(&[f64::INFINITY], &[0.0]).unwrap_err(),
        MetricsError::NonFiniteScore {
            set: SampleSet::InDistribution,
            index: 0,
            value: f64::INFINITY
        }
    );
    // Without a bootstrap one score per set is enough; with one, it is not.
    assert_eq!(detection_report(&[1.0], &[0.0], None).unwrap().auroc, 1.0);
    let too_few = detection_report(&[1.0, 2.0], &[0.0], Some(Bootstrap::default())).unwrap_err();
    assert_eq!(
        too_few,
        MetricsError::TooFew {
            metric: Metric::Bootstrap,
            set: SampleSet::OutOfDistribution,
            len: 1,
            needed: 2
        }
    );
    assert!(too_few.to_string().contains("bootstrap"), "{too_few}");
    for resamples in [0, 1] {
        assert_eq!(
            detection_report(
                &[1.0, 2.0],
                &[0.0, 3.0],
                Some(Bootstrap { resamples, seed: 0 })
            ),
            Err(MetricsError::Resamples { resamples })
        );
    }
}

#[test]
fn calibration_errors() {
    let (probs, labels) = rows();
    assert!(calibration_report(&probs, 2, &labels).is_ok());
    assert_eq!(
        calibration_report(&probs, 0, &labels),
        Err(MetricsError::TooFewClasses {
            n_classes: 0,
            needed: 1
        })
    );
    assert_eq!(
        calibration_report(&[], 2, &[]),
        Err(MetricsError::Empty {
            set: SampleSet::Labelled
        })
    );
    assert_eq!(
        calibration_report(&probs[1..], 2, &labels),
        Err(MetricsError::Ragged {
            input: Input::Probabilities,
            len: 29,
            n_classes: 2
        })
    );
    assert_eq!(
        calibration_report(&probs[2..], 2, &labels),
        Err(MetricsError::LengthMismatch {
            input: Input::Probabilities,
            rows: 14,
            labels: 15
        })
    );
    assert_eq!(
        calibration_report(&probs[2..], 2, &labels[1..]),
        Err(MetricsError::TooFew {
            metric: Metric::AdaptiveEce,
            set: SampleSet::Labelled,
            len: 14,
            needed: 15
        })
    );
    let mut bad_labels = labels.clone();
    bad_labels[4] = 2;
    assert_eq!(
        calibration_report(&probs, 2, &bad_labels),
        Err(MetricsError::LabelOutOfRange {
            index: 4,
            label: 2,
            n_classes: 2
        })
    );
    for (class_value, problem) in [
        (f64::NAN, None),
        (
            -0.1,
            Some(RowProblem::Negative {
                class: 1,
                value: -0.1,
            }),
        ),
        (0.3, Some(RowProblem::Sum { sum: 1.05 })),
    ] {
        let mut bad = probs.clone();
        bad[7] = class_value; // row 3, class 1 (row 3 is [0.75, 0.25])
        let error = calibration_report(&bad, 2, &labels).unwrap_err();
        match (error, problem) {
            (
                MetricsError::NotADistribution {
                    index: 3,
                    problem: actual,
                },
                Some(expected),
            ) => {
                if let (RowProblem::Sum { sum }, RowProblem::Sum { sum: want }) = (actual, expected)
                {
                    assert_close(sum, want, 1e-12, "row sum");
                } else {
                    assert_eq!(actual, expected);
                }
            }
            (
                MetricsError::NotADistribution {
                    index: 3,
                    problem: RowProblem::NotFinite { class: 1, value },
                },
                None,
            ) => assert!(value.is_nan()),
            (error, _) => panic!("unexpected {error:?}"),
        }
    }
    // Off by less than the tolerance is fine.
    let mut nearly = probs.clone();
    nearly[7] += 0.0009;
    assert!(calibration_report(&nearly, 2, &labels).is_ok());
    let error = MetricsError::NotADistribution {
        index: 3,
        problem: RowProblem::Sum { sum: 1.2 },
    };
    assert!(
        error.to_string().contains("row 3") && error.to_string().contains("0.001"),
        "{error}"
    );
}

#[test]
fn nll_of_an_impossible_label_is_infinite() {
    let (mut probs, labels) = rows();
    probs[0] = 0.0; // sample 0, label 0
    probs[1] = 1.0;
    assert_eq!(
        calibration_report(&probs, 2, &labels).unwrap().nll,
        f64::INFINITY
    );
}

#[test]
fn temperature_errors() {
    let (logits, labels) = synthetic(50, 3, 1.0, 9);
    assert!(fit_temperature(&logits, 3, &labels).is_ok());
    assert_eq!(
        fit_temperature(&logits[..50], 1, &labels),
        Err(MetricsError::TooFewClasses {
            n_classes: 1,
            needed: 2
        })
    );
    assert_eq!(
        fit_temperature(&[], 3, &[]),
        Err(MetricsError::Empty {
            set: SampleSet::Labelled
        })
    );
    assert_eq!(
        fit_temperature(&logits[1..], 3, &labels),
        Err(MetricsError::Ragged {
            input: Input::Logits,
            len: 149,
            n_classes: 3
        })
    );
    assert_eq!(
        fit_temperature(&logits, 3, &labels[1..]),
        Err(MetricsError::LengthMismatch {
            input: Input::Logits,
            rows: 50,
            labels: 49
        })
    );
    let mut bad_labels = labels.clone();
    bad_labels[10] = 3;
    assert_eq!(
        fit_temperature(&logits, 3, &bad_labels),
        Err(MetricsError::LabelOutOfRange {
            index: 10,
            label: 3,
            n_classes: 3
        })
    );
    let mut bad = logits.clone();
    bad[3 * 6 + 2] = f64::INFINITY;
    assert_eq!(
        fit_temperature(&bad, 3, &labels),
        Err(MetricsError::NonFiniteLogit {
            index: 6,
            class: 2,
            value: f64::INFINITY
        })
    );
    assert_eq!(
        apply_temperature(&bad, 3, 1.0),
        Err(MetricsError::NonFiniteLogit {
            index: 6,
            class: 2,
            value: f64::INFINITY
        })
    );
    assert_eq!(
        fit_temperature(&[2.0; 30], 3, &[0; 10]),
        Err(MetricsError::ConstantLogits)
    );
    // Every label is the arg max by a margin: sharper is always better.
    let separable: Vec<f64> = (0..10)
        .flat_map(|i| [1.0 + f64::from(i), 0.0, -1.0])
        .collect();
    let error = fit_temperature(&separable, 3, &[0; 10]).unwrap_err();
    assert_eq!(
        error,
        MetricsError::TemperatureAtBound {
            end: BracketEnd::Lower
        }
    );
    assert!(error.to_string().contains("lower"), "{error}");
    // Every label is the arg min: flatter is always better.
    assert_eq!(
        fit_temperature(&separable, 3, &[2; 10]),
        Err(MetricsError::TemperatureAtBound {
            end: BracketEnd::Upper
        })
    );
    assert!(
        error.to_string().contains("[1e-4, 1e8]")
            && (MIN_TEMPERATURE, MAX_TEMPERATURE) == (1e-4, 1e8),
        "{error}"
    );
    for value in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let error = apply_temperature(&logits, 3, value).unwrap_err();
        assert!(
            matches!(error, MetricsError::Temperature { value: v } if v.to_bits() == value.to_bits()),
            "{error:?}"
        );
    }
    assert_eq!(
        apply_temperature(&logits, 0, 1.0),
        Err(MetricsError::TooFewClasses {
            n_classes: 0,
            needed: 1
        })
    );
    assert_eq!(
        apply_temperature(&logits[1..], 3, 1.0),
        Err(MetricsError::Ragged {
            input: Input::Logits,
            len: 149,
            n_classes: 3
        })
    );
}
