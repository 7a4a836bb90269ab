// rnnkit: a batch slice's rows of a step in the layers' buffers (rnn_cpu.cpp, layer_norm_lstm.cpp),
// and the row passes the LSTM loops share around the projection.
//
// Every [N, width] buffer of a layer is contiguous (checked), its rows the packed steps one after
// the other; a slice's rows of the step that starts at row `start` are every slice.stride-th row
// from row start + slice.first. In an unnamed namespace, like rnn_math.h: each source file gets its
// own inline copies.

#pragma once

#include "batch_slices.h"
#include "rnn_math.h"

#include <algorithm>
#include <cmath>

namespace {

template <typename scalar_t>
Rows<scalar_t> slice_rows(scalar_t* data, int64_t width, int64_t start, const rnnkit::BatchSlice& slice) {
  return Rows<scalar_t>(data ? data + (start + slice.first) * width : nullptr, width * slice.stride);
}

template <typename scalar_t>
Rows<scalar_t> initial_rows(const torch::Tensor& t, const rnnkit::BatchSlice& slice) {  // h0, c0: any row stride
  TORCH_CHECK(t.dim() == 2 && t.stride(1) == 1, "initial state rows must have unit column stride");
  return Rows<scalar_t>(t.data_ptr<scalar_t>() + slice.first * t.stride(0), t.stride(0) * slice.stride);
}

template <typename scalar_t>
scalar_t* rows_of(const torch::Tensor& t, const char* name) {  // a contiguous buffer, or nullptr when empty
  if (!t.defined() || t.numel() == 0) return nullptr;
  TORCH_CHECK(t.is_contiguous(), "rnnkit step loop: ", name, " must be contiguous");
  return t.data_ptr<scalar_t>();
}

inline bool* mask_of(const torch::Tensor& t, const char* name) {  // a contiguous bool buffer, or nullptr
  if (!t.defined() || t.numel() == 0) return nullptr;
  TORCH_CHECK(t.is_contiguous() && t.scalar_type() == at::kBool, "rnnkit step loop: ", name,
              " must be a contiguous bool");
  return t.data_ptr<bool>();
}

// out = clamp(out, -clip, clip) on n rows of width P; kept (row r at kept + r * kept_stride) says
// where |out| <= clip before the clamp.
template <typename scalar_t>
void clip_rows(int64_t n, int64_t P, const Rows<scalar_t>& out, bool* kept, int64_t kept_stride, double clip) {
  const scalar_t limit = static_cast<scalar_t>(clip);
  for (int64_t r = 0; r < n; ++r) {
    scalar_t* row = out.row(r);
    for (int64_t u = 0; u < P; ++u) {
      kept[r * kept_stride + u] = std::abs(row[u]) <= clip;
      row[u] = std::min(std::max(row[u], -limit), limit);
    }
  }
}

// The gradient of the projected output of n rows, P wide: d_out + d_h, zero where the projection's
// clip held (kept false; kept nullptr: no clip), written to saved (kept for the projection's
// gradient) and to summed (for the product with the projection's transpose).
template <typename scalar_t>
void projected_gradient(int64_t n, int64_t P, const Rows<scalar_t>& d_out, const Rows<scalar_t>& d_h,
                        const bool* kept, int64_t kept_stride, const Rows<scalar_t>& saved,
                        const Rows<scalar_t>& summed) {
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t u = 0; u < P; ++u) {
      scalar_t value = d_out.row(r)[u] + d_h.row(r)[u];
      if (kept && !kept[r * kept_stride + u]) value = 0;
      summed.row(r)[u] = saved.row(r)[u] = value;
    }
  }
}

}  // namespace
