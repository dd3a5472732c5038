#!/usr/bin/env bash
# Do the timed verdicts flip? N back-to-back quick reproductions of the codec and key-building
# claims, then each claim's verdict per run and the number of flips (target: 0).
#   scripts/flips.sh [N=5] [OUT=results/flips]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
out="${2:-results/flips}"
qbench=".venv/bin/qbench"
rm -rf "$out"
for i in $(seq -w 1 "$runs"); do
    "$qbench" reproduce --quick --only codec,key_building --out "$out/run-$i" >/dev/null
done
.venv/bin/python -m qbench.harness.experiments.flips "$out"/run-* | tee "$out/FLIPS.md"
