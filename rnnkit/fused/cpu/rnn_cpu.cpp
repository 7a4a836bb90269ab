// rnnkit: the pointwise parts of one LSTM, GRU or BasicRNNCell step, forward and backward, one
// pass each, and the layers' step loops around them.
//
// Built at first use by rnnkit/fused/cpu/native.py (torch.utils.cpp_extension); the pure-torch
// twins in lstm.py, gru.py and basic_rnn.py do the same math when no compiler is available.
//
// Layout (lstm_rows.h): the LSTM step loops read TF's kernel as it is, the gate pre-activations
// z of a step [n, 4U] rows with TF's blocks (i, j, f, o), and add forget_bias in the step; the
// single-step bindings keep the twins' layout, (i, f, o, j) with forget_bias already in f. Every
// [n, U] argument is a block of rows with its own row stride. Both activations run on the
// vectorized exp (torch's tanh is scalar on this build and dominated the step): sigmoid(x) = 1 / (1 + exp(-x)); tanh(x) = sign(x) * (1 - 2 /
// (exp(2|x|) + 1)) for |x| >= 0.625, and an odd polynomial below (fitted here to tanh(x) / x
// as a polynomial in x^2; relative error under 7e-16 in double, about 1.3e-7 in float, whose
// reciprocals take the hardware's estimate refined by a Newton step: rnn_math.h), so small
// values keep their relative precision. The LSTM's row passes are in lstm_rows.h.
//
// The cell activation (on the LSTM's j and c, the GRU's candidate, the BasicRNNCell's output)
// is one of the kinds of activation_kinds.py, passed as its index in ACTIVATION_CODES there (the
// enum below); the backward passes take its derivative from its output. The gates (the LSTM's i,
// f, o, the GRU's r, u) are sigmoid or hard_sigmoid, passed as GATE_CODES there (enum Gate);
// each is a template flag (HARD), so the sigmoid instantiation is the code it always was.

#include "batch_slices.h"
#include "layer_norm_lstm.h"
#include "lstm_inference.h"
#include "lstm_rows.h"
#include "packed_gemm.h"
#include "rnn_math.h"
#include "step_rows.h"
#include "unit_parts.h"

#include <vector>

namespace {

void lstm_forward_pointwise(torch::Tensor z, torch::Tensor c_prev, torch::Tensor w_if, torch::Tensor w_o,
                            double clip, torch::Tensor j, torch::Tensor c, torch::Tensor tc, torch::Tensor m,
                            torch::Tensor mask, int64_t activation, int64_t gate) {
  const int64_t n = z.size(0), U = c.size(1);
  bool* mask_data = mask.defined() && mask.numel() > 0 ? mask.data_ptr<bool>() : nullptr;
  const int64_t mask_stride = mask_data ? mask.stride(0) : 0;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "lstm_forward_pointwise", [&] {
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      forward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(
          n, U, Rows<scalar_t>(z), Rows<scalar_t>(c_prev), Peepholes<scalar_t>(w_if, w_o, U), clip, Rows<scalar_t>(j),
          Rows<scalar_t>(c), Rows<scalar_t>(tc), Rows<scalar_t>(m), mask_data, mask_stride, activation,
          UnitRange<scalar_t>{0, U});
    });
  });
}

void lstm_backward_pointwise(torch::Tensor z, torch::Tensor j, torch::Tensor c_prev, torch::Tensor tc,
                             torch::Tensor dm, torch::Tensor dc, torch::Tensor w_if, torch::Tensor w_o,
                             torch::Tensor mask, torch::Tensor dz, int64_t activation, int64_t gate) {
  const int64_t n = z.size(0), U = j.size(1);
  const bool* mask_data = mask.defined() && mask.numel() > 0 ? mask.data_ptr<bool>() : nullptr;
  const int64_t mask_stride = mask_data ? mask.stride(0) : 0;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "lstm_backward_pointwise", [&] {
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      backward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(
          n, U, Rows<scalar_t>(z), Rows<scalar_t>(j), Rows<scalar_t>(c_prev), Rows<scalar_t>(tc), Rows<scalar_t>(dm),
          Rows<scalar_t>(nullptr, 0), Rows<scalar_t>(dc), Peepholes<scalar_t>(w_if, w_o, U), mask_data, mask_stride,
          Rows<scalar_t>(dz), activation, kTrainingGateBlocks);
    });
  });
}

