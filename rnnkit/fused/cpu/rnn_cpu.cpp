// rnnkit: the pointwise parts of one LSTM, GRU or BasicRNNCell step, forward and backward, one
// pass each, and the layers' step loops around them.
//
// Built at first use by rnnkit/fused/cpu/native.py (torch.utils.cpp_extension); the pure-torch
// twins in lstm.py, gru.py and basic_rnn.py do the same math when no compiler is available.
//
// Layout (see lstm.py): the gate pre-activations z of a step are [n, 4U] rows with the blocks
// (i, f, o, j); forget_bias is already in f. Every [n, U] argument is a block of rows with its
// own row stride. Both activations run on the vectorized exp (torch's tanh is scalar on this
// build and dominated the step): sigmoid(x) = 1 / (1 + exp(-x)); tanh(x) = sign(x) * (1 - 2 /
// (exp(2|x|) + 1)) for |x| >= 0.625, and an odd polynomial below (fitted here to tanh(x) / x
// as a polynomial in x^2; relative error under 7e-16 in double, 1.1e-7 in float), so small
// values keep their relative precision.
//
// The cell activation (on the LSTM's j and c, the GRU's candidate, the BasicRNNCell's output)
// is one of the kinds of activation_kinds.py, passed as its index in ACTIVATION_CODES there (the
// enum below); the backward passes take its derivative from its output. The gates (the LSTM's i,
// f, o, the GRU's r, u) are sigmoid or hard_sigmoid, passed as GATE_CODES there (enum Gate);
// each is a template flag (HARD), so the sigmoid instantiation is the code it always was.

#include "rnn_math.h"
#include "layer_norm_lstm.h"
#include "packed_gemm.h"
#include "batch_slices.h"

namespace {

template <typename scalar_t, bool TANH, bool HARD>
void forward_rows(const torch::Tensor& z_t, const torch::Tensor& c_prev_t, const torch::Tensor& w_if_t,
                  const torch::Tensor& w_o_t, double clip, const torch::Tensor& j_t, const torch::Tensor& c_t,
                  const torch::Tensor& tc_t, const torch::Tensor& m_t, const torch::Tensor& mask_t, int64_t act) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t n = z_t.size(0), U = c_t.size(1);
  Rows<scalar_t> z(z_t), c_prev(c_prev_t), j_out(j_t), c_out(c_t), tc_out(tc_t), m_out(m_t);
  const scalar_t* w_i = maybe_data<scalar_t>(w_if_t);
  const scalar_t* w_f = w_i ? w_i + U : nullptr;
  const scalar_t* w_o = maybe_data<scalar_t>(w_o_t);
  bool* mask = mask_t.defined() && mask_t.numel() > 0 ? mask_t.data_ptr<bool>() : nullptr;
  const int64_t mask_stride = mask ? mask_t.stride(0) : 0;
  const Vec limit{static_cast<scalar_t>(clip)};
  auto gate = [](const Vec& x) { return gate_activation<scalar_t, HARD>(x); };
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    scalar_t unclipped[Vec::size()];
    for (int64_t r = begin; r < end; ++r) {
      scalar_t* zr = z.row(r);
      for (int64_t u = 0; u < U; u += Vec::size()) {
        const int64_t count = std::min<int64_t>(Vec::size(), U - u);
        const Vec cp = Vec::loadu(c_prev.row(r) + u, count);
        Vec i = Vec::loadu(zr + u, count), f = Vec::loadu(zr + U + u, count);
        Vec o = Vec::loadu(zr + 2 * U + u, count);
        const Vec j = cell_activation<scalar_t, TANH>(act, Vec::loadu(zr + 3 * U + u, count));
        if (w_i) {
          i = i + Vec::loadu(w_i + u, count) * cp;
          f = f + Vec::loadu(w_f + u, count) * cp;
        }
        i = gate(i);
        f = gate(f);
        Vec c = f * cp + i * j;
        if (mask) {
          c.store(unclipped, count);
          for (int64_t k = 0; k < count; ++k) mask[r * mask_stride + u + k] = std::abs(unclipped[k]) <= clip;
          c = at::vec::clamp(c, limit.neg(), limit);
        }
        if (w_o) o = o + Vec::loadu(w_o + u, count) * c;
        o = gate(o);
        const Vec tc = cell_activation<scalar_t, TANH>(act, c);
        i.store(zr + u, count);
        f.store(zr + U + u, count);
        o.store(zr + 2 * U + u, count);
        j.store(j_out.row(r) + u, count);
        c.store(c_out.row(r) + u, count);
        tc.store(tc_out.row(r) + u, count);
        (o * tc).store(m_out.row(r) + u, count);
      }
    }
  });
}

