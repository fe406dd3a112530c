#!/usr/bin/env bash
# trustgc against its PyTorch peer, side by side: `trustgc bench --preset imagenet` and
# bench_peer.py --preset imagenet, interleaved (trustgc, peer, trustgc, peer, ...) for each
# batch size, then a markdown table of the medians over all timed runs and their ratio.
#
#   benches/peer/setup.sh        # once, by hand: the peer's venv (torch from PyPI)
#   benches/peer/compare.sh      # builds target/release/trustgc if it is missing
#
# Environment (defaults finish in about 5-10 minutes on 2 loaded cores):
#   PEER_BATCHES      batch sizes                          (default "1 8")
#   PEER_ROUNDS       interleaved rounds per batch size    (default 3)
#   PEER_RUNS         timed runs per invocation            (default 3)
#   PEER_WARMUP       untimed runs per invocation          (default 1)
#   PEER_THREADS      the peer's configurations, each timed as its own peer: a torch
#                     thread count, with a "p" for OMP_WAIT_POLICY=PASSIVE (default
#                     "2 2p 1": on a loaded machine the OpenMP threads' default spinning
#                     at every operator's barrier takes the CPU the other thread needs,
#                     and two threads can be slower than one)
#   PEER_PRESET       imagenet or mini                     (default imagenet)
#   PEER_FULL_FORWARD 1: also time the peer with the original code's head, which forms
#                     mu_conv = mu_t @ mu_m on every call, at the first thread count
#                     (default 0)
#   PEER_NICE         niceness of both                     (default 10)
#   TRUSTGC_BIN       the trustgc binary                   (default target/release/trustgc)
#   PEER_PYTHON       the peer's Python                    (default benches/peer/.venv/bin/python)
#   PEER_LOG_DIR      where the per-run lines go           (default a new temporary folder)
# The binary is copied into the log folder before the first run (and removed at the end),
# so that a rebuild during the comparison does not mix two versions.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
batches=${PEER_BATCHES:-"1 8"}
rounds=${PEER_ROUNDS:-3}
runs=${PEER_RUNS:-3}
warmup=${PEER_WARMUP:-1}
threads=${PEER_THREADS:-"2 2p 1"}
preset=${PEER_PRESET:-imagenet}
full=${PEER_FULL_FORWARD:-0}
niceness=${PEER_NICE:-10}
bin=${TRUSTGC_BIN:-$repo/target/release/trustgc}
py=${PEER_PYTHON:-$here/.venv/bin/python}
logs=${PEER_LOG_DIR:-$(mktemp -d /tmp/trustgc-peer-compare.XXXXXX)}
mkdir -p "$logs"

if [ ! -x "$py" ]; then
    echo "compare.sh: no peer Python at $py; run benches/peer/setup.sh first (it downloads torch)" >&2
    exit 1
fi
if [ ! -x "$bin" ]; then
    echo "compare.sh: building $bin" >&2
    (cd "$repo" && cargo build --release -p trustgc-cli)
fi
snapshot="$logs/trustgc"
cp -p "$bin" "$snapshot"
trap 'rm -f "$snapshot"' EXIT

commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$repo" status --porcelain --untracked-files=no -- crates Cargo.toml Cargo.lock 2>/dev/null | wc -l)
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "host: $(nproc) cores, $(uname -m), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "trustgc: $bin, built $(date -u -r "$bin" '+%Y-%m-%d %H:%M:%S UTC'), HEAD $commit with $dirty modified tracked file(s) under crates/ or Cargo.*"
    echo "peer: $("$py" -c 'import torch; print(f"torch {torch.__version__} (CUDA build {torch.version.cuda is not None}), {torch.get_num_threads()} default threads")') timed at [$threads] thread(s)"
    echo "plan: preset $preset, batches [$batches], $rounds interleaved rounds x ($warmup warm-up + $runs timed runs) per tool"
} | tee "$logs/header.txt"

results="$logs/results.jsonl"
: >"$results"

# run LABEL BATCH COMMAND...: runs the command, appends its last stdout line (the JSON
# object) tagged with LABEL to results.jsonl, keeps the per-run lines in a log.
run() {
    local label=$1 batch=$2
    shift 2
    local log="$logs/$label-b$batch.log"
    echo "== $label, batch $batch ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))" >>"$log"
    local json
    json=$(nice -n "$niceness" "$@" 2>>"$log" | tail -n 1)
    echo "$json" >>"$log"
    "$py" - "$label" "$json" "$results" <<'PY'
import json, sys
label, text, results = sys.argv[1:4]
r = json.loads(text)
r["label"] = label
with open(results, "a") as f:
    f.write(json.dumps(r) + "\n")
print(f"  {label:<20} batch {r['batch']}: {r['ms_per_image']:8.1f} ms/image, peak RSS {r['peak_rss_mb']:.0f} MB",
      file=sys.stderr)
PY
}

