#!/usr/bin/env bash
# Builds Easel's self-contained Linux packages from the locked dependencies:
#   bash installers/linux/build.sh [--flavour cpu|nvidia] [--no-appimage] [--bundle-only]
#   bash installers/linux/build.sh --importer [--bundle-only]
# Output under installers/linux/build/FLAVOUR/ (git-ignored):
#   dist/easel/             the PyInstaller onedir bundle (no Python needed on the machine)
#   easel_VERSION_ARCH.deb  (easel-nvidia_... for the NVIDIA flavour)
#   AppDir/                 the AppImage's tree; Easel-VERSION-ARCH.AppImage when a runtime is
#                           at hand (EASEL_APPIMAGE_RUNTIME=FILE, or appimagetool on PATH)
# --importer builds the model importer instead, under installers/linux/build/importer/:
# dist/easel-importer/ (the same command with torch, diffusers and transformers, no Qt) and
# easel-importer_VERSION_ARCH.deb. Its torch must be the CPU build: PyPI's Linux torch is the
# CUDA one, so name the CPU index where there is one (EASEL_TORCH_INDEX=https://download.pytorch.org/whl/cpu).
# Needs Python 3.11 (PYTHON=... to name it), dpkg-deb for the .deb, mksquashfs for the AppImage.
# Docs: installers/linux/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

flavour=cpu
appimage=1
packages=1
importer=0
while [ $# -gt 0 ]; do
    case $1 in
        --flavour) flavour=${2:-}; shift 2 ;;
        --flavour=*) flavour=${1#*=}; shift ;;
        --no-appimage) appimage=0; shift ;;
        --bundle-only) packages=0; shift ;;  # stop after the onedir bundle (and its checks)
        --importer) importer=1; shift ;;  # the model importer package (CPU torch)
        *) echo "build: unknown argument $1 (usage: build.sh [--flavour cpu|nvidia]" \
                "[--no-appimage] [--bundle-only] [--importer])" >&2
           exit 2 ;;
    esac
done
case $flavour in
    # One flavour installed at a time; the NVIDIA one also stands in for "easel" as a dependency.
    cpu) package=easel; conflicts=easel-nvidia; provides= ;;
    nvidia) package=easel-nvidia; conflicts=easel; provides=easel ;;
    *) echo "build: the flavour is cpu or nvidia, not '$flavour'." >&2; exit 2 ;;
esac
# The program, its spec and control template, and where it all goes.
program=easel
if [ "$importer" = 1 ]; then
    [ "$flavour" = cpu ] || { echo "build: the importer is built with the cpu flavour." >&2; exit 2; }
    program=easel-importer package=easel-importer conflicts= provides= appimage=0
fi

python=${PYTHON:-python3.11}
if ! command -v "$python" >/dev/null; then
    echo "build: needs Python 3.11 ($python was not found; set PYTHON=/path/to/python3.11)." >&2
    exit 1
fi
here=installers/linux
out=$here/build/$flavour
[ "$importer" = 1 ] && out=$here/build/importer
started=$(date +%s)
step() { echo "build: [$(( $(date +%s) - started )) s] $*" >&2; }
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)

# 1. A fresh build environment: the app's wheel and its locked dependencies, the freezer.
step "fresh build environment in $out/venv ($flavour flavour, Easel $version)"
rm -rf "$out"
mkdir -p "$out"
"$python" -m venv "$out/venv"
py="$out/venv/bin/python"
pip() {  # quiet, less this machine's notes about local package folders that are not there
    "$py" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v 'is ignored: it is neither' >&2)
}
pip install -r "$here/requirements-build.txt"
# The pins, with the plain onnxruntime's pin applying here too (constraints.txt keeps it for
# macOS, where pyproject.toml asks for it): the CPU flavour installs it at the same version as
# onnxruntime-gpu.
"$py" "$here/flavour.py" constraints installers/constraints.txt > "$out/constraints.txt"
# The wheel is built from a copy of the files git tracks or would track, not in the checkout:
# setuptools' build/ folder keeps files since deleted and would put them in the wheel.
source=.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    source=$out/source
    mkdir -p "$source"
    git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$source"
