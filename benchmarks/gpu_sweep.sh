#!/usr/bin/env bash
# Tuning sweeps of the persistent kernels, for a second call on a GPU machine after
# gpu_check.sh (on the same warm machine Triton's cache already holds most kernels). Each
# setting of persistent_setup.Tuning times the persistent rows of a few shapes, without the
# per-step loop; compare each row's ratio across settings. About 4 minutes on an H100
# (SETTING_S bounds each setting).
#   bash benchmarks/gpu_sweep.sh
#   SHAPES="16,1024,100" SETTINGS="block_k=64;block_k=128" bash benchmarks/gpu_sweep.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PYTHONWARNINGS=ignore RNNKIT_NATIVE=0
export RNNKIT_PERSISTENT_WIDE="${RNNKIT_PERSISTENT_WIDE:-1}" RNNKIT_PERSISTENT_ONE_LOOP="${RNNKIT_PERSISTENT_ONE_LOOP:-1}"
SHAPES="${SHAPES:-16,256,1000 16,1024,100 64,1024,100}"
SETTINGS="${SETTINGS:-num_stages=3;block_k=64;num_stages=4;block_k=64 num_stages=4;one_loop_for_gates=false}"
IFS=';' read -ra settings <<< "$SETTINGS"
for setting in "${settings[@]}"; do
  echo "== tuning: $setting"
  # shellcheck disable=SC2086  # shapes and settings are lists of words
  timeout "${SETTING_S:-50}" python benchmarks/gpu.py --shapes $SHAPES --cells lstm peephole-lstm tf-gru --loops none \
    --rounds 2 --tuning $setting 2>&1 | grep -E "^\| +(B|[0-9])"
done
