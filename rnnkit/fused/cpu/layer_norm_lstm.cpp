// rnnkit: one step of the layer-norm LSTM (LayerNormBasicLSTMCell, LayerNormLSTMCell with
// layer_norm=True), forward and backward, one pass per row, and the layer's step loops.
//
// Layout (layer_norm_lstm.py, whose torch twins do the same math in their own order, (i, f, o, j)):
// a step's z rows are [n, 4U], the raw sums x W_x + h W_h (no bias) of TF's kernel as it is, with
// its blocks (i, j, f, o); gains and shifts are [5, U] in TF's order (i, j, f, o, state), and so
// are x_hat, the gradients dz and the gains' and shifts' sums. The activated gates that backward
// reads are saved over z in the blocks (i, f, o, j). Forward normalises each gate block of a row
// (mean, biased variance, 1 / sqrt(var + 1e-12), as tf.contrib.layers.layer_norm), activates the
// gates in place (j becomes act(j), before the candidate dropout `drop`), forms c, normalises it,
// clips it, and writes act(c) and m. It keeps x_hat [n, 5U] and 1 / std [n, 5] of the five norms.
// Backward writes the gradients of the raw sums (dz, for the GEMMs), carries the cell state's
// gradient in d_c, and sums the gains', shifts' and peepholes' gradients over the rows as it goes
// (from those of the normalised gate blocks, d_post, and state, d_state, a row's scratch).

#include "layer_norm_lstm.h"
#include "batch_slices.h"
#include "packed_gemm.h"
#include "rnn_math.h"
#include "step_rows.h"

#include <vector>

namespace {

constexpr double kLayerNormEpsilon = 1e-12;  // tf.contrib.layers.layer_norm's variance_epsilon
constexpr int kI = 0, kJ = 1, kF = 2, kO = 3;  // the raw blocks of the gates: TF's (i, j, f, o)

template <typename scalar_t>
scalar_t lanes_sum(const at::vec::Vectorized<scalar_t>& v) {  // a tree over the lanes: log2(lanes) adds deep
  using Vec = at::vec::Vectorized<scalar_t>;
  scalar_t lanes[Vec::size()];
  v.store(lanes);
  for (int64_t width = Vec::size() / 2; width >= 1; width /= 2) {
    for (int64_t k = 0; k < width; ++k) lanes[k] += lanes[k + width];
  }
  return lanes[0];
}

template <typename scalar_t>
at::vec::Vectorized<scalar_t> load_part(const scalar_t* x, int64_t count) {  // lanes past count are 0
  return at::vec::Vectorized<scalar_t>::loadu(x, count);
}

// The means and 1 / std (biased variance, tf.nn.moments' two passes) of K blocks of U values, block
// b at x + b * U; the K reductions are interleaved so that their additions overlap.
template <typename scalar_t, int K>
void block_moments(const scalar_t* x, int64_t U, scalar_t* mean, scalar_t* inv) {
  using Vec = at::vec::Vectorized<scalar_t>;
  Vec sums[K], squares[K];
  for (int b = 0; b < K; ++b) sums[b] = squares[b] = Vec(scalar_t(0));
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    for (int b = 0; b < K; ++b) sums[b] = sums[b] + load_part(x + b * U + u, count);
  }
  Vec means[K];
  for (int b = 0; b < K; ++b) {
    mean[b] = lanes_sum(sums[b]) / static_cast<scalar_t>(U);
    means[b] = Vec(mean[b]);
  }
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    for (int b = 0; b < K; ++b) {
      Vec d = load_part(x + b * U + u, count) - means[b];
      if (count < Vec::size()) d = Vec::set(Vec(scalar_t(0)), d, count);
      squares[b] = at::vec::fmadd(d, d, squares[b]);
    }
  }
  for (int b = 0; b < K; ++b) {
    const scalar_t variance = lanes_sum(squares[b]) / static_cast<scalar_t>(U);
    inv[b] = scalar_t(1) / std::sqrt(variance + static_cast<scalar_t>(kLayerNormEpsilon));
  }
}