template <typename scalar_t, bool TANH, bool HARD>
void backward_rows(const torch::Tensor& z_t, const torch::Tensor& j_t, const torch::Tensor& c_prev_t,
                   const torch::Tensor& tc_t, const torch::Tensor& dm_t,
                   const torch::Tensor& dc_t, const torch::Tensor& w_if_t, const torch::Tensor& w_o_t,
                   const torch::Tensor& mask_t, const torch::Tensor& dz_t, int64_t act) {
  const int64_t n = z_t.size(0), U = j_t.size(1);
  Rows<scalar_t> z(z_t), j(j_t), c_prev(c_prev_t), tc(tc_t), dm(dm_t), dc(dc_t), dz(dz_t);
  const scalar_t* w_i = maybe_data<scalar_t>(w_if_t);
  const scalar_t* w_f = w_i ? w_i + U : nullptr;
  const scalar_t* w_o = maybe_data<scalar_t>(w_o_t);
  const bool* mask = mask_t.defined() && mask_t.numel() > 0 ? mask_t.data_ptr<bool>() : nullptr;
  const int64_t mask_stride = mask ? mask_t.stride(0) : 0;
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t *zr = z.row(r), *jr = j.row(r), *cpr = c_prev.row(r), *tcr = tc.row(r), *dmr = dm.row(r);
      scalar_t *dcr = dc.row(r), *dzr = dz.row(r);
      for (int64_t u = 0; u < U; ++u) {
        const scalar_t i = zr[u], f = zr[U + u], o = zr[2 * U + u], g = jr[u], t = tcr[u], d_m = dmr[u];
        const scalar_t dz_o = gate_gradient<scalar_t, HARD>(d_m * t, o);
        scalar_t d_c = d_m * o * cell_activation_slope<scalar_t, TANH>(act, t) + dcr[u];
        if (w_o) d_c += dz_o * w_o[u];
        if (mask && !mask[r * mask_stride + u]) d_c = 0;
        const scalar_t dz_i = gate_gradient<scalar_t, HARD>(d_c * g, i);
        const scalar_t dz_f = gate_gradient<scalar_t, HARD>(d_c * cpr[u], f);
        dzr[u] = dz_i;
        dzr[U + u] = dz_f;
        dzr[2 * U + u] = dz_o;
        dzr[3 * U + u] = d_c * i * cell_activation_slope<scalar_t, TANH>(act, g);
        scalar_t d_c_prev = d_c * f;
        if (w_i) d_c_prev += dz_i * w_i[u] + dz_f * w_f[u];
        dcr[u] = d_c_prev;  // the carry: d_c of the previous step, written in place
      }
    }
  });
}

void lstm_forward_pointwise(torch::Tensor z, torch::Tensor c_prev, torch::Tensor w_if, torch::Tensor w_o,
                            double clip, torch::Tensor j, torch::Tensor c, torch::Tensor tc, torch::Tensor m,
                            torch::Tensor mask, int64_t activation, int64_t gate) {
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "lstm_forward_pointwise", [&] {
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      forward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(z, c_prev, w_if, w_o, clip, j, c, tc, m,
                                                                           mask, activation);
    });
  });
}

