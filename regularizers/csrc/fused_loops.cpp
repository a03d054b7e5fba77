// The fused LSTM and GRU loops of regularizers/fused.py, and the batch-normalized LSTM loop of
// regularizers/fused_batchnorm.py, operation for operation, in C++.
//
// Why: at the benchmark's shapes a step is about twenty small tensor operations, and from
// Python each costs several microseconds of interpreter and binding overhead, more than
// the arithmetic itself. Here the same ATen operations run from C++. fused.py is the
// readable definition of these loops and the fallback where this file cannot be compiled;
// the tests check that both give the same numbers.
#include <torch/extension.h>

#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <optional>
#include <vector>

using at::Tensor;
using Mask = std::optional<Tensor>;

namespace {

// The mask for one step: masks whose leading dimension is 1 are the same at every step.
Tensor at_step(const Mask& mask, int64_t t) {
  if (!mask.has_value() || !mask->defined()) return Tensor();
  return mask->size(0) > 1 ? mask->select(0, t) : mask->select(0, 0);
}

Tensor masked(const Tensor& value, const Tensor& mask) { return mask.defined() ? value * mask : value; }

Tensor masked(const Tensor& value, const Mask& mask) {
  return mask.has_value() && mask->defined() ? value * *mask : value;
}

// [x_0, x_1, .., x_{T-1}] from the initial state and the states x_1..x_T.
Tensor previous(const Tensor& initial, const Tensor& sequence) {
  return at::cat({initial.unsqueeze(0), sequence.narrow(0, 0, sequence.size(0) - 1)});
}

// x @ weight.T (+ bias), with the weight packed once for oneDNN (see RecurrentProduct in fused.py).
struct RecurrentProduct {
  Tensor weight, packed;
  std::optional<Tensor> bias;
  bool onednn;

  RecurrentProduct(const Tensor& w, int64_t batch, std::optional<Tensor> b, bool use_onednn)
      : weight(w), bias(std::move(b)), onednn(use_onednn) {
    if (onednn) {
      static auto reorder = c10::Dispatcher::singleton()
                                .findSchemaOrThrow("mkldnn::_reorder_linear_weight", "")
                                .typed<Tensor(const Tensor&, std::optional<int64_t>)>();
      packed = reorder.call(w.contiguous(), batch);
    }
  }