// The sums, over K blocks of U values, of g = d_y * gain and of g * x_hat (layer norm's backward).
template <typename scalar_t, int K>
void gradient_sums(const scalar_t* d_y, const scalar_t* x_hat, const scalar_t* gains, int64_t U, scalar_t* mean_g,
                   scalar_t* mean_gx) {
  using Vec = at::vec::Vectorized<scalar_t>;
  Vec sum_g[K], sum_gx[K];
  for (int b = 0; b < K; ++b) sum_g[b] = sum_gx[b] = Vec(scalar_t(0));
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    for (int b = 0; b < K; ++b) {
      const Vec g = load_part(d_y + b * U + u, count) * load_part(gains + b * U + u, count);
      sum_g[b] = sum_g[b] + g;
      sum_gx[b] = at::vec::fmadd(g, load_part(x_hat + b * U + u, count), sum_gx[b]);
    }
  }
  for (int b = 0; b < K; ++b) {
    mean_g[b] = lanes_sum(sum_g[b]) / static_cast<scalar_t>(U);
    mean_gx[b] = lanes_sum(sum_gx[b]) / static_cast<scalar_t>(U);
  }
}

// d act / dx from the activation's output y, lane by lane (vectorized for tanh).
template <typename scalar_t, bool TANH>
at::vec::Vectorized<scalar_t> slope(int64_t act, const at::vec::Vectorized<scalar_t>& y) {
  using Vec = at::vec::Vectorized<scalar_t>;
  if constexpr (TANH) {
    return Vec(scalar_t(1)) - y * y;
  } else {
    scalar_t lanes[Vec::size()];
    y.store(lanes);
    for (int64_t k = 0; k < Vec::size(); ++k) lanes[k] = activation_slope<scalar_t>(act, lanes[k]);
    return Vec::loadu(lanes);
  }
}

template <typename scalar_t>
at::vec::Vectorized<scalar_t> mask_lanes(const bool* kept, int64_t count) {  // 1 where kept, else 0
  scalar_t lanes[at::vec::Vectorized<scalar_t>::size()] = {};
  for (int64_t k = 0; k < count; ++k) lanes[k] = kept[k] ? scalar_t(1) : scalar_t(0);
  return at::vec::Vectorized<scalar_t>::loadu(lanes);
}

template <typename scalar_t>
struct Weights {  // a step's per-unit weights; absent ones are nullptr
  const scalar_t *gains, *shifts, *w_i, *w_f, *w_o;
  scalar_t forget_bias;
  Weights(const torch::Tensor& gains_t, const torch::Tensor& shifts_t, const torch::Tensor& w_if_t,
          const torch::Tensor& w_o_t, double forget_bias_value, int64_t U)
      : gains(maybe_data<scalar_t>(gains_t)),
        shifts(maybe_data<scalar_t>(shifts_t)),
        w_i(maybe_data<scalar_t>(w_if_t)),
        w_f(w_i ? w_i + U : nullptr),
        w_o(maybe_data<scalar_t>(w_o_t)),
        forget_bias(static_cast<scalar_t>(forget_bias_value)) {}
};

// The layer's buffers: [N, width] rows, contiguous, the packed steps one after the other.
template <typename scalar_t>
struct Buffers {
  int64_t U;
  scalar_t* gates;      // [N, 4U]: raw sums in (i, j, f, o), activated gates out (i, f, o, j)
  scalar_t* x_hat;      // [N, 5U] the five norms' normalised values, or nullptr: inference, save nothing
  scalar_t* inv_std;    // [N, 5]
  scalar_t* cells;      // [N, U] the new c (normalised, clipped)
  scalar_t* act_cells;  // [N, U] act(c) (saved with x_hat)
  const scalar_t* drop; // [N, U] the candidate dropout's mask, or nullptr
  bool* kept;           // [N, U] where |c| <= cell_clip, or nullptr
};