void lstm_backward_pointwise(torch::Tensor z, torch::Tensor j, torch::Tensor c_prev, torch::Tensor tc,
                             torch::Tensor dm, torch::Tensor dc, torch::Tensor w_if, torch::Tensor w_o,
                             torch::Tensor mask, torch::Tensor dz, int64_t activation, int64_t gate) {
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "lstm_backward_pointwise", [&] {
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      backward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(z, j, c_prev, tc, dm, dc, w_if, w_o, mask,
                                                                            dz, activation);
    });
  });
}

// ---- the LSTM's step loops (lstm.py: forward_steps_torch, backward_steps_torch are the twins)

void lstm_forward_steps(torch::Tensor gates, torch::Tensor h0, torch::Tensor c0, torch::Tensor w_h,
                        torch::Tensor w_if, torch::Tensor w_o, torch::Tensor projection, double clip,
                        double proj_clip, std::vector<int64_t> batch_sizes, torch::Tensor candidates,
                        torch::Tensor cells, torch::Tensor act_cells, torch::Tensor hidden, torch::Tensor out,
                        torch::Tensor clip_mask, torch::Tensor proj_mask, int64_t activation, int64_t gate) {
  const bool projected = projection.numel() > 0;
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0];
  rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_h) + rnnkit::bytes_of(projection), [&](rnnkit::BatchSlice slice) {
    torch::Tensor h_prev = h0, c_prev = c0;
    int64_t start = 0, previous_start = 0;
    const rnnkit::RecurrentProduct recurrent(w_h, slice.rows(batch));
    for (const int64_t n : batch_sizes) {
      if (slice.rows(n) == 0) break;
      auto rows = [&](const torch::Tensor& t) { return slice.of(t, start, n); };
      torch::Tensor z = rows(gates);
      recurrent.add_into(z, slice.of(h_prev, previous_start, n));
      torch::Tensor m = projected ? rows(hidden) : rows(out);
      lstm_forward_pointwise(z, slice.of(c_prev, previous_start, n), w_if, w_o, clip, rows(candidates),
                             rows(cells), rows(act_cells), m, rows(clip_mask), activation, gate);
      if (projected) {
        torch::Tensor projected_m = rows(out);
        at::mm_out(projected_m, m, projection);
        if (proj_clip >= 0) {
          torch::Tensor kept = rows(proj_mask);
          at::le_out(kept, projected_m.abs(), proj_clip);
          projected_m.clamp_(-proj_clip, proj_clip);
        }
      }
      h_prev = out;
      c_prev = cells;
      previous_start = start;
      start += n;
    }
  });
}

void lstm_backward_steps(torch::Tensor gates, torch::Tensor candidates, torch::Tensor cells,
                         torch::Tensor act_cells, torch::Tensor c0, torch::Tensor d_out, torch::Tensor d_h,
                         torch::Tensor d_c, torch::Tensor d_gates, torch::Tensor d_m, torch::Tensor w_h_t,
                         torch::Tensor projection_t, torch::Tensor w_if, torch::Tensor w_o, torch::Tensor clip_mask,
                         torch::Tensor proj_mask, std::vector<int64_t> batch_sizes, int64_t activation,
                         int64_t gate) {
  const bool projected = projection_t.numel() > 0;
  const std::vector<int64_t> starts = rnnkit::step_starts(batch_sizes);
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0];
  rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_h_t) + rnnkit::bytes_of(projection_t), [&](rnnkit::BatchSlice slice) {
    const rnnkit::RecurrentProduct recurrent(w_h_t, slice.rows(batch));
    for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
      const int64_t n = batch_sizes[t], start = starts[t];
      if (slice.rows(n) == 0) continue;
      auto rows = [&](const torch::Tensor& tensor) { return slice.of(tensor, start, n); };
      torch::Tensor c_prev = t == 0 ? slice.of(c0, 0, n) : slice.of(cells, starts[t - 1], n);
      torch::Tensor d_h_rows = slice.of(d_h, 0, n);
      torch::Tensor dm = rows(d_out) + d_h_rows;
      if (projected) {
        if (proj_mask.numel()) dm.mul_(rows(proj_mask));
        rows(d_m).copy_(dm);
        dm = at::mm(dm, projection_t);
      }
      torch::Tensor dz = rows(d_gates);
      lstm_backward_pointwise(rows(gates), rows(candidates), c_prev, rows(act_cells), dm, slice.of(d_c, 0, n), w_if,
                              w_o, rows(clip_mask), dz, activation, gate);
      recurrent.into(d_h_rows, dz);
    }
  });
}

