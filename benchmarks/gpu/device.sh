#!/bin/sh
# Runs on the GPU machine, in the repo copy, after the calls in .gpu-carry/PLAN.md brought every
# piece to /tmp/fg-carry: join the pieces, install the wheels beside the image's own packages,
# and run the benchmark inside a network namespace with only loopback (Ray binds every address).
set -eu
CARRY=/tmp/fg-carry
# The repo copy under the name an install gives it (facegraph.models, ...), without installing it.
mkdir -p /tmp/fg-src/facegraph
for part in models graph deployments benchmarks; do ln -sfn "$(pwd)/$part" "/tmp/fg-src/facegraph/$part"; done
export PYTHONPATH="/tmp/fg-src"
python3 -c "from pathlib import Path; from facegraph.benchmarks.gpu.prepare import join; join(Path('$CARRY/wheels'))"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/wheels/*.whl
export PYTHONPATH="/tmp/site:/tmp/fg-src:$(pwd)" FACEGRAPH_CACHE="$CARRY/cache" RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/fg-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
# A network namespace only: nvidia-smi's process ids must stay the machine's own.
unshare -n sh -c 'python3 -c "from facegraph.benchmarks.machine import loopback_up; loopback_up()" && python3 -m facegraph.benchmarks.gpu --out "$0"' "$OUT" 2>&1 | tee "$OUT/log.txt"