  Tensor operator()(const Tensor& x) const {
    if (onednn) {
      static auto linear =
          c10::Dispatcher::singleton()
              .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
              .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                            c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>();
      return linear.call(x.contiguous(), packed, bias, "none", c10::List<std::optional<at::Scalar>>(),
                         std::nullopt);
    }
    if (bias.has_value() && bias->defined()) return at::addmm(*bias, x, weight.t());
    return at::mm(x, weight.t());
  }
};

// In place: sigmoid on i, f, o and tanh on g (PyTorch's gate order i, f, g, o); returns the four views.
std::array<Tensor, 4> activate_lstm_gates(const Tensor& pre_activations) {
  const int64_t H = pre_activations.size(-1) / 4;
  pre_activations.narrow(-1, 0, 2 * H).sigmoid_();
  pre_activations.narrow(-1, 2 * H, H).tanh_();
  pre_activations.narrow(-1, 3 * H, H).sigmoid_();
  return {pre_activations.narrow(-1, 0, H), pre_activations.narrow(-1, H, H), pre_activations.narrow(-1, 2 * H, H),
          pre_activations.narrow(-1, 3 * H, H)};
}

// The parts of the LSTM's backward pass that do not depend on the recurrent gradient (lstm_gate_factors
// in fused.py): the gate-gradient buffer filled with its factors, and ∂ĥ/∂(the input of h's tanh).
std::pair<Tensor, Tensor> lstm_gate_factors(const Tensor& gates, const Tensor& c0, const Tensor& cells,
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

std::pair<Tensor, std::optional<Tensor>> weight_grads(const Tensor& d_recurrent, const Tensor& h0,
                                                      const Tensor& hidden, const Mask& hidden_input_mask,
                                                      bool has_bias) {
  Tensor inputs = masked(previous(h0, hidden), hidden_input_mask);
  Tensor flat = d_recurrent.reshape({-1, d_recurrent.size(-1)});
  Tensor grad_weight = at::mm(flat.t(), inputs.reshape({-1, inputs.size(-1)}));
  std::optional<Tensor> grad_bias;
  if (has_bias) grad_bias = flat.sum(0);
  return {grad_weight, grad_bias};
}

}  // namespace

std::vector<Tensor> lstm_forward(Tensor xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                 const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                 const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
                                 const Mask& u_hidden, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = xp.size(0), batch = xp.size(1), gate_width = xp.size(2), H = gate_width / 4;
  if (b_hh.has_value() && b_hh->defined()) xp = xp + *b_hh;
  Tensor gates = at::empty({steps, batch, gate_width}, xp.options());
  Tensor cells = at::empty({steps, batch, H}, xp.options());
  Tensor tanh_cells = at::empty({steps, batch, H}, xp.options());
  Tensor hidden = at::empty({steps, batch, H}, xp.options());
  RecurrentProduct recurrent_product(w_hh, batch, std::nullopt, onednn);
  Tensor h = h0, c = c0;
  for (int64_t t = 0; t < steps; ++t) {
    Tensor g_t = gates.select(0, t);
    at::add_out(g_t, xp.select(0, t), recurrent_product(masked(h, at_step(m_hidden_input, t))));
    auto [i, f, g, o] = activate_lstm_gates(g_t);
    Tensor update = i * g;
    Tensor m = at_step(m_candidate, t);
    if (m.defined()) update.mul_(m);
    Tensor u_c = at_step(u_cell, t);
    Tensor cell_t = cells.select(0, t);
    Tensor cell_hat = u_c.defined() ? at::addcmul(update, f, c) : at::addcmul_out(cell_t, update, f, c);
    m = at_step(m_cell, t);
    if (m.defined()) cell_hat.mul_(m);
    Tensor tanh_t = tanh_cells.select(0, t);
    at::tanh_out(tanh_t, cell_hat);
    if (u_c.defined()) at::lerp_out(cell_t, c, cell_hat, u_c.expand_as(c));
    Tensor u_h = at_step(u_hidden, t);
    Tensor hidden_t = hidden.select(0, t);
    if (u_h.defined()) {
      at::lerp_out(hidden_t, h, o * tanh_t, u_h.expand_as(h));
    } else {
      at::mul_out(hidden_t, o, tanh_t);
    }
    h = hidden_t;
    c = cell_t;
  }
  return {hidden, cells, gates, tanh_cells};
}

std::vector<std::optional<Tensor>> lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells,
    const Tensor& hidden, const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
    const Mask& u_cell, const Mask& u_hidden, bool has_bias, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = gates.size(0), batch = gates.size(1), gate_width = gates.size(2), H = gate_width / 4;
  Tensor f = gates.narrow(2, H, H);
  auto [d_gates, cell_from_hidden] = lstm_gate_factors(gates, c0, cells, tanh_cells, m_candidate);
  Tensor d_o = d_gates.narrow(2, 3 * H, H);
  Mask keep_cell, keep_hidden;
  if (u_cell.has_value() && u_cell->defined()) keep_cell = 1 - *u_cell;
  if (u_hidden.has_value() && u_hidden->defined()) keep_hidden = 1 - *u_hidden;
  const bool with_grad_hidden = grad_hidden.has_value() && grad_hidden->defined();
  const bool with_grad_cells = grad_cells.has_value() && grad_cells->defined();

