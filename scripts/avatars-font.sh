#!/usr/bin/env sh
# Makes data/avatars/fonts/DejaVuSans-Bold-subset.ttf, the font of the PNG initials
# avatars: DejaVu Sans Bold 2.37 (Bitstream Vera licence; DejaVu's changes are public
# domain) cut down to Basic Latin, Latin-1, Latin Extended-A and -B, Greek and
# Cyrillic, without hinting or layout tables (the server draws single glyph outlines).
# Run by hand when the font should change; the build embeds the output.
#
#   apt-get install fonts-dejavu-core        # 2.37
#   pip install fonttools==4.68.0
#   scripts/avatars-font.sh [/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf]
set -eu
source=${1:-/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf}
cd "$(dirname "$0")/.."
mkdir -p data/avatars/fonts
pyftsubset "$source" \
  --unicodes='U+0020-007E,U+00A0-024F,U+0370-03FF,U+0400-04FF' \
  --layout-features='' --no-hinting --desubroutinize \
  --output-file=data/avatars/fonts/DejaVuSans-Bold-subset.ttf