template <typename scalar_t>
scalar_t* data_of(const torch::Tensor& t, const char* name) {
  if (!t.defined() || t.numel() == 0) return nullptr;
  TORCH_CHECK(t.is_contiguous(), "ln_lstm: ", name, " must be contiguous");
  return t.data_ptr<scalar_t>();
}

template <typename scalar_t>
Buffers<scalar_t> buffers(const torch::Tensor& gates, const torch::Tensor& x_hat, const torch::Tensor& inv_std,
                          const torch::Tensor& cells, const torch::Tensor& act_cells, const torch::Tensor& drop,
                          const torch::Tensor& kept) {
  TORCH_CHECK(kept.numel() == 0 || kept.is_contiguous(), "ln_lstm: clip_mask must be contiguous");
  return {cells.size(1), data_of<scalar_t>(gates, "gates"), data_of<scalar_t>(x_hat, "x_hat"),
          data_of<scalar_t>(inv_std, "inv_std"), data_of<scalar_t>(cells, "cells"),
          data_of<scalar_t>(act_cells, "act_cells"), data_of<scalar_t>(drop, "drop"),
          kept.numel() ? kept.data_ptr<bool>() : nullptr};
}

// One row r (of all N) forward: c_prev and m are this row's.
template <typename scalar_t, bool TANH>
void forward_row(const Buffers<scalar_t>& buf, const Weights<scalar_t>& w, int64_t r, const scalar_t* c_prev,
                 scalar_t* m, double clip, int64_t act) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t U = buf.U;
  scalar_t* z = buf.gates + r * 4 * U;
  const bool save = buf.x_hat != nullptr;  // what backward reads; inference keeps only c, m and o
  scalar_t* x_hat = save ? buf.x_hat + r * 5 * U : nullptr;
  scalar_t inv_row[5];
  scalar_t* inv = save ? buf.inv_std + r * 5 : inv_row;
  scalar_t* c = buf.cells + r * U;
  const scalar_t* drop = buf.drop ? buf.drop + r * U : nullptr;
  auto sigmoid = [](const Vec& x) { return gate_activation<scalar_t, false>(x); };
  scalar_t mean[5];
  block_moments<scalar_t, 4>(z, U, mean, inv);
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    Vec y[4];
    for (int b = 0; b < 4; ++b) {  // normalised, then scaled and shifted: gains * x_hat + shifts
      const Vec normed = (Vec::loadu(z + b * U + u, count) - Vec(mean[b])) * Vec(inv[b]);
      if (save) normed.store(x_hat + b * U + u, count);
      y[b] = at::vec::fmadd(normed, Vec::loadu(w.gains + b * U + u, count), Vec::loadu(w.shifts + b * U + u, count));
    }
    const Vec cp = Vec::loadu(c_prev + u, count);
    Vec i = y[kI], f = y[kF] + Vec(w.forget_bias);
    if (w.w_i) {
      i = at::vec::fmadd(Vec::loadu(w.w_i + u, count), cp, i);
      f = at::vec::fmadd(Vec::loadu(w.w_f + u, count), cp, f);
    }
    i = sigmoid(i);
    f = sigmoid(f);
    const Vec j = cell_activation<scalar_t, TANH>(act, y[kJ]);
    const Vec g = drop ? j * Vec::loadu(drop + u, count) : j;
    if (save) {  // over the raw blocks of these units, all read above
      i.store(z + u, count);
      f.store(z + U + u, count);
      j.store(z + 3 * U + u, count);
    }
    (w.w_o ? y[kO] : sigmoid(y[kO])).store(z + 2 * U + u, count);  // with peepholes o waits for the new c
    (f * cp + i * g).store(c + u, count);
  }
  block_moments<scalar_t, 1>(c, U, mean + 4, inv + 4);
  const Vec limit(static_cast<scalar_t>(clip));
  bool* kept = buf.kept ? buf.kept + r * U : nullptr;
  scalar_t unclipped[Vec::size()];
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    const Vec normed = (Vec::loadu(c + u, count) - Vec(mean[4])) * Vec(inv[4]);
    if (save) normed.store(x_hat + 4 * U + u, count);
    Vec cv = at::vec::fmadd(normed, Vec::loadu(w.gains + 4 * U + u, count), Vec::loadu(w.shifts + 4 * U + u, count));
    if (kept) {
      cv.store(unclipped, count);
      for (int64_t k = 0; k < count; ++k) kept[u + k] = std::abs(unclipped[k]) <= clip;
      cv = at::vec::clamp(cv, limit.neg(), limit);
    }
    cv.store(c + u, count);
    Vec o = Vec::loadu(z + 2 * U + u, count);
    if (w.w_o) {
      o = sigmoid(at::vec::fmadd(Vec::loadu(w.w_o + u, count), cv, o));
      o.store(z + 2 * U + u, count);
    }
    const Vec tc = cell_activation<scalar_t, TANH>(act, cv);
    if (save) tc.store(buf.act_cells + r * U + u, count);
    (o * tc).store(m + u, count);
  }
}

