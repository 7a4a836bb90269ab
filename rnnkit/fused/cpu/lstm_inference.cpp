// rnnkit: an LSTM layer's forward without a backward to follow (inference), every row running
// every step, in one call: the input products, the step loop and its pointwise parts.
//
// The training loop (rnn_cpu.cpp) keeps what backward reads: the activated gates and four more
// [N, U] buffers for a sequence of N rows, and it runs on time-major packed rows, which the plan
// copies the batch in and out of. Here nothing is kept but the gate pre-activations: c is one
// [B, U] state updated in place, and h is written straight into the caller's output in the
// caller's layout. x and out are [T, B, width] views with any step and row strides (a
// batch-major tensor transposed), so batch-major data is read and written where it is, with no
// transposing copy. The input products x @ w_x are one GEMM over all of x's rows where x is one
// dense block (either layout) and its gates fit max_gate_bytes; else they come a chunk of steps
// at a time, just before those steps. The bias is added in the pointwise step (no pass to
// broadcast it). Three ways to run the steps, as in the training loop: a one-row batch on parts
// of the units (unit_parts.h), small weights on slices of the batch (batch_slices.h), else all
// rows in one loop with the threads inside the GEMM. The math is the training loop's
// (lstm_rows.h), on TF's kernel and bias as they are: columns in TF's gate order (i, j, f, o),
// forget_bias added in the pointwise step (the training loop reorders a copy of the kernel).

#include "lstm_inference.h"
#include "lstm_rows.h"
#include "packed_gemm.h"
#include "step_rows.h"
#include "unit_parts.h"

#include <algorithm>
#include <vector>

namespace {

// Which orders a [S, B, W] view's rows are one dense [S * B, W] block in: bit 1 time-major (row
// s * B + b), bit 2 batch-major (row b * S + s); 0: neither.
int dense_orders(const torch::Tensor& t) {
  const int64_t S = t.size(0), B = t.size(1), W = t.size(2);
  if (t.stride(2) != 1) return 0;
  int orders = 0;
  if ((B == 1 || t.stride(1) == W) && (S == 1 || t.stride(0) == B * W)) orders |= 1;
  if ((S == 1 || t.stride(0) == W) && (B == 1 || t.stride(1) == S * W)) orders |= 2;
  return orders;
}

// The gates of chunks of `steps` steps, [steps, B, G]: in x's batch-major order where x is one
// dense batch-major block read in one chunk (so one GEMM computes them), else time-major.
torch::Tensor gate_buffer(const torch::Tensor& x, int64_t steps, int64_t G, const torch::TensorOptions& options) {
  const int64_t T = x.size(0), B = x.size(1);
  if (steps == T && (dense_orders(x) & 2)) return at::empty({B, T, G}, options).transpose(0, 1);
  return at::empty({steps, B, G}, options);
}

// gates[s] = x[t0 + s] @ w_x for the chunk's steps s (the bias is added in the pointwise step):
// one GEMM where the chunk's rows and the gates' are dense blocks in the same order, else one per
// step.
void input_products(const torch::Tensor& x, int64_t t0, int64_t steps, const torch::Tensor& w_x,
                    const torch::Tensor& gates) {
  const int64_t B = x.size(1), D = x.size(2), G = gates.size(2);
  const torch::Tensor chunk = x.narrow(0, t0, steps), into = gates.narrow(0, 0, steps);
  if (dense_orders(chunk) & dense_orders(into)) {
    torch::Tensor rows = into.as_strided({steps * B, G}, {G, 1});  // the gates' block: written in place
    at::mm_out(rows, chunk.as_strided({steps * B, D}, {D, 1}), w_x);
    return;
  }
  for (int64_t s = 0; s < steps; ++s) {
    torch::Tensor rows = into.select(0, s);  // [B, G], contiguous in a time-major buffer
    at::mm_out(rows, chunk.select(0, s), w_x);
  }
}

// A [T, B, width] view's rows of step t that belong to a batch slice (batch_slices.h).
template <typename scalar_t>
Rows<scalar_t> step_rows(scalar_t* base, int64_t step_stride, int64_t row_stride, int64_t t,
                         const rnnkit::BatchSlice& slice) {
  return Rows<scalar_t>(base + t * step_stride + slice.first * row_stride, row_stride * slice.stride);
}

// The buffers of the loop, and one step of it on a slice's rows: h_prev @ w_h (the product's
// columns: all of them, into z; or a part's, into its own rows) and the pointwise step.
template <typename scalar_t, bool TANH, bool HARD>
struct InferenceSteps {
  const torch::Tensor &gates, &h0, &out;
  scalar_t *z, *h, *c;
  const scalar_t* bias;  // [4U], or nullptr (use_bias=False)
  scalar_t forget_bias;
  int64_t U;
  const Peepholes<scalar_t>& peep;
  double clip;
  int64_t activation;

