"""Auto-tune's search (finetune.autotune) against a fake prober whose memory and speed follow a simple model
of a GPU: candidates, the cache key, the memory cap, out-of-memory probes, the time budget, the cache."""

from __future__ import annotations

import json

import pytest

from finetune import autotune as at
from finetune.autotune import GIB, Candidate

# A fake 8B-like model: 5.5 GiB of weights, activations per row of 2048 tokens by checkpointing mode, and
# seconds per row: keeping activations is fastest, larger micro-batches are a little faster per row.
MODEL = 5.5
PER_ROW = {"off": 7.5, "on": 1.2, "unsloth": 0.45}
ROW_S = {"off": 0.135, "on": 0.18, "unsloth": 0.2}


class FakeProber:
    def __init__(self, total_gib: float = 139.8, cap_gib: float | None = None, physical_gib: float | None = None):
        self.total = int(total_gib * GIB)
        self.cap = int(cap_gib * GIB) if cap_gib else None
        self.physical = physical_gib  # above this a probe raises OutOfMemory (the card itself)
        self.calls: list[Candidate] = []

    def limit_bytes(self) -> int:
        room = min(self.total, self.cap) if self.cap else self.total
        return room - at.headroom_bytes(room)

    def peak(self, c: Candidate, seq_len: int) -> float:
        return MODEL + PER_ROW[c.checkpointing] * c.micro * seq_len / 2048

    def measure(self, c: Candidate, seq_len: int) -> tuple[int, float]:
        self.calls.append(c)
        peak = self.peak(c, seq_len)
        if self.physical is not None and peak > self.physical:
            raise at.OutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.cap and peak * GIB > self.cap:  # the per-process cap makes the allocation fail too
            raise at.OutOfMemory("CUDA out of memory (process limit)")
        per_row = ROW_S[c.checkpointing] * (1 + 0.25 / c.micro)
        return int(peak * GIB), per_row * c.micro * seq_len / 2048


DEFAULT = Candidate(2, 4, "unsloth")


class SlowProber(FakeProber):
    """Each probe takes 10 s of the clock ``now`` (a one-element list the test reads as its clock)."""

    def __init__(self, now: list[float], **kw) -> None:  # noqa: ANN003
        super().__init__(**kw)
        self.now = now

    def measure(self, c, seq_len):  # noqa: ANN001, ANN201
        self.now[0] += 10.0
        return super().measure(c, seq_len)


@pytest.mark.parametrize("effective", [1, 6, 8, 12, 96, 128])
def test_candidates_keep_the_effective_batch(effective):
    cands = at.candidates(effective, ("unsloth", "off", "on"))
    assert cands and all(c.micro * c.accum == effective for c in cands)
    assert all(1 <= c.micro <= at.MAX_MICRO for c in cands)
    micros = {c.micro for c in cands}
    assert micros == {d for d in range(1, min(effective, 64) + 1) if effective % d == 0}
    assert {c.checkpointing for c in cands} == {"off", "on", "unsloth"}
    assert len(cands) == 3 * len(micros) == len(set(cands))
    assert [c.checkpointing for c in cands][0] == "off"  # the mode that keeps the most first


def test_candidates_refuse_an_empty_batch():
    with pytest.raises(ValueError):
        at.candidates(0, ("off",))


KEY_ARGS = dict(gpu="NVIDIA H200", gpu_total_bytes=150_000_000_000, model="llama@abc", seq_len=2048,
                lora={"r": 16, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "use_rslora": False},
                quant={"load_in_4bit": True, "quant_type": "nf4"}, effective_batch=8, backend="unsloth",
                cap_gib=None, modes=("off", "on", "unsloth"), versions={"torch": "2.11.0"})


