"""Writes expected.json: inputs and reference values for crates/trustgc/tests/metrics.rs.

The detection metrics come from scikit-learn, the NLL from scikit-learn's log_loss, the
fitted temperature from SciPy; the calibration errors (ECE, adaptive ECE, MCE, classwise
ECE), the Brier score and the reliability diagram from the plain NumPy code below, which
follows the definitions documented in crates/trustgc/src/metrics.rs (bin edges i/15, bins
(lo, hi], 0 in the first bin; equal-mass bins by a stable sort and np.array_split).

Run from the repository root (any recent NumPy / scikit-learn / SciPy):

    python3 -m venv /tmp/skenv && /tmp/skenv/bin/pip install scikit-learn numpy scipy
    /tmp/skenv/bin/python crates/trustgc/tests/data/metrics/make_expected.py

The output is deterministic for given library versions (recorded in the file).
"""

import json
import os

import numpy as np
import scipy
import sklearn
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import accuracy_score, average_precision_score, log_loss, roc_auc_score, roc_curve

BINS = 15
# Bin edges i/15, each the correctly rounded quotient (np.linspace computes i * (1/15),
# which can differ in the last bit; the Rust code uses i as f64 / 15.0).
EDGES = np.arange(BINS + 1, dtype=np.float64) / BINS
TPR_TARGET = 0.95

rng = np.random.default_rng(20250613)


def detection_case(name, scores_in, scores_out):
    scores_in = np.asarray(scores_in, dtype=np.float64)
    scores_out = np.asarray(scores_out, dtype=np.float64)
    scores = np.concatenate([scores_in, scores_out])
    is_in = np.concatenate([np.ones(len(scores_in)), np.zeros(len(scores_out))]).astype(int)
    # In-distribution is the positive class of the ROC curve: accepted = score >= threshold.
    fpr, tpr, thresholds = roc_curve(is_in, scores, drop_intermediate=False)
    # The first operating point with at least 95 % of the in-distribution accepted: the
    # highest threshold that does so (drop_intermediate=False keeps every threshold).
    at = int(np.argmax(tpr >= TPR_TARGET))
    return {
        "name": name,
        "in_scores": scores_in.tolist(),
        "out_scores": scores_out.tolist(),
        "auroc": float(roc_auc_score(is_in, scores)),
        "aupr_in": float(average_precision_score(is_in, scores)),
        "aupr_out": float(average_precision_score(1 - is_in, -scores)),
        "fpr_at_95_tpr": float(fpr[at]),
        # thresholds[0] is +inf (the point (0, 0)), which JSON cannot hold.
        "roc_thresholds": thresholds[1:].tolist(),
        "roc_fpr": fpr.tolist(),
        "roc_tpr": tpr.tolist(),
    }


def bin_of(values):
    """Equal-width bin of each value: bin i is (EDGES[i], EDGES[i+1]], 0 goes to bin 0."""
    index = np.zeros(len(values), dtype=int)
    for i in range(1, BINS):
        index += values > EDGES[i]
    return index


def binned_error(confidence, hit):
    """(sum over bins of n_b/n |acc_b - conf_b|, max over non-empty bins, per-bin rows)."""
    n = len(confidence)
    index = bin_of(confidence)
    ece, mce, rows = 0.0, 0.0, []
    for b in range(BINS):
        mask = index == b
        count = int(mask.sum())
        if count == 0:
            rows.append({"count": 0, "mean_confidence": None, "accuracy": None})
            continue
        mean_confidence = float(np.mean(confidence[mask]))
        accuracy = float(np.mean(hit[mask]))
        gap = abs(accuracy - mean_confidence)
        ece += count / n * gap
        mce = max(mce, gap)
        rows.append({"count": count, "mean_confidence": mean_confidence, "accuracy": accuracy})
    return ece, mce, rows