// ---- GRU (gru.py): g = [r, u] pre-activations [n, 2U]; c the candidate pre-activation [n, U]

template <typename scalar_t, bool HARD>
void gru_gates_rows(const torch::Tensor& g_t, const torch::Tensor& h_prev_t, const torch::Tensor& rh_t) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t n = g_t.size(0), U = h_prev_t.size(1);
  Rows<scalar_t> g(g_t), h_prev(h_prev_t), rh(rh_t);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      scalar_t* gr = g.row(r);
      for (int64_t u = 0; u < 2 * U; u += Vec::size()) {
        const int64_t count = std::min<int64_t>(Vec::size(), 2 * U - u);
        gate_activation<scalar_t, HARD>(Vec::loadu(gr + u, count)).store(gr + u, count);
      }
      for (int64_t u = 0; u < U; ++u) rh.row(r)[u] = gr[u] * h_prev.row(r)[u];
    }
  });
}

template <typename scalar_t, bool TANH>
void gru_output_rows(const torch::Tensor& c_t, const torch::Tensor& g_t, const torch::Tensor& h_prev_t,
                     const torch::Tensor& h_t, int64_t act) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t n = c_t.size(0), U = c_t.size(1);
  Rows<scalar_t> c(c_t), g(g_t), h_prev(h_prev_t), h(h_t);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      scalar_t* cr = c.row(r);
      const scalar_t *ur = g.row(r) + U, *hp = h_prev.row(r);
      for (int64_t u = 0; u < U; u += Vec::size()) {
        const int64_t count = std::min<int64_t>(Vec::size(), U - u);
        const Vec cand = cell_activation<scalar_t, TANH>(act, Vec::loadu(cr + u, count));
        const Vec update = Vec::loadu(ur + u, count), prev = Vec::loadu(hp + u, count);
        cand.store(cr + u, count);
        (update * (prev - cand) + cand).store(h.row(r) + u, count);  // u * h + (1 - u) * c
      }
    }
  });
}

template <typename scalar_t, bool TANH, bool HARD>
void gru_output_backward_rows(const torch::Tensor& dh_t, const torch::Tensor& g_t, const torch::Tensor& c_t,
                              const torch::Tensor& h_prev_t, const torch::Tensor& dg_t, const torch::Tensor& dc_t,
                              const torch::Tensor& dh_prev_t, int64_t act) {
  const int64_t n = c_t.size(0), U = c_t.size(1);
  Rows<scalar_t> dh(dh_t), g(g_t), c(c_t), h_prev(h_prev_t), dg(dg_t), dc(dc_t), dh_prev(dh_prev_t);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t *dhr = dh.row(r), *ur = g.row(r) + U, *cr = c.row(r), *hp = h_prev.row(r);
      scalar_t *du = dg.row(r) + U, *dcr = dc.row(r), *dhp = dh_prev.row(r);
      for (int64_t u = 0; u < U; ++u) {
        const scalar_t d = dhr[u], up = ur[u], cand = cr[u];
        du[u] = gate_gradient<scalar_t, HARD>(d * (hp[u] - cand), up);
        dcr[u] = d * (1 - up) * cell_activation_slope<scalar_t, TANH>(act, cand);
        dhp[u] = d * up;
      }
    }
  });
}