@pytest.mark.parametrize("field,value", [
    ("gpu", "NVIDIA GeForce RTX 4090"), ("gpu_total_bytes", 25_000_000_000), ("model", "llama@def"),
    ("seq_len", 1024), ("lora", {"r": 32, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "use_rslora": False}),
    ("lora", {"r": 16, "target_modules": ["q_proj"], "dropout": 0.0, "use_rslora": False}),
    ("quant", {"load_in_4bit": False, "quant_type": "nf4"}), ("quant", {"load_in_4bit": True, "quant_type": "fp4"}),
    ("effective_batch", 16), ("backend", "hf"), ("cap_gib", 24), ("modes", ("off", "on")),
    ("versions", {"torch": "2.12.0"}),
])
def test_the_cache_key_changes_with_each_input(field, value):
    base = at.cache_key(**KEY_ARGS)
    assert at.cache_key(**KEY_ARGS) == base  # deterministic
    assert at.cache_key(**{**KEY_ARGS, field: value}) != base


def test_the_cache_key_ignores_the_order_of_target_modules_and_lora_alpha():
    lora = {**KEY_ARGS["lora"], "target_modules": ["v_proj", "q_proj"], "alpha": 64}
    assert at.cache_key(**{**KEY_ARGS, "lora": lora}) == at.cache_key(**KEY_ARGS)


def test_on_a_large_gpu_the_fastest_keeps_activations():
    prober = FakeProber()
    r = at.tune(prober, effective=8, modes=("off", "on", "unsloth"), seq_len=2048, default=DEFAULT)
    assert r.chosen.checkpointing == "off" and r.chosen.micro * r.chosen.accum == 8
    fits = [t for t in r.trials if t.status == "fits"]
    assert len(fits) == 12  # every candidate fits 139.8 GiB less the headroom
    best = min(t.step_s for t in fits)
    chosen = next(t for t in r.trials if t.candidate == r.chosen)
    assert chosen.step_s <= best * 1.02
    # the default's own timing is in the table and the speed-up is measured against it
    base = next(t for t in r.trials if t.candidate == DEFAULT)
    assert r.speedup_vs_default == pytest.approx(base.step_s / chosen.step_s, rel=1e-2) and r.speedup_vs_default > 1.4
    assert any(line.startswith("->") for line in r.table())


@pytest.mark.parametrize("cap", [24, 16, 10])
def test_a_cap_is_honoured(cap):
    prober = FakeProber(cap_gib=cap)
    r = at.tune(prober, effective=8, modes=("off", "on", "unsloth"), seq_len=2048, default=DEFAULT)
    limit = cap - max(1, 0.08 * cap)
    assert r.limit_gib == pytest.approx(limit, abs=0.01)
    chosen = next(t for t in r.trials if t.candidate == r.chosen)
    assert chosen.status == "fits" and chosen.peak_gib <= limit
    assert prober.peak(r.chosen, 2048) <= limit
    # nothing over the limit was chosen, and whatever fitted and was faster is not left out
    faster = [t for t in r.trials if t.status == "fits" and t.step_s < chosen.step_s * 0.98]
    assert faster == []
    # the choice is at least as fast as the recipe's own configuration where that fits
    base = next(t for t in r.trials if t.candidate == DEFAULT)
    if base.status == "fits":
        assert chosen.step_s <= base.step_s


def test_a_probe_out_of_memory_is_skipped_not_fatal():
    # a 24 GiB card that the limit does not know about (no cap): the card itself refuses the allocation
    prober = FakeProber(total_gib=139.8, physical_gib=22.0)
    r = at.tune(prober, effective=8, modes=("off", "on", "unsloth"), seq_len=2048, default=DEFAULT)
    status = {t.candidate: t.status for t in r.trials}
    assert status[Candidate(4, 2, "off")] == "oom"  # 35.5 GiB
    # a larger micro-batch of the same mode is not tried after the out-of-memory
    assert status[Candidate(8, 1, "off")] in ("skipped",) and Candidate(8, 1, "off") not in prober.calls
    assert status[Candidate(2, 4, "off")] == "fits"  # 20.5 GiB
    chosen = next(t for t in r.trials if t.candidate == r.chosen)
    assert chosen.status == "fits" and chosen.peak_gib <= 22.0


