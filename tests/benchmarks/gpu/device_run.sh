#!/usr/bin/env bash
# The GPU benchmark's device run (README.md beside this file): the three random-weight models,
# built or waited for, then Easel against diffusers on each (tests/benchmarks/gpu/run.py).
#
#   bash tests/benchmarks/gpu/device_run.sh [run.py options]    on the device, after install_parts.sh
#   bash tests/benchmarks/gpu/device_run.sh --dry-run            here: CPU provider, fp32, tiny models
#   bash tests/benchmarks/gpu/device_run.sh --build-only [--background]
#                                                                only the models (install_parts.sh 1
#                                                                starts this in the background)
#
# EASEL_GPU_WORK (default /tmp/easel-gpu, /tmp/easel-gpu-dry for a dry run) holds the unpacked
# packages, the models and the scratch; results go to $OUT (the device tool's folder that comes
# back), else WORK/out. PYTHON defaults to python3 there and .venv/bin/python for a dry run.
set -euo pipefail
cd "$(dirname "$0")/../../.."
dry=0 build_only=0 background=0 pass=()
for argument in "$@"; do
    case $argument in
        --dry-run) dry=1; pass+=("$argument") ;;
        --build-only) build_only=1 ;;
        --background) background=1 ;;
        *) pass+=("$argument") ;;
    esac
done
if [ "$dry" = 1 ]; then
    WORK=${EASEL_GPU_WORK:-/tmp/easel-gpu-dry}
    PYTHON=${PYTHON:-.venv/bin/python}
    scale=tiny
    export EASEL_BUILD_THREADS=${EASEL_BUILD_THREADS:-1}
else
    WORK=${EASEL_GPU_WORK:-/tmp/easel-gpu}
    PYTHON=${PYTHON:-python3}
    scale=real
    # What install_parts.sh unpacked comes before the image's own onnxruntime (CPU-only 1.30);
    # CUDA and cuDNN are the nvidia-* wheels beside torch.
    export PYTHONPATH="$WORK/site-ort:$WORK/site-python${PYTHONPATH:+:$PYTHONPATH}"
    libraries=$("$PYTHON" tests/benchmarks/gpu/parts.py libdirs)
    if [ -n "$libraries" ]; then
        export LD_LIBRARY_PATH="$libraries${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
fi
if [[ "$PYTHON" == */* ]]; then
    PYTHON=$(realpath -s "$PYTHON")  # the background build runs from a copy elsewhere
fi
OUT=${OUT:-$WORK/out}
export PYTHONUNBUFFERED=1
mkdir -p "$WORK" "$OUT"
cpus=$(nproc)
if ! command -v taskset > /dev/null; then
    cpus=1  # nothing to pin with: builds and benchmark share every core
fi

if [ "$build_only" = 1 ]; then
    # Building needs no GPU; on a machine with cores to spare it keeps off the four the
    # benchmark runs on, so a build still going does not slow the benchmark's CPU side.
    export CUDA_VISIBLE_DEVICES=""
    pin=()
    if [ "$cpus" -ge 8 ]; then
        pin=(taskset -c "4-$((cpus - 1))")
        export EASEL_BUILD_THREADS=$(((cpus - 4) / 3))
    fi
    build=(${pin[@]+"${pin[@]}"} "$PYTHON" -m tests.benchmarks.gpu.models --work "$WORK"
           --scale "$scale" --parallel sd15 turbo sdxl)
    if [ "$background" = 0 ]; then
        exec "${build[@]}"
    fi
    # A copy of the sources it reads: the next calls rewrite the working tree.
    rm -rf "$WORK/src" && mkdir -p "$WORK/src"
    tar -cf - --exclude=tests/benchmarks/gpu/build --exclude=__pycache__ engine \
        resources/configs resources/tokenizers tests/__init__.py tests/tiny_models.py \
        tests/tiny_models_xl.py tests/benchmarks | tar -xf - -C "$WORK/src"
    cd "$WORK/src"
    setsid nohup "${build[@]}" > "$WORK/build.log" 2>&1 < /dev/null &
    echo "building the models in the background (process $!); log: $WORK/build.log"
    exit 0
fi

pin=()
if [ "$dry" = 0 ] && [ "$cpus" -ge 8 ]; then
    pin=(taskset -c 0-3)
fi
set +e
${pin[@]+"${pin[@]}"} "$PYTHON" -m tests.benchmarks.gpu.run --work "$WORK" --out "$OUT" "${pass[@]}" \
    2>&1 | tee "$OUT/run.log"
status=${PIPESTATUS[0]}
set -e
if [ -f "$WORK/build.log" ]; then
    cp "$WORK/build.log" "$OUT/build.log"
fi
exit "$status"
