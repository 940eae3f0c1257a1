"""Training runs in its own process: ``python -m finetune.worker SPEC.json``.

Why a process of its own: Unsloth must be imported before transformers, PEFT and TRL (it patches them),
CUDA memory is only given back when the process ends, and a crash of the trainer (out of memory, a killed
process) must not take the CLI or the TUI with it. The worker keeps its stdout for events (one JSON object a
line, tagged ``worker``); everything libraries print goes to stderr, which the parent writes to
``<run>/finetune/worker.log``.

The parent side is :func:`run_worker`: it starts the worker, re-emits its events through the run's event
sink, and turns its failure report into a :class:`finetune.troubleshoot.TrainingProblem`. The worker dies
with its parent (``PR_SET_PDEATHSIG``), so a killed CLI leaves no trainer behind writing checkpoints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SIGNALS = {9: "SIGKILL (often the kernel's out-of-memory killer: RAM, not GPU memory)", 15: "SIGTERM", 6: "SIGABRT",
           11: "SIGSEGV"}


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def worker_argv(spec_path: Path) -> list[str]:
    """The command line of the training process."""
    return [sys.executable, "-m", "finetune.worker", str(spec_path)]


def run_worker(spec: dict[str, Any], out_dir: Path, events: Any):  # noqa: ANN201
    """Run one training job in a child process; returns its BackendResult."""
    from finetune.backends import BackendResult
    from finetune.troubleshoot import TrainingProblem
    from workspace.files import write_json_atomic

    spec_path = write_json_atomic(out_dir / "worker.json", spec)
    log_path = out_dir / "worker.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    result: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(worker_argv(spec_path), stdout=subprocess.PIPE,
                                stderr=log, env=env, preexec_fn=_die_with_parent, text=True, encoding="utf-8",
                                bufsize=1)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                kind = msg.pop("worker", None) if isinstance(msg, dict) else None
                if kind == "event":
                    fields = {k: v for k, v in msg.items() if k not in ("ts", "run", "stage", "type")}
                    events.sink.emit(events.name, msg["type"], **fields)
                elif kind == "result":
                    result = msg
                elif kind == "failure":
                    failure = msg
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if failure is not None:
        raise TrainingProblem(failure["message"], failure.get("hint", ""))
    if rc != 0 or result is None:
        raise _died(rc, spec, log_path)
    result["adapter_dir"] = Path(result["adapter_dir"])
    return BackendResult(**result)


def _died(rc: int, spec: dict[str, Any], log_path: Path):  # noqa: ANN202
    """The TrainingProblem for a worker that ended without a result; also noted at the end of its log."""
    from finetune.recipe import Recipe
    from finetune.troubleshoot import TrainingProblem, step_memory_knobs

    lines = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    how = f"was killed by {SIGNALS.get(-rc, f'signal {-rc}')}" if rc < 0 else f"exited with code {rc}"
    resume = f"`ollatune finetune resume {spec['run']}` continues from the last checkpoint"
    if rc == -9:
        knobs = step_memory_knobs(Recipe.model_validate(spec["recipe"]))
        hint = f"lower the memory of a step: {'; or '.join(knobs)}; then {resume} (see {log_path})"
    else:
        hint = f"see {log_path}; {resume}"
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"[ollatune] the training process {how}; {hint}\n")
    tail = f": {lines[-1][:200]}" if lines and rc > 0 else ""
    return TrainingProblem(f"the training process {how}{tail}", hint)


def event_channel():  # noqa: ANN201
    """Keep the original stdout for events only; whatever else is printed - by Python or by native code
    (banners, warnings, kernel messages) - goes to stderr, which the parent writes to worker.log. The parent
    starts the worker with PYTHONUNBUFFERED=1, which also leaves C stdio unbuffered, so a process killed
    with SIGKILL loses nothing it printed."""
    chan = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    return chan


def main(argv: list[str]) -> int:
    chan = event_channel()

    def send(kind: str, payload: dict[str, Any]) -> None:
        chan.write(json.dumps({"worker": kind, **payload}, ensure_ascii=False, default=str) + "\n")
        chan.flush()

    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    if spec["backend"] == "unsloth":
        try:
            import unsloth  # noqa: F401  -- first: it patches transformers, peft and trl as they load
        except Exception as e:  # noqa: BLE001
            send("failure", {"message": f"unsloth failed to import: {e.__class__.__name__}: {str(e)[:300]}",
                             "hint": "set train.backend=hf to train without it, or reinstall unsloth for this "
                                     "torch/CUDA version"})
            return 1

    from finetune.backends import TrainJob, run_backend
    from finetune.recipe import Recipe
    from finetune.troubleshoot import diagnose
    from workspace.events import EventSink

    recipe = Recipe.model_validate(spec["recipe"])
    sink = EventSink(spec["run"], None, listeners=[lambda e: send("event", e)])

    def rows(path: str | None) -> list[dict]:
        if not path:
            return []
        text = Path(path).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    job = TrainJob(recipe, Path(spec["base_dir"]), rows(spec["train_path"]), Path(spec["output_dir"]),
                   sink.stage("finetune"), val_rows=rows(spec.get("val_path")), model_id=spec.get("model_id", ""),
                   autotune_cache=Path(spec["autotune_cache"]) if spec.get("autotune_cache") else None)
    try:
        result = run_backend(job, spec["backend"])
    except KeyboardInterrupt:
        send("failure", {"message": "training interrupted",
                         "hint": f"`ollatune finetune resume {spec['run']}` continues from the last checkpoint"})
        return 130
    except BaseException as e:  # noqa: BLE001 -- reported to the parent, traceback in worker.log
        import traceback

        traceback.print_exc()
        problem = diagnose(e, recipe)
        send("failure", {"message": str(problem), "hint": problem.hint})
        return 1
    payload = {k: v for k, v in vars(result).items()}
    payload["adapter_dir"] = str(result.adapter_dir)
    send("result", payload)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