def test_a_fit_predicts_the_next_micro_batch_and_skips_one_far_over_the_limit():
    prober = FakeProber(cap_gib=24)
    r = at.tune(prober, effective=8, modes=("off",), seq_len=2048, default=Candidate(1, 8, "off"))
    status = {t.candidate.micro: (t.status, t.note) for t in r.trials}
    # 1 x 8 (13.0 GiB) and 2 x 4 (20.5 GiB) fit under 22.1 GiB; they predict 35.5 GiB for 4 x 2 and 65.5 GiB for
    # 8 x 1, both far over: neither is run
    assert status[1][0] == "fits" and status[2][0] == "fits"
    assert status[4] == ("skipped", "predicted 35.5 GiB") and status[8] == ("skipped", "predicted 65.5 GiB")
    assert Candidate(4, 2, "off") not in prober.calls and Candidate(8, 1, "off") not in prober.calls


def test_nothing_fits_falls_back_to_the_recipe():
    prober = FakeProber(cap_gib=4)  # less than the weights
    r = at.tune(prober, effective=8, modes=("off", "on"), seq_len=2048, default=Candidate(2, 4, "on"))
    assert r.chosen == Candidate(2, 4, "on") and "no candidate fitted" in r.reason
    assert all(t.status in ("oom", "over", "skipped") for t in r.trials)


def test_the_time_budget_stops_the_probe():
    now = [0.0]
    r = at.tune(SlowProber(now), effective=8, modes=("off", "on", "unsloth"), seq_len=2048, default=DEFAULT,
                budget_s=25, clock=lambda: now[0])
    timed = [t for t in r.trials if t.status == "fits"]
    untimed = [t for t in r.trials if t.status == "untimed"]
    # 0-10 s, 10-20 s; a third would end at 30 s, past the budget, so it is not started
    assert len(timed) == 2 and len(untimed) == 10 and r.chosen in [t.candidate for t in timed]
    assert all("budget" in t.note for t in untimed) and now[0] <= 25


def test_the_cache_round_trip_and_a_damaged_cache(tmp_path):
    path = tmp_path / "cache" / "autotune.json"
    r = at.tune(FakeProber(cap_gib=24), effective=8, modes=("off", "on"), seq_len=1024, default=Candidate(2, 4, "on"))
    assert at.write_cache(path, "k1", r) is None
    back = at.read_cache(path, "k1")
    assert back is not None and back.cached and back.chosen == r.chosen and back.reason == r.reason
    assert [t.row() for t in back.trials] == [t.row() for t in r.trials]
    assert at.read_cache(path, "other") is None
    at.write_cache(path, "k2", r)
    assert set(json.loads(path.read_text())) == {"k1", "k2"}
    path.write_text("{not json")
    assert at.read_cache(path, "k1") is None
    at.write_cache(path, "k3", r)  # a damaged file is replaced, not fatal
    assert at.read_cache(path, "k3") is not None


def test_recipes_take_the_new_fields_and_the_old_name():
    from finetune.recipe import RecipeError, load_recipe

    r = load_recipe("ko-alpaca-qlora", ["train.max_vram_gib=24"])
    assert r.train.auto_tune is True and r.train.max_vram_gib == 24
    assert load_recipe("ko-alpaca-qlora", ["train.auto_micro_batch=false"]).train.auto_tune is False
    with pytest.raises(RecipeError, match="max_vram_gib"):
        load_recipe("ko-alpaca-qlora", ["train.max_vram_gib=0"])


def test_every_split_of_a_step_trains_the_same_rows():
    """The invariant behind the same loss sequence: rows are bucketed per optimizer step, so 2 x 4, 4 x 2 and
    8 x 1 see the same rows in every step."""
    import random

    from finetune.backends import TrainJob
    from finetune.backends.common import ordered_rows
    from finetune.recipe import load_recipe
    from workspace.events import null_events

    rng = random.Random(3)
    lengths = [rng.randrange(20, 900) for _ in range(37)]
    rows = [{"i": i} for i in range(37)]
    job = TrainJob(load_recipe("demo-ko"), None, rows, None, null_events("finetune"))
    splits = {}
    for micro, accum in ((1, 8), (2, 4), (4, 2), (8, 1)):
        order, step_tokens = ordered_rows(job, lengths, micro, accum, 9)
        splits[micro] = ([r["i"] for r in order], step_tokens)
    first = splits[1]
    assert all(s == first for s in splits.values())
    steps = [first[0][k:k + 8] for k in range(0, 72, 8)]
    # and each step's rows are of similar length (bucketed), not a random mix
    spread = sum(max(lengths[i] for i in s) - min(lengths[i] for i in s) for s in steps) / len(steps)
    assert spread < 0.5 * (max(lengths) - min(lengths))


