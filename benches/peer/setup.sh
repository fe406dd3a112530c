#!/usr/bin/env bash
# Creates benches/peer/.venv with torch, numpy and safetensors from PyPI, for the PyTorch
# peer (gc_peer.py, check_golden.py, bench_peer.py, compare.sh).
#
# Run by hand, never in CI: it downloads several GB. On Linux x86_64 the only torch
# wheel that PyPI serves is the CUDA build, which depends on the nvidia-* CUDA runtime
# wheels (about 3-4 GB in all); installing torch alone with --no-deps does not work,
# because `import torch` then fails to load libcudart/libcublasLt. The CUDA build runs
# on the CPU with the same CPU kernels as the CPU-only build (MKL, oneDNN); only the
# process's resident memory after `import torch` is larger (bench_peer.py reports it as
# rss_after_import_mb). Where the PyTorch project's CPU-only wheel index is reachable,
# set PEER_TORCH_INDEX_URL to it to get the small CPU-only wheel instead.
#
# Environment:
#   PYTHON                Python interpreter for the venv (default: python3, >= 3.10)
#   PEER_TORCH            requirement for torch (default: torch)
#   PEER_TORCH_INDEX_URL  an index to take torch from (default: pip's configured index)
set -euo pipefail

if [ -n "${CI:-}" ]; then
    echo "benches/peer/setup.sh: not in CI (it downloads several GB)" >&2
    exit 1
fi

here=$(cd "$(dirname "$0")" && pwd)
venv="$here/.venv"
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

torch_args=("${PEER_TORCH:-torch}")
if [ -n "${PEER_TORCH_INDEX_URL:-}" ]; then
    torch_args+=(--index-url "$PEER_TORCH_INDEX_URL")
fi
"${pip[@]}" install "${torch_args[@]}"
"${pip[@]}" install numpy safetensors

"$venv/bin/python" - <<'PY'
import numpy, safetensors, torch
print(f"peer venv ready: torch {torch.__version__} (CUDA build: {torch.version.cuda is not None}), "
      f"numpy {numpy.__version__}, safetensors {safetensors.__version__}, "
      f"MKL {torch.backends.mkl.is_available()}, oneDNN {torch.backends.mkldnn.is_available()}")
PY