  Tensor d_ifg = d_gates.view({steps, batch, 4, H}).narrow(2, 0, 3);
  RecurrentProduct backward_product(w_hh.t(), batch, std::nullopt, onednn);
  Tensor d_h = at::zeros_like(h0), d_c = at::zeros_like(c0);
  for (int64_t t = steps - 1; t >= 0; --t) {
    if (with_grad_hidden) d_h = d_h + grad_hidden->select(0, t);
    if (with_grad_cells) d_c = d_c + grad_cells->select(0, t);
    Tensor u_h = at_step(u_hidden, t);
    Tensor d_hidden_hat = u_h.defined() ? d_h * u_h : d_h;
    Tensor u_c = at_step(u_cell, t);
    Tensor d_cell_hat = at::addcmul(u_c.defined() ? d_c * u_c : d_c, d_hidden_hat, cell_from_hidden.select(0, t));
    Tensor m = at_step(m_cell, t);
    if (m.defined()) d_cell_hat.mul_(m);
    d_ifg.select(0, t).mul_(d_cell_hat.unsqueeze(1));
    d_o.select(0, t).mul_(d_hidden_hat);
    Tensor d_c_previous = d_cell_hat * f.select(0, t);
    if (u_c.defined()) d_c_previous.addcmul_(d_c, at_step(keep_cell, t));
    Tensor d_h_previous = backward_product(d_gates.select(0, t));
    m = at_step(m_hidden_input, t);
    if (m.defined()) d_h_previous.mul_(m);
    if (u_h.defined()) d_h_previous.addcmul_(d_h, at_step(keep_hidden, t));
    d_h = d_h_previous;
    d_c = d_c_previous;
  }
  auto [grad_w, grad_b] = weight_grads(d_gates, h0, hidden, m_hidden_input, has_bias);
  return {d_gates, grad_w, grad_b, d_h, d_c};
}

std::vector<Tensor> gru_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                const Mask& u_hidden, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = xp.size(0), batch = xp.size(1), gate_width = xp.size(2), H = gate_width / 3;
  Tensor activations = at::empty({steps, batch, gate_width}, xp.options());
  Tensor hidden_n = at::empty({steps, batch, H}, xp.options());
  Tensor hidden = at::empty({steps, batch, H}, xp.options());
  RecurrentProduct recurrent_product(w_hh, batch, b_hh, onednn);
  Tensor h = h0;
  for (int64_t t = 0; t < steps; ++t) {
    Tensor recurrent = recurrent_product(masked(h, at_step(m_hidden_input, t)));
    Tensor a_t = activations.select(0, t), x_t = xp.select(0, t);
    Tensor rz = a_t.narrow(1, 0, 2 * H);
    at::add_out(rz, x_t.narrow(1, 0, 2 * H), recurrent.narrow(1, 0, 2 * H)).sigmoid_();
    Tensor hn_t = hidden_n.select(0, t);
    hn_t.copy_(recurrent.narrow(1, 2 * H, H));
    Tensor r = a_t.narrow(1, 0, H), z = a_t.narrow(1, H, H), n_t = a_t.narrow(1, 2 * H, H);
    at::addcmul_out(n_t, x_t.narrow(1, 2 * H, H), r, hn_t).tanh_();
    Tensor n = masked(n_t, at_step(m_candidate, t));
    Tensor u_h = at_step(u_hidden, t);
    Tensor hidden_t = hidden.select(0, t);
    if (u_h.defined()) {
      at::lerp_out(hidden_t, h, at::lerp(n, h, z), u_h.expand_as(h));
    } else {
      at::lerp_out(hidden_t, n, h, z);
    }
    h = hidden_t;
  }
  return {hidden, activations, hidden_n};
}