// The gradients a backward pass sums over all rows, [kParamRows, U]: the gains' and shifts' of
// the five norms (i, j, f, o, state), then the peepholes' w_i, w_f, w_o (zero without them).
constexpr int64_t kParamRows = 13;

// One row r backward. dm = dm_a + dm_b (dm_b nullptr: dm_a alone) is this row's gradient of m,
// d_c its carried gradient of c (replaced by that of c_prev); writes the row's dz [4U] and adds
// its share of the parameters' gradients to sums [kParamRows * U]; scratch holds 5U values.
template <typename scalar_t, bool TANH>
void backward_row(const Buffers<scalar_t>& buf, const Weights<scalar_t>& w, int64_t r, const scalar_t* c_prev,
                  const scalar_t* dm_a, const scalar_t* dm_b, scalar_t* d_c, scalar_t* dz, scalar_t* sums,
                  scalar_t* scratch, int64_t act) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t U = buf.U;
  const scalar_t* z = buf.gates + r * 4 * U;
  const scalar_t* x_hat = buf.x_hat + r * 5 * U;
  const scalar_t* inv = buf.inv_std + r * 5;
  const scalar_t* act_c = buf.act_cells + r * U;
  const scalar_t* c_new = buf.cells + r * U;
  const scalar_t* drop = buf.drop ? buf.drop + r * U : nullptr;
  const bool* kept = buf.kept ? buf.kept + r * U : nullptr;
  scalar_t *d_post = scratch, *d_state = scratch + 4 * U;  // of the normalised gate blocks and state
  scalar_t *d_gains = sums, *d_shifts = sums + 5 * U, *d_peep = sums + 10 * U;
  const Vec one(scalar_t(1));
  for (int64_t u = 0; u < U; u += Vec::size()) {  // the output gate, and the gradient of the normalised, clipped c
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    const Vec o = Vec::loadu(z + 2 * U + u, count), t = Vec::loadu(act_c + u, count);
    Vec d_m = Vec::loadu(dm_a + u, count);
    if (dm_b) d_m = d_m + Vec::loadu(dm_b + u, count);
    const Vec d_o = d_m * t * o * (one - o);
    d_o.store(d_post + kO * U + u, count);
    Vec dc = at::vec::fmadd(d_m * o, slope<scalar_t, TANH>(act, t), Vec::loadu(d_c + u, count));
    if (w.w_o) {
      dc = at::vec::fmadd(d_o, Vec::loadu(w.w_o + u, count), dc);
      const Vec sum = at::vec::fmadd(d_o, Vec::loadu(c_new + u, count), Vec::loadu(d_peep + 2 * U + u, count));
      sum.store(d_peep + 2 * U + u, count);
    }
    if (kept) dc = dc * mask_lanes<scalar_t>(kept + u, count);
    dc.store(d_state + u, count);
  }
  scalar_t mean_g[4], mean_gx[4];
  gradient_sums<scalar_t, 1>(d_state, x_hat + 4 * U, w.gains + 4 * U, U, mean_g, mean_gx);
  const Vec inv_c(inv[4]), mean_g_c(mean_g[0]), mean_gx_c(mean_gx[0]);
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    const Vec d_s = Vec::loadu(d_state + u, count), x_s = Vec::loadu(x_hat + 4 * U + u, count);
    at::vec::fmadd(d_s, x_s, Vec::loadu(d_gains + 4 * U + u, count)).store(d_gains + 4 * U + u, count);
    (d_s + Vec::loadu(d_shifts + 4 * U + u, count)).store(d_shifts + 4 * U + u, count);
    const Vec g = d_s * Vec::loadu(w.gains + 4 * U + u, count);
    const Vec dc = inv_c * (g - mean_g_c - x_s * mean_gx_c);  // of c before its norm
    const Vec i = Vec::loadu(z + u, count), f = Vec::loadu(z + U + u, count), j = Vec::loadu(z + 3 * U + u, count);
    const Vec keep = drop ? Vec::loadu(drop + u, count) : one;
    const Vec cp = Vec::loadu(c_prev + u, count);
    const Vec d_i = dc * j * keep * i * (one - i), d_f = dc * cp * f * (one - f);
    d_i.store(d_post + kI * U + u, count);
    d_f.store(d_post + kF * U + u, count);
    (dc * i * keep * slope<scalar_t, TANH>(act, j)).store(d_post + kJ * U + u, count);
    Vec d_c_prev = dc * f;
    if (w.w_i) {
      d_c_prev = at::vec::fmadd(d_i, Vec::loadu(w.w_i + u, count), d_c_prev);
      d_c_prev = at::vec::fmadd(d_f, Vec::loadu(w.w_f + u, count), d_c_prev);
      at::vec::fmadd(d_i, cp, Vec::loadu(d_peep + u, count)).store(d_peep + u, count);
      at::vec::fmadd(d_f, cp, Vec::loadu(d_peep + U + u, count)).store(d_peep + U + u, count);
    }
    d_c_prev.store(d_c + u, count);
  }
  gradient_sums<scalar_t, 4>(d_post, x_hat, w.gains, U, mean_g, mean_gx);
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    for (int b = 0; b < 4; ++b) {
      const Vec d_y = Vec::loadu(d_post + b * U + u, count), x = Vec::loadu(x_hat + b * U + u, count);
      at::vec::fmadd(d_y, x, Vec::loadu(d_gains + b * U + u, count)).store(d_gains + b * U + u, count);
      (d_y + Vec::loadu(d_shifts + b * U + u, count)).store(d_shifts + b * U + u, count);
      const Vec g = d_y * Vec::loadu(w.gains + b * U + u, count);
      (Vec(inv[b]) * (g - Vec(mean_g[b]) - x * Vec(mean_gx[b]))).store(dz + b * U + u, count);
    }
  }
}

