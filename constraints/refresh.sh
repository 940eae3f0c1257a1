#!/usr/bin/env bash
# Re-resolves the pinned versions that install.sh installs, and rewrites:
#   constraints/cpu.txt  every runtime, test, bench and tensorboard dependency (torch: the CPU build 2.13.0)
#   constraints/gpu.txt  the same for a CUDA machine with the [gpu] extra (Unsloth, bitsandbytes, xformers)
# Two locks, not one: Unsloth caps transformers and TRL below releases the CPU needs (TRL 1.15's fused loss
# requires Triton, which the CPU build of torch lacks), so each machine gets the newest set that works there.
# Usage: constraints/refresh.sh        (needs PyPI; takes a minute; nothing is installed)
set -euo pipefail
cd "$(dirname "$0")/.."
torch_version=${OLLATUNE_LOCK_TORCH:-2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
echo "torch==$torch_version" > "$work/torch.txt"
lock() {  # lock EXTRAS OUT HEADER: pin every package pip would install into an empty environment
  local extras=$1 out=$2 header=$3
  "$py" -m pip install -q --dry-run --ignore-installed --report "$work/report.json" -c "$work/torch.txt" \
    -e ".[$extras]"
  "$py" - "$work/report.json" "$out" "$header" "$torch_version" <<'PY'
import datetime, json, platform, re, sys
report, out, header, torch_version = sys.argv[1:]
pins = {}
for item in json.load(open(report))["install"]:
    meta = item["metadata"]
    name = re.sub(r"[-_.]+", "-", meta["name"]).lower()
    # The CUDA build of torch pins triton and the nvidia-* libraries itself: they are left to it.
    if name in ("ollatune", "triton") or name.startswith("nvidia-"):
        continue
    pins[name] = meta["version"].split("+")[0]  # 2.13.0+cpu -> 2.13.0: a CUDA machine takes its CUDA build
with open(out, "w") as f:
    f.write(f"# {header}\n# resolved {datetime.date.today()} on Python {platform.python_version()} "
            f"{platform.machine()} with torch {torch_version}; refresh with constraints/refresh.sh\n")
    f.write("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
print(f"{out}: {len(pins)} packages", file=sys.stderr)
PY
}
echo "resolving the CPU set (torch $torch_version)" >&2
lock "test,bench,tensorboard" constraints/cpu.txt \
  "Pinned versions of every runtime, test, bench and tensorboard dependency (./install.sh uses them)."
echo "resolving the CUDA set with the GPU extra" >&2
lock "test,bench,tensorboard,gpu" constraints/gpu.txt \
  "Pinned versions for a CUDA machine with the GPU extra (./install.sh --gpu uses them instead of cpu.txt)."
