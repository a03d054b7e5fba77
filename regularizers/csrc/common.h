// Shared by every source of the native loops: the ATen helpers that the generic and the fast
// loops both use (masks per step, oneDNN's packed products, the LSTM's gate activations and the
// step-independent factors of its backward pass), and the declarations of the functions that
// ops.cpp binds. Inline, so that each source compiles on its own and the linker keeps one copy.
#pragma once

// ATen only: the Python binding headers (torch/extension.h) are ops.cpp's alone, which keeps the
// other sources' compile times down.
#include <ATen/ATen.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

using at::Tensor;
using Mask = std::optional<Tensor>;


// The mask for one step: masks whose leading dimension is 1 are the same at every step.
inline Tensor at_step(const Mask& mask, int64_t t) {
  if (!mask.has_value() || !mask->defined()) return Tensor();
  return mask->size(0) > 1 ? mask->select(0, t) : mask->select(0, 0);
}

inline Tensor masked(const Tensor& value, const Tensor& mask) { return mask.defined() ? value * mask : value; }

inline Tensor masked(const Tensor& value, const Mask& mask) {
  return mask.has_value() && mask->defined() ? value * *mask : value;
}

// The masks a backward pass is handed may be compact (compact_mask, masks.cpp): uint8 flags, saved in
// place of a float mask that held one value where it was not 0, that value kept_values[i] (the i-th
// mask's; an empty list when no mask is compact). The fast rows read them as they are (SequenceRows);
// ATen's calls take them back as the float mask they stood for.
inline double kept_at(at::ArrayRef<double> kept_values, size_t i) {
  return i < kept_values.size() ? kept_values[i] : 1.0;
}

inline Mask expanded(const Mask& mask, double kept, at::ScalarType dtype) {
  if (!mask.has_value() || !mask->defined() || mask->scalar_type() != at::kByte) return mask;
  return mask->to(dtype).mul_(kept);
}

// Step t of a mask that may be compact, as the float mask it stands for.
inline Tensor at_step(const Mask& mask, int64_t t, double kept, at::ScalarType dtype) {
  const Tensor step = at_step(mask, t);
  return step.defined() && step.scalar_type() == at::kByte ? step.to(dtype).mul_(kept) : step;
}

// The compact form of a mask whose entries are 0 or one value v ≠ 0 (a dropout or zoneout mask,
// even after products with 0/1 masks): (uint8 flags of its shape, v); else (an empty tensor, 0).
std::tuple<Tensor, double> compact_mask(const Tensor& mask);

// [x_0, x_1, .., x_{T-1}] from the initial state and the states x_1..x_T.
inline Tensor previous(const Tensor& initial, const Tensor& sequence) {
  return at::cat({initial.unsqueeze(0), sequence.narrow(0, 0, sequence.size(0) - 1)});
}

