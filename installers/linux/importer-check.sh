#!/usr/bin/env bash
# The model importer package checked as a user would meet it: builds easel-importer's .deb,
# installs it beside the app's .deb with apt-get, and from outside the source tree with a fresh
# EASEL_HOME imports a tiny diffusers folder and a tiny Real-ESRGAN .pth through the installed
# /usr/bin/easel (which hands the import to /opt/easel-importer), draws and upscales with them,
# then removes easel-importer and checks that importing says the one sentence again.
# Prints the sizes and times at the end. Needs root, apt-get, dpkg-deb and the dev environment
# (.venv, with the export extra and spandrel: it makes the tiny models).
#   bash installers/linux/importer-check.sh [--no-build]   (--no-build: the .debs built last)
# The app's .deb is the one in installers/linux/build/cpu (ci-check.sh's), built here only when
# there is none. Both packages are removed again whatever happens (trap).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
export DEBIAN_FRONTEND=noninteractive
check_started=$(date +%s)
summary=()
say() { echo "importer-check: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }
mib() { echo "scale=1; $1 / 1048576" | bc; }

for tool in apt-get dpkg-deb bc; do
    command -v "$tool" >/dev/null || fail "needs $tool (Debian or Ubuntu)."
done
[ "$(id -u)" = 0 ] || fail "needs root to install the packages with apt-get."
python=${EASEL_VENV:-.venv}/bin/python
"$python" -c "import torch, diffusers, importlib.util as u; assert u.find_spec('spandrel')" \
    2>/dev/null \
    || fail "needs the dev environment with the export extra and spandrel (installers/setup.sh)."
for package in easel easel-importer; do
    if dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
        # Left by a killed run on CI's machine; elsewhere it may be the user's own installation.
        [ "${CI:-}" = true ] || fail "the $package package is installed here already; remove" \
            "it first (apt-get remove $package) or run this where it is not."
        apt-get remove -y -qq "$package" >/dev/null
    fi
done

# 1. Build the importer (and the app, when ci-check.sh has not left its .deb).
importer_out=installers/linux/build/importer app_out=installers/linux/build/cpu
if [ "${1:-}" = --no-build ]; then
    summary+=("build easel-importer|(not built: --no-build)")
else
    started=$(now)
    bash installers/linux/build.sh --importer
    summary+=("build easel-importer (venv, PyInstaller, .deb)|$(since "$started") s")
    if ! ls "$app_out"/easel_*.deb >/dev/null 2>&1; then
        started=$(now)
        bash installers/linux/build.sh --no-appimage
        summary+=("build easel (no .deb was there)|$(since "$started") s")
    fi
fi
importer_deb=$(ls "$importer_out"/easel-importer_*.deb) || fail "no .deb in $importer_out"
app_deb=$(ls "$app_out"/easel_*.deb) || fail "no .deb in $app_out"
summary+=("easel-importer .deb download / installed|$(mib "$(stat -c %s "$importer_deb")") MiB /\
 $(echo "scale=1; $(dpkg-deb -f "$importer_deb" Installed-Size) / 1024" | bc) MiB")
summary+=("easel .deb download (beside it)|$(mib "$(stat -c %s "$app_deb")") MiB")

# 2. The tiny models, made by the dev environment as the tests make them: an SD 1 diffusers
# folder and a Real-ESRGAN x4 .pth (a pickle: the importer converts it in its own process).
work=$(mktemp -d)
installed=()
cleanup() {
    status=$?
    for package in "${installed[@]}"; do
        apt-get remove -y -qq "$package" >/dev/null 2>&1 || say "could not remove $package"
    done
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$python" - "$work" <<'EOF' || fail "could not make the tiny models"
import shutil, sys
from pathlib import Path

import torch

from tests import tiny_models
from tests.test_upscale import rrdb_state

work = Path(sys.argv[1])
shutil.copytree(tiny_models.tiny_diffusers("sd1"), work / "tiny-sd1")
torch.save({"params_ema": rrdb_state(4)}, work / "RealESRGAN_x4plus.pth")
EOF

# 3. Install both, with the removal armed from here on.
started=$(now)
installed=(easel-importer easel)
apt-get install -y -qq "./$app_deb" "./$importer_deb" >/dev/null \
    || fail "apt-get install ./$app_deb ./$importer_deb"
summary+=("apt-get install easel and easel-importer|$(since "$started") s")
[ "$(readlink -f "$(command -v easel-importer)")" = /opt/easel-importer/easel-importer ] \
    || fail "easel-importer on PATH is $(command -v easel-importer), not /opt/easel-importer's."
[ ! -e /opt/easel-importer/_internal/PySide6 ] || fail "the importer bundle carries PySide6."
[ -z "$(dpkg-deb -c "$importer_deb" | grep -E ' \./usr/share/(applications|icons)/')" ] \
    || fail "the importer package has a desktop entry or icons."

# 4. Import through the app, from outside the source tree, with a fresh data folder.
export EASEL_HOME=$work/home EASEL_CONFIG=$work/config
mkdir -p "$work/cwd"
cd "$work/cwd"
started=$(now)
easel models import "$work/tiny-sd1" --name tiny || fail "easel models import (diffusers folder)"
summary+=("easel models import: tiny SD 1 diffusers folder|$(since "$started") s")
started=$(now)
easel models import "$work/RealESRGAN_x4plus.pth" --name tiny-x4 \
    || fail "easel models import (Real-ESRGAN .pth)"
summary+=("easel models import: tiny Real-ESRGAN x4 .pth|$(since "$started") s")
easel models list | grep -q tiny || fail "easel models list does not show tiny"
easel generate "a cat" --model tiny --steps 2 --width 64 --height 64 \
    || fail "easel generate --model tiny"
picture=$(find "$EASEL_HOME/images" -name '*.png' | head -1)
[ -n "$picture" ] || fail "easel generate --model tiny left no picture"
summary+=("easel generate --model tiny: a picture|yes")
easel upscale "$picture" --model tiny-x4 || fail "easel upscale --model tiny-x4"
summary+=("easel upscale --model tiny-x4|yes")
started=$(now)
/opt/easel-importer/easel-importer --help >/dev/null || fail "easel-importer --help"
summary+=("easel-importer --help (start, imports)|$(since "$started") s")

# 5. Without the importer, importing says what to install, in one sentence.
apt-get remove -y -qq easel-importer >/dev/null || fail "apt-get remove easel-importer"
installed=(easel)
[ ! -e /opt/easel-importer ] && [ ! -e /usr/bin/easel-importer ] \
    || fail "apt-get remove left /opt/easel-importer or /usr/bin/easel-importer"
if easel models import "$work/tiny-sd1" --name again 2> "$work/refused.txt"; then
    fail "easel models import worked without the importer"
fi
grep -q "install the easel-importer package" "$work/refused.txt" \
    || { cat "$work/refused.txt" >&2; fail "the import did not name the easel-importer package"; }
! grep -q Traceback "$work/refused.txt" || fail "the refused import printed a traceback"
summary+=("without easel-importer: the one sentence|yes")

summary+=("the whole check|$(( $(date +%s) - check_started )) s")
echo
echo "Model importer package check (installers/linux/importer-check.sh), $(nproc) cores:"
for line in "${summary[@]}"; do
    printf '  %-56s %s\n' "${line%%|*}" "${line#*|}"
done
cd "$repo"
