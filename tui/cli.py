"""The ``ollatune`` command line. Data goes to stdout, progress and diagnostics to stderr.

Heavy libraries (torch, transformers, llama_cpp) are imported inside the commands that need them, so
``ollatune --help`` answers at once.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from workspace.errors import OllatuneError

app = typer.Typer(
    name="ollatune",
    help="Fine-tune a local model, export it to GGUF, serve it with Ollama and compare it with the vanilla "
    "model, offline. Workspace: $OLLATUNE_HOME (default ~/.ollatune); Ollama: $OLLAMA_HOST.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
from tui.data_cli import data_app  # noqa: E402
from tui.eval_cli import eval_app  # noqa: E402

app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(OllatuneError):
    """A command that cannot do what was asked (no Ollama answers, an unknown model...)."""


def _settings():  # noqa: ANN202
    from workspace.settings import get_settings

    return get_settings()


@app.command()
def pipeline(
    recipe: Annotated[str, typer.Argument(help="A shipped recipe name (see `ollatune recipes`) or a YAML path.")] = "demo-ko",
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a field: train.max_steps=10 (repeatable).")] = None,
    events: Annotated[str, typer.Option(help="`jsonl` also writes every event to stdout as JSON lines.")] = "none",
    until: Annotated[str, typer.Option(help="Stop after this stage: data, finetune, export, serve or evals.")] = "evals",
) -> None:
    """Run every stage: data -> finetune -> export -> serve -> evals, then print vanilla vs tuned.

    Stages whose outputs exist for identical inputs are skipped, so re-running resumes after a failure.
    """
    from finetune.recipe import load_recipe
    from pipeline import run_pipeline
    from tui.live import make_listener

    rec = load_recipe(recipe, set_ or [])
    settings = _settings()
    jsonl = events == "jsonl"
    listener = None if jsonl else make_listener(err)
    try:
        result = run_pipeline(rec, settings, stdout_jsonl=jsonl, listeners=[] if listener is None else [listener],
                              until=until)
    finally:
        if listener is not None:
            listener.close()
    if jsonl:
        return
    if result.comparison is not None:
        from tui.report import print_comparison

        print_comparison(out, result.comparison)
    out.print()
    out.print(f"run        {result.run_dir}")
    out.print(f"database   {result.db_path}")
    if result.tuned_gguf:
        out.print(f"gguf       {result.tuned_gguf}")
    if result.modelfile:
        out.print(f"modelfile  {result.modelfile}")
    for role, name in result.models.items():
        out.print(f"{role:<10} ollama run {name}" + ("   (start `ollatune serve` first: no Ollama daemon here)"
                                                     if result.embedded else ""))
    if result.skipped:
        out.print(f"skipped    {', '.join(result.skipped)} (outputs existed for identical inputs)")


finetune_app = typer.Typer(help="Fine-tune only (data + finetune stages), and resume an interrupted run.",
                           no_args_is_help=True)
app.add_typer(finetune_app, name="finetune")


@finetune_app.command("run")
def finetune_run(
    recipe: Annotated[str, typer.Argument(help="A shipped recipe name or a YAML path.")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a field: train.lora.r=32.")] = None,
    events: Annotated[str, typer.Option(help="`jsonl` also writes every event to stdout as JSON lines.")] = "none",
) -> None:
    """Prepare the data and train the adapter; checkpoints let `finetune resume` continue after a crash."""
    from finetune.recipe import load_recipe

    _run_until_finetune(load_recipe(recipe, set_ or []), events)


@finetune_app.command("resume")
def finetune_resume(
    run_id: Annotated[str, typer.Argument(help="A run id (folder under $OLLATUNE_HOME/runs).")],
    events: Annotated[str, typer.Option(help="`jsonl` also writes every event to stdout as JSON lines.")] = "none",
) -> None:
    """Continue an interrupted run from its last checkpoint (same recipe, continuous step count)."""
    from finetune.recipe import RecipeError, load_recipe

    path = _settings().runs_dir / run_id / "recipe.yaml"
    if not path.exists():
        raise RecipeError(f"no run {run_id!r} in {_settings().runs_dir}", "list runs with `ollatune runs`")
    _run_until_finetune(load_recipe(path), events)


def _run_until_finetune(rec, events: str) -> None:  # noqa: ANN001
    from pipeline import run_pipeline
    from tui.live import make_listener

    jsonl = events == "jsonl"
    listener = None if jsonl else make_listener(err)
    try:
        result = run_pipeline(rec, _settings(), stdout_jsonl=jsonl, listeners=[] if listener is None else [listener],
                              until="finetune")
    finally:
        if listener is not None:
            listener.close()
    if not jsonl:
        out.print(f"run        {result.run_dir}")
        out.print(f"adapter    {result.run_dir / 'finetune' / 'adapter'}")


def _fmt(value, spec: str) -> str:  # noqa: ANN001
    return "-" if value is None else format(value, spec)


@app.command("export")
def export_cmd(
    run_id: Annotated[str, typer.Argument(help="A run id (folder under $OLLATUNE_HOME/runs, see `ollatune runs`).")],
    quant: Annotated[str, typer.Option(help="llama.cpp file types, comma-separated: q4_0, q4_k_s, q4_k_m, q5_k_m, "
                                            "q6_k, q8_0, f16, bf16, ... and i-quants (iq4_xs, iq3_m, ...: made "
                                            "with an importance matrix over the training text). The first is "
                                            "the one registered.")] = "q4_k_m",
    events: Annotated[str, typer.Option(help="`jsonl` also writes every event to stdout as JSON lines.")] = "none",
) -> None:
    """Export a trained run again: merge, f16, each quantization, and the table that measures each against
    f16 (size, bits per weight, perplexity on held-out conversations, greedy agreement, end of turn)."""
    from finetune.recipe import RecipeError, load_recipe
    from pipeline import run_pipeline
    from tui.live import make_listener

    path = _settings().runs_dir / run_id / "recipe.yaml"
    if not path.exists():
        raise RecipeError(f"no run {run_id!r} in {_settings().runs_dir}", "list runs with `ollatune runs`")
    rec = load_recipe(path, [f"export.quant={quant}"])
    jsonl = events == "jsonl"
    listener = None if jsonl else make_listener(err)
    try:
        result = run_pipeline(rec, _settings(), stdout_jsonl=jsonl, listeners=[] if listener is None else [listener],
                              until="export")
    finally:
        if listener is not None:
            listener.close()
    if jsonl or result.exported is None:
        return
    from rich.table import Table

    for label, exp in (("tuned", result.exported.tuned), ("vanilla", result.exported.vanilla)):
        table = Table(title=f"{label}: {exp.hf_dir.name}", box=None, header_style="bold")
        for col in ("quant", "MiB", "bits/w", "ppl", "vs f16", "agree", "eot", "status"):
            table.add_column(col, justify="right" if col not in ("quant", "status") else "left")
        warnings = []
        for q, row in exp.quants.items():
            if q == "f16":
                continue
            cells = [_fmt(row.get("bits_per_weight"), ".2f"), _fmt(row.get("ppl"), ".3f"),
                     _fmt(row.get("ppl_delta"), "+.3f"), _fmt(row.get("greedy_agreement"), ".2f")]
            table.add_row(q, f"{row['bytes'] / 2**20:.1f}", *cells, str(row.get("eot", "-")), row.get("status", "-"))
            warnings += [f"{q}: {w}" for w in row.get("warnings", [])]
        out.print(table)
        for w in warnings:
            out.print(f"  [yellow]warning[/] {escape(w)}")
        f16 = exp.verify.get("f16", {})
        if f16.get("agreement") is not None:
            ties = f", {f16['near_ties']} at a near-tie" if f16.get("near_ties") else ""
            check = (f"greedy tokens equal to the HF model ({f16.get('reference')}) on {f16['agreement']:.0%} of "
                     f"the probes (first {f16.get('tokens')} tokens{ties})")
        else:
            check = f"greedy tokens not compared with the HF model: {f16.get('reference_note') or '-'}"
        out.print(f"  f16 {exp.f16_gguf}: {escape(check)}")


@app.command("modelfile")
def modelfile_cmd(
    path: Annotated[str, typer.Argument(help="An HF model folder, a tokenizer folder or a .gguf file.")],
    system: Annotated[Optional[str], typer.Option(help="The system prompt the model was trained with.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Print the Modelfile ollatune would register for a model (family, TEMPLATE, every stop, parameters) and
    whether its TEMPLATE renders prompts exactly as the model's own chat template does (exit 1 when not).
    The same code path as the serve stage, for models trained elsewhere."""
    from pathlib import Path

    from serve.publishing import preview_modelfile

    preview = preview_modelfile(Path(path).expanduser(), system=system)
    if json_:
        sys.stdout.write(preview.model_dump_json(indent=1) + "\n")
    else:
        sys.stdout.write(preview.modelfile if preview.modelfile.endswith("\n") else preview.modelfile + "\n")
        verdict = "[green]parity holds[/]" if preview.parity_ok else "[bold red]parity fails[/]"
        err.print(f"family {escape(preview.family)}, stops {escape(str(preview.stop))}: {verdict}")
        for line in preview.parity:
            err.print("  " + escape(line))
    if not preview.parity_ok:
        raise typer.Exit(1)