template <typename scalar_t, bool HARD>
void gru_reset_backward_rows(const torch::Tensor& d_rh_t, const torch::Tensor& g_t, const torch::Tensor& h_prev_t,
                             const torch::Tensor& dg_t, const torch::Tensor& dh_prev_t) {
  const int64_t n = d_rh_t.size(0), U = d_rh_t.size(1);
  Rows<scalar_t> d_rh(d_rh_t), g(g_t), h_prev(h_prev_t), dg(dg_t), dh_prev(dh_prev_t);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t *drh = d_rh.row(r), *rr = g.row(r), *hp = h_prev.row(r);
      scalar_t *dr = dg.row(r), *dhp = dh_prev.row(r);
      for (int64_t u = 0; u < U; ++u) {
        dr[u] = gate_gradient<scalar_t, HARD>(drh[u] * hp[u], rr[u]);
        dhp[u] += drh[u] * rr[u];
      }
    }
  });
}

void gru_gates_forward(torch::Tensor g, torch::Tensor h_prev, torch::Tensor rh, int64_t gate) {
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "gru_gates_forward", [&] {
    with_gate_flag(gate, [&](auto hard) { gru_gates_rows<scalar_t, decltype(hard)::value>(g, h_prev, rh); });
  });
}

void gru_output_forward(torch::Tensor c, torch::Tensor g, torch::Tensor h_prev, torch::Tensor h, int64_t activation) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "gru_output_forward", [&] {
    with_tanh_flag(activation, [&](auto tanh) {
      gru_output_rows<scalar_t, decltype(tanh)::value>(c, g, h_prev, h, activation);
    });
  });
}

void gru_output_backward(torch::Tensor dh, torch::Tensor g, torch::Tensor c, torch::Tensor h_prev, torch::Tensor dg,
                         torch::Tensor dc, torch::Tensor dh_prev, int64_t activation, int64_t gate) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "gru_output_backward", [&] {
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      gru_output_backward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(dh, g, c, h_prev, dg, dc,
                                                                                       dh_prev, activation);
    });
  });
}

void gru_reset_backward(torch::Tensor d_rh, torch::Tensor g, torch::Tensor h_prev, torch::Tensor dg,
                        torch::Tensor dh_prev, int64_t gate) {
  AT_DISPATCH_FLOATING_TYPES(d_rh.scalar_type(), "gru_reset_backward", [&] {
    with_gate_flag(gate, [&](auto hard) {
      gru_reset_backward_rows<scalar_t, decltype(hard)::value>(d_rh, g, h_prev, dg, dh_prev);
    });
  });
}

// the GRU's step loops (gru.py: forward_steps_torch, backward_steps_torch are the twins)

void gru_forward_steps(torch::Tensor gates, torch::Tensor candidates, torch::Tensor reset_h, torch::Tensor out,
                       torch::Tensor h0, torch::Tensor w_gh, torch::Tensor w_ch, std::vector<int64_t> batch_sizes,
                       int64_t activation, int64_t gate) {
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0];
  rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_gh) + rnnkit::bytes_of(w_ch), [&](rnnkit::BatchSlice slice) {
    const rnnkit::RecurrentProduct gate_product(w_gh, slice.rows(batch)), candidate_product(w_ch, slice.rows(batch));
    torch::Tensor h_prev = h0;
    int64_t start = 0, previous_start = 0;
    for (const int64_t n : batch_sizes) {
      if (slice.rows(n) == 0) break;
      torch::Tensor g = slice.of(gates, start, n), rh = slice.of(reset_h, start, n);
      torch::Tensor c = slice.of(candidates, start, n), h = slice.of(out, start, n);
      torch::Tensor previous = slice.of(h_prev, previous_start, n);
      gate_product.add_into(g, previous);
      gru_gates_forward(g, previous, rh, gate);
      candidate_product.add_into(c, rh);
      gru_output_forward(c, g, previous, h, activation);
      h_prev = out;
      previous_start = start;
      start += n;
    }
  });
}

