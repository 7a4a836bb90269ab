// rnnkit: one step of the layer-norm LSTM (LayerNormBasicLSTMCell, LayerNormLSTMCell with
// layer_norm=True), forward and backward, one pass per row, and the layer's step loops.
//
// Layout (layer_norm_lstm.py, whose torch twins do the same math): a step's z rows are [n, 4U]
// with the blocks (i, f, o, j), the raw sums x W_x + h W_h (no bias); gains and shifts are [5, U]
// in the order (i, f, o, j, state). Forward normalises each gate block of a row (mean, biased
// variance, 1 / sqrt(var + 1e-12), as tf.contrib.layers.layer_norm), activates the gates in
// place (j becomes act(j), before the candidate dropout `drop`), forms c, normalises it, clips
// it, and writes act(c) and m. It keeps x_hat [n, 5U] and 1 / std [n, 5] of the five norms.
// Backward writes the gradients of the normalised gate blocks (d_post, for the gains and
// shifts), of the normalised state (d_state), of the raw sums (dz, for the GEMMs), and carries
// the cell state's gradient in d_c.

#include "layer_norm_lstm.h"
#include "rnn_math.h"

#include <vector>

namespace {

constexpr double kLayerNormEpsilon = 1e-12;  // tf.contrib.layers.layer_norm's variance_epsilon

template <typename scalar_t>
scalar_t lanes_sum(const at::vec::Vectorized<scalar_t>& v) {
  using Vec = at::vec::Vectorized<scalar_t>;
  scalar_t lanes[Vec::size()];
  v.store(lanes);
  scalar_t total = 0;
  for (int64_t k = 0; k < Vec::size(); ++k) total += lanes[k];
  return total;
}

template <typename scalar_t>
scalar_t row_sum(const scalar_t* x, int64_t U) {  // loadu with a count fills the other lanes with 0
  using Vec = at::vec::Vectorized<scalar_t>;
  Vec acc(scalar_t(0));
  for (int64_t u = 0; u < U; u += Vec::size()) acc = acc + Vec::loadu(x + u, std::min<int64_t>(Vec::size(), U - u));
  return lanes_sum(acc);
}

// Layer norm of x[0, U) in place: writes x_hat, sets x = gain * x_hat + shift, returns 1 / std.
template <typename scalar_t>
scalar_t normalize(scalar_t* x, scalar_t* x_hat, const scalar_t* gain, const scalar_t* shift, int64_t U) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec mean(row_sum(x, U) / static_cast<scalar_t>(U));
  Vec squares(scalar_t(0));
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    (Vec::loadu(x + u, count) - mean).store(x_hat + u, count);
    const Vec centred = Vec::loadu(x_hat + u, count);  // 0 past the row's end
    squares = squares + centred * centred;
  }
  const scalar_t variance = lanes_sum(squares) / static_cast<scalar_t>(U);
  const scalar_t inv = scalar_t(1) / std::sqrt(variance + static_cast<scalar_t>(kLayerNormEpsilon));
  const Vec inv_v(inv);
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    const Vec normed = Vec::loadu(x_hat + u, count) * inv_v;
    normed.store(x_hat + u, count);
    (normed * Vec::loadu(gain + u, count) + Vec::loadu(shift + u, count)).store(x + u, count);
  }
  return inv;
}

// The gradient of layer norm's input from d_y (of its output): inv * (g - mean(g) - x_hat *
// mean(g * x_hat)) with g = d_y * gain, written to d_x.
template <typename scalar_t>
void normalize_backward(const scalar_t* d_y, const scalar_t* x_hat, scalar_t inv, const scalar_t* gain,
                        scalar_t* d_x, int64_t U) {
  using Vec = at::vec::Vectorized<scalar_t>;
  Vec sum_g(scalar_t(0)), sum_gx(scalar_t(0));
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    const Vec g = Vec::loadu(d_y + u, count) * Vec::loadu(gain + u, count);
    sum_g = sum_g + g;
    sum_gx = sum_gx + g * Vec::loadu(x_hat + u, count);
  }
  const Vec mean_g(lanes_sum(sum_g) / static_cast<scalar_t>(U)), mean_gx(lanes_sum(sum_gx) / static_cast<scalar_t>(U));
  const Vec inv_v(inv);
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    const Vec g = Vec::loadu(d_y + u, count) * Vec::loadu(gain + u, count);
    (inv_v * (g - mean_g - Vec::loadu(x_hat + u, count) * mean_gx)).store(d_x + u, count);
  }
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

