// rnnkit: what the CPU step loops share (rnn_cpu.cpp, layer_norm_lstm.cpp): row blocks, the
// vectorized activations and their slopes, the gate kinds and the template flags for them.
//
// Everything here is in an unnamed namespace: each source file gets its own inline copies.

#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace {

template <typename scalar_t>
struct Rows {  // a [n, width] block of rows: element (r, u) at data[r * stride + u]
  scalar_t* data;
  int64_t stride;
  explicit Rows(const torch::Tensor& t) : data(t.data_ptr<scalar_t>()), stride(t.stride(0)) {}
  Rows(scalar_t* rows, int64_t row_stride) : data(rows), stride(row_stride) {}
  scalar_t* row(int64_t r) const { return data + r * stride; }
};

// 1 / d for d >= 1 (the activations' denominators, 1 + exp(...), up to inf). In float with AVX-512:
// the 14-bit reciprocal with one Newton step (about 1e-7 relative, within an ulp or so of the
// division), 0 past 2^126 (where the quotient is below float's normal range); the division's
// throughput took about a quarter of the LSTM step's pointwise time. Elsewhere the division.
template <typename scalar_t>
at::vec::Vectorized<scalar_t> reciprocal_of_large(const at::vec::Vectorized<scalar_t>& d) {
  using Vec = at::vec::Vectorized<scalar_t>;
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    const __m512 x = d, r = _mm512_rcp14_ps(x);
    const __m512 refined = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(1.0f)), r);  // r + r (1 - d r)
    return Vec(_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(0x1p126f), _CMP_NGE_UQ), refined));
  }
#endif
  return Vec(scalar_t(1)) / d;
}

constexpr double kTanhSmall = 0.625;
constexpr double kTanhPoly[] = {  // tanh(x) / x = sum_k kTanhPoly[k] * x^(2k), |x| < kTanhSmall
    0.9999999999999997,     -0.3333333333331638,    0.13333333331600894,  -0.05396825327586241,
    0.02186947428442996,    -0.0088630634411978,    0.003590823084537031, -0.001449410852165835,
    0.0005693474514761303,  -0.00019631970250581998, 4.250623405935226e-05};

template <typename scalar_t>
at::vec::Vectorized<scalar_t> accurate_tanh(const at::vec::Vectorized<scalar_t>& x) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec one(scalar_t(1)), two(scalar_t(2));
  const Vec magnitude = x.abs();
  const Vec large = one - two * reciprocal_of_large<scalar_t>((magnitude * two).exp() + one);  // |tanh(x)|, exp may overflow to inf: 1
  const Vec z = x * x;
  Vec poly(static_cast<scalar_t>(kTanhPoly[10]));
  for (int k = 9; k >= 0; --k) poly = poly * z + Vec(static_cast<scalar_t>(kTanhPoly[k]));
  const Vec small = x * poly;
  const Vec signed_large = Vec::blendv(large, large.neg(), x < Vec(scalar_t(0)));
  return Vec::blendv(signed_large, small, magnitude < Vec(static_cast<scalar_t>(kTanhSmall)));
}

enum Activation : int64_t { kTanh, kSigmoid, kRelu, kRelu6, kElu, kSelu, kSoftsign, kLinear };
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

template <typename scalar_t>
at::vec::Vectorized<scalar_t> activate(int64_t kind, const at::vec::Vectorized<scalar_t>& x) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec zero(scalar_t(0)), one(scalar_t(1));
  switch (kind) {
    case kTanh: return accurate_tanh<scalar_t>(x);
    case kSigmoid: return one / (one + x.neg().exp());
    case kRelu: return at::vec::maximum(x, zero);
    case kRelu6: return at::vec::clamp(x, zero, Vec(scalar_t(6)));
    case kElu: return Vec::blendv(x.expm1(), x, x > zero);
    case kSelu:
      return Vec(static_cast<scalar_t>(kSeluScale)) *
             Vec::blendv(Vec(static_cast<scalar_t>(kSeluAlpha)) * x.expm1(), x, x > zero);
    case kSoftsign: return x / (one + x.abs());
    default: return x;  // kLinear
  }
}

template <typename scalar_t>
scalar_t activation_slope(int64_t kind, scalar_t y) {  // d act / dx at the input whose output is y
  switch (kind) {
    case kTanh: return 1 - y * y;
    case kSigmoid: return y * (1 - y);
    case kRelu: return y > 0 ? scalar_t(1) : scalar_t(0);
    case kRelu6: return y > 0 && y < 6 ? scalar_t(1) : scalar_t(0);
    case kElu: return y > 0 ? scalar_t(1) : y + 1;
    case kSelu: return y > 0 ? static_cast<scalar_t>(kSeluScale) : y + static_cast<scalar_t>(kSeluScale * kSeluAlpha);
    case kSoftsign: return (1 - std::abs(y)) * (1 - std::abs(y));
    default: return scalar_t(1);  // kLinear
  }
}

// The row functions below are compiled twice: for tanh (TANH, the common case, which keeps the
// backward loops vectorizable) and for any kind through the switches above.
template <typename scalar_t, bool TANH>
at::vec::Vectorized<scalar_t> cell_activation(int64_t kind, const at::vec::Vectorized<scalar_t>& x) {
  if constexpr (TANH) return accurate_tanh<scalar_t>(x);
  else return activate<scalar_t>(kind, x);
}

template <typename scalar_t, bool TANH>
scalar_t cell_activation_slope(int64_t kind, scalar_t y) {
  if constexpr (TANH) return 1 - y * y;
  else return activation_slope<scalar_t>(kind, y);
}

template <typename F>
void with_tanh_flag(int64_t kind, const F& run) {  // run(std::true_type{}) for tanh, else std::false_type{}
  if (kind == kTanh) run(std::true_type{});
  else run(std::false_type{});
}

enum Gate : int64_t { kSigmoidGate, kHardSigmoidGate };

template <typename scalar_t, bool HARD>
at::vec::Vectorized<scalar_t> gate_activation(const at::vec::Vectorized<scalar_t>& x) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec one(scalar_t(1));
  if constexpr (HARD) {  // F.hardsigmoid's own formula: min(max(x + 3, 0), 6) / 6
    const Vec six(scalar_t(6));
    return at::vec::minimum(at::vec::maximum(x + Vec(scalar_t(3)), Vec(scalar_t(0))), six) / six;
  } else {
    return reciprocal_of_large<scalar_t>(one + x.neg().exp());
  }
}

template <typename scalar_t, bool HARD>
scalar_t gate_gradient(scalar_t grad, scalar_t y) {  // the gate input's gradient from its output y
  if constexpr (HARD) return y > 0 && y < 1 ? grad * static_cast<scalar_t>(1.0f / 6.0f) : scalar_t(0);  // torch's 1/6
  else return grad * y * (1 - y);
}

template <typename F>
void with_gate_flag(int64_t gate, const F& run) {  // run(std::true_type{}) for hard_sigmoid, else std::false_type{}
  TORCH_CHECK(gate == kSigmoidGate || gate == kHardSigmoidGate, "unknown gate kind ", gate);
  if (gate == kHardSigmoidGate) run(std::true_type{});
  else run(std::false_type{});
}

template <typename F>
void with_flags(int64_t activation, int64_t gate, const F& run) {  // run(tanh flag, hard_sigmoid flag)
  with_tanh_flag(activation, [&](auto tanh) { with_gate_flag(gate, [&](auto hard) { run(tanh, hard); }); });
}

template <typename scalar_t>
const scalar_t* maybe_data(const torch::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.data_ptr<scalar_t>() : nullptr;
}

}  // namespace