// ---- the LSTM's step loops (lstm.py: forward_steps_torch, backward_steps_torch are the twins, in
// their own gate layout), on a batch slice's rows (step_rows.h) or on parts of the units
// (unit_parts.h). Gates, bias and weights in TF's blocks (i, j, f, o), forget_bias added in the
// step; forward saves i, f, o in z's blocks 0, 1, 2; backward writes d_gates in TF's blocks.

// The forward loop without a projection on parts of the units: part p's recurrent product of its
// gate columns into its scratch rows, then its units' pointwise step; out is h.
template <typename scalar_t, bool TANH, bool HARD>
void lstm_forward_parts(const std::vector<rnnkit::UnitPart>& parts, const std::vector<int64_t>& batch_sizes,
                        const torch::Tensor& w_h, const torch::Tensor& h0, const torch::Tensor& c0, scalar_t* z,
                        scalar_t* j, scalar_t* c, scalar_t* tc, scalar_t* out, bool* kept,
                        const Peepholes<scalar_t>& peep, double clip, scalar_t forget_bias, int64_t activation) {
  const int64_t batch = batch_sizes[0], U = w_h.size(1) / 4, G = 4 * U;
  const std::vector<int64_t> starts = rnnkit::step_starts(batch_sizes);
  std::vector<rnnkit::RecurrentProduct> products;
  std::vector<torch::Tensor> scratch;  // [batch, 4 * width]: a step's product of the part's columns
  for (const rnnkit::UnitPart& part : parts) {
    products.push_back(rnnkit::RecurrentProduct::plain(rnnkit::gate_columns(w_h, 4, U, part)));
    scratch.push_back(at::empty({batch, 4 * part.width()}, w_h.options()));
  }
  const rnnkit::BatchSlice all;
  rnnkit::run_rounds(static_cast<int64_t>(parts.size()), static_cast<int64_t>(batch_sizes.size()),
                     [&](int64_t p, int64_t t) {
    const int64_t n = batch_sizes[t], start = starts[t];
    const Rows<scalar_t> h_prev = t == 0 ? initial_rows<scalar_t>(h0, all) : slice_rows(out, U, starts[t - 1], all);
    const Rows<scalar_t> c_prev = t == 0 ? initial_rows<scalar_t>(c0, all) : slice_rows(c, U, starts[t - 1], all);
    const Rows<scalar_t> product(scratch[p].data_ptr<scalar_t>(), 4 * parts[p].width());
    products[p].apply(h_prev.data, h_prev.stride, n, product.data, product.stride, false);
    forward_rows<scalar_t, TANH, HARD>(n, U, slice_rows(z, G, start, all), c_prev, peep, clip,
                                       slice_rows(j, U, start, all), slice_rows(c, U, start, all),
                                       slice_rows(tc, U, start, all), slice_rows(out, U, start, all),
                                       kept ? kept + start * U : nullptr, U, activation,
                                       UnitRange<scalar_t>{parts[p].begin, parts[p].end, product, nullptr,
                                                           kTFGateBlocks, forget_bias});
  });
}

