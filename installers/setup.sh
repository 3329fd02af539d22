#!/usr/bin/env bash
# Sets up Easel in ./.venv on Linux or macOS: Python 3.11, the app, and the model exporter.
#   bash installers/setup.sh          app + exporter (what `easel models import` needs)
#   bash installers/setup.sh --test   also the test tools
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
if ! command -v "$python" >/dev/null; then
    echo "setup: Easel needs Python 3.11 ($python was not found; set PYTHON=/path/to/python3.11)." >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

# torch is only for exporting models. Pin it first: an unpinned torch pulls a multi-GB CUDA
# build, and 2.13.0 satisfies the range in pyproject.toml.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"

extras="export"
[ "${1:-}" = "--test" ] && extras="export,test"
"${pip[@]}" install -e ".[$extras]"
# Upscaler import (spandrel) without its torchvision requirement: PyPI's torchvision would
# replace the CPU torch with a CUDA build, and spandrel needs it only for networks Easel
# does not import. --no-deps keeps torch as it is.
.venv/bin/python -c "import spandrel" 2>/dev/null \
    || "${pip[@]}" install --no-deps "spandrel>=0.4,<0.5" "einops>=0.7"
echo "setup: ready. Run .venv/bin/easel --help" >&2