std::vector<std::optional<Tensor>> gru_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden_n,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = activations.size(0), batch = activations.size(1), gate_width = activations.size(2),
                H = gate_width / 3;
  auto split = activations.view({steps, batch, 3, H}).unbind(2);
  const Tensor &r = split[0], &z = split[1], &n = split[2];
  Tensor h_previous = previous(h0, hidden);

  Tensor d_input = at::empty({steps, batch, gate_width}, activations.options());
  auto d_split = d_input.view({steps, batch, 3, H}).unbind(2);
  at::mul_out(d_split[2], masked(1 - z, m_candidate), 1 - n * n);
  at::mul_out(d_split[0], d_split[2], hidden_n * r * (1 - r));
  at::mul_out(d_split[1], h_previous - masked(n, m_candidate), z * (1 - z));
  Tensor recurrent_n_factor = d_split[2] * r;
  Mask keep_hidden;
  if (u_hidden.has_value() && u_hidden->defined()) keep_hidden = 1 - *u_hidden;

  Tensor d_recurrent = at::empty({steps, batch, gate_width}, activations.options());
  RecurrentProduct backward_product(w_hh.t(), batch, std::nullopt, onednn);
  Tensor d_h = at::zeros_like(h0);
  for (int64_t t = steps - 1; t >= 0; --t) {
    d_h = d_h + grad_hidden.select(0, t);
    Tensor u_h = at_step(u_hidden, t);
    Tensor d_hidden_hat = u_h.defined() ? d_h * u_h : d_h;
    Tensor d_input_t = d_input.select(0, t), d_recurrent_t = d_recurrent.select(0, t);
    d_input_t.view({batch, 3, H}).mul_(d_hidden_hat.unsqueeze(1));
    d_recurrent_t.narrow(1, 0, 2 * H).copy_(d_input_t.narrow(1, 0, 2 * H));
    Tensor d_recurrent_n = d_recurrent_t.narrow(1, 2 * H, H);
    at::mul_out(d_recurrent_n, d_hidden_hat, recurrent_n_factor.select(0, t));
    Tensor d_h_previous = backward_product(d_recurrent_t);
    Tensor m = at_step(m_hidden_input, t);
    if (m.defined()) d_h_previous.mul_(m);
    d_h_previous.addcmul_(d_hidden_hat, z.select(0, t));
    if (u_h.defined()) d_h_previous.addcmul_(d_h, at_step(keep_hidden, t));
    d_h = d_h_previous;
  }
  auto [grad_w, grad_b] = weight_grads(d_recurrent, h0, hidden, m_hidden_input, has_bias);
  return {d_input, grad_w, grad_b, d_h};
}

// -- batch-normalized LSTM (regularizers/fused_batchnorm.py) ----------------------------------------

namespace {

struct Normalized {
  Tensor value, rstd, mean, var;
};

// x̂ and 1/σ, from the batch (training) or from given statistics (eval).
Normalized normalize(const Tensor& value, double eps, const Tensor& mean_given, const Tensor& var_given) {
  Tensor mean = mean_given, var = var_given;
  if (!mean.defined()) std::tie(var, mean) = at::var_mean(value, {0}, /*correction=*/0, /*keepdim=*/false);
  Tensor rstd = (var + eps).rsqrt();
  return {(value - mean) * rstd, rstd, mean, var};
}

// Gradient through γ ⊙ BN(x) with respect to x.
Tensor normalize_backward(const Tensor& d_out, const Tensor& normalized, const Tensor& rstd, const Tensor& gamma,
                          bool batch_statistics) {
  if (!batch_statistics) return d_out * (gamma * rstd);
  Tensor centered = d_out - d_out.mean(0);
  centered.sub_(normalized * (d_out * normalized).mean(0));
  return centered.mul_(gamma * rstd);
}

}  // namespace

