"""The registered model through the ollama client against llama-cpp-python on its GGUF with the Jinja prompt."""
import glob
import json
from pathlib import Path

import llama_cpp
import llama_cpp.llama as llama_module
import ollama
from transformers import AutoTokenizer

from serve import ensure_ollama
from workspace.events import null_events
from workspace.settings import Settings

home = Path("/tmp/oh")
export_dir = Path(glob.glob(str(home / "runs/demo-ko-*/export/tuned"))[0])
gguf = export_dir / "tuned-q4_k_m.gguf"
tok = AutoTokenizer.from_pretrained(str(export_dir / "merged"))
questions = ["한국의 수도는 어디인가요?", "물은 몇 도에서 끓나요?", "What is 2 + 3?"]
opts = {"temperature": 0, "seed": 1, "num_predict": 24, "repeat_penalty": 1.0, "top_k": 1}
endpoint = ensure_ollama(Settings(home=home).ensure(), null_events("serve"))
try:
    client = ollama.Client(host=endpoint.host)
    served = [client.chat(model="ollatune/gpu-smoke", messages=[{"role": "user", "content": q}], options=opts)
              for q in questions]
    import httpx

    raw = [httpx.post(endpoint.host + "/api/chat", timeout=120, json={
        "model": "ollatune/gpu-smoke", "messages": [{"role": "user", "content": q}], "options": opts,
        "stream": False, "logprobs": True}).json() for q in questions]
finally:
    endpoint.close()
default = llama_module.llama_cpp.llama_model_default_params


def no_repack():
    p = default()
    p.use_extra_bufts = False
    return p


llama_module.llama_cpp.llama_model_default_params = no_repack
llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=2048, verbose=False)
eog = {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(llm._model.vocab, t)}
same = 0
for q, reply in zip(questions, served):
    prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
    ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    out = []
    llm.reset()
    for t in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        if t in eog or len(out) >= 24:
            break
        out.append(int(t))
    direct = llm.detokenize(out).decode("utf-8", errors="replace")
    served_bytes = [bytes(e["bytes"]) for e in raw[questions.index(q)].get("logprobs") or []]
    direct_bytes = [llm.detokenize([t]) for t in out]
    print("token bytes equal:", served_bytes == direct_bytes, len(served_bytes), len(direct_bytes), direct_bytes[:4])
    same += reply.message.content == direct and reply.eval_count == len(out) and served_bytes == direct_bytes
    print(json.dumps({"q": q, "served": reply.message.content, "direct": direct, "equal": reply.message.content == direct}, ensure_ascii=False))
print(f"served == llama-cpp-python on the GGUF: {same}/{len(questions)}")