  void step(int64_t t, int64_t s, const rnnkit::BatchSlice& slice, int64_t rows,
            const rnnkit::RecurrentProduct& product, UnitRange<scalar_t> units) const {
    const Rows<scalar_t> h_prev = t == 0 ? initial_rows<scalar_t>(h0, slice)
                                         : step_rows(h, out.stride(0), out.stride(1), t - 1, slice);
    const Rows<scalar_t> zr = step_rows(z, gates.stride(0), gates.stride(1), s, slice);
    const Rows<scalar_t> cr = step_rows(c, 0, U, 0, slice), none(nullptr, 0);
    units.bias = bias;  // TF's kernel and bias as they are
    units.blocks = kTFGateBlocks;
    units.forget_bias = forget_bias;
    if (units.product.data) product.apply(h_prev.data, h_prev.stride, rows, units.product.data, units.product.stride, false);
    else product.apply(h_prev.data, h_prev.stride, rows, zr.data, zr.stride, true);
    forward_rows<scalar_t, TANH, HARD>(rows, U, zr, cr, peep, clip, none, cr, none,
                                       step_rows(h, out.stride(0), out.stride(1), t, slice), nullptr, 0, activation,
                                       units);
  }
};

template <typename scalar_t, bool TANH, bool HARD>
void inference_loop(const torch::Tensor& x, const torch::Tensor& w_x, const torch::Tensor& bias, double forget_bias,
                    const torch::Tensor& w_h, const torch::Tensor& h0, const torch::Tensor& c,
                    const Peepholes<scalar_t>& peep, double clip, const torch::Tensor& out, int64_t max_gate_bytes,
                    int64_t activation) {
  const int64_t T = x.size(0), B = x.size(1), U = c.size(1), G = 4 * U, weight_bytes = rnnkit::bytes_of(w_h);
  const int64_t chunk_steps = std::clamp<int64_t>(max_gate_bytes / (B * G * w_h.element_size()), 1, T);
  const torch::Tensor gates = gate_buffer(x, chunk_steps, G, w_h.options());
  const InferenceSteps<scalar_t, TANH, HARD> loop{gates, h0, out, gates.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                  c.data_ptr<scalar_t>(), maybe_data<scalar_t>(bias),
                                                  static_cast<scalar_t>(forget_bias), U, peep, clip, activation};
  // one row of a long call: parts of the units (unit_parts.h), each part's gate columns gathered once
  const auto parts = rnnkit::unit_parts<scalar_t>(B, T, U, weight_bytes, at::vec::Vectorized<scalar_t>::size());
  std::vector<rnnkit::RecurrentProduct> part_products;
  std::vector<torch::Tensor> part_rows;  // a part's product, [B, 4 * width]
  for (const rnnkit::UnitPart& part : parts) {
    if (parts.size() == 1) break;
    part_products.push_back(rnnkit::RecurrentProduct::plain(rnnkit::gate_columns(w_h, 4, U, part)));
    part_rows.push_back(at::empty({B, 4 * part.width()}, w_h.options()));
  }
  for (int64_t t0 = 0; t0 < T; t0 += chunk_steps) {
    const int64_t steps = std::min(chunk_steps, T - t0);
    input_products(x, t0, steps, w_x, gates);
    if (parts.size() > 1) {
      rnnkit::run_rounds(static_cast<int64_t>(parts.size()), steps, [&](int64_t p, int64_t s) {
        const Rows<scalar_t> product(part_rows[p].data_ptr<scalar_t>(), 4 * parts[p].width());
        loop.step(t0 + s, s, rnnkit::BatchSlice{}, B, part_products[p],
                  UnitRange<scalar_t>{parts[p].begin, parts[p].end, product});
      });
      continue;
    }
    // else slices of the batch, or all rows in one loop (batch_slices.h)
    rnnkit::for_batch_slices(B, weight_bytes, [&](rnnkit::BatchSlice slice) {
      const int64_t rows = slice.rows(B);
      const rnnkit::RecurrentProduct product(w_h, rows, T);
      for (int64_t s = 0; s < steps; ++s) loop.step(t0 + s, s, slice, rows, product, UnitRange<scalar_t>{0, U});
    });
  }
}

void check_rows(const torch::Tensor& t, int64_t dims, const char* name) {
  TORCH_CHECK(t.dim() == dims && t.stride(dims - 1) == 1, "lstm_inference_steps: ", name, " must be ", dims,
              "-d with unit column stride");
}

}  // namespace

namespace rnnkit {

void lstm_inference_steps(torch::Tensor x, torch::Tensor w_x, torch::Tensor bias, double forget_bias, torch::Tensor w_h,
                          torch::Tensor h0,
                          torch::Tensor c, torch::Tensor w_if, torch::Tensor w_o, double clip, torch::Tensor out,
                          int64_t max_gate_bytes, int64_t activation, int64_t gate) {
  check_rows(x, 3, "x");
  check_rows(out, 3, "out");
  check_rows(h0, 2, "h0");
  TORCH_CHECK(c.dim() == 2 && c.is_contiguous(), "lstm_inference_steps: c must be a contiguous [B, U]");
  TORCH_CHECK(w_h.is_contiguous() && w_h.size(1) == 4 * c.size(1), "lstm_inference_steps: w_h must be [U, 4U]");
  TORCH_CHECK(bias.is_contiguous() && (bias.numel() == w_h.size(1) || bias.numel() == 0),
              "lstm_inference_steps: bias must be a contiguous [4U] or empty");
  TORCH_CHECK(w_x.dim() == 2 && w_x.size(0) == x.size(2) && w_x.size(1) == w_h.size(1),
              "lstm_inference_steps: w_x must be [D, 4U]");
  TORCH_CHECK(out.size(0) == x.size(0) && out.size(1) == x.size(1) && c.size(0) == x.size(1) &&
                  out.size(2) == c.size(1),
              "lstm_inference_steps: x [T, B, D], out [T, B, U] and c [B, U] disagree");
  if (x.size(0) == 0 || x.size(1) == 0 || c.size(1) == 0) return;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_inference_steps", [&] {
    const Peepholes<scalar_t> peep(w_if, w_o, c.size(1));
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      inference_loop<scalar_t, decltype(tanh)::value, decltype(hard)::value>(x, w_x, bias, forget_bias, w_h, h0, c,
                                                                              peep, clip, out, max_gate_bytes,
                                                                              activation);
    });
  });
}

}  // namespace rnnkit