// oneDNN's inner product x @ weight.T (+ bias); `weight` is plain or packed by _reorder_linear_weight.
// On this project's CPUs it runs the recurrent layers' products faster than at::mm (MKL), both the
// small per-step ones and the large weight-gradient one.
inline Tensor onednn_linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias = std::nullopt) {
  static auto linear =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
          .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                        c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>();
  return linear.call(x.contiguous(), weight, bias, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
}

namespace fast {
// x @ weightᵀ (+ bias) for float32 CPU weights of up to 8 MiB, packed once into panels for a
// register-blocked kernel (panel_product.cpp).
struct PanelWeight {
  Tensor panels, bias;
  int64_t N = 0, K = 0;
  PanelWeight() = default;
  PanelWeight(const Tensor& weight, const std::optional<Tensor>& bias);
  static bool suits(const Tensor& weight);
  Tensor operator()(const Tensor& x) const;
};
}  // namespace fast

// x @ weight.T (+ bias) for the recurrent step, the weight packed once per call. With `onednn` (the
// float32 CPU path): the panel kernel where the weight suits it, else oneDNN's packed inner product
// (see RecurrentProduct in fused.py); otherwise at::mm.
struct RecurrentProduct {
  Tensor weight, packed;
  std::optional<Tensor> bias;
  bool onednn;
  fast::PanelWeight panel;
  bool use_panel = false;

  RecurrentProduct(const Tensor& w, int64_t batch, std::optional<Tensor> b, bool use_onednn)
      : weight(w), bias(std::move(b)), onednn(use_onednn) {
    if (onednn && fast::PanelWeight::suits(w)) {
      panel = fast::PanelWeight(w, bias);
      use_panel = true;
    } else if (onednn) {
      static auto reorder = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                                .typed<Tensor(const Tensor&, std::optional<int64_t>)>();
      packed = reorder.call(w.contiguous(), batch);
    }
  }

  Tensor operator()(const Tensor& x) const {
    if (use_panel && x.device().is_cpu() && x.scalar_type() == at::kFloat) return panel(x);
    if (onednn && packed.defined()) return onednn_linear(x, packed, bias);
    if (onednn) return onednn_linear(x, weight.contiguous(), bias);
    if (bias.has_value() && bias->defined()) return at::addmm(*bias, x, weight.t());
    return at::mm(x, weight.t());
  }
};

// In place: sigmoid on i, f, o and tanh on g (PyTorch's gate order i, f, g, o); returns the four views.
inline std::array<Tensor, 4> activate_lstm_gates(const Tensor& pre_activations) {
  const int64_t H = pre_activations.size(-1) / 4;
  pre_activations.narrow(-1, 0, 2 * H).sigmoid_();
  pre_activations.narrow(-1, 2 * H, H).tanh_();
  pre_activations.narrow(-1, 3 * H, H).sigmoid_();
  return {pre_activations.narrow(-1, 0, H), pre_activations.narrow(-1, H, H), pre_activations.narrow(-1, 2 * H, H),
          pre_activations.narrow(-1, 3 * H, H)};
}

// The parts of the LSTM's backward pass that do not depend on the recurrent gradient (lstm_gate_factors
// in fused.py): the gate-gradient buffer filled with its factors, and ∂ĥ/∂(the input of h's tanh).
inline std::pair<Tensor, Tensor> lstm_gate_factors(const Tensor& gates, const Tensor& c0, const Tensor& cells,
                                            const Tensor& tanh_cells, const Mask& m_candidate) {
  const int64_t steps = gates.size(0), batch = gates.size(1), gate_width = gates.size(2), H = gate_width / 4;
  auto split = gates.view({steps, batch, 4, H}).unbind(2);
  const Tensor &i = split[0], &f = split[1], &g = split[2], &o = split[3];
  Tensor d_gates = at::empty({steps, batch, gate_width}, gates.options());
  auto d_split = d_gates.view({steps, batch, 4, H}).unbind(2);
  at::mul_out(d_split[0], masked(g, m_candidate), i * (1 - i));
  at::mul_out(d_split[1], previous(c0, cells), f * (1 - f));
  at::mul_out(d_split[2], masked(i, m_candidate), 1 - g * g);
  at::mul_out(d_split[3], tanh_cells, o * (1 - o));
  return {d_gates, o * (1 - tanh_cells * tanh_cells)};
}

inline std::pair<Tensor, std::optional<Tensor>> weight_grads(const Tensor& d_recurrent, const Tensor& h0,
                                                      const Tensor& hidden, const Mask& hidden_input_mask,
                                                      bool has_bias) {
  Tensor inputs = masked(previous(h0, hidden), hidden_input_mask);
  Tensor flat = d_recurrent.reshape({-1, d_recurrent.size(-1)});
  Tensor grad_weight = at::mm(flat.t(), inputs.reshape({-1, inputs.size(-1)}));
  std::optional<Tensor> grad_bias;
  if (has_bias) grad_bias = flat.sum(0);
  return {grad_weight, grad_bias};
}

// -- the functions bound by ops.cpp (defined in generic_loops.cpp, lstm_gru.cpp, rnn.cpp,
// batchnorm_lstm.cpp and philox.cpp) -------------------------------------------------------------

std::vector<Tensor> lstm_forward_generic(Tensor xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                 const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                 const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
                                 const Mask& u_hidden, bool onednn);

std::vector<std::optional<Tensor>> lstm_backward_generic(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells,
    const Tensor& hidden, const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
    const Mask& u_cell, const Mask& u_hidden, bool has_bias, bool onednn);

std::vector<Tensor> gru_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                const Mask& u_hidden, bool onednn);

std::vector<std::optional<Tensor>> gru_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden_n,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn);

// The generic loops on masks that may be compact (the entry points' fallback and the `_generic`
// operators): they call the loops above with the float masks the compact ones stand for.
std::vector<std::optional<Tensor>> lstm_backward_generic(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells,
    const Tensor& hidden, const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
    const Mask& u_cell, const Mask& u_hidden, bool has_bias, bool onednn, at::ArrayRef<double> kept_values);

std::vector<std::optional<Tensor>> gru_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                        const Tensor& activations, const Tensor& hidden_n,
                                                        const Tensor& hidden, const Mask& m_hidden_input,
                                                        const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                        bool onednn, at::ArrayRef<double> kept_values);

std::vector<Tensor> lstm_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                         const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                         const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
                                         const Mask& u_hidden, bool onednn, at::ArrayRef<double> kept_values);