fi
pip wheel --no-deps --no-build-isolation -w "$out/wheel" "$source"
wheel=$(ls "$out"/wheel/easel-*.whl)
if [ "$importer" = 1 ]; then
    # torch first, on its own: with nothing installed, a torch requirement takes PyPI's CUDA
    # build (several GB of nvidia-* wheels). Then the app with the export extra, and spandrel
    # and einops without their torchvision requirement, as installers/setup.sh does.
    pip install ${EASEL_TORCH_INDEX:+--index-url "$EASEL_TORCH_INDEX"} \
        -c "$out/constraints.txt" torch
    # Less Qt: the importer never opens a window (its spec leaves PySide6 out too).
    mapfile -t requirements < <("$py" "$here/flavour.py" requirements "$wheel" cpu export \
                                | grep -vi '^pyside6')
    pip install -c "$out/constraints.txt" "${requirements[@]}"
    pip install -c "$out/constraints.txt" --no-deps spandrel einops spandrel_extra_arches
    pip install --no-deps "$wheel"
    "$py" -c 'import sys, torch; sys.exit(torch.version.cuda is not None)' || {
        echo "build: torch in $out/venv is a CUDA build; the importer needs the CPU one" \
             "(EASEL_TORCH_INDEX=https://download.pytorch.org/whl/cpu)." >&2; exit 1; }
elif [ "$flavour" = cpu ]; then
    # onnxruntime and onnxruntime-gpu provide the same module and cannot share an environment:
    # the app's dependencies with the GPU build swapped for the plain one, then the app itself.
    mapfile -t requirements < <("$py" "$here/flavour.py" requirements "$wheel" cpu)
    pip install -c "$out/constraints.txt" "${requirements[@]}"
    pip install --no-deps "$wheel"
else
    pip install -c "$out/constraints.txt" "easel[cuda] @ file://$PWD/$wheel"
fi
"$py" -m pip --disable-pip-version-check freeze > "$out/installed.txt"

# 2. Freeze: a onedir bundle.
step "PyInstaller"
# Its warnings about GTK (for Qt's optional GTK theme plugin, left to the system) and Windows
# libraries are expected; the rest are shown.
control_in=$here/control.in
[ "$importer" = 1 ] && control_in=$here/importer-control.in
EASEL_FLAVOUR=$flavour "$out/venv/bin/pyinstaller" --noconfirm --log-level WARN \
    --distpath "$out/dist" --workpath "$out/work" "$here/$program.spec" \
    2> >(grep -vE "libqgtk3.so'|Library (shell32|ole32) required via ctypes" >&2)
bundle=$out/dist/$program
find "$bundle" -xtype l -delete  # links to the Qt libraries the spec left out (eglfs)
"$bundle/$program" --help >/dev/null  # starts at all: imports the command line and its engine
if [ "$importer" = 1 ]; then
    # The classes the exporter loads by name from diffusers' and transformers' lazy modules,
    # and spandrel as the exporter loads it (with its stand-in for torchvision).
    "$bundle/$program" -I -c 'from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizerFast
import onnx, onnxscript, torch.onnx, engine.export.fusion, engine.export.diffusers_folder
from engine.export.upscaler_checkpoint import import_spandrel
import_spandrel()'
fi
# The system libraries the bundle leaves to the system (the spec) must all be in Depends.
"$py" "$here/flavour.py" depends-check "$bundle" "$control_in"
glibc=$("$py" "$here/flavour.py" glibc "$bundle")
step "bundle: $(du -sh "$bundle" | cut -f1)"

if [ "$packages" = 0 ]; then
    step "done in $(( $(date +%s) - started )) s (--bundle-only: no .deb, no AppDir)"
    exit 0
fi

# 3. Icons at the hicolor sizes, rendered from the one SVG (the app only: the importer has no
# window and no menu entry).
if [ "$importer" = 0 ]; then
    step "icons"
    icons=$out/icons
    QT_QPA_PLATFORM=offscreen "$py" "$here/render_icons.py" resources/icons/easel.svg "$icons"
fi