std::vector<Tensor> batchnorm_lstm_forward(Tensor xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                           const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                           const Tensor& gamma_cell, const Tensor& beta_cell,
                                           const std::optional<std::vector<Tensor>>& running, double eps,
                                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                                           const Mask& u_cell, const Mask& u_hidden, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = xp.size(0), batch = xp.size(1), gate_width = xp.size(2), H = gate_width / 4;
  const bool batch_statistics = !running.has_value();
  if (b_hh.has_value() && b_hh->defined()) xp = xp + *b_hh;
  auto options = xp.options();
  Tensor gates = at::empty({steps, batch, gate_width}, options);
  Tensor normalized_hidden = at::empty({steps, batch, gate_width}, options);
  Tensor normalized_cells = at::empty({steps, batch, H}, options);
  Tensor tanh_cells = at::empty({steps, batch, H}, options);
  Tensor cells = at::empty({steps, batch, H}, options);
  Tensor hidden = at::empty({steps, batch, H}, options);
  Tensor mean_h = at::empty({steps, gate_width}, options), var_h = at::empty({steps, gate_width}, options);
  Tensor mean_c = at::empty({steps, H}, options), var_c = at::empty({steps, H}, options);
  Tensor rstd_hidden = at::empty({steps, gate_width}, options), rstd_cells = at::empty({steps, H}, options);
  RecurrentProduct recurrent_product(w_hh, batch, std::nullopt, onednn);
  Tensor h = h0, c = c0;
  for (int64_t t = 0; t < steps; ++t) {
    Tensor projection = recurrent_product(masked(h, at_step(m_hidden_input, t)));
    Normalized nh = batch_statistics ? normalize(projection, eps, Tensor(), Tensor())
                                     : normalize(projection, eps, (*running)[0][t], (*running)[1][t]);
    normalized_hidden.select(0, t).copy_(nh.value);
    rstd_hidden.select(0, t).copy_(nh.rstd);
    mean_h.select(0, t).copy_(nh.mean);
    var_h.select(0, t).copy_(nh.var);
    Tensor g_t = gates.select(0, t);
    at::addcmul_out(g_t, xp.select(0, t), nh.value, gamma_hidden);
    auto [i, f, g, o] = activate_lstm_gates(g_t);
    Tensor update = i * g;
    Tensor m = at_step(m_candidate, t);
    if (m.defined()) update.mul_(m);
    Tensor cell_hat = at::addcmul(update, f, c);
    m = at_step(m_cell, t);
    if (m.defined()) cell_hat.mul_(m);
    Normalized nc = batch_statistics ? normalize(cell_hat, eps, Tensor(), Tensor())
                                     : normalize(cell_hat, eps, (*running)[2][t], (*running)[3][t]);
    normalized_cells.select(0, t).copy_(nc.value);
    rstd_cells.select(0, t).copy_(nc.rstd);
    mean_c.select(0, t).copy_(nc.mean);
    var_c.select(0, t).copy_(nc.var);
    Tensor tanh_t = tanh_cells.select(0, t);
    at::addcmul_out(tanh_t, beta_cell, nc.value, gamma_cell).tanh_();
    Tensor u_c = at_step(u_cell, t), cell_t = cells.select(0, t);
    if (u_c.defined()) {
      at::lerp_out(cell_t, c, cell_hat, u_c.expand_as(c));
    } else {
      cell_t.copy_(cell_hat);
    }
    Tensor u_h = at_step(u_hidden, t), hidden_t = hidden.select(0, t);
    if (u_h.defined()) {
      at::lerp_out(hidden_t, h, o * tanh_t, u_h.expand_as(h));
    } else {
      at::mul_out(hidden_t, o, tanh_t);
    }
    h = hidden_t;
    c = cell_t;
  }
  return {hidden, cells, mean_h, var_h, mean_c, var_c, gates, normalized_hidden, normalized_cells,
          rstd_hidden, rstd_cells, tanh_cells};
}

