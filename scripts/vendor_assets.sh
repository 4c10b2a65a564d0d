#!/usr/bin/env bash
# Re-vendor every browser map asset into gisportal/static/vendor/ from the npm registry (and, for
# folium's rotate css, the folium sdist on PyPI), so that maps work on an intranet with no internet
# (PITFALLS.md rows 9 and 10). Not run by the build: the output is committed. Run from anywhere:
#     bash scripts/vendor_assets.sh
# Needs: npm, tar, and the project venv's pip. Only referenced dist files are kept; source-map
# comments are stripped (the .map files are not shipped, and Django's ManifestStaticFilesStorage
# fails on a sourceMappingURL that points at a missing file).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/gisportal/static/vendor"
PIP="${PIP:-$ROOT/.venv/bin/pip}"

# name|npm spec|licence (SPDX, as checked in the package's own licence text)
PACKAGES=(
  "leaflet|leaflet@1.9.4|BSD-2-Clause"
  "jquery|jquery@3.7.1|MIT"
  "bootstrap|bootstrap@5.2.2|MIT"
  "leaflet-awesome-markers|leaflet.awesome-markers@2.0.5|MIT"
  "fontawesome|@fortawesome/fontawesome-free@6.2.0|CC-BY-4.0 (icons) AND OFL-1.1 (fonts) AND MIT (code)"
  "glyphicons|glyphicons-only-bootstrap@1.0.1|MIT"
  "bootstrap3-license|bootstrap@3.3.7|MIT"
  "leaflet-draw|leaflet-draw@1.0.4|MIT"
  "leaflet-markercluster|leaflet.markercluster@1.5.3|MIT"
  "leaflet-fullscreen|leaflet.fullscreen@3.0.0|MIT"
  "ol|ol@10.10.0|BSD-2-Clause"
)
FOLIUM_SDIST="folium==0.20.0"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

declare -A PKG INTEGRITY
for row in "${PACKAGES[@]}"; do
  IFS='|' read -r name spec _lic <<<"$row"
  mkdir -p "$WORK/$name"
  (cd "$WORK/$name" && npm pack --silent --json "$spec" >pack.json)
  tgz="$(cd "$WORK/$name" && ls ./*.tgz)"
  tar xzf "$WORK/$name/$tgz" -C "$WORK/$name"
  PKG[$name]="$WORK/$name/package"
  INTEGRITY[$name]="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$WORK/$name/pack.json")"
done

rm -rf "$DEST"
mkdir -p "$DEST"

# cp SRC DST, creating DST's folder.
put() { mkdir -p "$(dirname "$2")"; cp "$1" "$2"; }

# leaflet
p=${PKG[leaflet]}; d=$DEST/leaflet
put "$p/dist/leaflet.js" "$d/leaflet.js"
put "$p/dist/leaflet.css" "$d/leaflet.css"
for f in layers.png layers-2x.png marker-icon.png marker-icon-2x.png marker-shadow.png; do
  put "$p/dist/images/$f" "$d/images/$f"
done
put "$p/LICENSE" "$d/LICENSE"

# jquery
p=${PKG[jquery]}; d=$DEST/jquery
put "$p/dist/jquery.min.js" "$d/jquery.min.js"
put "$p/LICENSE.txt" "$d/LICENSE"

# bootstrap 5 (folium's default page chrome)
p=${PKG[bootstrap]}; d=$DEST/bootstrap
put "$p/dist/js/bootstrap.bundle.min.js" "$d/js/bootstrap.bundle.min.js"
put "$p/dist/css/bootstrap.min.css" "$d/css/bootstrap.min.css"
put "$p/LICENSE" "$d/LICENSE"

# Leaflet.awesome-markers: 2.0.5's JS is byte-identical to the 2.0.2 folium links; it ships a LICENSE
p=${PKG[leaflet-awesome-markers]}; d=$DEST/leaflet-awesome-markers
put "$p/dist/leaflet.awesome-markers.min.js" "$d/leaflet.awesome-markers.min.js"
put "$p/dist/leaflet.awesome-markers.css" "$d/leaflet.awesome-markers.css"
for f in markers-soft.png markers-soft@2x.png markers-shadow.png markers-shadow@2x.png; do
  put "$p/dist/images/$f" "$d/images/$f"
done
put "$p/LICENSE" "$d/LICENSE"