void lstm_forward_steps(torch::Tensor gates, torch::Tensor h0, torch::Tensor c0, torch::Tensor w_h,
                        torch::Tensor w_if, torch::Tensor w_o, torch::Tensor projection, double clip,
                        double proj_clip, std::vector<int64_t> batch_sizes, torch::Tensor candidates,
                        torch::Tensor cells, torch::Tensor act_cells, torch::Tensor hidden, torch::Tensor out,
                        torch::Tensor clip_mask, torch::Tensor proj_mask, double forget_bias, int64_t activation,
                        int64_t gate) {
  const bool projected = projection.numel() > 0;
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0], U = cells.size(1), H = out.size(1), G = 4 * U;
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_forward_steps", [&] {
    scalar_t *z = rows_of<scalar_t>(gates, "gates"), *j = rows_of<scalar_t>(candidates, "candidates");
    scalar_t *c = rows_of<scalar_t>(cells, "cells"), *tc = rows_of<scalar_t>(act_cells, "act_cells");
    scalar_t* o = rows_of<scalar_t>(out, "out");
    scalar_t* m = projected ? rows_of<scalar_t>(hidden, "hidden") : o;  // m before the projection
    bool *kept = mask_of(clip_mask, "clip_mask"), *proj_kept = mask_of(proj_mask, "proj_mask");
    const Peepholes<scalar_t> peep(w_if, w_o, U);
    const scalar_t forget = static_cast<scalar_t>(forget_bias);
    const UnitRange<scalar_t> all_units{0, U, Rows<scalar_t>{nullptr, 0}, nullptr, kTFGateBlocks, forget};
    const int64_t weight_bytes = rnnkit::bytes_of(w_h) + rnnkit::bytes_of(projection);
    const auto parts = projected ? std::vector<rnnkit::UnitPart>{}
                                 : rnnkit::unit_parts<scalar_t>(batch, steps, U, weight_bytes, at::vec::Vectorized<scalar_t>::size());
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      if (parts.size() > 1) {
        lstm_forward_parts<scalar_t, decltype(tanh)::value, decltype(hard)::value>(
            parts, batch_sizes, w_h, h0, c0, z, j, c, tc, o, kept, peep, clip, forget, activation);
        return;
      }
      rnnkit::for_batch_slices(batch, weight_bytes, [&](rnnkit::BatchSlice s) {
        const rnnkit::RecurrentProduct recurrent(w_h, s.rows(batch), steps);
        const auto projector = rnnkit::optional_product(projection, s.rows(batch), steps);
        Rows<scalar_t> h_prev = initial_rows<scalar_t>(h0, s), c_prev = initial_rows<scalar_t>(c0, s);
        int64_t start = 0;
        for (const int64_t n : batch_sizes) {
          const int64_t rows = s.rows(n);
          if (rows == 0) break;
          const Rows<scalar_t> zr = slice_rows(z, G, start, s), cr = slice_rows(c, U, start, s);
          const Rows<scalar_t> mr = slice_rows(m, projected ? U : H, start, s), hr = slice_rows(o, H, start, s);
          recurrent.apply(h_prev.data, h_prev.stride, rows, zr.data, zr.stride, true);
          forward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(
              rows, U, zr, c_prev, peep, clip, slice_rows(j, U, start, s), cr, slice_rows(tc, U, start, s), mr,
              kept ? kept + (start + s.first) * U : nullptr, U * s.stride, activation, all_units);
          if (projected) {
            projector->apply(mr.data, mr.stride, rows, hr.data, hr.stride, false);
            if (proj_clip >= 0) clip_rows(rows, H, hr, proj_kept + (start + s.first) * H, H * s.stride, proj_clip);
          }
          h_prev = hr;
          c_prev = cr;
          start += n;
        }
      });
    });
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
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0], U = cells.size(1), H = d_h.size(1), G = 4 * U;
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward_steps", [&] {
    scalar_t *z = rows_of<scalar_t>(gates, "gates"), *j = rows_of<scalar_t>(candidates, "candidates");
    scalar_t *c = rows_of<scalar_t>(cells, "cells"), *tc = rows_of<scalar_t>(act_cells, "act_cells");
    scalar_t *dout = rows_of<scalar_t>(d_out, "d_out"), *dh = rows_of<scalar_t>(d_h, "d_h");
    scalar_t *dc = rows_of<scalar_t>(d_c, "d_c"), *dz = rows_of<scalar_t>(d_gates, "d_gates");
    scalar_t* dm_saved = projected ? rows_of<scalar_t>(d_m, "d_m") : nullptr;
    const bool *kept = mask_of(clip_mask, "clip_mask"), *proj_kept = mask_of(proj_mask, "proj_mask");
    const Peepholes<scalar_t> peep(w_if, w_o, U);
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_h_t) + rnnkit::bytes_of(projection_t), [&](rnnkit::BatchSlice s) {
        const rnnkit::RecurrentProduct recurrent(w_h_t, s.rows(batch), steps);
        const auto projector = rnnkit::optional_product(projection_t, s.rows(batch), steps);
        // with a projection: the slice's gradients of m, [rows, H] after the clip, [rows, U] before the projection
        torch::Tensor dm_h = projected ? at::empty({s.rows(batch), H}, gates.options()) : torch::Tensor();
        torch::Tensor dm_u = projected ? at::empty({s.rows(batch), U}, gates.options()) : torch::Tensor();
        const Rows<scalar_t> d_h_rows = slice_rows(dh, H, 0, s), d_c_rows = slice_rows(dc, U, 0, s);
        for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
          const int64_t n = batch_sizes[t], start = starts[t], rows = s.rows(n);
          if (rows == 0) continue;
          const Rows<scalar_t> c_prev = t == 0 ? initial_rows<scalar_t>(c0, s) : slice_rows(c, U, starts[t - 1], s);
          const Rows<scalar_t> dzr = slice_rows(dz, G, start, s), d_out_rows = slice_rows(dout, H, start, s);
          Rows<scalar_t> dm_a = d_out_rows, dm_b = d_h_rows;  // dm = d_out + d_h, summed in the rows
          if (projected) {
            const Rows<scalar_t> summed(dm_h.data_ptr<scalar_t>(), H);
            const bool* kept_rows = proj_kept ? proj_kept + (start + s.first) * H : nullptr;
            projected_gradient(rows, H, d_out_rows, d_h_rows, kept_rows, H * s.stride, slice_rows(dm_saved, H, start, s),
                               summed);
            dm_a = Rows<scalar_t>(dm_u.data_ptr<scalar_t>(), U);
            dm_b = Rows<scalar_t>(nullptr, 0);
            projector->apply(summed.data, summed.stride, rows, dm_a.data, dm_a.stride, false);
          }
          backward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(
              rows, U, slice_rows(z, G, start, s), slice_rows(j, U, start, s), c_prev, slice_rows(tc, U, start, s),
              dm_a, dm_b, d_c_rows, peep, kept ? kept + (start + s.first) * U : nullptr, U * s.stride, dzr,
              activation, kTFGateBlocks);
          recurrent.apply(dzr.data, dzr.stride, rows, d_h_rows.data, d_h_rows.stride, false);
        }
      });
    });
  });
}

