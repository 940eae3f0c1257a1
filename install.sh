#!/usr/bin/env bash
# Installs ollatune into ./.venv. Keeps an installed, compatible torch (no CUDA download on a CPU
# machine); builds llama-cpp-python from source once (pip caches the wheel for later installs).
#   ./install.sh          runtime dependencies
#   ./install.sh --test   runtime + test dependencies
set -euo pipefail
cd "$(dirname "$0")"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip wheel
if ! "$VPY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "installing torch (CUDA machine)" >&2
    "$VPY" -m pip install -q "torch>=2.4"
  else
    # On this kind of machine the CPU build 2.13.0 is provided locally; an installed torch is kept as is.
    echo "installing torch 2.13.0 (CPU machine)" >&2
    "$VPY" -m pip install -q "torch==2.13.0"
  fi
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
if ! "$VPY" -c "import llama_cpp" 2>/dev/null; then
  echo "installing llama-cpp-python (compiles llama.cpp once, ~8 minutes on 2 cores; cached afterwards)" >&2
fi
"$VPY" -m pip install -q -e ".$extras"
"$VPY" -c "import torch, llama_cpp, transformers; print('ollatune installed: torch', torch.__version__, '| transformers', transformers.__version__, '| llama-cpp-python', llama_cpp.__version__)"
