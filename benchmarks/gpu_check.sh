#!/usr/bin/env bash
# The GPU check in one command (for a lent GPU machine): the CUDA and Triton tests, then the
# GPU benchmark, each under a timeout so that a hung kernel costs little. Writes tests_*.txt
# and bench*.csv to $OUT (default: a temporary folder). At most 9 minutes on an H100 (run it
# with a 580 s limit): the tests compile every kernel variant (in SHARDS parallel slices;
# TESTS_S bounds them), then the barrier benchmark, and BENCH_S and SWEEP_S bound the
# benchmarks.
#   bash benchmarks/gpu_check.sh            # BENCH_ARGS="--quick" for four shapes
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD" PYTHONWARNINGS=ignore RNNKIT_NATIVE="${RNNKIT_NATIVE:-0}"  # the CPU kernels are not needed here
# measure the persistent kernels not yet on by default too: projections, wide tiles, BasicRNNCell,
# one loop for the gate products (see triton_support.py)
export RNNKIT_PERSISTENT_PROJECTION="${RNNKIT_PERSISTENT_PROJECTION:-1}" RNNKIT_PERSISTENT_WIDE="${RNNKIT_PERSISTENT_WIDE:-1}"
export RNNKIT_PERSISTENT_RNN="${RNNKIT_PERSISTENT_RNN:-1}" RNNKIT_PERSISTENT_ONE_LOOP="${RNNKIT_PERSISTENT_ONE_LOOP:-1}"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
# the CUDA and Triton tests in SHARDS parallel slices: their time is mostly Triton compiling
# kernel variants, one core per process (tests/conftest.py: RNNKIT_TEST_SHARD)
SHARDS="${SHARDS:-8}"
pids=()
for ((i = 0; i < SHARDS; i++)); do
  RNNKIT_TEST_SHARD="$i/$SHARDS" timeout "${TESTS_S:-240}" python -m pytest -q -rf -p no:cacheprovider \
    -o faulthandler_timeout=60 tests/test_gpu.py tests/test_triton.py > "$OUT/tests_$i.txt" 2>&1 &
  pids+=("$!")
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"; code=$?
  echo "== tests slice $i/$SHARDS: exit $code (124: timed out)"; tail -1 "$OUT/tests_$i.txt"
  grep -E "^FAILED|^E  .*(Greatest|AssertionError)" "$OUT/tests_$i.txt" | head -10
  if [ "$code" -ne 0 ]; then status=1; fi
done
if [ "$status" -ne 0 ]; then  # a failed or hung kernel: benchmark the default paths only
  echo "tests did not pass: benchmarking with the unverified persistent kernels off"
  export RNNKIT_PERSISTENT_PROJECTION=0 RNNKIT_PERSISTENT_WIDE=0 RNNKIT_PERSISTENT_RNN=0 RNNKIT_PERSISTENT_ONE_LOOP=0
fi
timeout 40 python benchmarks/gpu_barrier.py 2>&1 | grep -v Warning  # the floor under a persistent step
timeout "${BENCH_S:-200}" python benchmarks/gpu.py ${BENCH_ARGS:-} --rounds 2 --csv "$OUT/bench.csv" 2>&1 | grep -v Warning
# the float32 persistent rows again with 3xTF32 products of streamed weights (a candidate
# default; see persistent_setup.Tuning)
timeout "${SWEEP_S:-60}" python benchmarks/gpu.py --quick --dtypes float32 --cells lstm peephole-lstm tf-gru \
  --fp32-dot tf32x3 --resident-max-depth 0 --rounds 3 --csv "$OUT/bench_tf32x3.csv" 2>&1 | grep -v Warning
echo "results in $OUT"