// ---- GRU (gru.py): g = [r, u] pre-activations [n, 2U]; c the candidate pre-activation [n, U]

template <typename scalar_t, bool HARD>
void gru_gates_rows(int64_t n, int64_t U, const Rows<scalar_t>& g, const Rows<scalar_t>& h_prev,
                    const Rows<scalar_t>& rh) {
  using Vec = at::vec::Vectorized<scalar_t>;
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
void gru_output_rows(int64_t n, int64_t U, const Rows<scalar_t>& c, const Rows<scalar_t>& g,
                     const Rows<scalar_t>& h_prev, const Rows<scalar_t>& h, int64_t act) {
  using Vec = at::vec::Vectorized<scalar_t>;
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

// dh = dh_a + dh_b (dh_b without data: dh_a alone) the gradient of the new h; dh_prev may be dh_b.
template <typename scalar_t, bool TANH, bool HARD>
void gru_output_backward_rows(int64_t n, int64_t U, const Rows<scalar_t>& dh_a, const Rows<scalar_t>& dh_b,
                              const Rows<scalar_t>& g, const Rows<scalar_t>& c, const Rows<scalar_t>& h_prev,
                              const Rows<scalar_t>& dg, const Rows<scalar_t>& dc, const Rows<scalar_t>& dh_prev,
                              int64_t act) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t *dha = dh_a.row(r), *dhb = dh_b.data ? dh_b.row(r) : nullptr;
      const scalar_t *ur = g.row(r) + U, *cr = c.row(r), *hp = h_prev.row(r);
      scalar_t *du = dg.row(r) + U, *dcr = dc.row(r), *dhp = dh_prev.row(r);
      for (int64_t u = 0; u < U; ++u) {
        const scalar_t d = dhb ? dha[u] + dhb[u] : dha[u], up = ur[u], cand = cr[u];
        du[u] = gate_gradient<scalar_t, HARD>(d * (hp[u] - cand), up);
        dcr[u] = d * (1 - up) * cell_activation_slope<scalar_t, TANH>(act, cand);
        dhp[u] = d * up;
      }
    }
  });
}

template <typename scalar_t, bool HARD>
void gru_reset_backward_rows(int64_t n, int64_t U, const Rows<scalar_t>& d_rh, const Rows<scalar_t>& g,
                             const Rows<scalar_t>& h_prev, const Rows<scalar_t>& dg, const Rows<scalar_t>& dh_prev) {
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
    with_gate_flag(gate, [&](auto hard) {
      gru_gates_rows<scalar_t, decltype(hard)::value>(g.size(0), h_prev.size(1), Rows<scalar_t>(g),
                                                      Rows<scalar_t>(h_prev), Rows<scalar_t>(rh));
    });
  });
}

