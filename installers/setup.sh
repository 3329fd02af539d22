#!/usr/bin/env bash
# Sets up Easel in ./.venv on Linux or macOS: Python 3.11, the app, and the model exporter.
#   bash installers/setup.sh          app + exporter (what `easel models import` needs)
#   bash installers/setup.sh --test   also the test tools
# Safe to run again: it only installs what is missing, and moves packages to the pinned versions.
# Versions come from installers/constraints.txt (the ones the tests passed with). Two variables
# are for installers/try-newest.sh: EASEL_VENV (another folder than .venv) and EASEL_NEWEST=1
# (the newest versions pyproject.toml allows, ignoring the pins).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
venv=${EASEL_VENV:-.venv}
if ! command -v "$python" >/dev/null; then
    echo "setup: Easel needs Python 3.11 ($python was not found; set PYTHON=/path/to/python3.11)." >&2
    exit 1
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
pins=(-c installers/constraints.txt)
[ "${EASEL_NEWEST:-}" = 1 ] && pins=()

# torch is only for exporting models. Pin it first: an unpinned torch pulls a multi-GB CUDA
# build, and 2.13.0 satisfies the range in pyproject.toml (also with EASEL_NEWEST=1).
"$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"

extras="export"
# The tests also run batches on a local Ray cluster (the cluster extra).
[ "${1:-}" = "--test" ] && extras="export,test,cluster"
"${pip[@]}" install "${pins[@]}" -e ".[$extras]"
# Upscaler import (spandrel) without its torchvision requirement: PyPI's torchvision would
# replace the CPU torch with a CUDA build, and spandrel needs it only for networks Easel
# does not import. --no-deps keeps torch as it is.
"$venv/bin/python" -c "import spandrel, spandrel_extra_arches" 2>/dev/null \
    || "${pip[@]}" install "${pins[@]}" --no-deps "spandrel>=0.4,<0.5" "einops>=0.7" \
         "spandrel_extra_arches>=0.2,<0.3"  # CodeFormer
# Tests only: the invisible-watermark package, the reference our own watermark is checked
# against both ways. --no-deps: it asks for opencv-python (whose Qt clashes with PySide6),
# onnxruntime (which would shadow onnxruntime-gpu) and torch; the headless OpenCV does.
if [ "${1:-}" = "--test" ]; then
    "$venv/bin/python" -c "import imwatermark, cv2, pywt" 2>/dev/null \
        || "${pip[@]}" install "${pins[@]}" --no-deps "invisible-watermark==0.2.0" \
             opencv-python-headless PyWavelets
fi
# The window needs some system libraries that a stock desktop may lack (user guide: System packages
# the window needs). The command line works without them, so this only warns.
if [ "$(uname -s)" = Linux ] && ! "$venv/bin/python" -m desktop.display_check --libraries; then
    echo "setup: warning: the window will not open until those packages are installed;" \
         "the easel command line works without them." >&2
fi
echo "setup: ready. Run $venv/bin/easel --help" >&2