def test_the_recipes_configuration_is_timed_first_even_when_the_budget_runs_out():
    now = [0.0]
    prober = SlowProber(now)
    r = at.tune(prober, effective=8, modes=("off", "on", "unsloth"), seq_len=2048, default=DEFAULT, budget_s=15,
                clock=lambda: now[0])
    assert prober.calls[0] == DEFAULT
    assert next(t for t in r.trials if t.candidate == DEFAULT).status == "fits" and r.speedup_vs_default is not None
    assert all(t.probe_s == 10.0 for t in r.trials if t.status == "fits")


@pytest.mark.parametrize("text", ["[1, 2]", '{"k1": [1]}', '{"k1": {"chosen": 3}}', '"x"', ""])
def test_a_cache_of_the_wrong_shape_only_costs_a_probe(tmp_path, text):
    path = tmp_path / "autotune.json"
    path.write_text(text)
    assert at.read_cache(path, "k1") is None
    r = at.tune(FakeProber(), effective=2, modes=("off",), seq_len=512, default=Candidate(1, 2, "off"))
    assert at.write_cache(path, "k1", r) is None and at.read_cache(path, "k1").chosen == r.chosen
    assert at.drop_cache(path, "k1") and at.read_cache(path, "k1") is None and not at.drop_cache(path, "k1")
    assert [p.name for p in tmp_path.iterdir()] == ["autotune.json"]  # no temporary left behind


def test_an_unwritable_cache_is_reported_not_fatal(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the folder should be")
    r = at.tune(FakeProber(), effective=2, modes=("off",), seq_len=512, default=Candidate(1, 2, "off"))
    problem = at.write_cache(blocker / "autotune.json", "k", r)
    assert problem and "autotune.json" in problem


def test_the_choice_uses_unrounded_times():
    """Two candidates 7% apart whose times round to the same milliseconds: the faster one is chosen, and a
    step under half a millisecond still counts as fitting."""
    times = {Candidate(2, 1, "off"): 0.0124 / 1, Candidate(1, 2, "off"): 0.0116 / 2}

    class Fast(FakeProber):
        def measure(self, c, seq_len):  # noqa: ANN001, ANN201
            return int(6 * GIB), times[c]

    r = at.tune(Fast(), effective=2, modes=("off",), seq_len=512, default=Candidate(2, 1, "off"))
    assert r.chosen == Candidate(1, 2, "off")
    times = {Candidate(2, 1, "off"): 0.0004, Candidate(1, 2, "off"): 0.0003}
    r = at.tune(Fast(), effective=2, modes=("off",), seq_len=512, default=Candidate(2, 1, "off"))
    assert all(t.status == "fits" for t in r.trials) and r.chosen == Candidate(2, 1, "off")


def test_a_default_beyond_the_candidates_is_probed_first():
    prober = FakeProber()
    default = Candidate(128, 1, "unsloth")  # micro-batches stop at 64
    r = at.tune(prober, effective=128, modes=("off", "on", "unsloth"), seq_len=128, default=default)
    assert prober.calls[0] == default and default in [t.candidate for t in r.trials]
    assert all(t.candidate.micro * t.candidate.accum == 128 for t in r.trials)


def test_out_of_memory_is_recognised_in_its_other_forms():
    import torch

    assert at.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert at.is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert at.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not at.is_out_of_memory(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not at.is_out_of_memory(ValueError("out of memory"))
