#!/usr/bin/env bash
# Build llama.cpp's own llama-server as the baseline for bench/engine.py.
#
# It is built from the llama.cpp vendored in the llama-cpp-python sdist of the version the
# project installs, with the same flags as our wheel (RPC on, native off), so both sides run
# the same kernels. The result lives outside the repo, in a cache folder:
#   ${LLAMAFLEET_CACHE:-~/.cache/llamafleet}/llama-server/<version>/llama-server
# A second run finds it and does nothing. Takes several minutes on 2 cores.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
version="$("$python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
cache="${LLAMAFLEET_CACHE:-$HOME/.cache/llamafleet}/llama-server/$version"
binary="$cache/llama-server"

if [[ -x "$binary" ]]; then
    echo "llama-server $version already built: $binary"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "downloading the llama-cpp-python $version sdist from PyPI…"
"$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work"
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"

echo "configuring llama.cpp (RPC on, native off, no curl)…"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S "$src" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DGGML_RPC=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >/dev/null
echo "building llama-server (several minutes)…"
cmake --build "$work/build" --target llama-server -j"$(nproc)"
mkdir -p "$cache"
cp "$work/build/bin/llama-server" "$binary"
echo "built $binary"