@app.command()
def recipes() -> None:
    """List the shipped recipes."""
    from finetune.recipe import load_recipe, shipped_recipes

    for name, path in shipped_recipes().items():
        r = load_recipe(path)
        out.print(f"{name:<20} {r.description}")


@app.command()
def doctor() -> None:
    """Report Python, torch, CUDA/GPU and VRAM, Unsloth, llama-cpp-python, Ollama, workspace and disk."""
    from tui.doctor import run_checks

    ok = True
    for name, status, detail in run_checks(_settings()):
        mark = {"ok": "[green]ok[/]", "warn": "[yellow]--[/]", "fail": "[red]!![/]"}[status]
        out.print(f"{mark} {name:<18} {detail}")
        ok = ok and status != "fail"
    if not ok:
        raise typer.Exit(1)


@app.command("serve")
def serve_cmd(
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default: from OLLAMA_HOST, loopback).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default: from OLLAMA_HOST, 11434).")] = None,
    expose: Annotated[bool, typer.Option("--expose", help="Allow an address other than loopback (0.0.0.0 for "
                                         "a WSL2 box or a LAN); set OLLATUNE_API_KEY to require a bearer token.")] = False,
) -> None:
    """Run the embedded Ollama-compatible runtime (llama.cpp) in the foreground, for machines without Ollama.

    Models run in runner processes of their own; OLLAMA_NUM_PARALLEL sequences decode together per model
    (default 4), OLLAMA_MAX_QUEUE requests wait (512), OLLAMA_MAX_LOADED_MODELS stay loaded (3),
    OLLAMA_KEEP_ALIVE keeps an idle model (5m). OLLAMA_ORIGINS adds browser origins."""
    from serve.runtime import serve_forever
    from workspace.settings import listen_address

    settings = _settings()
    env_host, env_port = listen_address(os.environ.get("OLLAMA_HOST", ""))
    h, p = host or env_host, port or env_port
    from workspace.settings import is_loopback

    if not is_loopback(h) and not expose:
        raise CliError(f"refusing to listen on {h}{' (from OLLAMA_HOST)' if not host else ''}: the runtime serves "
                       "loopback only unless asked",
                       "pass --expose to listen there (set OLLATUNE_API_KEY to require a bearer token), or set "
                       "OLLAMA_HOST=127.0.0.1:<port>")
    if not is_loopback(h):
        err.print(f"[yellow]warning:[/] listening on {escape(h)}: anyone who can reach it can use the models"
                  + ("" if os.environ.get("OLLATUNE_API_KEY") else " (no OLLATUNE_API_KEY set: no token needed)"))
    err.print(f"embedded Ollama-compatible runtime on http://{h}:{p} (models in {settings.ollama_dir}); Ctrl-C stops it")
    serve_forever(h, p, settings.ollama_dir, expose=expose)