std::vector<Tensor> gru_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                        const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                        const Mask& u_hidden, bool onednn, at::ArrayRef<double> kept_values);

std::vector<Tensor> lstm_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                 const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                 const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell, const Mask& u_hidden,
                                 bool onednn, at::ArrayRef<double> kept_values);

std::vector<std::optional<Tensor>> lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells,
    const Tensor& hidden, const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
    const Mask& u_cell, const Mask& u_hidden, bool has_bias, bool onednn, at::ArrayRef<double> kept_values);

std::vector<Tensor> gru_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                const Mask& u_hidden, bool onednn, at::ArrayRef<double> kept_values);

std::vector<std::optional<Tensor>> gru_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden_n,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn, at::ArrayRef<double> kept_values);

// The tanh-RNN (rnn.cpp): the generic loops and the entry points that pick the fast rows or them.
Tensor rnn_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn);

std::vector<std::optional<Tensor>> rnn_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh,
                                                        const Tensor& h0, const Tensor& hidden,
                                                        const Mask& m_hidden_input, const Mask& m_candidate,
                                                        const Mask& u_hidden, bool has_bias, bool onednn);

std::vector<std::optional<Tensor>> rnn_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh,
                                                        const Tensor& h0, const Tensor& hidden,
                                                        const Mask& m_hidden_input, const Mask& m_candidate,
                                                        const Mask& u_hidden, bool has_bias, bool onednn,
                                                        at::ArrayRef<double> kept_values);

Tensor rnn_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn,
                           at::ArrayRef<double> kept_values);

Tensor rnn_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                   const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn,
                   at::ArrayRef<double> kept_values);

std::vector<std::optional<Tensor>> rnn_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn, at::ArrayRef<double> kept_values);

std::vector<Tensor> batchnorm_lstm_forward_generic(Tensor xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                           const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                           const Tensor& gamma_cell, const Tensor& beta_cell,
                                           const std::optional<std::vector<Tensor>>& running, double eps,
                                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                                           const Mask& u_cell, const Mask& u_hidden, bool onednn,
                                           const std::optional<Tensor>& gamma_input = std::nullopt);

std::vector<std::optional<Tensor>> batchnorm_lstm_backward_generic(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden, const Tensor& gamma_cell, const Tensor& gates,
    const Tensor& normalized_hidden, const Tensor& normalized_cells, const Tensor& rstd_hidden,
    const Tensor& rstd_cells, const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
    const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
    const Mask& u_hidden, bool has_bias, bool batch_statistics, bool onednn,
    const std::optional<Tensor>& projection = std::nullopt, const std::optional<Tensor>& gamma_input = std::nullopt,
    const std::optional<Tensor>& mean_input = std::nullopt, const std::optional<Tensor>& rstd_input = std::nullopt);

std::vector<Tensor> batchnorm_lstm_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                           const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                           const Tensor& gamma_cell, const Tensor& beta_cell,
                                           const std::optional<std::vector<Tensor>>& running, double eps,
                                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                                           const Mask& u_cell, const Mask& u_hidden, bool onednn,
                                           const std::optional<Tensor>& gamma_input = std::nullopt);

std::vector<std::optional<Tensor>> batchnorm_lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden, const Tensor& gamma_cell, const Tensor& gates,
    const Tensor& normalized_hidden, const Tensor& normalized_cells, const Tensor& rstd_hidden,
    const Tensor& rstd_cells, const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
    const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
    const Mask& u_hidden, bool has_bias, bool batch_statistics, bool onednn,
    const std::optional<Tensor>& projection = std::nullopt, const std::optional<Tensor>& gamma_input = std::nullopt,
    const std::optional<Tensor>& mean_input = std::nullopt, const std::optional<Tensor>& rstd_input = std::nullopt);

Tensor bernoulli_mask(std::vector<int64_t> sizes, double keep_probability, double kept_value, at::ScalarType dtype);

Tensor add_gaussian_noise(const Tensor& weight, double sigma, bool portable);

// recurrent_batchnorm's input normalization (batchnorm_lstm.cpp): a batch norm of a (rows × columns)
// CPU matrix over its rows, with batch statistics: (y, mean, biased var, rstd), and its gradient
// (grad_x, grad_gamma, grad_beta).
std::vector<Tensor> column_batchnorm(const Tensor& x, const Tensor& gamma, const std::optional<Tensor>& beta,
                                     double eps);
std::vector<Tensor> column_batchnorm_backward(const Tensor& grad_y, const Tensor& x, const Tensor& mean,
                                              const Tensor& rstd, const Tensor& gamma);

Tensor philox_draws(uint64_t key, uint64_t block, int64_t count, bool portable);
