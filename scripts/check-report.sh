#!/usr/bin/env bash
# Checks the HTML report of `agcam eval … --report DIR` in a real headless browser: a small
# synthetic set, both protocols with every method and the bundled demo model, then Chromium
# loads each page (from disk, network off) and the script fails on a broken image, a script or
# resource error, or a missing plot. With --screenshot FILE it also saves the perturbation page
# as seen at 1280 px wide (docs/report.png is made this way).
#
#   apt-get install -y chromium      # Debian's package; not needed by the tests
#   cargo build --release && bash scripts/check-report.sh [--screenshot docs/report.png]
set -euo pipefail
BIN=${BIN:-target/release/agcam}
CHROMIUM=${CHROMIUM:-chromium}
COUNT=${COUNT:-12}
SHOT=
if [ "${1:-}" = "--screenshot" ]; then SHOT=$(realpath -m "$2"); fi
command -v "$CHROMIUM" >/dev/null || { echo "no $CHROMIUM: apt-get install -y chromium" >&2; exit 2; }
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 2; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
METHODS=agcam,attention-rollout,raw-attention
run() { "$@" >>"$WORK/agcam.log" 2>&1 || { cat "$WORK/agcam.log" >&2; exit 1; }; }
run "$BIN" synth --out "$WORK/data" --count "$COUNT" --seed 77
run "$BIN" eval localization --data "$WORK/data" --method "$METHODS" --report "$WORK/loc"
run "$BIN" eval perturbation --data "$WORK/data" --method "$METHODS" --report "$WORK/pert"

browse() {
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$(mktemp -d -p "$WORK")" --virtual-time-budget=10000 "$@"
}

# The check runs in a copy of the page with one script first in <head>: it records every error
# (script errors, and resource errors, which do not bubble but are seen while capturing), and at
# `load` writes what it found into the DOM, which --dump-dom then prints.
CHECK='<script>
var agcamErrors = [];
window.addEventListener("error", function (e) {
  agcamErrors.push(e.message || ("resource " + ((e.target && (e.target.src || e.target.href)) || "?")));
}, true);
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  var svgs = document.querySelectorAll("svg.plot");
  var empty = Array.prototype.filter.call(svgs, function (s) { return s.getBBox().width === 0; });
  var out = document.createElement("pre");
  out.id = "agcam-check";
  out.textContent = "images=" + imgs.length + " broken=" + broken.length + " plots=" + svgs.length +
    " empty_plots=" + empty.length + " tables=" + document.querySelectorAll("table").length +
    " errors=" + agcamErrors.length + " " + agcamErrors.join("; ");
  document.body.appendChild(out);
});
</script>'

status=0
for page in loc pert; do
    dir="$WORK/$page"
    python3 - "$dir/index.html" "$dir/checked.html" "$CHECK" <<'EOF'
import sys
src, dst, check = sys.argv[1:]
html = open(src, encoding="utf-8").read()
assert "<head>" in html
open(dst, "w", encoding="utf-8").write(html.replace("<head>", "<head>" + check, 1))
EOF
    browse --enable-logging=stderr --v=0 --dump-dom "file://$dir/checked.html" \
        >"$dir/dom.html" 2>"$dir/chromium.log" || true
    line=$(sed -n 's/.*<pre id="agcam-check">\([^<]*\)<\/pre>.*/\1/p' "$dir/dom.html")
    console=$(grep -E 'CONSOLE|Uncaught' "$dir/chromium.log" || true)
    echo "$page: ${line:-no result (the page did not load?)}"
    [ -n "$console" ] && echo "$page: console: $console"
    # Pass: a result, every image decoded, no error, plots present and drawn, the tables.
    if ! [[ "$line" =~ images=([0-9]+)\ broken=0\ plots=([0-9]+)\ empty_plots=0\ tables=([0-9]+)\ errors=0 ]] \
        || [ "${BASH_REMATCH[1]}" -eq 0 ] || [ "${BASH_REMATCH[2]}" -eq 0 ] \
        || [ "${BASH_REMATCH[3]}" -lt 2 ] || [ -n "$console" ]; then
        echo "$page: FAILED" >&2
        status=1
    fi
done

if [ -n "$SHOT" ]; then
    browse --hide-scrollbars --run-all-compositor-stages-before-draw \
        --window-size=1280,2400 --screenshot="$SHOT" \
        "file://$WORK/pert/index.html" 2>/dev/null
    echo "screenshot: $SHOT"
fi
[ "$status" -eq 0 ] && echo "report check passed"
exit "$status"
