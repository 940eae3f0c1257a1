"""Benchmark: validate a generated 50,000-row Korean instruction dataset, tokenizer included.

    .venv/bin/python bench/validate_bench.py [ROWS] [--out bench/results/validate_50k.json]

Prints the seconds for reading + adapting + checks + near duplicates + token counting with the
SmolLM2 tokenizer and chat template, and, measured in the same run on the same rows, the speed of the
near-duplicate search against datasketch's per-row MinHash (the library baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUBJECTS = ["김치찌개", "한강", "지하철", "봄비", "컴퓨터", "도서관", "자전거", "커피", "수학 숙제", "여름 휴가", "강아지",
            "감기", "이메일", "회의", "운동", "책상 정리", "환율", "날씨", "라면", "영어 공부"]
ASKS = ["{s}에 대해 짧게 설명해 주세요.", "{s}와 관련된 팁을 하나 알려 주세요.", "{s}의 장점은 무엇인가요?",
        "{s}를 처음 시작하는 사람에게 조언해 주세요.", "{s} 때문에 생길 수 있는 문제는 무엇인가요?"]
ANSWERS = ["{s}는 일상에서 자주 만나는 주제입니다. {n}번째로 기억할 점은 꾸준함이에요.",
           "{s}를 할 때는 준비를 미리 해 두세요. 작은 습관 {n}개가 큰 차이를 만듭니다.",
           "{s}의 핵심은 시간 관리입니다. 하루 {n}분만 투자해도 충분해요."]


def make_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        s = rng.choice(SUBJECTS)
        rows.append({"instruction": rng.choice(ASKS).format(s=s) + f" (질문 {i})",
                     "input": "" if rng.random() < 0.7 else f"참고: {rng.choice(SUBJECTS)} {rng.randint(1, 999)}",
                     "output": rng.choice(ANSWERS).format(s=s, n=rng.randint(1, 60))})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="?", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--baseline-rows", type=int, default=5_000)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from finetune.base_model import resolve_base_model
    from finetune.near_dup import near_duplicate_pairs, normalize
    from workspace.sources import read_records
    from finetune.validate import ValidationConfig, chat_template_lengths, validate
    from workspace.quiet import quiet_libraries
    from workspace.settings import get_settings

    quiet_libraries()
    t = time.perf_counter()
    base = resolve_base_model("smollm2-135m-instruct", get_settings())
    tok = AutoTokenizer.from_pretrained(str(base.hf_dir))
    load_s = time.perf_counter() - t

    rows = make_rows(args.rows)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
        t = time.perf_counter()
        valid, report = validate(read_records(path), ValidationConfig(max_seq_len=512), source=str(path),
                                 render=chat_template_lengths(tok))
        validate_s = time.perf_counter() - t

    # near-duplicate search: ours vs datasketch on the same rows
    texts = [r["instruction"] + "\n" + r["output"] for r in rows[: args.baseline_rows]]
    t = time.perf_counter()
    ours = near_duplicate_pairs(texts, 0.9)
    ours_s = time.perf_counter() - t
    baseline_s = None
    agree = None
    try:
        from datasketch import MinHash, MinHashLSH

        t = time.perf_counter()
        lsh = MinHashLSH(threshold=0.9, num_perm=64)
        sigs = []
        for i, text in enumerate(texts):
            norm = normalize(text)
            m = MinHash(num_perm=64)
            m.update_batch([norm[k:k + 3].encode() for k in range(max(1, len(norm) - 2))])
            lsh.insert(str(i), m)
            sigs.append(m)
        theirs = {(min(i, int(j)), max(i, int(j))) for i, m in enumerate(sigs) for j in lsh.query(m)
                  if int(j) != i and m.jaccard(sigs[int(j)]) >= 0.9}
        baseline_s = time.perf_counter() - t
        mine = {(i, j) for i, j, _s in ours}
        agree = round(len(mine & theirs) / max(1, len(mine | theirs)), 3)
    except ImportError:
        pass

    result = {
        "rows": args.rows, "valid": report.valid, "rejected": len(report.rejects),
        "near_duplicate_pairs": len(report.near_duplicates), "tokens": report.tokens.__dict__ if report.tokens else None,
        "validate_seconds": round(validate_s, 2), "tokenizer_load_seconds": round(load_s, 2),
        "near_dup_rows": len(texts), "near_dup_seconds_ollatune": round(ours_s, 3),
        "near_dup_seconds_datasketch": round(baseline_s, 3) if baseline_s else None,
        "speedup_vs_datasketch": round(baseline_s / ours_s, 1) if baseline_s else None,
        "pair_agreement_jaccard": agree,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, ensure_ascii=False, indent=1, default=str))
    print(f"validated {args.rows} rows in {validate_s:.1f}s (tokenizer included); near duplicates "
          f"{result['speedup_vs_datasketch']}x faster than datasketch on {len(texts)} rows", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