void gru_output_forward(torch::Tensor c, torch::Tensor g, torch::Tensor h_prev, torch::Tensor h, int64_t activation) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "gru_output_forward", [&] {
    with_tanh_flag(activation, [&](auto tanh) {
      gru_output_rows<scalar_t, decltype(tanh)::value>(c.size(0), c.size(1), Rows<scalar_t>(c), Rows<scalar_t>(g),
                                                       Rows<scalar_t>(h_prev), Rows<scalar_t>(h), activation);
    });
  });
}

void gru_output_backward(torch::Tensor dh, torch::Tensor g, torch::Tensor c, torch::Tensor h_prev, torch::Tensor dg,
                         torch::Tensor dc, torch::Tensor dh_prev, int64_t activation, int64_t gate) {
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "gru_output_backward", [&] {
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      gru_output_backward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(
          c.size(0), c.size(1), Rows<scalar_t>(dh), Rows<scalar_t>(nullptr, 0), Rows<scalar_t>(g), Rows<scalar_t>(c),
          Rows<scalar_t>(h_prev), Rows<scalar_t>(dg), Rows<scalar_t>(dc), Rows<scalar_t>(dh_prev), activation);
    });
  });
}

void gru_reset_backward(torch::Tensor d_rh, torch::Tensor g, torch::Tensor h_prev, torch::Tensor dg,
                        torch::Tensor dh_prev, int64_t gate) {
  AT_DISPATCH_FLOATING_TYPES(d_rh.scalar_type(), "gru_reset_backward", [&] {
    with_gate_flag(gate, [&](auto hard) {
      gru_reset_backward_rows<scalar_t, decltype(hard)::value>(d_rh.size(0), d_rh.size(1), Rows<scalar_t>(d_rh),
                                                               Rows<scalar_t>(g), Rows<scalar_t>(h_prev),
                                                               Rows<scalar_t>(dg), Rows<scalar_t>(dh_prev));
    });
  });
}

// the GRU's step loops (gru.py: forward_steps_torch, backward_steps_torch are the twins)

void gru_forward_steps(torch::Tensor gates, torch::Tensor candidates, torch::Tensor reset_h, torch::Tensor out,
                       torch::Tensor h0, torch::Tensor w_gh, torch::Tensor w_ch, std::vector<int64_t> batch_sizes,
                       int64_t activation, int64_t gate) {
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0], U = out.size(1);
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gru_forward_steps", [&] {
    scalar_t *g = rows_of<scalar_t>(gates, "gates"), *c = rows_of<scalar_t>(candidates, "candidates");
    scalar_t *rh = rows_of<scalar_t>(reset_h, "reset_h"), *h = rows_of<scalar_t>(out, "out");
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_gh) + rnnkit::bytes_of(w_ch), [&](rnnkit::BatchSlice s) {
        const rnnkit::RecurrentProduct gate_product(w_gh, s.rows(batch), steps), candidate_product(w_ch, s.rows(batch), steps);
        Rows<scalar_t> previous = initial_rows<scalar_t>(h0, s);
        int64_t start = 0;
        for (const int64_t n : batch_sizes) {
          const int64_t rows = s.rows(n);
          if (rows == 0) break;
          const Rows<scalar_t> gr = slice_rows(g, 2 * U, start, s), rhr = slice_rows(rh, U, start, s);
          const Rows<scalar_t> cr = slice_rows(c, U, start, s), hr = slice_rows(h, U, start, s);
          gate_product.apply(previous.data, previous.stride, rows, gr.data, gr.stride, true);
          gru_gates_rows<scalar_t, decltype(hard)::value>(rows, U, gr, previous, rhr);
          candidate_product.apply(rhr.data, rhr.stride, rows, cr.data, cr.stride, true);
          gru_output_rows<scalar_t, decltype(tanh)::value>(rows, U, cr, gr, previous, hr, activation);
          previous = hr;
          start += n;
        }
      });
    });
  });
}