void gru_backward_steps(torch::Tensor gates, torch::Tensor candidates, torch::Tensor out, torch::Tensor h0,
                        torch::Tensor d_out, torch::Tensor d_h, torch::Tensor d_gates, torch::Tensor d_candidates,
                        torch::Tensor w_gh_t, torch::Tensor w_ch_t, std::vector<int64_t> batch_sizes,
                        int64_t activation, int64_t gate) {
  const std::vector<int64_t> starts = rnnkit::step_starts(batch_sizes);
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0];
  rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_gh_t) + rnnkit::bytes_of(w_ch_t), [&](rnnkit::BatchSlice slice) {
    const rnnkit::RecurrentProduct gate_product(w_gh_t, slice.rows(batch));
    const rnnkit::RecurrentProduct candidate_product(w_ch_t, slice.rows(batch));
    for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
      const int64_t n = batch_sizes[t], start = starts[t];
      if (slice.rows(n) == 0) continue;
      torch::Tensor h_prev = t == 0 ? slice.of(h0, 0, n) : slice.of(out, starts[t - 1], n);
      torch::Tensor g = slice.of(gates, start, n), dg = slice.of(d_gates, start, n);
      torch::Tensor dc = slice.of(d_candidates, start, n), d_h_rows = slice.of(d_h, 0, n);
      torch::Tensor dh = slice.of(d_out, start, n) + d_h_rows;
      gru_output_backward(dh, g, slice.of(candidates, start, n), h_prev, dg, dc, d_h_rows, activation, gate);
      torch::Tensor d_rh = at::empty({slice.rows(n), w_ch_t.size(1)}, dc.options());
      candidate_product.into(d_rh, dc);
      gru_reset_backward(d_rh, g, h_prev, dg, d_h_rows, gate);
      gate_product.add_into(d_h_rows, dg);
    }
  });
}

// ---- BasicRNNCell (basic_rnn.py): h = act(z), z the pre-activation [n, U]

template <typename scalar_t, bool TANH>
void rnn_forward_rows(const torch::Tensor& z_t, const torch::Tensor& h_t, int64_t act) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const int64_t n = z_t.size(0), U = z_t.size(1);
  Rows<scalar_t> z(z_t), h(h_t);  // h may be z itself
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* zr = z.row(r);
      scalar_t* hr = h.row(r);
      for (int64_t u = 0; u < U; u += Vec::size()) {
        const int64_t count = std::min<int64_t>(Vec::size(), U - u);
        cell_activation<scalar_t, TANH>(act, Vec::loadu(zr + u, count)).store(hr + u, count);
      }
    }
  });
}

template <typename scalar_t, bool TANH>
void rnn_backward_rows(const torch::Tensor& d_out_t, const torch::Tensor& d_h_t, const torch::Tensor& h_t,
                       const torch::Tensor& d_pre_t, int64_t act) {
  const int64_t n = h_t.size(0), U = h_t.size(1);
  Rows<scalar_t> d_out(d_out_t), d_h(d_h_t), h(h_t), d_pre(d_pre_t);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t *dor = d_out.row(r), *dhr = d_h.row(r), *hr = h.row(r);
      scalar_t* dpr = d_pre.row(r);
      for (int64_t u = 0; u < U; ++u) dpr[u] = (dor[u] + dhr[u]) * cell_activation_slope<scalar_t, TANH>(act, hr[u]);
    }
  });
}

void rnn_forward_pointwise(torch::Tensor z, torch::Tensor h, int64_t activation) {
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "rnn_forward_pointwise", [&] {
    with_tanh_flag(activation, [&](auto tanh) { rnn_forward_rows<scalar_t, decltype(tanh)::value>(z, h, activation); });
  });
}

void rnn_backward_pointwise(torch::Tensor d_out, torch::Tensor d_h, torch::Tensor h, torch::Tensor d_pre,
                            int64_t activation) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "rnn_backward_pointwise", [&] {
    with_tanh_flag(activation, [&](auto tanh) {
      rnn_backward_rows<scalar_t, decltype(tanh)::value>(d_out, d_h, h, d_pre, activation);
    });
  });
}

