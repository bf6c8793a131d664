#!/usr/bin/env bash
# Refreshes the vendored libraries of the console from their published npm
# packages (only npm is needed): `bash console/vendor/update.sh`. Each file is the
# package's own ES module build; the one change made is that `preact/hooks`
# imports Preact by a relative path, since a page without a bundler (and without
# an inline import map, which the console's CSP forbids) cannot resolve "preact".
set -euo pipefail
cd "$(dirname "$0")"
preact=10.29.8
htm=3.1.1
uplot=1.6.32
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "preact@$preact" "htm@$htm" "uplot@$uplot" >/dev/null)
mkdir "$tmp/preact" "$tmp/htm" "$tmp/uplot"
tar xzf "$tmp/preact-$preact.tgz" -C "$tmp/preact"
tar xzf "$tmp/htm-$htm.tgz" -C "$tmp/htm"
tar xzf "$tmp/uplot-$uplot.tgz" -C "$tmp/uplot"
strip_map() { sed -e '/^\/\/# sourceMappingURL=/d' "$1"; }
strip_map "$tmp/preact/package/dist/preact.module.js" >preact.js
strip_map "$tmp/preact/package/hooks/dist/hooks.module.js" | sed -e 's#from"preact"#from"./preact.js"#' >hooks.js
strip_map "$tmp/htm/package/dist/htm.module.js" >htm.js
# Lowercase names: the server embeds only lowercase asset names.
strip_map "$tmp/uplot/package/dist/uPlot.esm.js" >uplot.js
cp "$tmp/uplot/package/dist/uPlot.min.css" uplot.css
cp "$tmp/preact/package/LICENSE" LICENSE-preact.txt
cp "$tmp/htm/package/LICENSE" LICENSE-htm.txt
cp "$tmp/uplot/package/LICENSE" LICENSE-uplot.txt
grep -q 'from"./preact.js"' hooks.js
echo "preact $preact, htm $htm, uplot $uplot"