// row(k, worker) for the rows k < count of a step of the batch slice, each on a worker 0 <= worker
// < at::get_num_threads() that no other thread uses meanwhile: a split batch's slice is one thread
// already (its own index); one slice of all rows goes to the threads in chunks of about
// kChunkValues values each (one chunk: no threads).
constexpr int64_t kChunkValues = 2048;

template <typename F>
void for_rows(const rnnkit::BatchSlice& slice, int64_t count, int64_t U, const F& row) {
  if (slice.stride > 1) {
    for (int64_t k = 0; k < count; ++k) row(k, slice.first);
    return;
  }
  const int64_t grain = std::max<int64_t>(1, kChunkValues / (5 * U));
  at::parallel_for(0, count, grain, [&](int64_t begin, int64_t end) {
    const int64_t worker = at::get_thread_num();  // set inside parallel_for (0 where it runs inline)
    for (int64_t k = begin; k < end; ++k) row(k, worker);
  });
}

}  // namespace

namespace rnnkit {

void ln_lstm_forward_steps(torch::Tensor gates, torch::Tensor h0, torch::Tensor c0, torch::Tensor w_h,
                           torch::Tensor gains, torch::Tensor shifts, torch::Tensor w_if, torch::Tensor w_o,
                           torch::Tensor projection, torch::Tensor drop, double forget_bias, double clip,
                           double proj_clip, std::vector<int64_t> batch_sizes, torch::Tensor x_hat,
                           torch::Tensor inv_std, torch::Tensor cells, torch::Tensor act_cells, torch::Tensor hidden,
                           torch::Tensor out, torch::Tensor clip_mask, torch::Tensor proj_mask, int64_t activation) {
  const bool projected = projection.numel() > 0;
  const torch::Tensor& m_all = projected ? hidden : out;  // m before the projection
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0];
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "ln_lstm_forward_steps", [&] {
    const int64_t U = cells.size(1), m_width = m_all.size(1);
    const Buffers<scalar_t> buf = buffers<scalar_t>(gates, x_hat, inv_std, cells, act_cells, drop, clip_mask);
    const Weights<scalar_t> w(gains, shifts, w_if, w_o, forget_bias, U);
    scalar_t *m_rows = data_of<scalar_t>(m_all, "m"), *o = data_of<scalar_t>(out, "out");
    const scalar_t* c_first = data_of<scalar_t>(c0, "c0");
    bool* proj_kept = mask_of(proj_mask, "proj_mask");
    const int64_t H = out.size(1);
    with_tanh_flag(activation, [&](auto tanh) {
      for_batch_slices(batch, bytes_of(w_h) + bytes_of(projection), [&](BatchSlice slice) {
        const RecurrentProduct recurrent(w_h, slice.rows(batch), steps);
        const auto projector = optional_product(projection, slice.rows(batch), steps);
        Rows<scalar_t> h_prev = initial_rows<scalar_t>(h0, slice);
        const scalar_t* c_prev = c_first;  // the previous step's c, its rows by batch row
        int64_t start = 0;
        for (const int64_t n : batch_sizes) {
          const int64_t rows = slice.rows(n);
          if (rows == 0) break;
          const Rows<scalar_t> z = slice_rows(buf.gates, 4 * U, start, slice), h = slice_rows(o, H, start, slice);
          recurrent.apply(h_prev.data, h_prev.stride, rows, z.data, z.stride, true);
          for_rows(slice, rows, U, [&](int64_t k, int64_t) {
            const int64_t b = slice.batch_row(k);
            forward_row<scalar_t, decltype(tanh)::value>(buf, w, start + b, c_prev + b * U,
                                                         m_rows + (start + b) * m_width, clip, activation);
          });
          if (projected) {
            const Rows<scalar_t> m = slice_rows(m_rows, U, start, slice);
            projector->apply(m.data, m.stride, rows, h.data, h.stride, false);
            if (proj_clip >= 0) {
              clip_rows(rows, H, h, proj_kept + (start + slice.first) * H, H * slice.stride, proj_clip);
            }
          }
          h_prev = h;
          c_prev = buf.cells + start * U;
          start += n;
        }
      });
    });
  });
}