def calibration_case(name, probs, labels):
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    n, k = probs.shape
    prediction = np.argmax(probs, axis=1)  # the first maximum
    confidence = probs[np.arange(n), prediction]
    hit = (prediction == labels).astype(np.float64)
    ece, mce, rows = binned_error(confidence, hit)
    # Equal-mass bins: a stable sort by confidence, then np.array_split into 15 groups.
    order = np.argsort(confidence, kind="stable")
    adaptive = 0.0
    for group in np.array_split(order, BINS):
        adaptive += len(group) / n * abs(np.mean(hit[group]) - np.mean(confidence[group]))
    one_hot = np.eye(k)[labels]
    classwise = float(np.mean([binned_error(probs[:, c], one_hot[:, c])[0] for c in range(k)]))
    return {
        "name": name,
        "n_classes": k,
        "probs": probs.reshape(-1).tolist(),
        "labels": labels.tolist(),
        "accuracy": float(accuracy_score(labels, prediction)),
        "ece": float(ece),
        "adaptive_ece": float(adaptive),
        "mce": float(mce),
        "classwise_ece": classwise,
        "nll": float(log_loss(labels, probs, labels=list(range(k)))),
        "brier": float(np.mean(np.sum((probs - one_hot) ** 2, axis=1))),
        "reliability": rows,
    }


def sample_labels(probs):
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cumulative[:, -1:]
    return np.minimum((u >= cumulative).sum(axis=1), probs.shape[1] - 1)


def temperature_case(name, n, k, t_true):
    logits = np.round(rng.normal(0.0, 3.0, size=(n, k)), 4)
    labels = sample_labels(softmax(logits / t_true, axis=1))

    def nll(log_t):
        return -np.mean(log_softmax(logits / np.exp(log_t), axis=1)[np.arange(n), labels])

    fit = minimize_scalar(nll, bounds=(np.log(1e-4), np.log(1e8)), method="bounded", options={"xatol": 1e-12})
    return {
        "name": name,
        "n_classes": k,
        "logits": logits.reshape(-1).tolist(),
        "labels": labels.tolist(),
        "temperature": float(np.exp(fit.x)),
    }


detection = [
    detection_case("gaussian_ties", np.round(rng.normal(1.0, 1.0, 300), 1), np.round(rng.normal(0.0, 1.0, 200), 1)),
    detection_case("near_ood", np.round(rng.normal(0.5, 1.0, 250), 4), np.round(rng.normal(0.0, 1.0, 250), 4)),
    detection_case("perfect_separation", np.round(1.0 + rng.random(150), 4), np.round(rng.random(100), 4)),
    detection_case("reversed", np.round(rng.random(120), 4), np.round(2.0 + rng.random(180), 4)),
    detection_case("imbalanced", np.round(rng.normal(2.0, 1.0, 400), 4), np.round(rng.normal(0.0, 1.5, 25), 4)),
    detection_case("identical_integers", rng.integers(0, 5, 300).astype(float), rng.integers(0, 5, 300).astype(float)),
    detection_case("all_tied", np.full(50, 1.0), np.full(40, 1.0)),
    detection_case("tiny", [0.5, 0.2, 0.9], [0.2, 0.1]),
    detection_case("twenty_in", np.arange(20) / 10.0, [0.05, 0.1, 0.15, 0.3, 1.95]),
]

true_logits = rng.normal(0.0, 1.5, size=(300, 4))
true_labels = sample_labels(softmax(true_logits, axis=1))
grid = rng.multinomial(15, [1 / 3] * 3, size=150)
grid_probs = grid / 15.0
calibration = [
    calibration_case("calibrated", softmax(true_logits, axis=1), true_labels),
    calibration_case("overconfident", softmax(3.0 * true_logits, axis=1), true_labels),
    calibration_case("underconfident", softmax(true_logits / 3.0, axis=1), true_labels),
    calibration_case("grid_edges", grid_probs, sample_labels(grid_probs)),
]

temperature = [temperature_case("t_2_5", 400, 5, 2.5), temperature_case("t_0_6", 300, 3, 0.6)]

out = {
    "generator": f"make_expected.py with numpy {np.__version__}, scikit-learn {sklearn.__version__}, scipy {scipy.__version__}",
    "detection": detection,
    "calibration": calibration,
    "temperature": temperature,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "expected.json")
with open(path, "w") as f:
    json.dump(out, f, allow_nan=False, separators=(",", ":"))
    f.write("\n")
print(path, os.path.getsize(path), "bytes")
