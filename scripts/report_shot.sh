#!/usr/bin/env bash
# Render a fedsurv report.html in headless Chromium to PNGs at a desktop and a phone width,
# to look at it as a reader would (make report-shot).
#
#   scripts/report_shot.sh [REPORT_HTML] [OUT_DIR]
#
# REPORT_HTML defaults to fedsurv-demo/report.html (what `make demo` writes); OUT_DIR to the
# report's folder. Writes OUT_DIR/report-1280.png and OUT_DIR/report-390.png. The window is
# as tall as SHOT_HEIGHT_1280 / SHOT_HEIGHT_390 pixels (defaults 12000 and 24000) so the whole
# page fits in one image; the blank space under the page is then cut off with the project's
# Python (matplotlib brings Pillow), which also warns if the page was taller than the window.
# Installs nothing; needs Debian's chromium package.
set -euo pipefail

report="${1:-fedsurv-demo/report.html}"
out_dir="${2:-$(dirname "$report")}"
chromium="${CHROMIUM:-/usr/bin/chromium}"
python="${PYTHON:-.venv/bin/python}"

if [[ ! -x "$chromium" ]]; then
    echo "report-shot: $chromium not found; install it with: sudo apt-get update && sudo apt-get install -y chromium" >&2
    exit 1
fi
if [[ ! -f "$report" ]]; then
    echo "report-shot: no report at $report (run \`make demo\` or \`fedsurv report DIR\` first, or pass its path)" >&2
    exit 1
fi
mkdir -p "$out_dir"
url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT

for width in 1280 390; do
    height_var="SHOT_HEIGHT_$width"
    default_height=$([[ $width == 1280 ]] && echo 12000 || echo 24000)
    height="${!height_var:-$default_height}"
    shot="$(cd "$out_dir" && pwd)/report-$width.png"
    "$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --force-device-scale-factor=1 \
        --user-data-dir="$profile" --screenshot="$shot" --window-size="$width,$height" \
        "$url" >/dev/null 2>&1
    if [[ ! -s "$shot" ]]; then
        echo "report-shot: chromium wrote no screenshot for width $width" >&2
        exit 1
    fi
    size="${width}x${height}"
    if [[ -x "$python" ]]; then
        size="$("$python" - "$shot" <<'PY'
import sys
import numpy as np
from PIL import Image

path = sys.argv[1]
im = Image.open(path).convert("RGB")
ink = np.flatnonzero((np.asarray(im.convert("L")) < 250).any(axis=1))
bottom = int(ink[-1]) + 1 if ink.size else im.height
if bottom >= im.height - 2:
    print(f"warning: the page may be taller than the window ({im.height} px)", file=sys.stderr)
im.crop((0, 0, im.width, min(im.height, bottom + 24))).save(path, optimize=True)
print(f"{im.width}x{min(im.height, bottom + 24)}")
PY
)"
    fi
    echo "wrote $shot ($size)"
done