void gru_backward_steps(torch::Tensor gates, torch::Tensor candidates, torch::Tensor out, torch::Tensor h0,
                        torch::Tensor d_out, torch::Tensor d_h, torch::Tensor d_gates, torch::Tensor d_candidates,
                        torch::Tensor w_gh_t, torch::Tensor w_ch_t, std::vector<int64_t> batch_sizes,
                        int64_t activation, int64_t gate) {
  const std::vector<int64_t> starts = rnnkit::step_starts(batch_sizes);
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0], U = out.size(1);
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gru_backward_steps", [&] {
    scalar_t *g = rows_of<scalar_t>(gates, "gates"), *c = rows_of<scalar_t>(candidates, "candidates");
    scalar_t *h = rows_of<scalar_t>(out, "out"), *dout = rows_of<scalar_t>(d_out, "d_out");
    scalar_t *dh = rows_of<scalar_t>(d_h, "d_h"), *dg = rows_of<scalar_t>(d_gates, "d_gates");
    scalar_t* dc = rows_of<scalar_t>(d_candidates, "d_candidates");
    with_flags(activation, gate, [&](auto tanh, auto hard) {
      rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_gh_t) + rnnkit::bytes_of(w_ch_t), [&](rnnkit::BatchSlice s) {
        const rnnkit::RecurrentProduct gate_product(w_gh_t, s.rows(batch), steps), candidate_product(w_ch_t, s.rows(batch), steps);
        const torch::Tensor d_rh = at::empty({s.rows(batch), U}, gates.options());  // of r * h_prev, a step's rows
        const Rows<scalar_t> d_rh_rows(d_rh.data_ptr<scalar_t>(), U), d_h_rows = slice_rows(dh, U, 0, s);
        for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
          const int64_t n = batch_sizes[t], start = starts[t], rows = s.rows(n);
          if (rows == 0) continue;
          const Rows<scalar_t> h_prev = t == 0 ? initial_rows<scalar_t>(h0, s) : slice_rows(h, U, starts[t - 1], s);
          const Rows<scalar_t> gr = slice_rows(g, 2 * U, start, s), dgr = slice_rows(dg, 2 * U, start, s);
          const Rows<scalar_t> dcr = slice_rows(dc, U, start, s);
          gru_output_backward_rows<scalar_t, decltype(tanh)::value, decltype(hard)::value>(
              rows, U, slice_rows(dout, U, start, s), d_h_rows, gr, slice_rows(c, U, start, s), h_prev, dgr, dcr,
              d_h_rows, activation);
          candidate_product.apply(dcr.data, dcr.stride, rows, d_rh_rows.data, d_rh_rows.stride, false);
          gru_reset_backward_rows<scalar_t, decltype(hard)::value>(rows, U, d_rh_rows, gr, h_prev, dgr, d_h_rows);
          gate_product.apply(dgr.data, dgr.stride, rows, d_h_rows.data, d_h_rows.stride, true);
        }
      });
    });
  });
}

// ---- BasicRNNCell (basic_rnn.py): h = act(z), z the pre-activation [n, U]

template <typename scalar_t, bool TANH>
void rnn_forward_rows(int64_t n, int64_t U, const Rows<scalar_t>& z, const Rows<scalar_t>& h, int64_t act) {
  using Vec = at::vec::Vectorized<scalar_t>;  // h may be z itself
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
void rnn_backward_rows(int64_t n, int64_t U, const Rows<scalar_t>& d_out, const Rows<scalar_t>& d_h,
                       const Rows<scalar_t>& h, const Rows<scalar_t>& d_pre, int64_t act) {
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
    with_tanh_flag(activation, [&](auto tanh) {
      rnn_forward_rows<scalar_t, decltype(tanh)::value>(z.size(0), z.size(1), Rows<scalar_t>(z), Rows<scalar_t>(h),
                                                        activation);
    });
  });
}

void rnn_backward_pointwise(torch::Tensor d_out, torch::Tensor d_h, torch::Tensor h, torch::Tensor d_pre,
                            int64_t activation) {
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "rnn_backward_pointwise", [&] {
    with_tanh_flag(activation, [&](auto tanh) {
      rnn_backward_rows<scalar_t, decltype(tanh)::value>(h.size(0), h.size(1), Rows<scalar_t>(d_out),
                                                         Rows<scalar_t>(d_h), Rows<scalar_t>(h), Rows<scalar_t>(d_pre),
                                                         activation);
    });
  });
}

// the BasicRNNCell's step loops (basic_rnn.py: forward_steps_torch, backward_steps_torch are the twins)

