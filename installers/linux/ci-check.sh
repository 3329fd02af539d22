#!/usr/bin/env bash
# The installed app, checked as a user would meet it (tests/run.sh runs this after pytest):
# builds the CPU .deb, installs it with apt-get, runs the installed `easel generate` and the
# window (under Xvfb) from outside the source tree with a fresh EASEL_HOME, runs `easel doctor`,
# runs the AppImage's AppRun, removes the package, and checks the user's data is untouched.
# Prints the sizes and times at the end. Needs root, apt-get and dpkg-deb (Debian, Ubuntu).
#   bash installers/linux/ci-check.sh [--no-build]   (--no-build: check the .deb built last time)
# The package is removed again whatever happens (trap), so a failure leaves the machine as it was.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
export DEBIAN_FRONTEND=noninteractive
prompt="a dog on the left"
check_started=$(date +%s)
package=easel
summary=()
say() { echo "ci-check: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { printf '%.1f' "$(echo "$(now) - $1" | bc)"; }

for tool in apt-get dpkg-deb; do
    command -v "$tool" >/dev/null || fail "needs $tool (Debian or Ubuntu)."
done
[ "$(id -u)" = 0 ] || fail "needs root to install the package with apt-get."
if dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
    # Left by a run that was killed before its trap: CI's machine only; elsewhere it may be the
    # user's own installation, which this must not replace.
    [ "${CI:-}" = true ] || fail "the $package package is installed here already; remove it" \
        "first (apt-get remove $package) or run this where it is not."
    apt-get remove -y -qq "$package" >/dev/null
fi

# Tools: Xvfb for the window, xwd to see its first frame, desktop-file-validate.
missing=()
command -v xvfb-run >/dev/null || missing+=(xvfb xauth)
command -v xwd >/dev/null || missing+=(x11-apps)
command -v desktop-file-validate >/dev/null || missing+=(desktop-file-utils)
command -v bc >/dev/null || missing+=(bc)
apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed; using the lists there are."
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || fail "could not install ${missing[*]}."
fi

# 1. Build.
out=installers/linux/build/cpu
if [ "${1:-}" = --no-build ]; then
    build_s="(not built: --no-build)"
else
    started=$(now)
    bash installers/linux/build.sh --flavour cpu
    build_s="$(since "$started") s"
fi
deb=$(ls "$out"/${package}_*.deb) || fail "no .deb in $out (build it: bash installers/linux/build.sh)"
download_mib=$(echo "scale=1; $(stat -c %s "$deb") / 1048576" | bc)
installed_mib=$(echo "scale=1; $(dpkg-deb -f "$deb" Installed-Size) / 1024" | bc)
summary+=("build (fresh venv, PyInstaller, icons, .deb, AppDir)|${build_s}")
summary+=(".deb download size|${download_mib} MiB ($(basename "$deb"))")
summary+=(".deb installed size|${installed_mib} MiB")

# 2. Install, with the removal armed from here on.
work=$(mktemp -d)
installed=0
cleanup() {
    status=$?
    if [ "$installed" = 1 ]; then
        apt-get remove -y -qq "$package" >/dev/null 2>&1 || say "could not remove $package"
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
started=$(now)
installed=1
apt-get install -y -qq "./$deb" >/dev/null || fail "apt-get install ./$deb"
summary+=("apt-get install (with its Depends)|$(since "$started") s")
[ "$(readlink -f "$(command -v easel)")" = /opt/easel/easel ] \
    || fail "easel on PATH is $(command -v easel), not the package's /opt/easel/easel."
desktop-file-validate /usr/share/applications/easel.desktop \
    /usr/share/applications/easel-open.desktop || fail "desktop-file-validate"

# 3. The installed command line, from outside the source tree, with a fresh data folder.
export EASEL_HOME=$work/home EASEL_CONFIG=$work/config  # nothing of this machine's user's
mkdir -p "$work/cwd"
cd "$work/cwd"
started=$(now)
easel generate "$prompt" || fail "the installed easel generate \"$prompt\""
generate_s=$(since "$started")
started=$(now)
easel generate "$prompt" --seed 2 >/dev/null 2>&1 || fail "the second easel generate"
summary+=("easel generate \"$prompt\" (first, second run)|${generate_s} s, $(since "$started") s")
pictures=$(find "$EASEL_HOME" -name '*.png' | wc -l)
[ "$pictures" -ge 2 ] || fail "easel generate left $pictures pictures in EASEL_HOME, not 2."
# Content Credentials: the bundle's native C2PA library loads, and the pictures are signed.
if easel gallery check --help >/dev/null 2>&1; then
    signed=$(find "$EASEL_HOME/images" -name '*.png' | head -1)
    easel gallery check "$signed" > "$work/check.log" 2>&1 \
        || { cat "$work/check.log" >&2; fail "easel gallery check of the installed app's picture"; }
    grep -q "Content Credentials: valid" "$work/check.log" \
        || { cat "$work/check.log" >&2; fail "the installed app's picture has no valid Content Credentials."; }
    summary+=("Content Credentials on the installed app's picture|valid")
fi

# 4. The installed window under Xvfb: up after ten seconds? First frame: the first moment the
# screen differs from the empty one (no window manager, so the window's first paint is that).
window_log=$work/window.log
xvfb-run -a -s "-screen 0 1280x800x24" bash -c '
    blank=$(xwd -root -silent | md5sum)
    started=$(date +%s.%N)
    easel > "$1" 2>&1 &
    pid=$!
    first=
    while [ -z "$first" ] && kill -0 $pid 2>/dev/null; do
        elapsed=$(echo "$(date +%s.%N) - $started" | bc)
        [ "$(echo "$elapsed > 10" | bc)" = 1 ] && break
        [ "$(xwd -root -silent | md5sum)" != "$blank" ] && first=$elapsed
        sleep 0.05
    done
    sleep "$(echo "x = 10 - ($(date +%s.%N) - $started); if (x > 0) x else 0" | bc)"
    if kill -0 $pid 2>/dev/null; then up=yes; else up=no; fi
    xwd -root -silent > "$2.xwd" || true
    kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
    echo "$up ${first:-none}" > "$2"
' window "$window_log" "$work/window.result" || fail "xvfb-run"
read -r up first_frame < "$work/window.result"
[ "$up" = yes ] || { cat "$window_log" >&2; fail "the installed window was not up after 10 s."; }
summary+=("window under Xvfb, up after 10 s|yes")
[ "$first_frame" = none ] || first_frame="$(printf '%.2f' "$first_frame") s"
summary+=("window: start to first painted frame|${first_frame}")

# "Open with Easel": the desktop entry's `easel open PICTURE`, up after five seconds.
picture=$(find "$EASEL_HOME/images" -name '*.png' | head -1)
if easel open --help >/dev/null 2>&1; then
    xvfb-run -a -s "-screen 0 1280x800x24" bash -c '
        easel open "$1" > "$2" 2>&1 & pid=$!
        sleep 5
        if kill -0 $pid 2>/dev/null; then echo yes; else echo no; fi > "$3"
        kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
    ' open "$picture" "$work/open.log" "$work/open.result" || fail "xvfb-run (easel open)"
    [ "$(cat "$work/open.result")" = yes ] \
        || { cat "$work/open.log" >&2; fail "easel open PICTURE was not up after 5 s."; }
    summary+=("easel open PICTURE under Xvfb, up after 5 s|yes")
else
    summary+=("easel open PICTURE|not in this version (skipped)")
fi

# 5. easel doctor, where this version has it.
if easel doctor --help >/dev/null 2>&1; then
    easel doctor || fail "easel doctor"
    summary+=("easel doctor|ran")
else
    summary+=("easel doctor|not in this version (skipped)")
fi

# 6. The AppImage: the extracted app (FUSE is not here), i.e. the AppDir's AppRun.
appimage=$(ls "$repo/$out"/Easel-*.AppImage 2>/dev/null || true)
if [ -n "$appimage" ]; then
    (cd "$work" && "$appimage" --appimage-extract >/dev/null) || fail "--appimage-extract"
    apprun=$work/squashfs-root/AppRun
    what="extracted AppImage"
else
    apprun=$repo/$out/AppDir/AppRun
    what="AppDir (no AppImage runtime here)"
fi
started=$(now)
EASEL_HOME=$work/appimage-home "$apprun" generate "$prompt" >/dev/null 2>&1 \
    || fail "the $what's AppRun generate"
summary+=("$what: AppRun generate|$(since "$started") s")

# 7. Remove the package: the user's data stays as it was.
before=$(cd "$EASEL_HOME" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
apt-get remove -y -qq "$package" >/dev/null || fail "apt-get remove $package"
installed=0
[ ! -e /opt/easel ] && [ ! -e /usr/bin/easel ] || fail "apt-get remove left /opt/easel or /usr/bin/easel"
after=$(cd "$EASEL_HOME" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
[ "$before" = "$after" ] || fail "removing the package changed the user's EASEL_HOME"
summary+=("apt-get remove: EASEL_HOME untouched|yes ($(echo "$after" | wc -l) files)")

summary+=("the whole check (build, install, runs, remove)|$(( $(date +%s) - check_started )) s")
echo
echo "Linux package check (installers/linux/ci-check.sh), $(nproc) cores:"
for line in "${summary[@]}"; do
    printf '  %-56s %s\n' "${line%%|*}" "${line#*|}"
done
