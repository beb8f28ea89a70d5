#!/usr/bin/env bash
# The CUDA benchmark on a lent GPU machine (no registry there): run by the device tool in the repository root, with
# carry ["bench/gpu/.wheels", "bench/gpu/.bin"] made here by bench/gpu/prepare.sh. Arguments go to
# `python -m bench --cuda`. Installs the wheels into a scratch folder, checks every import, runs the bench under a
# timeout (BENCH_BUDGET_S, 480 s in all) and copies the report, results.json and the logs into $OUT.
set -euo pipefail

cd "$(dirname "$0")/../.."
START=$SECONDS
BUDGET=${BENCH_BUDGET_S:-480}
PY=${PYTHON:-python3}
WHEELS=${BENCH_WHEELS:-bench/gpu/.wheels}
BIN=$PWD/bench/gpu/.bin
SCRATCH=${SCRATCH:-/tmp/learnserve-gpu-site}
OUT=${OUT:-$PWD/bench/.work/gpu-out}
mkdir -p "$OUT"

step() { echo "[$(date -u +%H:%M:%S)] $*"; }
die() {
  echo "bench/gpu/run.sh: $*" >&2
  exit 3
}

step "python: $(command -v "$PY") $("$PY" -c 'import sys; print(sys.version.split()[0])')"
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
[ ${#wheels[@]} -gt 0 ] || die "no wheels in $WHEELS: run bench/gpu/prepare.sh on the registry machine and carry $WHEELS"

step "installing ${#wheels[@]} wheels into $SCRATCH"
rm -rf "$SCRATCH"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
  --target "$SCRATCH" "${wheels[@]}"
export PYTHONPATH="$SCRATCH:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$BIN:$PATH"
export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

# wrk prints its version and exits 1: a first line `wrk ...` says it loaded (libluajit from bench/gpu/.bin)
if [ -z "${BENCH_LOAD:-}" ]; then
  version=$(wrk --version 2>&1 || true)
  if [[ $version == wrk\ * ]]; then
    step "load generator: wrk (${version%%$'\n'*})"
  else
    export BENCH_LOAD=python
    step "load generator: python (bench/pyload.py): wrk does not run here"
  fi
else
  step "load generator: BENCH_LOAD=$BENCH_LOAD"
fi

step "GPU"
nvidia-smi -L || die "nvidia-smi failed: no GPU here?"
"$PY" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' || die "torch sees no CUDA device"

step "checking imports"
"$PY" - <<'PY' || die "a module the bench needs is missing: add its wheel to bench/gpu/prepare.sh"
import importlib
import sys

missing = []
for name in (
    "app.main", "app.__main__", "training.cli", "training.__main__", "training.onnx_export", "bench.load",
    "bench.inprocess", "bench.pyload", "fastai.vision.all", "fastapi", "fastapi_offline", "starlette", "pydantic",
    "pydantic_settings", "multipart", "python_multipart", "uvicorn", "httptools", "uvloop", "tqdm", "onnx",
    "onnxruntime", "sklearn", "cloudpickle",
):
    try:
        importlib.import_module(name)
    except Exception as e:  # report every failure, not only the first
        missing.append(f"{name}: {type(e).__name__}: {e}")
print("\n".join(missing) or "all imports found")
sys.exit(1 if missing else 0)
PY

left=$((BUDGET - (SECONDS - START) - 30))  # room for the INT, the kill 20 s later and the copies
[ "$left" -gt 60 ] || die "only ${left}s of the ${BUDGET}s budget left for the bench"
# a warm device keeps bench/.work between calls: what comes back must be this run's
rm -f bench/RESULTS-cuda.md bench/.work/results.json bench/.work/bench.log
step "python -m bench --cuda $* (timeout ${left}s)"
rc=0
timeout -s INT -k 20 "$left" "$PY" -m bench --cuda "$@" 2>&1 | tee "$OUT/bench-output.log" || rc=$?
[ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && step "the bench ran past ${left}s and was stopped: what it wrote so far is copied"

step "copying results into $OUT (bench exit $rc)"
for f in bench/RESULTS-cuda.md bench/.work/results.json bench/.work/bench.log; do
  if [ -f "$f" ]; then cp "$f" "$OUT/"; else echo "  (no $f)"; fi
done
ls -l "$OUT"
step "done in $((SECONDS - START))s"
exit "$rc"