void ln_lstm_backward_steps(torch::Tensor gates, torch::Tensor cells, torch::Tensor act_cells, torch::Tensor x_hat,
                            torch::Tensor inv_std, torch::Tensor c0, torch::Tensor gains, torch::Tensor w_if,
                            torch::Tensor w_o, torch::Tensor drop, torch::Tensor clip_mask, torch::Tensor proj_mask,
                            torch::Tensor d_out, torch::Tensor d_h, torch::Tensor d_c, torch::Tensor d_gates,
                            torch::Tensor d_m, torch::Tensor d_params, torch::Tensor w_h_t, torch::Tensor projection_t,
                            std::vector<int64_t> batch_sizes, int64_t activation) {
  const bool projected = projection_t.numel() > 0;
  const std::vector<int64_t> starts = step_starts(batch_sizes);
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0], U = cells.size(1);
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  TORCH_CHECK(d_params.is_contiguous() && d_params.numel() == kParamRows * U, "ln_lstm: d_params must be [13, U]");
  TORCH_CHECK(d_out.is_contiguous() && d_h.is_contiguous(), "ln_lstm: d_out and d_h must be contiguous");
  // each worker (for_rows) sums its rows' parameter gradients apart (added up in worker order at
  // the end) and keeps a row's intermediate gradients in its own scratch
  const int64_t threads = at::get_num_threads();
  torch::Tensor sums = at::zeros({threads, kParamRows * U}, d_params.options());
  torch::Tensor scratch = at::empty({threads, 5 * U}, d_params.options());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "ln_lstm_backward_steps", [&] {
    const Buffers<scalar_t> buf = buffers<scalar_t>(gates, x_hat, inv_std, cells, act_cells, drop, clip_mask);
    const Weights<scalar_t> w(gains, gains, w_if, w_o, 0.0, U);  // backward reads no shifts
    scalar_t *dz = data_of<scalar_t>(d_gates, "d_gates"), *carry = data_of<scalar_t>(d_c, "d_c");
    const scalar_t* c_first = data_of<scalar_t>(c0, "c0");
    scalar_t *d_out_data = data_of<scalar_t>(d_out, "d_out"), *d_h_data = data_of<scalar_t>(d_h, "d_h");
    scalar_t* dm_saved = projected ? data_of<scalar_t>(d_m, "d_m") : nullptr;
    const bool* proj_kept = mask_of(proj_mask, "proj_mask");
    const int64_t H = d_h.size(1);
    scalar_t *sum_rows = sums.data_ptr<scalar_t>(), *scratch_rows = scratch.data_ptr<scalar_t>();
    with_tanh_flag(activation, [&](auto tanh) {
      for_batch_slices(batch, bytes_of(w_h_t) + bytes_of(projection_t), [&](BatchSlice slice) {
        const RecurrentProduct recurrent(w_h_t, slice.rows(batch), steps);
        const auto projector = optional_product(projection_t, slice.rows(batch), steps);
        // with a projection: the slice's gradients of m, [rows, H] after the clip, [rows, U] before the projection
        torch::Tensor dm_h = projected ? at::empty({slice.rows(batch), H}, gates.options()) : torch::Tensor();
        torch::Tensor dm_u = projected ? at::empty({slice.rows(batch), U}, gates.options()) : torch::Tensor();
        const Rows<scalar_t> d_h_rows = slice_rows(d_h_data, H, 0, slice);
        for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
          const int64_t n = batch_sizes[t], start = starts[t], rows = slice.rows(n);
          if (rows == 0) continue;
          const scalar_t* c_prev = t == 0 ? c_first : buf.cells + starts[t - 1] * U;
          if (projected) {
            const Rows<scalar_t> summed(dm_h.data_ptr<scalar_t>(), H);
            const bool* kept_rows = proj_kept ? proj_kept + (start + slice.first) * H : nullptr;
            projected_gradient(rows, H, slice_rows(d_out_data, H, start, slice), d_h_rows, kept_rows, H * slice.stride,
                               slice_rows(dm_saved, H, start, slice), summed);
            projector->apply(summed.data, summed.stride, rows, dm_u.data_ptr<scalar_t>(), U, false);
          }
          const scalar_t* dm_rows = projected ? dm_u.data_ptr<scalar_t>() : nullptr;
          for_rows(slice, rows, U, [&](int64_t k, int64_t worker) {
            const int64_t b = slice.batch_row(k), r = start + b;
            const scalar_t* dm_a = projected ? dm_rows + k * U : d_out_data + r * U;
            const scalar_t* dm_b = projected ? nullptr : d_h_data + b * U;
            backward_row<scalar_t, decltype(tanh)::value>(buf, w, r, c_prev + b * U, dm_a, dm_b, carry + b * U,
                                                          dz + r * 4 * U, sum_rows + worker * kParamRows * U,
                                                          scratch_rows + worker * 5 * U, activation);
          });
          const Rows<scalar_t> dzr = slice_rows(dz, 4 * U, start, slice);
          recurrent.apply(dzr.data, dzr.stride, rows, d_h_rows.data, d_h_rows.stride, false);
        }
      });
    });
  });
  d_params.view({-1}).copy_(sums.sum(0));
}

}  // namespace rnnkit
