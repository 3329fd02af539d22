#!/usr/bin/env bash
# Here, where PyPI answers: fetch what the device machine lacks, pack it and cut it into parts
# that travel one per device call (see README.md beside this file).
#
#   bash tests/benchmarks/gpu/fetch_wheels.sh
#
# 1. Downloads the cp312 manylinux wheels of onnxruntime-gpu and diffusers (the device has
#    Python 3.12, torch 2.11 with CUDA 13 and its nvidia-* wheels, transformers, onnx, but the
#    plain CPU onnxruntime and no diffusers; it cannot download anything).
# 2. Installs each into a folder of its own for Python 3.12 (pip --target, no dependencies: the
#    device has them), so the device only unpacks; drops what the benchmark never loads (the
#    TensorRT provider, the C API library) and keeps only the sm_90 code of the CUDA provider
#    (fatbin.py: H100 and H200 are sm_90; 186 MB packed becomes about 52).
# 3. Packs them with xz (Python's lzma unpacks it on the device without any tool) and cuts the
#    packs into parts that fit beside the working tree as it is now (parts.py split).
# Everything lands under tests/benchmarks/gpu/build/, which .gitignore's "build/" ignores.
# About 4 minutes on 2 cores, most of it xz.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PYTHON=${PYTHON:-.venv/bin/python}
GPU=tests/benchmarks/gpu
BUILD=$GPU/build
ORT_WHEEL=onnxruntime-gpu==1.31.1
DIFFUSERS_WHEEL=diffusers==0.42.1
PLATFORMS=(--python-version 3.12 --implementation cp --only-binary=:all:
           --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

if ! git check-ignore -q "$BUILD/"; then
    echo "$BUILD/ is not ignored by git, so it would travel with every call; stopping." >&2
    exit 1
fi
mkdir -p "$BUILD/wheels"
"$PYTHON" -m pip download -q --no-deps "${PLATFORMS[@]}" -d "$BUILD/wheels" \
    "$ORT_WHEEL" "$DIFFUSERS_WHEEL"

install() {  # install WHEEL into FOLDER for the device's Python
    rm -rf "$2"
    "$PYTHON" -m pip install -q --no-deps --no-compile --no-index --target "$2" \
        "${PLATFORMS[@]}" "$1"
    rm -rf "$2/bin"
}
install "$BUILD"/wheels/diffusers-0.42.1-*.whl "$BUILD/site-python"
install "$BUILD"/wheels/onnxruntime_gpu-1.31.1-cp312-*.whl "$BUILD/site-ort"
CAPI=$BUILD/site-ort/onnxruntime/capi
# Python loads onnxruntime_pybind11_state and, for CUDA, the two provider libraries; the C API
# library and TensorRT's provider (TensorRT is not on the device) are never opened.
rm -f "$CAPI"/libonnxruntime.so.* "$CAPI"/libonnxruntime_providers_tensorrt.so
"$PYTHON" "$GPU/fatbin.py" "$CAPI/libonnxruntime_providers_cuda.so" --arch 90

pack() {  # pack FOLDER into ARCHIVE, the same bytes for the same files
    tar -C "$1" --sort=name --owner=0 --group=0 --numeric-owner --mtime=2026-01-01 -cf - . \
        | xz -9e -T2 > "$2.partial"
    mv "$2.partial" "$2"
}
pack "$BUILD/site-python" "$BUILD/python.tar.xz"
pack "$BUILD/site-ort" "$BUILD/onnxruntime.tar.xz"
ls -l "$BUILD/python.tar.xz" "$BUILD/onnxruntime.tar.xz"
"$PYTHON" "$GPU/parts.py" split "$BUILD/onnxruntime.tar.xz" "$BUILD/python.tar.xz"