# Font Awesome free 6.2.0 (the version folium links); all.min.css references woff2 and ttf
p=${PKG[fontawesome]}; d=$DEST/fontawesome
put "$p/css/all.min.css" "$d/css/all.min.css"
for f in "$p"/webfonts/*.woff2 "$p"/webfonts/*.ttf; do put "$f" "$d/webfonts/$(basename "$f")"; done
put "$p/LICENSE.txt" "$d/LICENSE"

# Glyphicons (folium.Icon's default prefix): Bootstrap 3.3.7 customizer build, glyphicons only.
# The package has no licence file; Bootstrap 3.3.7's own LICENSE covers the css and fonts.
p=${PKG[glyphicons]}; d=$DEST/glyphicons
put "$p/css/bootstrap.min.css" "$d/css/bootstrap-glyphicons.min.css"
for f in "$p"/fonts/glyphicons-halflings-regular.*; do put "$f" "$d/fonts/$(basename "$f")"; done
put "${PKG[bootstrap3-license]}/LICENSE" "$d/LICENSE"

# Leaflet.draw: the npm package has no licence file; this is upstream's MIT-LICENSE.md, verbatim
p=${PKG[leaflet-draw]}; d=$DEST/leaflet-draw
put "$p/dist/leaflet.draw.js" "$d/leaflet.draw.js"
put "$p/dist/leaflet.draw.css" "$d/leaflet.draw.css"
for f in spritesheet.png spritesheet-2x.png spritesheet.svg; do put "$p/dist/images/$f" "$d/images/$f"; done
cat >"$d/LICENSE" <<'EOF'
Copyright 2012-2016 Jacob Toye and Leaflet

Permission is hereby granted, free of charge, to any person obtaining
a copy of this software and associated documentation files (the
"Software"), to deal in the Software without restriction, including
without limitation the rights to use, copy, modify, merge, publish,
distribute, sublicense, and/or sell copies of the Software, and to
permit persons to whom the Software is furnished to do so, subject to
the following conditions:

The above copyright notice and this permission notice shall be
included in all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND,
EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE
LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION
OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION
WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
EOF

# Leaflet.markercluster
p=${PKG[leaflet-markercluster]}; d=$DEST/leaflet-markercluster
put "$p/dist/leaflet.markercluster.js" "$d/leaflet.markercluster.js"
put "$p/dist/MarkerCluster.css" "$d/MarkerCluster.css"
put "$p/dist/MarkerCluster.Default.css" "$d/MarkerCluster.Default.css"
put "$p/MIT-LICENCE.txt" "$d/LICENSE"

# leaflet.fullscreen 3.0.0 (the version folium's Fullscreen plugin is written for)
p=${PKG[leaflet-fullscreen]}; d=$DEST/leaflet-fullscreen
put "$p/Control.FullScreen.js" "$d/Control.FullScreen.js"
put "$p/Control.FullScreen.css" "$d/Control.FullScreen.css"
put "$p/icon-fullscreen.svg" "$d/icon-fullscreen.svg"
put "$p/LICENSE" "$d/LICENSE"

# OpenLayers, full UMD build (global `ol`), for Django's admin map widget
p=${PKG[ol]}; d=$DEST/ol
put "$p/dist/ol.js" "$d/ol.js"
put "$p/ol.css" "$d/ol.css"
put "$p/LICENSE.md" "$d/LICENSE"

# folium's leaflet.awesome.rotate css: only in the folium sdist, not in the wheel
mkdir -p "$WORK/folium"
"$PIP" download --quiet --no-deps --no-binary :all: -d "$WORK/folium" "$FOLIUM_SDIST"
tar xzf "$WORK/folium"/folium-*.tar.gz -C "$WORK/folium"
fsrc="$(ls -d "$WORK"/folium/folium-*/)"
d=$DEST/folium
mkdir -p "$d"
sed -e 's/^[[:space:]]*//' "$fsrc/folium/templates/leaflet.awesome.rotate.css" | tr -d '\n' >"$d/leaflet.awesome.rotate.min.css"
printf '\n' >>"$d/leaflet.awesome.rotate.min.css"
put "$fsrc/LICENSE.txt" "$d/LICENSE"
FOLIUM_SHA256="$(sha256sum "$WORK"/folium/folium-*.tar.gz | cut -d' ' -f1)"

# Strip source-map comments (.map files are not shipped).
find "$DEST" -type f \( -name '*.js' -o -name '*.css' \) -print0 |
  xargs -0 sed -i -E -e 's#//[#@] sourceMappingURL=[^[:space:]]*##' -e 's#/\*[#@] sourceMappingURL=[^*]*\*/##'

# VERSIONS.md
{
  echo "# Vendored browser assets"
  echo
  echo "Served from our own static files so maps work with no internet (see scripts/vendor_assets.sh,"
  echo "which regenerates this folder; do not edit files here by hand). Source-map comments are stripped."
  echo
  echo "| folder | version | source package | licence | npm integrity |"
  echo "|---|---|---|---|---|"
  for row in "${PACKAGES[@]}"; do
    IFS='|' read -r name spec lic <<<"$row"
    pkgname="${spec%@*}"; ver="${spec##*@}"
    folder="$name/"
    [ "$name" = "bootstrap3-license" ] && folder="(glyphicons/LICENSE only)"
    echo "| $folder | $ver | npm \`$pkgname\` | $lic | \`${INTEGRITY[$name]}\` |"
  done
  echo "| folium/ | 0.20.0 | PyPI \`folium\` sdist, \`folium/templates/leaflet.awesome.rotate.css\` (whitespace removed) | MIT | sha256 \`$FOLIUM_SHA256\` |"
  echo
  echo "Notes"
  echo "- leaflet.awesome-markers 2.0.5: JS identical to upstream 2.0.2 (what folium links); its LICENSE is"
  echo "  MIT text (c) L. Voogdt although package.json says ISC."
  echo "- glyphicons: glyphicon-only Bootstrap 3.3.7 customizer build; licence file taken from npm \`bootstrap@3.3.7\`."
  echo "- leaflet-draw: the npm package has no licence file; LICENSE is upstream's MIT-LICENSE.md text."
  echo "- folium links leaflet 1.9.3, leaflet.draw 1.0.2, markercluster 1.1.0; we serve 1.9.4, 1.0.4, 1.5.3."
} >"$DEST/VERSIONS.md"

du -sh "$DEST"
