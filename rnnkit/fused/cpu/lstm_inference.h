// rnnkit: an LSTM layer's inference loop (lstm_inference.cpp), bound in rnn_cpu.cpp's module.

#pragma once

#include <torch/extension.h>

namespace rnnkit {

// x [T, B, D] and out [T, B, U] (any step and row strides, unit column stride), w_x [D, 4U], bias
// [4U] (or empty: no bias) and w_h [U, 4U] (row stride 4U) in TF's gate order (i, j, f, o),
// forget_bias added to f in the step, h0 [B, U]; c [B, U] contiguous holds c0 and is left holding
// the final c. Peepholes: w_if [2, U] and w_o [U], or empty; clip < 0: no clipping. The input
// products are computed a chunk of steps at a time, the gates of a chunk at most max_gate_bytes
// (but one step's).
void lstm_inference_steps(torch::Tensor x, torch::Tensor w_x, torch::Tensor bias, double forget_bias, torch::Tensor w_h,
                          torch::Tensor h0, torch::Tensor c, torch::Tensor w_if, torch::Tensor w_o, double clip,
                          torch::Tensor out, int64_t max_gate_bytes, int64_t activation, int64_t gate);

}  // namespace rnnkit