template <typename scalar_t>
const scalar_t* optional_row(const torch::Tensor& t, int64_t r) {
  return t.numel() ? t.data_ptr<scalar_t>() + r * t.stride(0) : nullptr;
}

inline bool* optional_mask_row(const torch::Tensor& t, int64_t r) {
  return t.numel() ? t.data_ptr<bool>() + r * t.stride(0) : nullptr;
}

template <typename scalar_t, bool TANH>
void forward_row(scalar_t* z, const scalar_t* c_prev, scalar_t* x_hat, scalar_t* inv, const Weights<scalar_t>& w,
                 const scalar_t* drop, double clip, bool* kept, scalar_t* c, scalar_t* act_c, scalar_t* m, int64_t U,
                 int64_t act) {
  using Vec = at::vec::Vectorized<scalar_t>;
  auto sigmoid = [](const Vec& x) { return gate_activation<scalar_t, false>(x); };
  for (int64_t b = 0; b < 4; ++b) inv[b] = normalize(z + b * U, x_hat + b * U, w.gains + b * U, w.shifts + b * U, U);
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    const Vec cp = Vec::loadu(c_prev + u, count);
    Vec i = Vec::loadu(z + u, count), f = Vec::loadu(z + U + u, count) + Vec(w.forget_bias);
    if (w.w_i) {
      i = i + Vec::loadu(w.w_i + u, count) * cp;
      f = f + Vec::loadu(w.w_f + u, count) * cp;
    }
    i = sigmoid(i);
    f = sigmoid(f);
    const Vec j = cell_activation<scalar_t, TANH>(act, Vec::loadu(z + 3 * U + u, count));
    const Vec g = drop ? j * Vec::loadu(drop + u, count) : j;
    i.store(z + u, count);
    f.store(z + U + u, count);
    j.store(z + 3 * U + u, count);
    (f * cp + i * g).store(c + u, count);
    if (!w.w_o) sigmoid(Vec::loadu(z + 2 * U + u, count)).store(z + 2 * U + u, count);
  }
  inv[4] = normalize(c, x_hat + 4 * U, w.gains + 4 * U, w.shifts + 4 * U, U);
  const Vec limit(static_cast<scalar_t>(clip));
  scalar_t unclipped[Vec::size()];
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    Vec cv = Vec::loadu(c + u, count);
    if (kept) {
      cv.store(unclipped, count);
      for (int64_t k = 0; k < count; ++k) kept[u + k] = std::abs(unclipped[k]) <= clip;
      cv = at::vec::clamp(cv, limit.neg(), limit);
      cv.store(c + u, count);
    }
    Vec o = Vec::loadu(z + 2 * U + u, count);
    if (w.w_o) {
      o = sigmoid(o + Vec::loadu(w.w_o + u, count) * cv);
      o.store(z + 2 * U + u, count);
    }
    const Vec tc = cell_activation<scalar_t, TANH>(act, cv);
    tc.store(act_c + u, count);
    (o * tc).store(m + u, count);
  }
}

