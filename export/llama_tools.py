"""llama.cpp's ``llama-imatrix`` and ``llama-quantize`` programs, for the i-quants: they need an importance
matrix (how strongly each weight column is used on real text), which the Python binding cannot pass to the
quantizer (it takes a C++ map). The programs are built once, from the llama.cpp that the installed
llama-cpp-python vendors (its source distribution, so both agree on the file format), into
``$OLLATUNE_HOME/tools/llama.cpp-<version>/``: a few minutes on 2 cores, then reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from export.errors import ExportError
from workspace.files import atomic_path

TOOLS = ("llama-imatrix", "llama-quantize")


def llama_cpp_version() -> str:
    from importlib.metadata import version

    return version("llama-cpp-python")


def tools_dir(home: Path) -> Path:
    return Path(home) / "tools" / f"llama.cpp-{llama_cpp_version()}"


def _run(cmd: list[str], log: Path, what: str, cwd: Path | None = None, timeout: int = 3600) -> None:
    with open(log, "a", encoding="utf-8", errors="replace") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        tail = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()][-3:]
        raise ExportError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}", f"see {log}")


def _source(work: Path, log: Path, sdist: Path | None) -> Path:
    """The vendored llama.cpp source of the installed llama-cpp-python release."""
    version = llama_cpp_version()
    if sdist is None:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              "-d", str(work), f"llama-cpp-python=={version}"], log, f"downloading llama-cpp-python {version}'s source")
        found = sorted(work.glob("llama_cpp_python-*.tar.gz"))
        if not found:
            raise ExportError(f"pip downloaded no source distribution of llama-cpp-python {version}", f"see {log}")
        sdist = found[0]
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                   and not m.name[len(prefix):].startswith("models/") and (m.isfile() or m.isdir())]
        if not members:
            raise ExportError(f"{sdist.name} holds no vendored llama.cpp", "pass the llama-cpp-python source archive")
        tar.extractall(work, members=members, filter="data")
    return work / prefix


def ensure_tools(home: Path, events=None, sdist: Path | None = None) -> dict[str, Path]:  # noqa: ANN001
    """Paths of ``llama-imatrix`` and ``llama-quantize``, built first when they are not there yet."""
    target = tools_dir(home)
    found = {t: target / "bin" / t for t in TOOLS}
    if all(p.exists() for p in found.values()):
        return found
    if shutil.which("cmake") is None:
        raise ExportError("building llama.cpp's imatrix and quantize programs needs cmake, which is not installed",
                          "install cmake (apt install cmake, or pip install cmake), or choose a quantization that "
                          "is not an i-quant (q4_k_m, q5_k_m, ...)")
    target.parent.mkdir(parents=True, exist_ok=True)
    log = target.parent / f"build-{target.name}.log"
    if events is not None:
        events.log(f"building llama.cpp's imatrix and quantize programs once (a few minutes; log: {log})")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        src = _source(work, log, sdist)
        build = work / "build"
        cfg = ["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
               "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=ON"]
        _run(cfg, log, "configuring llama.cpp")
        _run(["cmake", "--build", str(build), "--target", *TOOLS, "-j", str(os.cpu_count() or 1)], log,
             "compiling llama.cpp's tools")
        with atomic_path(target) as staged:
            (staged / "bin").mkdir(parents=True)
            for t in TOOLS:
                built = next((p for p in build.rglob(t) if p.is_file() and os.access(p, os.X_OK)), None)
                if built is None:
                    raise ExportError(f"the build produced no {t}", f"see {log}")
                shutil.copy2(built, staged / "bin" / t)
    return found


def compute_imatrix(tools: dict[str, Path], gguf: Path, texts: list[str], out: Path, log: Path, *,
                    ctx: int = 512, chunks: int = 16) -> Path:
    """llama.cpp's importance matrix of ``gguf`` over ``texts`` (e.g. the training rows; at most ``chunks`` x
    ``ctx`` tokens of them), written to ``out``."""
    calib = out.with_suffix(".calibration.txt")
    body = "\n\n".join(t for t in texts if t.strip())
    if len(body) < 2000:
        raise ExportError(f"{len(body)} characters of calibration text are too few for an importance matrix",
                          "train on more rows, or choose a quantization that is not an i-quant")
    calib.write_text(body, encoding="utf-8")
    with atomic_path(out) as tmp:
        _run([str(tools["llama-imatrix"]), "-m", str(gguf), "-f", str(calib), "-o", str(tmp), "-c", str(ctx),
              "--chunks", str(chunks), "-t", str(os.cpu_count() or 1), "--no-ppl"], log,
             f"computing the importance matrix of {gguf.name}")
    return out


def quantize_with_imatrix(tools: dict[str, Path], src: Path, dst: Path, quant: str, imatrix: Path,
                          log: Path) -> Path:
    with atomic_path(dst) as tmp:
        _run([str(tools["llama-quantize"]), "--imatrix", str(imatrix), str(src), str(tmp), quant.upper(),
              str(os.cpu_count() or 1)], log, f"quantizing {src.name} to {quant} with the importance matrix")
    return dst
