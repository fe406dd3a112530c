"""Checks the PyTorch peer (gc_peer.py) against the reference's golden mini data, so that
bench_peer.py times the same computation as `trustgc bench`.

Loads golden/mini/mini.safetensors (the reference's key layout) into the port, runs the
four golden inputs and asserts that every node's output and log-det, z_fc, z_conv, the
total log-det, the logits and the posteriors match golden.safetensors within float32
tolerance; also that the port's random ImageNet weights have exactly the shapes of the
released model's state dict (golden/full/full_keys.txt) and that PermuteRandom's
permutations equal the reference's files. Prints the maximum errors; exits non-zero on a
mismatch.

    benches/peer/.venv/bin/python benches/peer/check_golden.py [--golden DIR]

DIR defaults to $TRUSTGC_GOLDEN, else ../shared/golden beside the repository.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gc_peer  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Tolerances, a few times the float32-vs-float64 difference of the reference itself
# (golden/README.md: z 1.4e-6, log_jac 0.012 on a magnitude of 1.5e5, logits 1.2e-3): the
# port computes in float32 with other summation orders, so it may differ from the golden
# float32 values by about as much as they differ from the float64 ones.
TOL = {
    "z": 1e-5,  # absolute, on values of magnitude ~1-10
    "node": 1e-5,  # relative to the node output's max |value|
    "log_det": 2e-6,  # relative (0.3 on 1.5e5)
    "logits": 5e-3,  # absolute, on logits of magnitude ~250
    "posterior": 2e-3,  # absolute
    "log_posterior": 1e-2,  # absolute (differences of two logits)
}

failures: list[str] = []


def report(name: str, err: float, tol: float, scale: float | None = None) -> None:
    ok = err <= tol
    extra = f" (max |golden| {scale:.4g})" if scale is not None else ""
    print(f"{'ok  ' if ok else 'FAIL'} {name:<38} max err {err:.3e}  tol {tol:.1e}{extra}")
    if not ok:
        failures.append(name)


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def read_ints(path: str) -> np.ndarray:
    with open(path) as f:
        return np.array([int(t) for t in f.read().replace(",", " ").split()], dtype=np.int64)


def check_mini(golden_dir: str) -> None:
    mini = os.path.join(golden_dir, "mini")
    arch = gc_peer.arch_from_reference_config(os.path.join(mini, "config.json"))
    if arch != gc_peer.PRESETS["mini"]:
        failures.append("mini preset")
        print(f"FAIL the mini preset differs from config.json:\n  {gc_peer.PRESETS['mini']}\n  {arch}")
    model = gc_peer.Model.from_safetensors(arch, os.path.join(mini, "mini.safetensors"))
    g = load_numpy(os.path.join(mini, "golden.safetensors"))

    perm = read_ints(os.path.join(mini, "permute_random.txt"))
    report("PermuteRandom permutation (mini)", float(np.abs(model.flow.perm.numpy() - perm).max()), 0)
    dct = dict(model.flow.nodes)[10]
    report("DCT matrix vs 2cos(pi(2n+1)k/2N)", max_abs(dct.w, gc_peer.dct_matrix(7)), 1e-5)

    x = torch.from_numpy(g["x"])
    inter: dict = {}
    with torch.inference_mode():
        z_fc, z_conv, log_det = model.flow(x, inter)
        logits = -0.5 * model.head.distances(z_fc, z_conv)
        full_logits = -0.5 * model.head.distances_full(z_fc, z_conv)
        lik = model.likelihoods(x)

    for n, (out, ld) in sorted(inter.items()):
        key = f"inter.node{n:02d}.out0"
        gold = g[key]
        got = out[0].numpy().reshape(gold.shape)
        scale = float(np.abs(gold).max())
        report(f"node {n:2d} output (sample 0)", max_abs(got, gold) / scale, TOL["node"], scale)
        jkey = f"jac.node{n:02d}"
        if jkey in g:
            gj = g[jkey]
            report(f"node {n:2d} log-det", max_abs(ld, gj) / max(1.0, float(np.abs(gj).max())), TOL["log_det"])

    report("z_fc", max_abs(z_fc, g["z_fc"]), TOL["z"], float(np.abs(g["z_fc"]).max()))
    report("z_conv", max_abs(z_conv, g["z_conv"]), TOL["z"], float(np.abs(g["z_conv"]).max()))
    lj = g["log_jac"]
    report("log-det (relative)", max_abs(log_det, lj) / float(np.abs(lj).max()), TOL["log_det"], float(np.abs(lj).max()))
    report("log-det vs float64 (relative)", max_abs(log_det, g["f64.log_jac"]) / float(np.abs(lj).max()), TOL["log_det"])
    lg = g["logits"]
    lscale = float(np.abs(lg).max())
    report("logits, low-rank head", max_abs(logits, lg), TOL["logits"], lscale)
    report("logits, full mu_conv head", max_abs(full_logits, lg), TOL["logits"])
    report("logits vs float64", max_abs(logits, g["f64.logits"]), TOL["logits"])
    report("likelihoods(): logits", max_abs(lik["logits"], lg), TOL["logits"])
    report("likelihoods(): posterior", max_abs(np.exp(lik["log_posterior"]), g["posterior"]), TOL["posterior"])
    report("likelihoods(): log-posterior", max_abs(lik["log_posterior"], g["log_posterior"]), TOL["log_posterior"])
    argmax = lik["log_posterior"].argmax(1)
    report("argmax class", float((argmax != g["posterior"].argmax(1)).sum()), 0)


def check_full_shapes(golden_dir: str) -> None:
    """The random ImageNet weights have the released state dict's shapes, key for key."""
    path = os.path.join(golden_dir, "full", "full_keys.txt")
    ref = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                ref["inn." + parts[0]] = tuple(int(t) for t in parts[1].strip("[]").split(",") if t.strip())
    sd = gc_peer.random_state_dict(gc_peer.PRESETS["imagenet"])
    # Fixed tensors the port computes instead of reading (Haar kernels, unshuffle kernels,
    # the inverse matrices, BN step counters) are not made by random_state_dict.
    skipped = ("haar_weights", "reshape_kernels", "w_inv", "inv_weight", "num_batches_tracked")
    missing = [k for k in ref if not any(s in k for s in skipped) and not k.endswith(".w") and k not in sd]
    wrong = []
    for k, v in sd.items():
        if k in ("mu", "mu_t", "mu_m"):
            continue
        if k.endswith(".perm"):
            w = ref.get(k[: -len("perm")] + "w")
            if w is None or w[0] != v.shape[0]:
                wrong.append((k, tuple(v.shape), w))
        elif ref.get(k) != tuple(v.shape):
            wrong.append((k, tuple(v.shape), ref.get(k)))
    report(f"ImageNet keys missing ({len(ref)} in full_keys.txt)", float(len(missing)), 0)
    report("ImageNet keys with another shape", float(len(wrong)), 0)
    for k, got, want in (wrong + [(k, None, ref[k]) for k in missing])[:10]:
        print(f"     {k}: port {got}, reference {want}")
    arch = gc_peer.PRESETS["imagenet"]
    shapes = {"mu": (1, arch.n_classes, arch.n_loss_dims), "mu_t": (arch.n_classes, arch.mu_low_rank_k),
              "mu_m": (arch.mu_low_rank_k, arch.conv_dims)}
    report("ImageNet mu shapes", float(sum(tuple(sd[k].shape) != s for k, s in shapes.items())), 0)
    perm = read_ints(os.path.join(golden_dir, "full", "full_permute_random.txt"))
    got = gc_peer.random_permutation(arch.n_loss_dims, arch.permute_seed)
    report("PermuteRandom permutation (ImageNet)", float(np.abs(got - perm).max()), 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get("TRUSTGC_GOLDEN", os.path.join(REPO, "..", "shared", "golden"))
    parser.add_argument("--golden", default=default)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("PEER_THREADS", "2")))
    print(f"torch {torch.__version__}, golden data {os.path.abspath(args.golden)}")
    check_mini(args.golden)
    check_full_shapes(args.golden)
    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
        return 1
    print("all checks passed: the peer computes the reference's forward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