template <typename scalar_t, bool TANH>
void backward_row(const scalar_t* z, const scalar_t* c_prev, const scalar_t* act_c, const scalar_t* x_hat,
                  const scalar_t* inv, const Weights<scalar_t>& w, const scalar_t* drop, const bool* kept,
                  const scalar_t* dm, scalar_t* d_c, scalar_t* d_post, scalar_t* d_state, scalar_t* dz,
                  scalar_t* d_raw, int64_t U, int64_t act) {
  for (int64_t u = 0; u < U; ++u) {  // the output gate, and the gradient of the normalised, clipped c
    const scalar_t o = z[2 * U + u], t = act_c[u];
    const scalar_t d_o = dm[u] * t * o * (1 - o);
    d_post[2 * U + u] = d_o;
    scalar_t dc = dm[u] * o * cell_activation_slope<scalar_t, TANH>(act, t) + d_c[u];
    if (w.w_o) dc += d_o * w.w_o[u];
    d_state[u] = kept && !kept[u] ? scalar_t(0) : dc;
  }
  normalize_backward(d_state, x_hat + 4 * U, inv[4], w.gains + 4 * U, d_raw, U);  // of c before its norm
  for (int64_t u = 0; u < U; ++u) {
    const scalar_t i = z[u], f = z[U + u], j = z[3 * U + u], keep = drop ? drop[u] : scalar_t(1), dc = d_raw[u];
    const scalar_t d_i = dc * j * keep * i * (1 - i), d_f = dc * c_prev[u] * f * (1 - f);
    d_post[u] = d_i;
    d_post[U + u] = d_f;
    d_post[3 * U + u] = dc * i * keep * cell_activation_slope<scalar_t, TANH>(act, j);
    scalar_t d_c_prev = dc * f;
    if (w.w_i) d_c_prev += d_i * w.w_i[u] + d_f * w.w_f[u];
    d_c[u] = d_c_prev;
  }
  for (int64_t b = 0; b < 4; ++b) normalize_backward(d_post + b * U, x_hat + b * U, inv[b], w.gains + b * U, dz + b * U, U);
}

void forward_pointwise(const torch::Tensor& z, const torch::Tensor& c_prev, const torch::Tensor& gains,
                       const torch::Tensor& shifts, const torch::Tensor& w_if, const torch::Tensor& w_o,
                       const torch::Tensor& drop, double forget_bias, double clip, const torch::Tensor& x_hat,
                       const torch::Tensor& inv_std, const torch::Tensor& c, const torch::Tensor& act_c,
                       const torch::Tensor& m, const torch::Tensor& kept, int64_t activation) {
  const int64_t n = z.size(0), U = c.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "ln_lstm_forward", [&] {
    const Weights<scalar_t> w(gains, shifts, w_if, w_o, forget_bias, U);
    Rows<scalar_t> z_r(z), cp_r(c_prev), xh_r(x_hat), inv_r(inv_std), c_r(c), tc_r(act_c), m_r(m);
    with_tanh_flag(activation, [&](auto tanh) {
      at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          forward_row<scalar_t, decltype(tanh)::value>(z_r.row(r), cp_r.row(r), xh_r.row(r), inv_r.row(r), w,
                                                       optional_row<scalar_t>(drop, r), clip,
                                                       optional_mask_row(kept, r), c_r.row(r), tc_r.row(r), m_r.row(r),
                                                       U, activation);
        }
      });
    });
  });
}

void backward_pointwise(const torch::Tensor& z, const torch::Tensor& c_prev, const torch::Tensor& act_c,
                        const torch::Tensor& x_hat, const torch::Tensor& inv_std, const torch::Tensor& gains,
                        const torch::Tensor& w_if, const torch::Tensor& w_o, const torch::Tensor& drop,
                        const torch::Tensor& kept, const torch::Tensor& dm, const torch::Tensor& d_c,
                        const torch::Tensor& d_post, const torch::Tensor& d_state, const torch::Tensor& dz,
                        int64_t activation) {
  const int64_t n = z.size(0), U = act_c.size(1);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "ln_lstm_backward", [&] {
    const Weights<scalar_t> w(gains, gains, w_if, w_o, 0.0, U);
    Rows<scalar_t> z_r(z), cp_r(c_prev), tc_r(act_c), xh_r(x_hat), inv_r(inv_std), dm_r(dm), dc_r(d_c),
        post_r(d_post), state_r(d_state), dz_r(dz);
    with_tanh_flag(activation, [&](auto tanh) {
      at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> d_raw(U);
        for (int64_t r = begin; r < end; ++r) {
          backward_row<scalar_t, decltype(tanh)::value>(
              z_r.row(r), cp_r.row(r), tc_r.row(r), xh_r.row(r), inv_r.row(r), w, optional_row<scalar_t>(drop, r),
              optional_mask_row(kept, r), dm_r.row(r), dc_r.row(r), post_r.row(r), state_r.row(r), dz_r.row(r),
              d_raw.data(), U, activation);
        }
      });
    });
  });
}

torch::Tensor rows_of(const torch::Tensor& t, int64_t start, int64_t n) { return t.numel() ? t.narrow(0, start, n) : t; }

}  // namespace

