#!/usr/bin/env bash
# Drift rescale on this machine: confirm the goal students with cpu_local as committed, rescale it
# (autodistill rescale: the base-rate cases re-timed here), confirm again with the rescaled profile.
# Usage: bash benchmarks/drift_rescale.sh OUT_DIR   (about 3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: drift_rescale.sh OUT_DIR}
mkdir -p "$OUT"
AD=${AUTODISTILL:-.venv/bin/autodistill}
G=benchmarks/goal_students
ARCHS=()
for s in baseline trial0001 trial0005 trial0007 trial0010; do ARCHS+=(--arch "$G/$s.json"); done
$AD verify --profile profiles/cpu_local.toml --device cpu "${ARCHS[@]}" --shape 4x64 --shape 1x64 --anchors 6 \
  --out "$OUT/before.json" | tee "$OUT/before.txt"
$AD rescale --profile profiles/cpu_local.toml --device cpu --out "$OUT/cpu_local_rescaled.toml" | tee "$OUT/rescale.txt"
$AD verify --profile "$OUT/cpu_local_rescaled.toml" --device cpu "${ARCHS[@]}" --shape 4x64 --shape 1x64 --anchors 0 \
  --out "$OUT/after.json" | tee "$OUT/after.txt"
