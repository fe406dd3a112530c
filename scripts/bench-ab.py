#!/usr/bin/env python3
"""Interleaved A/B timing of `trustgc bench` binaries (docs/performance.md).

Usage:

    python3 scripts/bench-ab.py ROUNDS BINARY[,BINARY...] -- BENCH_ARGS...

e.g. `python3 scripts/bench-ab.py 4 /tmp/trustgc-before,target/release/trustgc --
--preset fashion-mnist --train --batch 64 --runs 3`.

Each round runs every binary once, in the given order, with `bench BENCH_ARGS --json`, so
that a slow phase of a shared machine hits all binaries alike. For each binary it prints
the minimum, median and maximum milliseconds per image over all timed runs of all rounds,
the images per second at the median and at the minimum, and the median peak RSS.
"""
import json
import statistics
import subprocess
import sys


def main() -> None:
    if len(sys.argv) < 4 or "--" not in sys.argv:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    binaries = sys.argv[2].split(",")
    bench_args = sys.argv[sys.argv.index("--") + 1 :]
    per_image = {b: [] for b in binaries}
    rss = {b: [] for b in binaries}
    for _ in range(rounds):
        for binary in binaries:
            run = subprocess.run(
                [binary, "bench", *bench_args, "--json"], capture_output=True, text=True
            )
            if run.returncode != 0:
                sys.exit(f"{binary} failed:\n{run.stderr[-2000:]}")
            summary = json.loads(run.stdout.strip().splitlines()[-1])
            per_image[binary] += [ms / summary["batch"] for ms in summary["run_ms"]]
            rss[binary] += [mb for mb in summary["run_peak_rss_mb"] if mb is not None]
    for binary in binaries:
        times = sorted(per_image[binary])
        median = statistics.median(times)
        peak = f"{statistics.median(rss[binary]):.0f} MB" if rss[binary] else "n/a"
        print(
            f"{binary}: ms/image min {times[0]:.1f} median {median:.1f} max {times[-1]:.1f} "
            f"(n={len(times)}); images/s {1000 / median:.1f} at the median, "
            f"{1000 / times[0]:.1f} best; peak RSS median {peak}"
        )


if __name__ == "__main__":
    main()