# 4. The .deb: /opt/PROGRAM, /usr/bin/PROGRAM; the app adds desktop entries and icons. No
# maintainer scripts: the desktop database and icon caches update through the triggers
# desktop-file-utils and the icon themes register, and nothing of the user's
# (~/.local/share/Easel) is ever touched.
step "deb"
root=$out/deb
mkdir -p "$root/DEBIAN" "$root/opt" "$root/usr/bin" "$root/usr/share/doc/$package"
cp -al "$bundle" "$root/opt/$program"
ln -s "/opt/$program/$program" "$root/usr/bin/$program"
if [ "$importer" = 0 ]; then
    mkdir -p "$root/usr/share/applications"
    cp "$here/easel.desktop" "$here/easel-open.desktop" "$root/usr/share/applications/"
    cp -r "$icons" "$root/usr/share/icons"
fi
copyright=$here/copyright
[ "$importer" = 1 ] && copyright=$here/importer-copyright
cp "$copyright" "$root/usr/share/doc/$package/copyright"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
"$py" "$here/flavour.py" control "$control_in" package="$package" version="$version" \
    arch="$arch" conflicts="$conflicts" provides="$provides" glibc="$glibc" installed_size="$installed_kb" > "$root/DEBIAN/control"
deb=$out/${package}_${version}_${arch}.deb
# The app: xz -6, what Debian uses: 2.5 min here on 2 cores; zstd -19 took longer and gave 7%
# more. The importer and the NVIDIA flavour: zstd -9 (README.md: their bundles are three to ten
# times the app's, and xz would take most of an hour on 2 cores).
compression=(-Zxz -z6)
if [ "$importer" = 1 ] || [ "$flavour" = nvidia ]; then
    compression=(-Zzstd -z9)
fi
dpkg-deb --root-owner-group "${compression[@]}" --threads-max="$(nproc)" --build "$root" "$deb" >/dev/null
step "deb: $deb ($(du -h "$deb" | cut -f1) download, $((installed_kb / 1024)) MiB installed)"

# 5. The AppImage: an AppDir (AppRun, desktop entry, icon, the bundle), then runtime + squashfs.
if [ "$appimage" = 1 ]; then
    step "AppDir"
    appdir=$out/AppDir
    mkdir -p "$appdir/usr/lib" "$appdir/usr/share/applications"
    cp -al "$bundle" "$appdir/usr/lib/easel"
    cp "$here/AppRun" "$appdir/AppRun"
    chmod 755 "$appdir/AppRun"
    cp "$here/easel-open.desktop" "$appdir/usr/share/applications/"
    cp "$here/easel.desktop" "$appdir/easel.desktop"
    cp -r "$icons" "$appdir/usr/share/icons"
    cp "$icons/hicolor/256x256/apps/easel.png" "$appdir/easel.png"
    ln -s easel.png "$appdir/.DirIcon"
    image=$out/Easel-$version-$(uname -m).AppImage
    runtime=${EASEL_APPIMAGE_RUNTIME:-}
    if [ -n "$runtime" ] && command -v mksquashfs >/dev/null; then
        # The type-2 runtime reads a squashfs appended to it (zstd needs a runtime from 2022 on;
        # gzip reads everywhere).
        mksquashfs "$appdir" "$out/AppDir.squashfs" -root-owned -noappend -comp gzip -quiet
        cat "$runtime" "$out/AppDir.squashfs" > "$image"
        chmod 755 "$image"
        rm "$out/AppDir.squashfs"
        step "AppImage: $image ($(du -h "$image" | cut -f1))"
    elif command -v appimagetool >/dev/null; then
        ARCH=$(uname -m) appimagetool --no-appstream "$appdir" "$image" >/dev/null
        step "AppImage: $image ($(du -h "$image" | cut -f1))"
    else
        step "AppImage: not made. The AppDir is ready in $appdir; the last step needs the" \
             "AppImage type-2 runtime or appimagetool, which come only from GitHub (not from" \
             "PyPI, npm or Debian). Where they can be fetched: appimagetool $appdir" \
             "$image, or EASEL_APPIMAGE_RUNTIME=runtime-$(uname -m) bash $0 (with mksquashfs)."
    fi
fi
step "done in $(( $(date +%s) - started )) s"