namespace rnnkit {

void ln_lstm_forward_steps(torch::Tensor gates, torch::Tensor h0, torch::Tensor c0, torch::Tensor w_h,
                           torch::Tensor gains, torch::Tensor shifts, torch::Tensor w_if, torch::Tensor w_o,
                           torch::Tensor projection, torch::Tensor drop, double forget_bias, double clip,
                           double proj_clip, std::vector<int64_t> batch_sizes, torch::Tensor x_hat,
                           torch::Tensor inv_std, torch::Tensor cells, torch::Tensor act_cells, torch::Tensor hidden,
                           torch::Tensor out, torch::Tensor clip_mask, torch::Tensor proj_mask, int64_t activation) {
  const bool projected = projection.numel() > 0;
  torch::Tensor h_prev = h0, c_prev = c0;
  int64_t start = 0;
  for (const int64_t n : batch_sizes) {
    torch::Tensor z = gates.narrow(0, start, n);
    z.addmm_(h_prev.narrow(0, 0, n), w_h);
    torch::Tensor m = projected ? hidden.narrow(0, start, n) : out.narrow(0, start, n);
    forward_pointwise(z, c_prev.narrow(0, 0, n), gains, shifts, w_if, w_o, rows_of(drop, start, n), forget_bias, clip,
                      x_hat.narrow(0, start, n), inv_std.narrow(0, start, n), cells.narrow(0, start, n),
                      act_cells.narrow(0, start, n), m, rows_of(clip_mask, start, n), activation);
    if (projected) {
      torch::Tensor projected_m = out.narrow(0, start, n);
      at::mm_out(projected_m, m, projection);
      if (proj_clip >= 0) {
        torch::Tensor kept = proj_mask.narrow(0, start, n);
        at::le_out(kept, projected_m.abs(), proj_clip);
        projected_m.clamp_(-proj_clip, proj_clip);
      }
    }
    h_prev = out.narrow(0, start, n);
    c_prev = cells.narrow(0, start, n);
    start += n;
  }
}

void ln_lstm_backward_steps(torch::Tensor gates, torch::Tensor cells, torch::Tensor act_cells, torch::Tensor x_hat,
                            torch::Tensor inv_std, torch::Tensor c0, torch::Tensor gains, torch::Tensor w_if,
                            torch::Tensor w_o, torch::Tensor drop, torch::Tensor clip_mask, torch::Tensor proj_mask,
                            torch::Tensor d_out, torch::Tensor d_h, torch::Tensor d_c, torch::Tensor d_post,
                            torch::Tensor d_state, torch::Tensor d_gates, torch::Tensor d_m, torch::Tensor w_h_t,
                            torch::Tensor projection_t, std::vector<int64_t> batch_sizes, int64_t activation) {
  const bool projected = projection_t.numel() > 0;
  std::vector<int64_t> starts(batch_sizes.size(), 0);
  for (size_t t = 1; t < batch_sizes.size(); ++t) starts[t] = starts[t - 1] + batch_sizes[t - 1];
  for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
    const int64_t n = batch_sizes[t], start = starts[t];
    torch::Tensor c_prev = t == 0 ? c0.narrow(0, 0, n) : cells.narrow(0, starts[t - 1], n);
    torch::Tensor dm = d_out.narrow(0, start, n) + d_h.narrow(0, 0, n);
    if (projected) {
      if (proj_mask.numel()) dm.mul_(proj_mask.narrow(0, start, n));
      d_m.narrow(0, start, n).copy_(dm);
      dm = at::mm(dm, projection_t);
    }
    torch::Tensor dz = d_gates.narrow(0, start, n);
    backward_pointwise(gates.narrow(0, start, n), c_prev, act_cells.narrow(0, start, n), x_hat.narrow(0, start, n),
                       inv_std.narrow(0, start, n), gains, w_if, w_o, rows_of(drop, start, n),
                       rows_of(clip_mask, start, n), dm, d_c.narrow(0, 0, n), d_post.narrow(0, start, n),
                       d_state.narrow(0, start, n), dz, activation);
    torch::Tensor d_h_rows = d_h.narrow(0, 0, n);
    at::mm_out(d_h_rows, dz, w_h_t);
  }
}

}  // namespace rnnkit
