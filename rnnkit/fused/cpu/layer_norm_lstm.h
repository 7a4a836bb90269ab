// rnnkit: the layer-norm LSTM's step loops (layer_norm_lstm.cpp), bound in rnn_cpu.cpp's module.

#pragma once

#include <torch/extension.h>

#include <vector>

namespace rnnkit {

void ln_lstm_forward_steps(torch::Tensor gates, torch::Tensor h0, torch::Tensor c0, torch::Tensor w_h,
                           torch::Tensor gains, torch::Tensor shifts, torch::Tensor w_if, torch::Tensor w_o,
                           torch::Tensor projection, torch::Tensor drop, double forget_bias, double clip,
                           double proj_clip, std::vector<int64_t> batch_sizes, torch::Tensor x_hat,
                           torch::Tensor inv_std, torch::Tensor cells, torch::Tensor act_cells, torch::Tensor hidden,
                           torch::Tensor out, torch::Tensor clip_mask, torch::Tensor proj_mask, int64_t activation);

void ln_lstm_backward_steps(torch::Tensor gates, torch::Tensor cells, torch::Tensor act_cells, torch::Tensor x_hat,
                            torch::Tensor inv_std, torch::Tensor c0, torch::Tensor gains, torch::Tensor w_if,
                            torch::Tensor w_o, torch::Tensor drop, torch::Tensor clip_mask, torch::Tensor proj_mask,
                            torch::Tensor d_out, torch::Tensor d_h, torch::Tensor d_c, torch::Tensor d_gates,
                            torch::Tensor d_m, torch::Tensor d_params, torch::Tensor w_h_t, torch::Tensor projection_t,
                            std::vector<int64_t> batch_sizes, int64_t activation);

}  // namespace rnnkit
