// rnnkit: one LSTM step's pointwise part on a block of rows, forward and backward, one pass each
// (rnn_cpu.cpp's packed step loops, lstm_inference.cpp's inference loop).
//
// Layout: the gate pre-activations z of a step are [n, 4U] rows of four [U] blocks. The compiled
// loops (training and inference) read TF's own kernel and bias, (i, j, f, o), and add forget_bias
// here; lstm.py's torch twins and the Triton kernels order them (i, f, o, j) with forget_bias
// already in f (the single-step bindings of rnn_cpu.cpp too, to be tested against the twins).
// UnitRange and backward_rows' blocks say which. Forward saves the activated i, f, o for backward
// in blocks 0, 1, 2 whatever the layout. Every [n, U] argument is a block of rows with its own
// row stride. In an unnamed namespace, like rnn_math.h: each source file gets its own copies.

#pragma once

#include "rnn_math.h"

#include <algorithm>
#include <cmath>

namespace {

template <typename scalar_t>
struct Peepholes {  // w_i, w_f, w_o [U], or nullptr without peepholes
  const scalar_t *w_i, *w_f, *w_o;
  Peepholes(const torch::Tensor& w_if, const torch::Tensor& w_o_t, int64_t U)
      : w_i(maybe_data<scalar_t>(w_if)), w_f(w_i ? w_i + U : nullptr), w_o(maybe_data<scalar_t>(w_o_t)) {}
};

// Which of a row's four blocks (of z, of a part's product, of the bias) holds each gate.
struct GateBlocks {
  int64_t i, f, o, j;
};
constexpr GateBlocks kTrainingGateBlocks{0, 1, 2, 3};  // (i, f, o, j), lstm.py's _reorder_gates (twins, Triton)
constexpr GateBlocks kTFGateBlocks{0, 2, 3, 1};        // (i, j, f, o), TF's kernel as it is

// The units [begin, end) of a step's rows, where the gates are, and what is to be added to z
// where it is not in z yet: the recurrent product of those units' gate columns (row r's block b
// at product.row(r) + b * (end - begin)), the bias ([4U]), and forget_bias (to f, after the bias,
// before the peephole: TF's order).
template <typename scalar_t>
struct UnitRange {
  int64_t begin, end;
  Rows<scalar_t> product{nullptr, 0};
  const scalar_t* bias = nullptr;
  GateBlocks blocks = kTrainingGateBlocks;
  scalar_t forget_bias = 0;
};

// n rows of a step forward, on the units of `units`: z [n, 4U] in (plus the units' product, the
// bias and forget_bias; its blocks as units.blocks says), c and m written (c may be c_prev
// itself); clip >= 0: c clipped to [-clip, clip], and mask (|c| <= clip, row r at mask + r * mask_stride) written where given. What backward reads
// is saved where tc_out has data (else, for inference, not): the activated i, f, o (in place in
// z's blocks 0, 1, 2, whatever units.blocks: all four blocks of a unit are read before), j and
// act(c).
template <typename scalar_t, bool TANH, bool HARD>
void forward_rows(int64_t n, int64_t U, const Rows<scalar_t>& z, const Rows<scalar_t>& c_prev,
                  const Peepholes<scalar_t>& peep, double clip, const Rows<scalar_t>& j_out,
                  const Rows<scalar_t>& c_out, const Rows<scalar_t>& tc_out, const Rows<scalar_t>& m_out, bool* mask,
                  int64_t mask_stride, int64_t act, const UnitRange<scalar_t>& units) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec limit{static_cast<scalar_t>(clip)};
  const int64_t width = units.end - units.begin;
  const bool saving = tc_out.data != nullptr;
  const GateBlocks& blocks = units.blocks;
  const Vec forget_bias{units.forget_bias};
  auto gate = [](const Vec& x) { return gate_activation<scalar_t, HARD>(x); };
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    scalar_t unclipped[Vec::size()];
    for (int64_t r = begin; r < end; ++r) {
      scalar_t* zr = z.row(r);
      const scalar_t* pr = units.product.data ? units.product.row(r) : nullptr;
      auto pre = [&](int64_t block, int64_t u, int64_t count) {  // z's block plus the product's and the bias
        Vec sum = Vec::loadu(zr + block * U + u, count);
        if (pr) sum = sum + Vec::loadu(pr + block * width + (u - units.begin), count);
        return units.bias ? sum + Vec::loadu(units.bias + block * U + u, count) : sum;
      };
      for (int64_t u = units.begin; u < units.end; u += Vec::size()) {
        const int64_t count = std::min<int64_t>(Vec::size(), units.end - u);
        const Vec cp = Vec::loadu(c_prev.row(r) + u, count);
        Vec i = pre(blocks.i, u, count), f = pre(blocks.f, u, count), o = pre(blocks.o, u, count);
        const Vec j = cell_activation<scalar_t, TANH>(act, pre(blocks.j, u, count));
        if (units.forget_bias != 0) f = f + forget_bias;
        if (peep.w_i) {
          i = i + Vec::loadu(peep.w_i + u, count) * cp;
          f = f + Vec::loadu(peep.w_f + u, count) * cp;
        }
        i = gate(i);
        f = gate(f);
        Vec c = f * cp + i * j;
        if (clip >= 0) {
          if (mask) {
            c.store(unclipped, count);
            for (int64_t k = 0; k < count; ++k) mask[r * mask_stride + u + k] = std::abs(unclipped[k]) <= clip;
          }
          c = at::vec::clamp(c, limit.neg(), limit);
        }
        if (peep.w_o) o = o + Vec::loadu(peep.w_o + u, count) * c;
        o = gate(o);
        const Vec tc = cell_activation<scalar_t, TANH>(act, c);
        if (saving) {
          i.store(zr + u, count);
          f.store(zr + U + u, count);
          o.store(zr + 2 * U + u, count);
          j.store(j_out.row(r) + u, count);
          tc.store(tc_out.row(r) + u, count);
        }
        c.store(c_out.row(r) + u, count);
        (o * tc).store(m_out.row(r) + u, count);
      }
    }
  });
}