def _client(start_embedded: bool = False):  # noqa: ANN202
    """An ``ollama.Client`` for OLLAMA_HOST; optionally start the embedded runtime when nothing answers."""
    import ollama

    from serve import ensure_ollama
    from workspace.events import EventSink

    settings = _settings()
    if start_embedded:
        sink = EventSink("cli", None, listeners=[lambda e: err.print(f"[dim]{escape(str(e.get('message', '')))}[/]")
                                                if e["type"] == "log" else None])
        endpoint = ensure_ollama(settings, sink.stage("serve"))
        return endpoint.client(), endpoint
    from workspace.settings import api_headers

    return ollama.Client(host=settings.ollama_host, headers=api_headers()), None


def _ollama_call(fn):  # noqa: ANN001, ANN202
    import httpx
    import ollama

    try:
        return fn()
    except (httpx.ConnectError, ConnectionError) as e:
        raise CliError(f"no Ollama answers at {_settings().ollama_host} ({e.__class__.__name__})",
                       "start Ollama (`ollama serve`) or the embedded runtime (`ollatune serve`)") from None
    except ollama.ResponseError as e:
        raise CliError(f"Ollama: {e.error}", "see `ollatune list` for the registered models") from None


@app.command("list")
def list_models() -> None:
    """List the models registered with Ollama (like `ollama list`)."""
    client, _ = _client()
    resp = _ollama_call(client.list)
    for m in resp.models:
        size = f"{(m.size or 0) / 2**20:.0f} MiB"
        out.print(f"{m.model:<40} {(m.digest or '')[:12]}  {size:>9}")


