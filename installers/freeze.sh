#!/usr/bin/env bash
# Writes installers/constraints.txt from a virtual environment whose tests passed:
#   bash installers/freeze.sh [VENV]      (default .venv)
# Every installed package is pinned, so the next machine installs exactly these versions.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
{
    echo "# The versions Easel's tests passed with; installers/setup.sh and tests/run.sh install"
    echo "# exactly these. Move a pin on purpose: bash installers/try-newest.sh (docs in README)."
    echo "# Written by installers/freeze.sh from a passing environment; do not edit by hand."
    # torch's local label (+cpu) is this machine's build; the pin must also admit other builds.
    "$venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
        | grep -v '^#' | sed -E 's/^(torch==[^+]+)\+.*/\1/'
    # macOS takes the plain ONNX Runtime (pyproject.toml); keep it at the GPU build's version.
    ort=$("$venv/bin/python" -m pip freeze --disable-pip-version-check | sed -n 's/^onnxruntime-gpu==//p')
    if [ -n "$ort" ]; then echo "onnxruntime==$ort ; sys_platform == 'darwin'"; fi
} > installers/constraints.txt.new
mv installers/constraints.txt.new installers/constraints.txt
echo "freeze: installers/constraints.txt has $(grep -vc '^#' installers/constraints.txt) pins" >&2