for batch in $batches; do
    for round in $(seq 1 "$rounds"); do
        echo "batch $batch, round $round/$rounds" >&2
        run trustgc "$batch" "$snapshot" bench --preset "$preset" --batch "$batch" --runs "$runs" \
            --warmup "$warmup" --json
        first=1
        for t in $threads; do
            policy=()
            if [ "${t%p}" != "$t" ]; then
                policy=(--omp-wait-policy passive)
            fi
            run "peer-t$t" "$batch" "$py" "$here/bench_peer.py" --preset "$preset" --batch "$batch" \
                --runs "$runs" --warmup "$warmup" --threads "${t%p}" "${policy[@]}" --json
            if [ "$full" = 1 ] && [ "$first" = 1 ]; then
                run "peer-original-head-t$t" "$batch" "$py" "$here/bench_peer.py" --preset "$preset" \
                    --batch "$batch" --runs "$runs" --warmup "$warmup" --threads "${t%p}" "${policy[@]}" \
                    --full-forward --json
            fi
            first=0
        done
    done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$logs/header.txt"
echo "per-run lines and JSON: $logs" >&2
echo
"$py" - "$results" <<'PY'
import json
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    rows[(r["label"], r["batch"])].append(r)


def agg(rs):
    """Median ms/image over every timed run of every round, the largest peak RSS."""
    batch = rs[0]["batch"]
    ms = [m / batch for r in rs for m in r["run_ms"]]
    gflop = rs[0]["gflop_per_batch"] / batch
    peaks = [r["peak_rss_mb"] for r in rs if r["peak_rss_mb"] is not None]
    return {
        "ms": statistics.median(ms),
        "min": min(ms),
        "n": len(ms),
        "gflops": gflop / (statistics.median(ms) / 1e3),
        "rss": max(peaks) if peaks else float("nan"),
        "gflop": gflop,
        "import_rss": max((r.get("rss_after_import_mb") or 0) for r in rs),
    }


def describe(label):
    if label == "trustgc":
        return "trustgc"
    config = label.rsplit("-t", 1)[1]
    threads = config.rstrip("p")
    what = "peer, original head" if label.startswith("peer-original-head") else "peer"
    passive = ", OMP_WAIT_POLICY=PASSIVE" if config.endswith("p") else ""
    return f"{what}, {threads} thread{'s' if threads != '1' else ''}{passive}"


def order(label):
    """trustgc first, then the peers by falling thread count, the original head last."""
    if label == "trustgc":
        return (0, False, 0)
    config = label.rsplit("-t", 1)[1]
    return (1, label.startswith("peer-original-head"), -int(config.rstrip("p")), config)


batches = sorted({b for _, b in rows})
labels = sorted({label for label, _ in rows}, key=order)
head = ["batch", "implementation", "ms/image: median (min)", "ms/image vs trustgc: median (min)",
        "GFLOP/s (median)", "peak RSS MB"]
print("| " + " | ".join(head) + " |")
print("|" + " --- |" * len(head))
for b in batches:
    ours = agg(rows[("trustgc", b)])
    for label in labels:
        if (label, b) not in rows:
            continue
        r = agg(rows[(label, b)])
        if abs(ours["gflop"] - r["gflop"]) > 1e-6 * ours["gflop"]:
            print(f"warning: FLOP counts differ: trustgc {ours['gflop']:.6f}, {label} {r['gflop']:.6f} GFLOP/image")
        ratio = "" if label == "trustgc" else f"{r['ms'] / ours['ms']:.2f}x ({r['min'] / ours['min']:.2f}x)"
        rss = f"{r['rss']:.0f}" + ("" if label == "trustgc" else f" ({r['import_rss']:.0f} after import torch)")
        cells = [str(b), describe(label), f"{r['ms']:.1f} ({r['min']:.1f}), n={r['n']}", ratio,
                 f"{r['gflops']:.1f}", rss]
        print("| " + " | ".join(cells) + " |")
print()
print(f"ms/image: median (min) over all timed runs of all rounds; a ratio > 1: trustgc is faster by that factor. "
      f"GFLOP/s on the analytic count ({ours['gflop']:.3f} GFLOP/image, trustgc_core::flops). "
      f"Peak RSS: VmHWM reset before each run, the largest run; it includes the peer's RSS right after "
      f"`import torch` (shown in parentheses).")
PY