// the BasicRNNCell's step loops (basic_rnn.py: forward_steps_torch, backward_steps_torch are the twins)

void rnn_forward_steps(torch::Tensor pre, torch::Tensor out, torch::Tensor h0, torch::Tensor w_h,
                       std::vector<int64_t> batch_sizes, int64_t activation) {
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0];
  rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_h), [&](rnnkit::BatchSlice slice) {
    const rnnkit::RecurrentProduct recurrent(w_h, slice.rows(batch));
    torch::Tensor h_prev = h0;
    int64_t start = 0, previous_start = 0;
    for (const int64_t n : batch_sizes) {
      if (slice.rows(n) == 0) break;
      torch::Tensor z = slice.of(pre, start, n), h = slice.of(out, start, n);
      recurrent.add_into(z, slice.of(h_prev, previous_start, n));
      rnn_forward_pointwise(z, h, activation);
      h_prev = out;
      previous_start = start;
      start += n;
    }
  });
}

void rnn_backward_steps(torch::Tensor out, torch::Tensor d_out, torch::Tensor d_h, torch::Tensor d_pre,
                        torch::Tensor w_h_t, std::vector<int64_t> batch_sizes, int64_t activation) {
  const std::vector<int64_t> starts = rnnkit::step_starts(batch_sizes);
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0];
  rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_h_t), [&](rnnkit::BatchSlice slice) {
    const rnnkit::RecurrentProduct recurrent(w_h_t, slice.rows(batch));
    for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
      const int64_t n = batch_sizes[t], start = starts[t];
      if (slice.rows(n) == 0) continue;
      torch::Tensor d_h_rows = slice.of(d_h, 0, n), d_pre_rows = slice.of(d_pre, start, n);
      rnn_backward_pointwise(slice.of(d_out, start, n), d_h_rows, slice.of(out, start, n), d_pre_rows, activation);
      recurrent.into(d_h_rows, d_pre_rows);
    }
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("lstm_forward_pointwise", &lstm_forward_pointwise, "one LSTM step's pointwise forward, in place");
  module.def("lstm_backward_pointwise", &lstm_backward_pointwise, "one LSTM step's pointwise backward");
  module.def("lstm_forward_steps", &lstm_forward_steps, "an LSTM layer's forward step loop");
  module.def("lstm_backward_steps", &lstm_backward_steps, "an LSTM layer's backward step loop");
  module.def("gru_forward_steps", &gru_forward_steps, "a GRU layer's forward step loop");
  module.def("gru_backward_steps", &gru_backward_steps, "a GRU layer's backward step loop");
  module.def("gru_gates_forward", &gru_gates_forward, "GRU: gate(r, u) in place and r * h");
  module.def("gru_output_forward", &gru_output_forward, "GRU: act(candidate) in place and the new h");
  module.def("gru_output_backward", &gru_output_backward, "GRU: gradients of u, the candidate and h (via u)");
  module.def("gru_reset_backward", &gru_reset_backward, "GRU: gradient of r, adds r * d(r h) to d h_prev");
  module.def("rnn_forward_steps", &rnn_forward_steps, "a BasicRNNCell layer's forward step loop");
  module.def("rnn_backward_steps", &rnn_backward_steps, "a BasicRNNCell layer's backward step loop");
  module.def("rnn_forward_pointwise", &rnn_forward_pointwise, "BasicRNNCell: h = act(z)");
  module.def("rnn_backward_pointwise", &rnn_backward_pointwise, "BasicRNNCell: d_pre = (d_out + d_h) * act'");
  module.def("batch_slice_count", &rnnkit::batch_slice_count,
             "how many slices (threads) a step loop over `batch` rows reading `weight_bytes` of weights splits into");
  module.def("ln_lstm_forward_steps", &rnnkit::ln_lstm_forward_steps, "a layer-norm LSTM layer's forward step loop");
  module.def("ln_lstm_backward_steps", &rnnkit::ln_lstm_backward_steps, "a layer-norm LSTM layer's backward step loop");
}
