#!/usr/bin/env bash
# Builds Easel.app and a .dmg holding it, from the locked dependencies, on a Mac:
#   bash installers/macos/build.sh
# Output under installers/macos/build/ (git-ignored):
#   dist/Easel.app                   the app (Contents/MacOS/Easel is also the command line)
#   Easel-VERSION-macos-ARCH.dmg     the disk image: Easel.app and a link to /Applications
#   installed.txt                    the packages frozen into it
# The app runs on the CPU or, through the CoreML provider of the plain onnxruntime wheel, on the
# Apple GPU and Neural Engine. It is signed ad hoc (codesign -s -): Gatekeeper still warns on
# other Macs until it is signed with a Developer ID and notarised, which needs Apple developer
# credentials this recipe does not have (installers/README.md).
# Needs Python 3.11 (PYTHON=... to name it) and the Xcode command line tools' sips, iconutil,
# codesign and hdiutil.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(uname -s)" != Darwin ]; then
    echo "build: Easel.app is built on macOS (it needs sips, iconutil, codesign and hdiutil)." >&2
    exit 1
fi
python=${PYTHON:-python3.11}
if ! command -v "$python" >/dev/null; then
    echo "build: needs Python 3.11 ($python was not found; set PYTHON=/path/to/python3.11)." >&2
    exit 1
fi
here=installers/macos
out=$here/build
started=$(date +%s)
step() { echo "build: [$(( $(date +%s) - started )) s] $*" >&2; }
version=$("$python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
arch=$(uname -m)

# 1. A fresh build environment: the app's wheel and its locked dependencies, the freezer.
# pyproject.toml asks for the plain onnxruntime on macOS, and constraints.txt pins it there.
step "fresh build environment in $out (Easel $version, $arch)"
rm -rf "$out"
mkdir -p "$out"
"$python" -m venv "$out/venv"
py=$out/venv/bin/python
pip=("$py" -m pip --disable-pip-version-check -q)
"${pip[@]}" install -r "$here/requirements-build.txt"
"${pip[@]}" wheel --no-deps --no-build-isolation -w "$out/wheel" .
wheel=$(ls "$out"/wheel/easel-*.whl)
"${pip[@]}" install -c installers/constraints.txt "$wheel"
"$py" -m pip --disable-pip-version-check freeze > "$out/installed.txt"
"$py" - <<'EOF'
import sys

import onnxruntime

providers = onnxruntime.get_available_providers()
if "CoreMLExecutionProvider" not in providers:
    sys.exit(f"build: onnxruntime {onnxruntime.__version__} offers {providers}, not CoreML")
print(f"build: onnxruntime {onnxruntime.__version__}: {', '.join(providers)}", file=sys.stderr)
EOF

# 2. The icon: the SVG drawn once at 1024 px (sips and iconutil do not read SVG), then every
# size an .icns holds.
step "icon"
QT_QPA_PLATFORM=offscreen "$py" "$here/make_icon.py" resources/icons/easel.svg "$out/easel-1024.png" 1024
iconset=$out/Easel.iconset
mkdir -p "$iconset"
for size in 16 32 128 256 512; do
    sips -z "$size" "$size" "$out/easel-1024.png" --out "$iconset/icon_${size}x${size}.png" >/dev/null
    sips -z $((size * 2)) $((size * 2)) "$out/easel-1024.png" \
        --out "$iconset/icon_${size}x${size}@2x.png" >/dev/null
done
iconutil --convert icns --output "$out/Easel.icns" "$iconset"

# 3. Freeze: Easel.app (Info.plist from bundle_info.py).
step "PyInstaller"
EASEL_ICON=$PWD/$out/Easel.icns "$out/venv/bin/pyinstaller" --noconfirm --log-level WARN \
    --distpath "$out/dist" --workpath "$out/work" "$here/easel.spec"
app=$out/dist/Easel.app
/usr/libexec/PlistBuddy -c "Print :CFBundleShortVersionString" "$app/Contents/Info.plist"

# 4. Ad-hoc signature over the whole bundle (Apple silicon runs nothing unsigned).
step "codesign (ad hoc)"
codesign --force --deep --sign - "$app"
codesign --verify --deep --strict "$app"

# 5. Smoke check, into a throwaway data folder.
smoke=$(mktemp -d)
step "smoke check: easel doctor"
EASEL_HOME=$smoke "$app/Contents/MacOS/Easel" doctor
step "smoke check: easel generate with the starter model"
EASEL_HOME=$smoke "$app/Contents/MacOS/Easel" generate "a dog on the left" --count 1 \
    --output "$smoke/dog.png"
test -s "$smoke/dog.png" || { echo "build: easel generate made no picture." >&2; exit 1; }
# The window: still up after 15 s means Qt's cocoa plugin loaded and the app started.
step "smoke check: the window"
EASEL_HOME=$smoke "$app/Contents/MacOS/Easel" 2> "$smoke/window-err.txt" &
window=$!
sleep 15
if ! kill -0 "$window" 2>/dev/null; then
    cat "$smoke/window-err.txt" >&2
    echo "build: the window closed by itself within 15 s." >&2
    exit 1
fi
kill "$window"
wait "$window" 2>/dev/null || true
codesign --verify --deep --strict "$app"  # running it changed nothing inside the bundle

# 6. The disk image: the app and a link to /Applications to drag it onto.
step "dmg"
staging=$out/dmg
mkdir -p "$staging"
ditto "$app" "$staging/Easel.app"
ln -s /Applications "$staging/Applications"
dmg=$out/Easel-$version-macos-$arch.dmg
# hdiutil now and then answers "Resource busy" on hosted runners; a second try goes through.
for attempt in 1 2 3; do
    if hdiutil create -volname "Easel $version" -srcfolder "$staging" -fs HFS+ -format UDZO \
        -ov "$dmg" >/dev/null; then
        break
    fi
    [ "$attempt" = 3 ] && { echo "build: hdiutil could not make $dmg." >&2; exit 1; }
    sleep 10
done
hdiutil verify "$dmg" >/dev/null
step "dmg: $dmg ($(du -h "$dmg" | cut -f1); the app $(du -sh "$app" | cut -f1))"
step "done"
