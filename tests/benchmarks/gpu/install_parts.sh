#!/usr/bin/env bash
# On the device, one call per part, each carrying tests/benchmarks/gpu/build/parts/N
# (README.md beside this file):
#
#   bash tests/benchmarks/gpu/install_parts.sh N
#
# Every call keeps its part in $EASEL_GPU_WORK/parts (default /tmp/easel-gpu) and checks that
# the earlier calls' parts are still there: the probe that files persist on the warm machine.
# Part 1 also prints what the machine has (and writes it to $OUT/probe.txt), unpacks diffusers
# and starts building the models in the background. When the last part has arrived, the
# onnxruntime-gpu package is put together, unpacked and tried on the GPU.
set -euo pipefail
cd "$(dirname "$0")/../../.."
number=${1:?which part this call carried: 1, 2, ...}
WORK=${EASEL_GPU_WORK:-/tmp/easel-gpu}
OUT=${OUT:-$WORK/out}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$WORK" "$OUT"
parts=tests/benchmarks/gpu/parts.py

"$PYTHON" "$parts" stage "$number" --work "$WORK"
"$PYTHON" "$parts" assemble --work "$WORK"
if [ "$number" = 1 ]; then
    bash tests/benchmarks/gpu/device_run.sh --build-only --background
    "$PYTHON" "$parts" probe --work "$WORK" | tee "$OUT/probe.txt"
fi
if [ -f "$WORK/site-ort/.unpacked" ]; then
    libraries=$("$PYTHON" "$parts" libdirs)
    PYTHONPATH="$WORK/site-ort:$WORK/site-python" \
        LD_LIBRARY_PATH="$libraries${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$PYTHON" "$parts" check
fi
if [ -f "$WORK/build.log" ]; then
    echo "--- the background build so far:"
    tail -n 12 "$WORK/build.log"
fi
