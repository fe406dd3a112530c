#!/usr/bin/env bash
# The GPU path, run for real (issue 11, item 4; docs/performance.md): on a machine with an
# NVIDIA GPU, from a checkout with ../shared beside it.
#
#   benches/gpu.sh            # probe, build, parity, benches: everything below
#   benches/gpu.sh probe      # only what the machine has (driver, CUDA libraries, Vulkan)
#   GPU_BACKENDS=cuda benches/gpu.sh   # skip wgpu
#   GPU_BACKENDS=cpu GPU_RUNS=1 GPU_WARMUP=0 benches/gpu.sh   # a dry run of every step on
#                                                             # the CPU (no GPU features)
#
# Steps, each logged under $OUT (default gpu-results/) and summed up in summary.md:
# 1. probe: nvidia-smi, the CUDA driver library, NVRTC, Vulkan ICDs; the backends that
#    cannot run here are skipped with the reason.
# 2. build: `trustgc` and the device_parity example with the cuda (and wgpu) features,
#    release profile, all cores.
# 3. parity: examples/device_parity.rs on the CPU, then on each GPU backend: the golden
#    mini model in eval mode, its inverse, and one train-mode step's loss and gradients,
#    against the reference, at the tolerances that example documents.
# 4. benches: `trustgc bench --preset imagenet` at 224x224 for batch 1, 8 and 64, and a
#    training step (ImageNet batch 8, Fashion-MNIST batch 64), on each GPU backend, with
#    --json; the same ImageNet inference on the CPU at batch 8 for scale.
# Budget: the build dominates (cubecl's crates; ~5 minutes on 16 cores), the rest takes
# 2-3 minutes. GPU_RUNS / GPU_WARMUP change the bench repetitions (default 5 / 2).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
out=${OUT:-$repo/gpu-results}
mkdir -p "$out"
backends=${GPU_BACKENDS:-"cuda wgpu"}
runs=${GPU_RUNS:-5}
warmup=${GPU_WARMUP:-2}
summary="$out/summary.md"
: >"$summary"

say() { echo "$*" | tee -a "$summary"; }
stamp() { date -u +%H:%M:%S; }

# ---- 1. probe ----------------------------------------------------------------------
probe() {
    say "# GPU run, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    say ""
    say "host: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader \
            | sed 's/^/gpu: /' | tee -a "$summary"
    else
        say "gpu: nvidia-smi not found"
    fi
    cuda_ok=0
    if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
        say "cuda driver library: $(ldconfig -p | grep -m1 'libcuda\.so' | awk '{print $NF}')"
        cuda_ok=1
    else
        say "cuda driver library: libcuda.so not found (cuda backend skipped)"
    fi
    nvrtc=$(ldconfig -p 2>/dev/null | grep -m1 'libnvrtc' | awk '{print $NF}')
    say "nvrtc: ${nvrtc:-not in the linker cache (cubecl needs it to compile kernels; LD_LIBRARY_PATH may name it)}"
    vulkan_ok=0
    icds=$(ls /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null | tr '\n' ' ')
    if [ -n "$icds" ]; then
        say "vulkan ICDs: $icds"
        vulkan_ok=1
    else
        say "vulkan ICDs: none (wgpu has no GPU adapter here; wgpu skipped)"
    fi
    selected=""
    for b in $backends; do
        case "$b" in
            cuda) [ "$cuda_ok" = 1 ] && selected="$selected cuda" ;;
            wgpu) [ "$vulkan_ok" = 1 ] && selected="$selected wgpu" ;;
            cpu) selected="$selected cpu" ;;
        esac
    done
    say "backends to run:${selected:- none}"
    say ""
}

probe
if [ "${1:-}" = probe ]; then
    exit 0
fi
if [ -z "$selected" ]; then
    say "nothing to run on a GPU here"
    exit 1
fi
features=$(echo "$selected" | tr ' ' '\n' | grep -v '^cpu$' | xargs | tr ' ' ',')
feature_args=()
[ -n "$features" ] && feature_args=(--features "$features")

# ---- 2. build ----------------------------------------------------------------------
say "## build ($(stamp)): features: ${features:-default}"
start=$(date +%s)
if ! (cd "$repo" && cargo build --release --locked -p trustgc-cli ${feature_args[@]+"${feature_args[@]}"} \
        --bin trustgc --example device_parity) >"$out/build.log" 2>&1; then
    say "build FAILED, see build.log:"
    tail -n 30 "$out/build.log" | tee -a "$summary"
    exit 1
fi
say "built in $(( $(date +%s) - start )) s"
say ""
target=${CARGO_TARGET_DIR:-$repo/target}
bin="$target/release/trustgc"
parity="$target/release/examples/device_parity"

# ---- 3. parity ---------------------------------------------------------------------
status=0
say "## golden parity ($(stamp))"
for device in cpu $(for b in $selected; do
    case "$b" in cuda) echo cuda:0 ;; cpu) ;; *) echo "$b" ;; esac
done); do
    say ""
    log="$out/parity-${device//:/}.txt"   # no ':' in file names (cuda:0 -> cuda0)
    if "$parity" --device "$device" >"$log" 2>&1; then
        tee -a "$summary" <"$log"
    else
        status=1
        say "parity on $device FAILED:"
        tee -a "$summary" <"$log"
    fi
done
say ""

# ---- 4. benches --------------------------------------------------------------------
bench() {
    local name=$1
    shift
    local json
    if json=$("$bin" bench "$@" --runs "$runs" --warmup "$warmup" --json 2>"$out/$name.err" | tail -n 1); then
        echo "$json" >"$out/$name.json"
        python3 - "$name" "$out/$name.json" <<'PY' | tee -a "$summary"
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
gf = r.get("gflops_per_s")
rss = r.get("peak_rss_mb")
print(f"| {name} | {r['batch']} | {r['ms_per_image']:.2f} | {r['images_per_s']:.1f} | "
      f"{'' if gf is None else f'{gf:.0f}'} | {'' if rss is None else f'{rss:.0f}'} |")
PY
    else
        status=1
        say "| $name | FAILED: $(tail -n 3 "$out/$name.err" | tr '\n' ' ') |"
    fi
}

say "## benches ($(stamp)): median of $runs runs after $warmup warm-up runs"
say ""
say "| bench | batch | ms/image | images/s | GFLOP/s | peak RSS MB |"
say "| --- | ---: | ---: | ---: | ---: | ---: |"
for b in $selected; do
    device=$b
    [ "$b" = cuda ] && device=cuda:0
    for batch in 1 8 64; do
        bench "imagenet-$b-b$batch" --preset imagenet --batch "$batch" --device "$device"
    done
    bench "imagenet-train-$b-b8" --preset imagenet --train --batch 8 --device "$device"
    bench "fashion-mnist-train-$b-b64" --preset fashion-mnist --train --batch 64 --device "$device"
done
case " $selected " in
    *" cpu "*) ;;   # the dry run measured the CPU above already
    *) bench "imagenet-cpu-b8" --preset imagenet --batch 8 --device cpu ;;
esac
say ""
say "done ($(stamp)), status $status"
exit "$status"
