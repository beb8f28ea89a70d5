#!/usr/bin/env bash
# Run here (a machine with a registry), before bench/gpu/run.sh on a lent GPU machine (Python 3.12, torch, no
# registry): downloads the cp312 wheels that machine lacks into bench/gpu/.wheels, pinned to this venv's versions,
# and copies wrk and its libluajit into bench/gpu/.bin. Idempotent: a wheel already there is not fetched again.
# The device image already holds torch, torchvision, numpy, pillow, pandas, matplotlib, scikit-learn, onnx,
# onnxruntime, cloudpickle, accelerate, requests, pyyaml, click, h11, rich (see /work/.library/device/KINDS.md).
set -euo pipefail

cd "$(dirname "$0")/../.."
PIP=${PIP:-.venv/bin/pip}
[ -x "$PIP" ] || PIP=/work/main/.venv/bin/pip
WHEELS=bench/gpu/.wheels
BIN=bench/gpu/.bin

# What app/ (serve), training/ (train, export-onnx) and bench/ import at run time, and what those import, less
# what the device has: the serving stack with uvicorn[standard]'s httptools and uvloop (the HTTP parser and event
# loop `make serve` gets), fastai 2.8 and its own packages (fastprogress imports python-fasthtml and its needs).
PACKAGES=(
  fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv annotated-types annotated-doc
  typing-inspection typing-extensions anyio opentelemetry-api uvicorn httptools uvloop python-multipart
  fastapi-offline tqdm
  fastai fastcore fasttransform fastprogress fastdownload plum-dispatch beartype
  python-fasthtml beautifulsoup4 soupsieve httpx2 httpcore2 truststore itsdangerous oauthlib tzdata
)

norm() { tr '[:upper:]_.' '[:lower:]--' <<<"$1"; }
declare -A PINNED
while IFS='=' read -r name _ version; do
  PINNED[$(norm "$name")]=$version
done < <("$PIP" freeze --disable-pip-version-check 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==')

specs=()
for p in "${PACKAGES[@]}"; do
  v=${PINNED[$(norm "$p")]:-}
  [ -n "$v" ] || { echo "prepare.sh: $p is not in $PIP's environment: install the project's dev extras" >&2; exit 2; }
  specs+=("$p==$v")
done

mkdir -p "$WHEELS" "$BIN"
# a version that changed here leaves its old wheel behind: keep only the pinned ones (two versions stop pip)
for w in "$WHEELS"/*.whl; do
  [ -e "$w" ] || continue
  base=$(basename "$w")
  dist=$(norm "${base%%-*}")
  ver=${base#*-}
  ver=${ver%%-*}
  [ "${PINNED[$dist]:-}" = "$ver" ] || { echo "removing $base (not pinned here)"; rm -f "$w"; }
done

"$PIP" download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$WHEELS" "${specs[@]}"

# wrk (Debian's) and the LuaJIT it links; libssl/libcrypto 3 and glibc are expected there. It may not run there:
# run.sh checks it and falls back to bench/pyload.py.
if command -v wrk >/dev/null; then
  wrk_path=$(readlink -f "$(command -v wrk)")
  lib=$(ldd "$wrk_path" | awk '/libluajit-5.1.so.2/ {print $3}')
  [ -n "$lib" ] || { echo "prepare.sh: no libluajit-5.1.so.2 in ldd $wrk_path" >&2; exit 2; }
  install -m 0755 "$wrk_path" "$BIN/wrk"
  install -m 0644 "$(readlink -f "$lib")" "$BIN/libluajit-5.1.so.2"
else
  echo "prepare.sh: wrk is not installed here: the GPU run will use bench/pyload.py" >&2
fi

echo "$(find "$WHEELS" -name '*.whl' | wc -l) wheels in $WHEELS ($(du -sh "$WHEELS" | cut -f1)); $BIN: $(du -sh "$BIN" | cut -f1)"
echo "carried together: $(du -shc "$WHEELS" "$BIN" | tail -n 1 | cut -f1) (the device tool carries 64 MiB at most)"
