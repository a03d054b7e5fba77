// The generic LSTM and GRU loops: fused.py's Python loops operation for operation, as ATen calls.
// They run wherever the fast path (lstm_gru.cpp) does not: any device and dtype (CUDA, half
// precision) and any mask shape; tests/test_native.py checks both against the Python loops.
// The tanh-RNN's generic loops live with its fast ones, in rnn.cpp.
#include "common.h"

std::vector<Tensor> lstm_forward_generic(Tensor xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
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

std::vector<std::optional<Tensor>> lstm_backward_generic(
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

std::vector<Tensor> gru_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
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

std::vector<std::optional<Tensor>> gru_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
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
