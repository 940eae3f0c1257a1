"""The samples the project ships (written by the project): name -> file and format.

They live below every stage: finetune trains on them, evals scores the shipped suites on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).with_name("data")


@dataclass(frozen=True)
class Sample:
    name: str
    path: Path
    task: str
    description: str


SAMPLES = {
    "ko-alpaca": Sample("ko-alpaca", DATA_DIR / "ko_instructions.jsonl", "alpaca",
                        "Korean instructions (KoAlpaca layout), some with input, some refusals"),
    "ko-text2sql": Sample("ko-text2sql", DATA_DIR / "ko_text2sql.jsonl", "text2sql",
                          "Korean questions over the game/shop/school SQLite databases, DDL context, gold SQL"),
    "ko-qa": Sample("ko-qa", DATA_DIR / "ko_qa.json", "qa", "extractive Korean QA (KorQuAD/SQuAD layout)"),
}
ALIASES = {"ko_instructions": "ko-alpaca"}


def get_sample(name: str) -> Sample | None:
    return SAMPLES.get(ALIASES.get(name, name))


def sample_databases(cache_dir: Path) -> dict[str, Path]:
    """The text-to-SQL sample's databases, built once into ``cache_dir`` from their SQL scripts."""
    from workspace.text2sql_db import build_database, shipped_databases
    from workspace.files import sha256_file

    out = {}
    for db_id, script in shipped_databases().items():
        target = Path(cache_dir) / f"{db_id}-{sha256_file(script)[:12]}.sqlite"
        if not target.exists():
            build_database(script, target)
        out[db_id] = target
    return out


def resolve_source(ref: str, task: str | None = None) -> tuple[str, str]:
    """(source, task) for a sample name, ``builtin:<name>``, a file path or ``hf:<id>``; the task defaults
    to the sample's own, else alpaca."""
    name = ref.split(":", 1)[1] if ref.startswith("builtin:") else ref
    sample = get_sample(name)
    if sample is not None:
        return str(sample.path), task or sample.task
    return ref, task or "alpaca"


def known_databases(spec: str | dict[str, str] | None, cache_dir: Path) -> dict[str, Path]:
    """db_id (``"*"``: every row) -> SQLite file: the shipped sample's databases plus those a recipe or suite
    names (one file for every row, or a db_id -> file mapping). A named file that does not exist is an error
    naming it."""
    from workspace.errors import OllatuneError

    out = dict(sample_databases(cache_dir))
    named = {} if spec is None else ({"*": spec} if isinstance(spec, str) else dict(spec))
    for db_id, path in named.items():
        p = Path(path).expanduser()
        if not p.is_file():
            raise OllatuneError(f"database {p} (db_id {db_id}) does not exist",
                                "set data.databases to a SQLite file, or a mapping db_id -> file")
        out[str(db_id)] = p.resolve()
    return out
