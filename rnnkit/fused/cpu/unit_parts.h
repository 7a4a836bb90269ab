// rnnkit: a layer's step loop run on parts of its units, one thread each, the threads meeting
// once per step.
//
// A step with one row is a matrix-vector product: too little work to split inside the GEMM (MKL's
// own threads measured slower than one), and too few rows to split the batch (batch_slices.h).
// Split by units instead, a thread owns a range of units and their gate columns of the recurrent
// weights (gathered once per call, its share only; not packed: one-row products measured
// 1.05-1.3x slower on packed weights), and computes in every step their product and their
// pointwise part. A step's product reads all of the previous step's h, so the threads wait for
// each other once per step (an OpenMP barrier), and nothing else is shared.
// Measured (2 threads, LSTM forward loop, B1): U128 0.84x, U256 0.82x, U512 0.90x the loop's time
// on all rows; U64 1.5x (the barrier costs more than half a step), U1024 1.03x (16 MiB of weights
// stream from memory either way), and two rows or more 1.1x and slower (MKL's threads pay there).
// The gather and the team cost about as much as 60-100 steps save (U128-U512: 64 steps 0.98-1.04x,
// 256 steps 0.78-0.97x, inference and training), so calls of fewer than 128 steps do not split.
//
// The team is one OpenMP parallel region; if it has fewer threads than parts (OMP_DYNAMIC, a
// thread limit), each thread runs several parts in every step.
// RNNKIT_UNIT_PARTS=0 turns the split off (the loop over all rows), for measuring it.

#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "packed_gemm.h"

namespace rnnkit {

constexpr int64_t kMinPartUnits = 64;                  // fewer units per thread: the barrier costs more
constexpr int64_t kMaxPartWeightBytes = int64_t{4} << 20;  // more: the weights stream from memory anyway
constexpr int64_t kMinPartSteps = 128;                 // fewer: the setup costs more than the split saves

inline bool unit_parts_enabled() {
  const char* flag = std::getenv("RNNKIT_UNIT_PARTS");
  return flag == nullptr || std::strcmp(flag, "0") != 0;
}

struct UnitPart {  // units [begin, end) of a layer
  int64_t begin = 0, end = 0;
  int64_t width() const { return end - begin; }
};

// The parts the `units` of a layer stepping `batch` rows `steps` times with `weight_bytes` of
// recurrent weights split into, each a multiple of `align` units wide but the last: one part (no
// split) where the split does not pay (see above), the caller is already on a team, the GEMMs
// would not run on raw rows (no MKL), or the split is off.
template <typename scalar_t>
std::vector<UnitPart> unit_parts(int64_t batch, int64_t steps, int64_t units, int64_t weight_bytes, int64_t align) {
  const int64_t threads = at::get_num_threads();
  const bool raw_gemm = std::is_same_v<scalar_t, float> ? mkl_gemm().sgemm != nullptr : mkl_gemm().dgemm != nullptr;
  const int64_t count = std::min(threads, units / std::max(kMinPartUnits, align));
  const bool pays = batch == 1 && steps >= kMinPartSteps && weight_bytes <= kMaxPartWeightBytes && count >= 2;
  if (!pays || !raw_gemm || at::in_parallel_region() || !unit_parts_enabled()) return {UnitPart{0, units}};
  const int64_t blocks = (units + align - 1) / align;
  std::vector<UnitPart> parts;
  for (int64_t p = 0; p < count; ++p) {
    const int64_t begin = std::min(units, blocks * p / count * align);
    const int64_t end = std::min(units, blocks * (p + 1) / count * align);
    parts.push_back(UnitPart{begin, end});
  }
  return parts;
}

// The columns of `blocks` gate blocks of `units` each ([K, blocks * units], block b's unit u in
// column b * units + u) that belong to `part`: [K, blocks * width], block after block.
inline torch::Tensor gate_columns(const torch::Tensor& weights, int64_t blocks, int64_t units, const UnitPart& part) {
  std::vector<torch::Tensor> columns;
  for (int64_t b = 0; b < blocks; ++b) columns.push_back(weights.narrow(1, b * units + part.begin, part.width()));
  return torch::cat(columns, 1).contiguous();
}

// Runs work(part, round) for every part and round, the rounds in order and each one finished by
// every part before the next begins (an OpenMP barrier between them); the parts of a round on
// the threads of one team, or all on the calling thread for a single part. The work must not
// throw: everything that can fail is checked and allocated before.
template <typename F>
void run_rounds(int64_t parts, int64_t rounds, const F& work) {
  if (parts == 1) {
    for (int64_t round = 0; round < rounds; ++round) work(int64_t{0}, round);
    return;
  }
  const at::ThreadLocalState caller;
#pragma omp parallel num_threads(parts)
  {
    const at::ThreadLocalStateGuard state(caller);
    const int64_t team = omp_get_num_threads(), me = omp_get_thread_num();  // team < parts: several each
    for (int64_t round = 0; round < rounds; ++round) {
      for (int64_t part = me; part < parts; part += team) work(part, round);
#pragma omp barrier
    }
  }
}

}  // namespace rnnkit