// One row of backward_rows below for tanh and sigmoid gates without a clip mask, vectorized: the
// same operations in the same order, so the same results as the scalar loop.
template <typename scalar_t>
void tanh_sigmoid_backward_row(int64_t U, const scalar_t* zr, const scalar_t* jr, const scalar_t* cpr,
                               const scalar_t* tcr, const scalar_t* dma, const scalar_t* dmb, scalar_t* dcr,
                               scalar_t* dzr, const Peepholes<scalar_t>& peep, const GateBlocks& blocks) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec one(scalar_t(1));
  for (int64_t u = 0; u < U; u += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), U - u);
    auto load = [&](const scalar_t* row) { return Vec::loadu(row + u, count); };
    const Vec i = load(zr), f = load(zr + U), o = load(zr + 2 * U), g = load(jr), t = load(tcr);
    const Vec d_m = dmb ? load(dma) + load(dmb) : load(dma);
    const Vec dz_o = d_m * t * o * (one - o);
    Vec d_c = d_m * o * (one - t * t) + load(dcr);
    if (peep.w_o) d_c = d_c + dz_o * load(peep.w_o);
    const Vec dz_i = d_c * g * i * (one - i);
    const Vec dz_f = d_c * load(cpr) * f * (one - f);
    dz_i.store(dzr + blocks.i * U + u, count);
    dz_f.store(dzr + blocks.f * U + u, count);
    dz_o.store(dzr + blocks.o * U + u, count);
    (d_c * i * (one - g * g)).store(dzr + blocks.j * U + u, count);
    Vec d_c_prev = d_c * f;
    if (peep.w_i) d_c_prev = d_c_prev + (dz_i * load(peep.w_i) + dz_f * load(peep.w_f));
    d_c_prev.store(dcr + u, count);
  }
}

// n rows of a step backward: dm = dm_a + dm_b (dm_b without data: dm_a alone) the gradient of m,
// dc the carried gradient of c (replaced by that of c_prev, in place); z holds forward's saves
// (i, f, o in blocks 0, 1, 2); writes dz [n, 4U] with its blocks as `blocks` says.
template <typename scalar_t, bool TANH, bool HARD>
void backward_rows(int64_t n, int64_t U, const Rows<scalar_t>& z, const Rows<scalar_t>& j, const Rows<scalar_t>& c_prev,
                   const Rows<scalar_t>& tc, const Rows<scalar_t>& dm_a, const Rows<scalar_t>& dm_b,
                   const Rows<scalar_t>& dc, const Peepholes<scalar_t>& peep, const bool* mask, int64_t mask_stride,
                   const Rows<scalar_t>& dz, int64_t act, const GateBlocks& blocks) {
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t *zr = z.row(r), *jr = j.row(r), *cpr = c_prev.row(r), *tcr = tc.row(r), *dma = dm_a.row(r);
      const scalar_t* dmb = dm_b.data ? dm_b.row(r) : nullptr;
      scalar_t *dcr = dc.row(r), *dzr = dz.row(r);
      if constexpr (TANH && !HARD) {
        if (!mask) {
          tanh_sigmoid_backward_row(U, zr, jr, cpr, tcr, dma, dmb, dcr, dzr, peep, blocks);
          continue;
        }
      }
      for (int64_t u = 0; u < U; ++u) {
        const scalar_t i = zr[u], f = zr[U + u], o = zr[2 * U + u], g = jr[u], t = tcr[u];
        const scalar_t d_m = dmb ? dma[u] + dmb[u] : dma[u];
        const scalar_t dz_o = gate_gradient<scalar_t, HARD>(d_m * t, o);
        scalar_t d_c = d_m * o * cell_activation_slope<scalar_t, TANH>(act, t) + dcr[u];
        if (peep.w_o) d_c += dz_o * peep.w_o[u];
        if (mask && !mask[r * mask_stride + u]) d_c = 0;
        const scalar_t dz_i = gate_gradient<scalar_t, HARD>(d_c * g, i);
        const scalar_t dz_f = gate_gradient<scalar_t, HARD>(d_c * cpr[u], f);
        dzr[blocks.i * U + u] = dz_i;
        dzr[blocks.f * U + u] = dz_f;
        dzr[blocks.o * U + u] = dz_o;
        dzr[blocks.j * U + u] = d_c * i * cell_activation_slope<scalar_t, TANH>(act, g);
        scalar_t d_c_prev = d_c * f;
        if (peep.w_i) d_c_prev += dz_i * peep.w_i[u] + dz_f * peep.w_f[u];
        dcr[u] = d_c_prev;  // the carry: d_c of the previous step, written in place
      }
    }
  });
}

}  // namespace
