// rnnkit: a layer's step loop run on slices of the batch, one thread each.
//
// The rows of a batch never meet in the recurrence: a thread that owns a slice of them can run
// every step of that slice, its recurrent products over just those rows, without waiting for
// the others. The whole sequence then starts the threads once, where a loop over all rows
// starts them in every step (in the GEMM, and again for the pointwise part), which at small and
// middle sizes costs more than the step's arithmetic.
//
// Slice s of S holds the rows s, s + S, s + 2S, ... of each step (a strided view of the step's
// rows): with packed sequences, whose steps lose rows from the end as sequences finish, every
// slice keeps about the same share of the work. Each thread reads the whole recurrent weight
// matrix in every step, so the split is taken only while the weights fit a core's cache; larger
// ones keep the loop over all rows, its threads inside the GEMM. RNNKIT_BATCH_SLICES=0 turns the
// split off (one loop over all rows, as before), for measuring it.

#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace rnnkit {

constexpr int64_t kMinSliceRows = 4;                 // fewer rows per thread: one loop over all rows
constexpr int64_t kMaxSliceWeightBytes = 512 << 10;  // measured: H128 LSTM gains, H256 (1 MiB) loses

struct BatchSlice {  // rows first, first + stride, ... of every step
  int64_t first = 0, stride = 1;

  int64_t rows(int64_t n) const { return n > first ? (n - first + stride - 1) / stride : 0; }

  int64_t batch_row(int64_t k) const { return first + k * stride; }  // the k-th row of this slice
};

inline bool batch_slices_enabled() {
  const char* flag = std::getenv("RNNKIT_BATCH_SLICES");
  return flag == nullptr || std::strcmp(flag, "0") != 0;
}

// How many slices a batch of `batch` rows whose step reads `weight_bytes` of recurrent weights
// is split into: one (every row in one loop) where a split does not pay.
inline int64_t batch_slice_count(int64_t batch, int64_t weight_bytes) {
  if (weight_bytes > kMaxSliceWeightBytes || at::in_parallel_region() || !batch_slices_enabled()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), batch / kMinSliceRows));
}

// Runs loop(slice) for each slice of the batch (batch_slice_count), in parallel.
template <typename F>
void for_batch_slices(int64_t batch, int64_t weight_bytes, const F& loop) {
  const int64_t slices = batch_slice_count(batch, weight_bytes);
  if (slices == 1) {
    loop(BatchSlice{});
    return;
  }
  // the slices call ATen ops (the GEMMs): on the threads, with the caller's thread-local state
  // (no grad mode inside an autograd Function, its dispatch keys), as torch's own tasks run
  const at::ThreadLocalState caller;
  at::parallel_for(0, slices, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard state(caller);
    for (int64_t s = begin; s < end; ++s) loop(BatchSlice{s, slices});
  });
}

// Where each step's rows begin in the packed rows of a layer (steps of batch_sizes[t] rows each).
inline std::vector<int64_t> step_starts(const std::vector<int64_t>& batch_sizes) {
  std::vector<int64_t> starts(batch_sizes.size(), 0);
  for (size_t t = 1; t < batch_sizes.size(); ++t) starts[t] = starts[t - 1] + batch_sizes[t - 1];
  return starts;
}

inline int64_t bytes_of(const torch::Tensor& t) { return t.numel() * static_cast<int64_t>(t.element_size()); }

}  // namespace rnnkit