@app.command()
def show(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Show a registered model's template, parameters and details (like `ollama show`)."""
    client, _ = _client()
    resp = _ollama_call(lambda: client.show(name))
    out.print(f"[bold]template[/]\n{resp.template}")
    out.print(f"[bold]parameters[/]\n{resp.parameters}")
    if resp.details:
        out.print(f"[bold]details[/] {resp.details.model_dump(exclude_none=True)}")


@app.command()
def rm(name: Annotated[str, typer.Argument(help="Model name.")]) -> None:
    """Remove a registered model (like `ollama rm`)."""
    client, _ = _client()
    _ollama_call(lambda: client.delete(name))
    out.print(f"deleted {name}")


@app.command()
def ps() -> None:
    """List the models loaded in memory (like `ollama ps`)."""
    client, _ = _client()
    resp = _ollama_call(client.ps)
    for m in resp.models:
        out.print(f"{m.model:<40} {(m.digest or '')[:12]}")


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Model name, e.g. ollatune/demo-ko.")],
    prompt: Annotated[Optional[str], typer.Argument(help="One prompt; without it, an interactive chat.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 42,
) -> None:
    """Ask a registered model one prompt, or chat with it, through the official `ollama` client (like
    `ollama run`). Uses the Ollama at OLLAMA_HOST, or starts the embedded runtime when none answers."""
    _chat(name, prompt, None, {"temperature": temperature, "seed": seed})


@app.command()
def chat(
    name: Annotated[str, typer.Argument(help="Model name, e.g. ollatune/demo-ko.")],
    system: Annotated[Optional[str], typer.Option(help="System prompt (also /system TEXT during the chat).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 42,
) -> None:
    """Chat with a registered model, streaming its answers: the quick check before `ollama run`.

    A line of three double quotes starts and ends a multi-line message; /system TEXT sets the system
    prompt, /reset clears the conversation, /exit (or Ctrl-D) ends it."""
    _chat(name, None, system, {"temperature": temperature, "seed": seed})


def _chat(name: str, prompt: Optional[str], system: Optional[str], options: dict) -> None:
    from tui.chat import HELP, ChatSession, converse

    client, endpoint = _client(start_embedded=True)
    session = ChatSession(name, client.chat, options, system)
    try:
        if prompt is not None:
            _ollama_call(lambda: session.ask(prompt, sys.stdout))
            return
        if sys.stdin.isatty():
            err.print(f"[dim]{escape(HELP)}[/]")
        _ollama_call(lambda: converse(session, input, sys.stdout))
    finally:
        if endpoint is not None:
            endpoint.close()


@app.command()
def runs() -> None:
    """List pipeline runs in the workspace with their training and evaluation status."""
    from tui.report import list_runs

    list_runs(out, _settings())


@app.command()
def report(
    run_id: Annotated[str, typer.Argument(help="A run id from `ollatune runs`.")],
    markdown: Annotated[bool, typer.Option(help="Print Markdown instead of a table.")] = False,
) -> None:
    """Print the vanilla-vs-tuned comparison of a run, metric by metric and example by example."""
    from tui.report import report_run

    report_run(out, _settings(), run_id, markdown=markdown)


@app.command()
def tui() -> None:
    """Open the terminal UI over the whole loop: data, training with live curves, export, models and chat,
    evaluations and the vanilla-vs-tuned comparison, history. Jobs run as child processes of this CLI; one left
    running when you quit is reattached the next time."""
    from tui.app import run_app

    run_app(_settings())


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]; re-run the same command to resume")
        sys.exit(130)
    except Exception as exc:  # the whole message with the next step, never a traceback, unless asked for
        if os.environ.get("OLLATUNE_DEBUG"):
            raise
        from workspace.errors import error_hint, error_message

        stage = getattr(exc, "stage", None)
        where = f"{stage}: " if stage else ""
        err.print(f"[bold red]error[/] {escape(where + error_message(exc))}")
        err.print(f"[yellow]next:[/] {escape(error_hint(exc))}")
        sys.exit(1)


if __name__ == "__main__":
    main()
