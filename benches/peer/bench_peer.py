"""Times the PyTorch peer's forward the way `trustgc bench` times trustgc's.

    benches/peer/.venv/bin/python benches/peer/bench_peer.py --preset imagenet --batch 1 \\
        [--runs 5] [--warmup 1] [--threads 2] [--omp-wait-policy passive] [--full-forward] \\
        [--seed 0] [--json]

What is timed, per run: `gc_peer.Model.likelihoods` on a fresh batch of N(0, 1) inputs
made before the run (untimed): the finiteness check of the input, the flow, the low-rank
head with class norms computed once at load time, class log-likelihoods, the log-marginal
likelihood, posteriors and per-dimension class distances, read back as numpy arrays; the
work of trustgc's `Classifier::likelihoods_tensor`. With --full-forward the head is the
original code's instead (mu_conv = mu_t @ mu_m formed on every call). Weights are random
(gc_peer.random_state_dict) at the preset's size; BatchNorm in eval mode; no autograd
(torch.inference_mode).

Figures, as `trustgc bench`: milliseconds per image and images per second of the median
run; GFLOP/s from the same analytic FLOP count (gc_peer.flops_per_image, the count of
trustgc_core::flops, also with --full-forward); peak resident memory per run as VmHWM of
/proc/self/status reset before each run through /proc/self/clear_refs (what trustgc
does; it includes the weights and the torch libraries), the largest over the runs. With
--json the per-run lines go to stderr and stdout's last line is one JSON object with the
keys of `trustgc bench --json` plus a few of the peer's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time


def vm_hwm_mb() -> float | None:
    """Peak resident memory (VmHWM) in MB (10^6 bytes), None without procfs."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def vm_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def ru_maxrss_mb() -> float:
    """The process's lifetime peak (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description="Time the PyTorch peer's forward pass.")
    parser.add_argument("--preset", choices=["imagenet", "mini"], default="imagenet")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument(
        "--omp-wait-policy",
        choices=["active", "passive"],
        help="OMP_WAIT_POLICY for torch's OpenMP threads (default: the environment's, else OpenMP's "
        "default, which spins at every operator's barrier; passive sleeps, which is faster on a loaded machine)",
    )
    parser.add_argument("--full-forward", action="store_true", help="the original code's head: mu_t @ mu_m every call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line of stdout")
    args = parser.parse_args()
    if args.batch < 1 or args.runs < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--batch, --runs and --threads must be >= 1, --warmup >= 0")

    if args.omp_wait_policy:
        # Read by libgomp when torch loads it.
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    rss_start = vm_rss_mb()
    import torch  # noqa: E402

    rss_import = vm_rss_mb()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gc_peer  # noqa: E402

    torch.set_num_threads(args.threads)
    arch = gc_peer.PRESETS[args.preset]
    torch.manual_seed(args.seed)
    sd = gc_peer.random_state_dict(arch, args.seed)
    model = gc_peer.Model.from_state_dict(arch, sd)
    del sd
    rss_loaded = vm_rss_mb()
    flops = gc_peer.flops_per_image(arch) * args.batch
    out = sys.stderr if args.json else sys.stdout

    gen = torch.Generator().manual_seed(args.seed + 1)
    c, h, w = arch.input_shape
    run_ms, run_rss = [], []
    with torch.inference_mode():
        for run in range(args.warmup + args.runs):
            timed = run >= args.warmup
            x = torch.randn(args.batch, c, h, w, generator=gen)
            if timed:
                reset_peak_rss()
            start = time.perf_counter()
            model.likelihoods(x, full_head=args.full_forward)
            ms = (time.perf_counter() - start) * 1e3
            if timed:
                rss = vm_hwm_mb()
                run_ms.append(ms)
                run_rss.append(rss)
                s = ms / 1e3
                rss_text = "unknown" if rss is None else f"{rss:.0f} MB"
                print(
                    f"run {run - args.warmup + 1}/{args.runs}: {ms:.1f} ms/batch, {ms / args.batch:.2f} ms/image, "
                    f"{args.batch / s:.2f} images/s, {flops / 1e9 / s:.2f} GFLOP/s, peak RSS {rss_text}",
                    file=out,
                    flush=True,
                )

    median_ms = statistics.median(run_ms)
    known = [r for r in run_rss if r is not None]
    peak = max(known) if known else None
    seconds = median_ms / 1e3
    head = "original full head" if args.full_forward else "low-rank head"
    summary = (
        f"median of {args.runs} (PyTorch peer likelihoods, {head}, cpu, batch {args.batch}, "
        f"{flops / 1e9 / args.batch:.3f} GFLOP/image): {median_ms:.1f} ms/batch, "
        f"{median_ms / args.batch:.2f} ms/image, {args.batch / seconds:.2f} images/s, "
        f"{flops / 1e9 / seconds:.2f} GFLOP/s, peak RSS {'unknown' if peak is None else f'{peak:.0f} MB'}"
    )
    print(summary, file=out)
    if args.json:
        report = {
            "preset": args.preset,
            "model": None,
            "device": "cpu",
            "train": False,
            "checkpointing": False,
            "batch": args.batch,
            "runs": args.runs,
            "warmup": args.warmup,
            "input_shape": list(arch.input_shape),
            "threads": args.threads,
            "median_ms": median_ms,
            "ms_per_image": median_ms / args.batch,
            "images_per_s": args.batch / seconds,
            "gflop_per_batch": flops / 1e9,
            "gflops_per_s": flops / 1e9 / seconds,
            "peak_rss_mb": peak,
            "run_ms": run_ms,
            "run_peak_rss_mb": run_rss,
            # The peer's own keys.
            "impl": "pytorch-peer",
            "full_forward": args.full_forward,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "torch_version": torch.__version__,
            "torch_cuda_build": torch.version.cuda is not None,
            "rss_before_import_mb": rss_start,
            "rss_after_import_mb": rss_import,
            "rss_after_load_mb": rss_loaded,
            "ru_maxrss_mb": ru_maxrss_mb(),
        }
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