void rnn_forward_steps(torch::Tensor pre, torch::Tensor out, torch::Tensor h0, torch::Tensor w_h,
                       std::vector<int64_t> batch_sizes, int64_t activation) {
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0], U = out.size(1);
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  AT_DISPATCH_FLOATING_TYPES(pre.scalar_type(), "rnn_forward_steps", [&] {
    scalar_t *z = rows_of<scalar_t>(pre, "pre"), *h = rows_of<scalar_t>(out, "out");
    with_tanh_flag(activation, [&](auto tanh) {
      rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_h), [&](rnnkit::BatchSlice s) {
        const rnnkit::RecurrentProduct recurrent(w_h, s.rows(batch), steps);
        Rows<scalar_t> h_prev = initial_rows<scalar_t>(h0, s);
        int64_t start = 0;
        for (const int64_t n : batch_sizes) {
          const int64_t rows = s.rows(n);
          if (rows == 0) break;
          const Rows<scalar_t> zr = slice_rows(z, U, start, s), hr = slice_rows(h, U, start, s);
          recurrent.apply(h_prev.data, h_prev.stride, rows, zr.data, zr.stride, true);
          rnn_forward_rows<scalar_t, decltype(tanh)::value>(rows, U, zr, hr, activation);
          h_prev = hr;
          start += n;
        }
      });
    });
  });
}

void rnn_backward_steps(torch::Tensor out, torch::Tensor d_out, torch::Tensor d_h, torch::Tensor d_pre,
                        torch::Tensor w_h_t, std::vector<int64_t> batch_sizes, int64_t activation) {
  const std::vector<int64_t> starts = rnnkit::step_starts(batch_sizes);
  const int64_t batch = batch_sizes.empty() ? 0 : batch_sizes[0], U = out.size(1);
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "rnn_backward_steps", [&] {
    scalar_t *h = rows_of<scalar_t>(out, "out"), *dout = rows_of<scalar_t>(d_out, "d_out");
    scalar_t *dh = rows_of<scalar_t>(d_h, "d_h"), *dpre = rows_of<scalar_t>(d_pre, "d_pre");
    with_tanh_flag(activation, [&](auto tanh) {
      rnnkit::for_batch_slices(batch, rnnkit::bytes_of(w_h_t), [&](rnnkit::BatchSlice s) {
        const rnnkit::RecurrentProduct recurrent(w_h_t, s.rows(batch), steps);
        const Rows<scalar_t> d_h_rows = slice_rows(dh, U, 0, s);
        for (int64_t t = static_cast<int64_t>(batch_sizes.size()) - 1; t >= 0; --t) {
          const int64_t n = batch_sizes[t], start = starts[t], rows = s.rows(n);
          if (rows == 0) continue;
          const Rows<scalar_t> dpr = slice_rows(dpre, U, start, s);
          rnn_backward_rows<scalar_t, decltype(tanh)::value>(rows, U, slice_rows(dout, U, start, s), d_h_rows,
                                                             slice_rows(h, U, start, s), dpr, activation);
          recurrent.apply(dpr.data, dpr.stride, rows, d_h_rows.data, d_h_rows.stride, false);
        }
      });
    });
  });
}

// The widths of the parts a float32 LSTM step loop splits its units into (unit_parts.h).
std::vector<int64_t> unit_part_widths(int64_t batch, int64_t steps, int64_t units, int64_t weight_bytes) {
  std::vector<int64_t> widths;
  const int64_t align = at::vec::Vectorized<float>::size();
  for (const auto& part : rnnkit::unit_parts<float>(batch, steps, units, weight_bytes, align)) {
    widths.push_back(part.width());
  }
  return widths;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("lstm_forward_pointwise", &lstm_forward_pointwise, "one LSTM step's pointwise forward, in place");
  module.def("lstm_backward_pointwise", &lstm_backward_pointwise, "one LSTM step's pointwise backward");
  module.def("lstm_forward_steps", &lstm_forward_steps, "an LSTM layer's forward step loop");
  module.def("lstm_backward_steps", &lstm_backward_steps, "an LSTM layer's backward step loop");
  module.def("lstm_inference_steps", &rnnkit::lstm_inference_steps, "an LSTM layer's forward without saves");
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
  module.def("unit_part_widths", &unit_part_widths,
             "the widths of the unit parts (threads) a float32 LSTM loop over `batch` rows splits `units` into");
  module.def("ln_lstm_forward_steps", &rnnkit::ln_lstm_forward_steps, "a layer-norm LSTM layer's forward step loop");
  module.def("ln_lstm_backward_steps", &rnnkit::ln_lstm_backward_steps, "a layer-norm LSTM layer's backward step loop");
}