std::vector<std::optional<Tensor>> batchnorm_lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden, const Tensor& gamma_cell, const Tensor& gates,
    const Tensor& normalized_hidden, const Tensor& normalized_cells, const Tensor& rstd_hidden,
    const Tensor& rstd_cells, const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
    const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
    const Mask& u_hidden, bool has_bias, bool batch_statistics, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = gates.size(0), batch = gates.size(1), gate_width = gates.size(2), H = gate_width / 4;
  Tensor f = gates.narrow(2, H, H);
  auto [d_gates, normalized_from_hidden] = lstm_gate_factors(gates, c0, cells, tanh_cells, m_candidate);
  Tensor d_o = d_gates.narrow(2, 3 * H, H);
  Mask keep_cell, keep_hidden;
  if (u_cell.has_value() && u_cell->defined()) keep_cell = 1 - *u_cell;
  if (u_hidden.has_value() && u_hidden->defined()) keep_hidden = 1 - *u_hidden;
  const bool with_grad_hidden = grad_hidden.has_value() && grad_hidden->defined();
  const bool with_grad_cells = grad_cells.has_value() && grad_cells->defined();

  Tensor d_ifg = d_gates.view({steps, batch, 4, H}).narrow(2, 0, 3);
  Tensor d_projection = at::empty({steps, batch, gate_width}, gates.options());
  Tensor d_cell_output = at::empty({steps, batch, H}, gates.options());
  RecurrentProduct backward_product(w_hh.t(), batch, std::nullopt, onednn);
  Tensor d_h = at::zeros_like(h0), d_c = at::zeros_like(c0);
  for (int64_t t = steps - 1; t >= 0; --t) {
    if (with_grad_hidden) d_h = d_h + grad_hidden->select(0, t);
    if (with_grad_cells) d_c = d_c + grad_cells->select(0, t);
    Tensor u_h = at_step(u_hidden, t);
    Tensor d_hidden_hat = u_h.defined() ? d_h * u_h : d_h;
    Tensor d_cell_output_t = d_cell_output.select(0, t);
    at::mul_out(d_cell_output_t, d_hidden_hat, normalized_from_hidden.select(0, t));
    Tensor d_cell_hat = normalize_backward(d_cell_output_t, normalized_cells.select(0, t), rstd_cells.select(0, t),
                                           gamma_cell, batch_statistics);
    Tensor u_c = at_step(u_cell, t);
    d_cell_hat.add_(u_c.defined() ? d_c * u_c : d_c);
    Tensor m = at_step(m_cell, t);
    if (m.defined()) d_cell_hat.mul_(m);
    d_ifg.select(0, t).mul_(d_cell_hat.unsqueeze(1));
    d_o.select(0, t).mul_(d_hidden_hat);
    Tensor d_c_previous = d_cell_hat * f.select(0, t);
    if (u_c.defined()) d_c_previous.addcmul_(d_c, at_step(keep_cell, t));
    Tensor d_projection_t = d_projection.select(0, t);
    d_projection_t.copy_(normalize_backward(d_gates.select(0, t), normalized_hidden.select(0, t),
                                            rstd_hidden.select(0, t), gamma_hidden, batch_statistics));
    Tensor d_h_previous = backward_product(d_projection_t);
    m = at_step(m_hidden_input, t);
    if (m.defined()) d_h_previous.mul_(m);
    if (u_h.defined()) d_h_previous.addcmul_(d_h, at_step(keep_hidden, t));
    d_h = d_h_previous;
    d_c = d_c_previous;
  }
  Tensor inputs = masked(previous(h0, hidden), m_hidden_input);
  Tensor grad_w = at::mm(d_projection.reshape({-1, gate_width}).t(), inputs.reshape({-1, H}));
  std::optional<Tensor> grad_b;
  if (has_bias) grad_b = d_gates.sum({0, 1});
  Tensor grad_gamma_hidden = (d_gates * normalized_hidden).sum({0, 1});
  Tensor grad_gamma_cell = (d_cell_output * normalized_cells).sum({0, 1});
  Tensor grad_beta_cell = d_cell_output.sum({0, 1});
  return {d_gates, grad_w, grad_b, d_h, d_c, grad_gamma_hidden, grad_gamma_cell, grad_beta_cell};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
  m.def("batchnorm_lstm_forward", &batchnorm_lstm_forward);
  m.def("batchnorm_lstm_backward", &batchnorm_lstm_backward);
}
