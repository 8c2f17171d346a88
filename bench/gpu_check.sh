#!/usr/bin/env bash
# The command to run on a lent GPU machine (the device tool), with .gpu/ carried:
#
#   make gpu-bundle                      # here, once: .gpu/ (tools/gpu_bundle.py)
#   device run: command "bash bench/gpu_check.sh", carry [".gpu"], timeout_s 600
#
# It installs the bundle's Python 3.12 wheels and llama-cpp-python's Python package beside the image's
# own packages, puts the CUDA build's libraries where llama-cpp-python loads them, finds CUDA 13's
# runtime and cuBLAS on the machine (its toolkit, or PyTorch's wheels), then runs bench/gpu_check.py,
# which writes $OUT/gpu_check.json after every step. At most 8 minutes of steps (timeout 480 s).
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="${GPU_BUNDLE:-.gpu}"
site=/tmp/llamafleet-site
started=$(date +%s)

[[ -f "$bundle/llama-cuda.tar.gz" ]] || { echo "gpu_check.sh: no $bundle/llama-cuda.tar.gz: run 'make gpu-bundle' and carry .gpu" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$bundle"/wheels/*.whl
tar -xzf "$bundle/llama_cpp_py.tar.gz" -C "$site"
mkdir -p "$site/llama_cpp/lib" /tmp/llama-cuda
tar -xzf "$bundle/llama-cuda.tar.gz" -C /tmp/llama-cuda
cp -a /tmp/llama-cuda/lib/. "$site/llama_cpp/lib/"

# CUDA 13's runtime libraries, wherever this machine keeps them.
libs=""
for name in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do
    found=$(find /usr/local/cuda*/ /usr/lib /opt /usr/local/lib -name "$name" 2>/dev/null | head -1 || true)
    [[ -n "$found" ]] || { echo "gpu_check.sh: $name not found on this machine" >&2; exit 2; }
    libs="$libs:$(dirname "$found")"
done
export LD_LIBRARY_PATH="${libs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 LLAMA_SERVER=/tmp/llama-cuda/bin/llama-server
echo "gpu_check.sh: ready in $(( $(date +%s) - started ))s; CUDA libraries from ${libs#:}"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader || true
timeout 480 python3 bench/gpu_check.py --skeletons "$bundle/models" --out "${OUT:-.}/gpu_check.json"
