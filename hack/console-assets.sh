#!/usr/bin/env bash
# Fetch the console's two front-end libraries from npm (pinned) into src/kapell/console/static/vendor/.
# Their minified files are committed, so a fresh clone serves the console and passes `make test`
# with no npm; run this (`make console-assets`) to update them, then commit what changed.
set -euo pipefail
HTMX=2.0.11
UPLOT=1.6.32
out="$(cd "$(dirname "$0")/.." && pwd)/src/kapell/console/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "htmx.org@$HTMX" "uplot@$UPLOT" >/dev/null
mkdir htmx uplot
tar xzf "htmx.org-$HTMX.tgz" -C htmx
tar xzf "uplot-$UPLOT.tgz" -C uplot
mkdir -p "$out"
cp htmx/package/dist/htmx.min.js "$out/htmx.min.js"
cp htmx/package/LICENSE "$out/LICENSE.htmx"
cp uplot/package/dist/uPlot.iife.min.js uplot/package/dist/uPlot.min.css "$out/"
cp uplot/package/LICENSE "$out/LICENSE.uplot"
cat > "$out/README.md" <<TEXT
Vendored by \`make console-assets\` (hack/console-assets.sh) from npm; do not edit by hand.

| file | package | licence |
|---|---|---|
| htmx.min.js | htmx.org@$HTMX | BSD Zero Clause (LICENSE.htmx) |
| uPlot.iife.min.js, uPlot.min.css | uplot@$UPLOT | MIT (LICENSE.uplot) |
TEXT
echo "console assets: htmx.org@$HTMX, uplot@$UPLOT -> $out"
