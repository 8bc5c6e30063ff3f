#!/usr/bin/env bash
# Calibrate a GPU profile and verify it on the same GPU, in one timed script (for a lent GPU machine).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_calibrate_verify.sh [TOTAL_SECONDS]
#
# 1. builds autodistill into /tmp/site with the machine's own Python (needs scikit-build-core, pybind11,
#    cmake, JAX with CUDA and Flax there);
# 2. `autodistill calibrate --device gpu --dtype bf16` from the spec profile matching the card (h100 or
#    h200), measuring for at most CAL_S seconds (the shuffled suite is cut there), the table saved as it grows;
# 3. `autodistill verify` of reference models and the goal run's students (benchmarks/goal_students) at
#    batch 1 and 8 x 128 tokens against the fitted profile, with the drift check on its own table.
# Everything lands in $OUT: env.txt, the profile, its measurement table, verify.json, logs.
set -u
TOTAL_S=${1:-500}
CAL_S=${CAL_S:-200}
DEVICE=${DEVICE:-gpu}      # cpu: a dry run of the script on a machine without a GPU
SUITE=${SUITE:-full}
STUDENTS=${STUDENTS:-64}
SEED=${SEED:-0}
SHAPES=${SHAPES:-"--shape 1x128 --shape 8x128"}
T0=$(date +%s)
: "${OUT:?set OUT to an output folder}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false CMAKE_BUILD_PARALLEL_LEVEL=16
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
PY=${PYTHON:-python3}
elapsed() { echo $(( $(date +%s) - T0 )); }

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import sys, jax, flax, numpy; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'numpy', numpy.__version__); print(jax.devices())"
} 2>&1 | tee "$OUT/env.txt"

$PY -m pip install -q --no-build-isolation --no-deps --target /tmp/site . >"$OUT/build.log" 2>&1 \
  || { echo "build failed"; tail -30 "$OUT/build.log"; exit 1; }
export PYTHONPATH=/tmp/site
echo "built in $(elapsed)s"

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
case "$GPU" in *H200*) BASE=h200 ;; *H100*) BASE=h100 ;; *A100*) BASE=a100 ;; *) BASE=h100 ;; esac
NAME=${NAME:-${BASE}_local}
echo "card: $GPU -> base profile $BASE, calibrated profile $NAME"

$PY -m autodistill -v calibrate --device "$DEVICE" --base "$BASE" --dtype bf16 --out "$OUT/$NAME.toml" \
  --suite "$SUITE" --students "$STUDENTS" --passes 2 --timing-s 0.3 --quiet-threshold -1 --max-measure-s "$CAL_S" --seed "$SEED" \
  >"$OUT/calibrate.log" 2>&1
rc=$?
grep -v " INFO " "$OUT/calibrate.log" | tail -40
echo "calibrate rc=$rc at $(elapsed)s"
[ -f "$OUT/$NAME.toml" ] || exit 1

LEFT=$(( TOTAL_S - $(elapsed) - 10 ))
ARCHS=""
for a in bert-base bert-large mobilebert mobilebert-tiny tinybert-4 minilm-l6-h384 benchmarks/goal_students/*.json; do
  ARCHS="$ARCHS --arch $a"
done
timeout "$LEFT" $PY -m autodistill verify --profile "$OUT/$NAME.toml" --device "$DEVICE" $ARCHS \
  $SHAPES --passes 2 --anchors 6 --timing-s 0.3 --out "$OUT/verify.json" 2>"$OUT/verify.log"
echo "verify rc=$? at $(elapsed)s"
tail -5 "$OUT/verify.log"
