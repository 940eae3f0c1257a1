#!/usr/bin/env bash
# Installs ollatune into ./.venv at the pinned versions of constraints/ (reproducible on a new machine).
#   ./install.sh                  runtime dependencies
#   ./install.sh --test           runtime + test dependencies
#   ./install.sh --gpu            + the GPU extra (Unsloth, bitsandbytes), everything at constraints/gpu.txt
#   ./install.sh --refresh-lock   re-resolve constraints/*.txt against PyPI (then commit them)
# An installed torch is kept as it is (no CUDA download on a CPU machine, no CPU build over a CUDA one);
# without one, a CPU machine gets the CPU build and a CUDA machine the CUDA build of the pinned version.
# llama-cpp-python is compiled from source once (about 6-8 minutes on 2 cores); pip caches the wheel.
set -euo pipefail
cd "$(dirname "$0")"
extras=()
gpu=0
for arg in "$@"; do
  case "$arg" in
    --test) extras+=(test) ;;
    --gpu) extras+=(gpu); gpu=1 ;;
    --refresh-lock) exec constraints/refresh.sh ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $arg (use --test, --gpu, --refresh-lock)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip wheel
locked_torch=$(sed -n 's/^torch==//p' constraints/cpu.txt)  # both locks pin the same torch
if ! "$VPY" -c "import torch" 2>/dev/null; then
  if [ "$gpu" = 1 ] || command -v nvidia-smi >/dev/null 2>&1; then
    echo "installing torch $locked_torch (CUDA machine)" >&2
  else
    echo "installing torch $locked_torch (CPU machine: the CPU build)" >&2
  fi
  "$VPY" -m pip install -q "torch==$locked_torch"
fi
installed_torch=$("$VPY" -c "import torch; print(torch.__version__.split('+')[0])")
# The constraints pip gets: the machine's lock, with torch pinned to the one installed (pip never replaces it).
source_lock=constraints/cpu.txt
[ "$gpu" = 1 ] && source_lock=constraints/gpu.txt
lock=.venv/ollatune-constraints.txt
{ grep -v '^torch==' "$source_lock"; echo "torch==$installed_torch"; } > "$lock"
if [ "$installed_torch" != "$locked_torch" ]; then
  echo "keeping the installed torch $installed_torch (the lock was resolved with $locked_torch)" >&2
  if [ "$gpu" = 1 ]; then  # these are built against one torch release: let pip match the installed one
    grep -v -E '^(torchvision|xformers|torchao)==' "$lock" > "$lock.tmp" && mv "$lock.tmp" "$lock"
  fi
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
if ! "$VPY" -c "import llama_cpp" 2>/dev/null; then
  echo "installing llama-cpp-python (compiles llama.cpp once, about 6-8 minutes on 2 cores; cached afterwards)" >&2
fi
spec="."
if [ ${#extras[@]} -gt 0 ]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
"$VPY" -m pip install -q -c "$lock" -e "$spec"
"$VPY" -c "import torch, llama_cpp, transformers; print('ollatune installed: torch', torch.__version__, '| transformers', transformers.__version__, '| llama-cpp-python', llama_cpp.__version__)"
