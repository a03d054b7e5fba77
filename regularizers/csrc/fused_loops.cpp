// The fused recurrent loops in C++: the LSTM and GRU loops of regularizers/fused.py and the
// batch-normalized LSTM loop of regularizers/fused_batchnorm.py.
//
// Two implementations of each:
// - `fast::` (CPU, float32 and float64): a step is one matrix product and one hand-written,
//   vectorized pass over the batch's rows that does all of the step's element-wise work. This is
//   what the layers run on the CPU.
// - `*_generic`: the Python loops operation for operation, as ATen calls; any device and dtype
//   (CUDA, half precision) and any mask shape.
// Also `bernoulli_mask`, the CPU's dropout-mask sampler (parallel Philox; see "Masks" below).
// fused.py is the readable definition of the equations and the fallback where this file cannot
// be compiled; tests/test_native.py checks that all three agree, and tests/test_fused.py checks
// the layers' fast path against the reference loop and with gradcheck in float64.
#include <torch/extension.h>

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

// oneDNN's inner product x @ weight.T (+ bias); `weight` is plain or packed by _reorder_linear_weight.
// On this project's CPUs it runs the recurrent layers' products faster than at::mm (MKL), both the
// small per-step ones and the large weight-gradient one.
Tensor onednn_linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias = std::nullopt) {
  static auto linear =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
          .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                        c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>();
  return linear.call(x.contiguous(), weight, bias, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
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
    if (onednn) return onednn_linear(x, packed, bias);
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

// -- the fast path: each step's element-wise work as one pass over the batch's rows -------------------
//
// Why: at the benchmark's shapes the generic loops above spend most of a step's time in a dozen
// separate ATen operations (a dispatch and a full pass over memory each). Here a step is one
// matrix product (oneDNN, weight packed once) and one hand-written loop over the batch's rows that
// does every element-wise operation of the step, reading each value once. It runs on CPU tensors
// of float32 (with a vectorizable exp) and float64 (with std::exp, for gradcheck); anything else
// (CUDA, half precision, unusual mask shapes) takes the generic loops. Same equations, same mask
// sites, same saved buffers as the generic loops; tests/test_native.py checks they agree.

namespace fast {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// One build runs at its best on any x86-64 machine: the loader picks the AVX-512, AVX2 or baseline
// copy of each row function when the library is loaded.
#define REGBENCH_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define REGBENCH_CLONES
#endif
#if defined(__GNUC__)
#define REGBENCH_INLINE inline __attribute__((always_inline))
#define REGBENCH_NO_LOOP_ALIASING _Pragma("GCC ivdep")
#else
#define REGBENCH_INLINE inline
#define REGBENCH_NO_LOOP_ALIASING
#endif

// e^x for float32, written so that the compiler vectorizes it (no calls, no branches; built with
// -fno-trapping-math so that the clamps become selects): x = n·ln2 + r with n the nearest integer
// to x/ln2 and |r| ≤ ln2/2 (ln2 split in two so that n·ln2 is exact), e^r by its Taylor polynomial
// to r^7 (truncation error below 1e-8, relative), and 2^n put straight into the exponent bits.
// Arguments are clamped to [-87, 88], where e^x is a normal float.
REGBENCH_INLINE float exp_vectorizable(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float y = x * 1.44269504088896341f;
  const int32_t k = static_cast<int32_t>(y + (y < 0.0f ? -0.5f : 0.5f));
  const float n = static_cast<float>(k);
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (k + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
REGBENCH_INLINE double exp_vectorizable(double x) { return std::exp(x); }

template <typename T>
REGBENCH_INLINE T sigmoid(T x) { return T(1) / (T(1) + exp_vectorizable(-x)); }
REGBENCH_INLINE float tanh_of(float x) { return 2.0f / (1.0f + exp_vectorizable(-2.0f * x)) - 1.0f; }
REGBENCH_INLINE double tanh_of(double x) { return std::tanh(x); }

// One step of one batch row. Every mask pointer is valid: an absent mask is a row of ones, an
// absent bias or gradient a row of zeros (multiplying by 1 and adding 0 are exact), so the loops
// have no branches. Update masks u mix as u·new + (1-u)·old, which is exact for u in {0, 1}.
template <typename T>
struct LSTMForwardRow {
  const T *recurrent, *input, *bias, *h_prev, *c_prev, *m_candidate, *m_cell, *u_cell, *u_hidden, *m_next;
  T *gates, *cell, *tanh_cell, *hidden, *next_input;  // next_input: h_t ⊙ m_hidden_input[t+1], or null
};

template <typename T>
REGBENCH_INLINE void lstm_forward_row(int64_t H, const LSTMForwardRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T i = sigmoid((a.input[j] + a.bias[j]) + a.recurrent[j]);
    const T f = sigmoid((a.input[H + j] + a.bias[H + j]) + a.recurrent[H + j]);
    const T g = tanh_of((a.input[2 * H + j] + a.bias[2 * H + j]) + a.recurrent[2 * H + j]);
    const T o = sigmoid((a.input[3 * H + j] + a.bias[3 * H + j]) + a.recurrent[3 * H + j]);
    a.gates[j] = i;
    a.gates[H + j] = f;
    a.gates[2 * H + j] = g;
    a.gates[3 * H + j] = o;
    const T c_prev = a.c_prev[j];
    const T cell_hat = (i * g * a.m_candidate[j] + f * c_prev) * a.m_cell[j];
    const T tanh_c = tanh_of(cell_hat);
    a.tanh_cell[j] = tanh_c;
    a.cell[j] = a.u_cell[j] * cell_hat + (T(1) - a.u_cell[j]) * c_prev;
    a.hidden[j] = a.u_hidden[j] * (o * tanh_c) + (T(1) - a.u_hidden[j]) * a.h_prev[j];
  }
  if (a.next_input != nullptr) {
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = 0; j < H; ++j) a.next_input[j] = a.hidden[j] * a.m_next[j];
  }
}

template <typename T>
struct LSTMBackwardRow {
  // d_h_t = (∂L/∂h_t from step t+1's product) ⊙ m_hidden_input[t+1] + carry + grad_hidden[t]
  const T *d_product, *m_next, *grad_h, *grad_c, *gates, *tanh_cell, *c_prev, *m_candidate, *m_cell, *u_cell,
      *u_hidden;
  T *d_gates, *d_c, *carry;  // d_c and carry: in at step t+1's values, out at step t's
};

template <typename T>
REGBENCH_INLINE void lstm_backward_row(int64_t H, const LSTMBackwardRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T d_h = a.d_product[j] * a.m_next[j] + a.carry[j] + a.grad_h[j];
    const T d_c = a.d_c[j] + a.grad_c[j];
    const T u_c = a.u_cell[j], u_h = a.u_hidden[j];
    const T d_hidden_hat = d_h * u_h;
    const T i = a.gates[j], f = a.gates[H + j], g = a.gates[2 * H + j], o = a.gates[3 * H + j];
    const T tanh_c = a.tanh_cell[j], m = a.m_candidate[j];
    const T d_cell_hat = (d_c * u_c + d_hidden_hat * (o * (T(1) - tanh_c * tanh_c))) * a.m_cell[j];
    a.d_gates[j] = d_cell_hat * ((g * m) * (i * (T(1) - i)));
    a.d_gates[H + j] = d_cell_hat * (a.c_prev[j] * (f * (T(1) - f)));
    a.d_gates[2 * H + j] = d_cell_hat * ((i * m) * (T(1) - g * g));
    a.d_gates[3 * H + j] = d_hidden_hat * (tanh_c * (o * (T(1) - o)));
    a.d_c[j] = d_cell_hat * f + d_c * (T(1) - u_c);
    a.carry[j] = d_h * (T(1) - u_h);
  }
}

template <typename T>
struct GRUForwardRow {
  const T *recurrent, *input, *h_prev, *m_candidate, *u_hidden, *m_next;  // recurrent includes b_hh
  T *activations, *hidden_n, *hidden, *next_input;
};

template <typename T>
REGBENCH_INLINE void gru_forward_row(int64_t H, const GRUForwardRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T r = sigmoid(a.input[j] + a.recurrent[j]);
    const T z = sigmoid(a.input[H + j] + a.recurrent[H + j]);
    const T hn = a.recurrent[2 * H + j];
    const T n = tanh_of(a.input[2 * H + j] + r * hn);
    a.activations[j] = r;
    a.activations[H + j] = z;
    a.activations[2 * H + j] = n;
    a.hidden_n[j] = hn;
    const T h_prev = a.h_prev[j];
    const T candidate = (T(1) - z) * (n * a.m_candidate[j]) + z * h_prev;
    a.hidden[j] = a.u_hidden[j] * candidate + (T(1) - a.u_hidden[j]) * h_prev;
  }
  if (a.next_input != nullptr) {
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = 0; j < H; ++j) a.next_input[j] = a.hidden[j] * a.m_next[j];
  }
}

template <typename T>
struct GRUBackwardRow {
  const T *d_product, *m_next, *grad_h, *activations, *hidden_n, *h_prev, *m_candidate, *u_hidden;
  T *d_input, *d_recurrent, *carry;  // d_recurrent: this step's (B, 3H) product input
};

template <typename T>
REGBENCH_INLINE void gru_backward_row(int64_t H, const GRUBackwardRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T d_h = a.d_product[j] * a.m_next[j] + a.carry[j] + a.grad_h[j];
    const T u_h = a.u_hidden[j];
    const T d_hidden_hat = d_h * u_h;
    const T r = a.activations[j], z = a.activations[H + j], n = a.activations[2 * H + j], m = a.m_candidate[j];
    const T d_n = d_hidden_hat * (((T(1) - z) * m) * (T(1) - n * n));
    const T d_r = d_n * (a.hidden_n[j] * (r * (T(1) - r)));
    const T d_z = d_hidden_hat * ((a.h_prev[j] - n * m) * (z * (T(1) - z)));
    const T d_recurrent_n = d_n * r;
    a.d_input[j] = d_r;
    a.d_input[H + j] = d_z;
    a.d_input[2 * H + j] = d_n;
    a.d_recurrent[j] = d_r;
    a.d_recurrent[H + j] = d_z;
    a.d_recurrent[2 * H + j] = d_recurrent_n;
    a.carry[j] = d_hidden_hat * z + d_h * (T(1) - u_h);
  }
}

// float32: one copy per instruction set (REGBENCH_CLONES); float64: plain.
REGBENCH_CLONES void run_row(int64_t H, const LSTMForwardRow<float>& a) { lstm_forward_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const LSTMBackwardRow<float>& a) { lstm_backward_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const GRUForwardRow<float>& a) { gru_forward_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const GRUBackwardRow<float>& a) { gru_backward_row(H, a); }
void run_row(int64_t H, const LSTMForwardRow<double>& a) { lstm_forward_row(H, a); }
void run_row(int64_t H, const LSTMBackwardRow<double>& a) { lstm_backward_row(H, a); }
void run_row(int64_t H, const GRUForwardRow<double>& a) { gru_forward_row(H, a); }
void run_row(int64_t H, const GRUBackwardRow<double>& a) { gru_backward_row(H, a); }

// A mask of shape (T or 1, B or 1, H or 1), or a gradient of shape (T, B, H), read row by row in
// place, whatever its strides: no contiguous copy (an expanded gradient such as that of a sum
// would otherwise become a full (T, B, H) tensor).
template <typename T>
struct SequenceRows {
  const T* data = nullptr;  // null: absent
  int64_t step_stride = 0, batch_stride = 0, unit_stride = 0;  // 0 along a dimension of size 1

  SequenceRows(const std::optional<Tensor>& tensor) {
    if (!tensor.has_value() || !tensor->defined()) return;
    const Tensor& x = *tensor;
    data = x.data_ptr<T>();
    step_stride = x.size(0) > 1 ? x.stride(0) : 0;
    batch_stride = x.size(1) > 1 ? x.stride(1) : 0;
    unit_stride = x.size(2) > 1 ? x.stride(2) : 0;
  }
  bool present() const { return data != nullptr; }
  // Row b at step t: H values (gathered into `scratch` unless they lie contiguous); `absent` if absent.
  const T* row(int64_t t, int64_t b, int64_t H, const T* absent, T* scratch) const {
    if (data == nullptr) return absent;
    const T* values = data + t * step_stride + b * batch_stride;
    if (unit_stride == 1 || H == 1) return values;
    for (int64_t j = 0; j < H; ++j) scratch[j] = values[j * unit_stride];
    return scratch;
  }
};

// Whether a mask fits SequenceRows for a sequence of `steps` × `batch` × `H`.
bool mask_fits(const Mask& mask, int64_t steps, int64_t batch, int64_t H, at::ScalarType dtype) {
  if (!mask.has_value() || !mask->defined()) return true;
  const Tensor& m = *mask;
  return m.device().is_cpu() && m.scalar_type() == dtype && m.dim() == 3 && (m.size(0) == 1 || m.size(0) == steps) &&
         (m.size(1) == 1 || m.size(1) == batch) && (m.size(2) == 1 || m.size(2) == H);
}

bool fits(const Tensor& reference, std::initializer_list<const Tensor*> tensors, std::initializer_list<const Mask*> masks,
          int64_t steps, int64_t batch, int64_t H) {
  const auto dtype = reference.scalar_type();
  if (!reference.device().is_cpu() || (dtype != at::kFloat && dtype != at::kDouble)) return false;
  for (const Tensor* t : tensors)
    if (t->defined() && (!t->device().is_cpu() || t->scalar_type() != dtype)) return false;
  for (const Mask* m : masks)
    if (!mask_fits(*m, steps, batch, H, dtype)) return false;
  return true;
}

// Rows per task: a step's rows split over the threads only when there is enough work to share.
int64_t grain(int64_t batch, int64_t row_width) {
  constexpr int64_t kElementsPerTask = 16384;
  return std::max<int64_t>(1, std::min<int64_t>(batch, kElementsPerTask / std::max<int64_t>(row_width, 1)));
}


// dst[j * dst_stride + b] = src[b * src_stride + j] for b < rows, j < width: rows written as
// columns of a transposed buffer. In tiles of 16 columns, so that both sides stay in the L1 cache
// (ATen's strided copy of the same transposed view is several times slower). Serial: callers run
// it inside a task of their own parallel pass, so that a step costs one thread hand-off, not two.
template <typename T>
void transpose_rows(const T* src, int64_t src_stride, int64_t rows, int64_t width, T* dst, int64_t dst_stride) {
  // Through a 16 × 16 tile on the stack: each source row segment is read once, whole. Reading the
  // columns straight from the rows re-reads their cache lines, which a power-of-two row stride
  // (4H floats) maps onto one L1 set, where they evict each other.
  constexpr int64_t kTile = 16;
  T tile[kTile][kTile];
  for (int64_t b0 = 0; b0 < rows; b0 += kTile) {
    const int64_t nb = std::min(kTile, rows - b0);
    for (int64_t j0 = 0; j0 < width; j0 += kTile) {
      const int64_t nj = std::min(kTile, width - j0);
      for (int64_t b = 0; b < nb; ++b)
        for (int64_t j = 0; j < nj; ++j) tile[j][b] = src[(b0 + b) * src_stride + j0 + j];
      for (int64_t j = 0; j < nj; ++j)
        for (int64_t b = 0; b < nb; ++b) dst[(j0 + j) * dst_stride + b0 + b] = tile[j][b];
    }
  }
}

#if defined(__GNUC__)
// float32: whole 8 × 8 blocks transposed in registers (three rounds of two-vector shuffles, which
// the compiler maps onto the machine's permutes), the edges by the tile loop above. This pass runs
// on every element of the backward pass's gate gradients, once per step.
typedef float Float8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t Index8 __attribute__((vector_size(32)));

REGBENCH_CLONES void transpose_rows(const float* src, int64_t src_stride, int64_t rows, int64_t width, float* dst,
                                    int64_t dst_stride) {
  const int64_t rows8 = rows / 8 * 8, width8 = width / 8 * 8;
  for (int64_t j0 = 0; j0 < width8; j0 += 8) {
    for (int64_t b0 = 0; b0 < rows8; b0 += 8) {
      Float8 r[8], t[8], u[8];
      for (int k = 0; k < 8; ++k) r[k] = *reinterpret_cast<const Float8*>(src + (b0 + k) * src_stride + j0);
      for (int k = 0; k < 8; k += 2) {  // pairs of rows interleaved
        t[k] = __builtin_shuffle(r[k], r[k + 1], Index8{0, 8, 1, 9, 4, 12, 5, 13});
        t[k + 1] = __builtin_shuffle(r[k], r[k + 1], Index8{2, 10, 3, 11, 6, 14, 7, 15});
      }
      for (int k = 0; k < 8; k += 4) {  // then pairs of pairs
        u[k] = __builtin_shuffle(t[k], t[k + 2], Index8{0, 1, 8, 9, 4, 5, 12, 13});
        u[k + 1] = __builtin_shuffle(t[k], t[k + 2], Index8{2, 3, 10, 11, 6, 7, 14, 15});
        u[k + 2] = __builtin_shuffle(t[k + 1], t[k + 3], Index8{0, 1, 8, 9, 4, 5, 12, 13});
        u[k + 3] = __builtin_shuffle(t[k + 1], t[k + 3], Index8{2, 3, 10, 11, 6, 7, 14, 15});
      }
      for (int k = 0; k < 4; ++k) {  // then the two halves: columns k and k + 4
        *reinterpret_cast<Float8*>(dst + (j0 + k) * dst_stride + b0) =
            __builtin_shuffle(u[k], u[k + 4], Index8{0, 1, 2, 3, 8, 9, 10, 11});
        *reinterpret_cast<Float8*>(dst + (j0 + k + 4) * dst_stride + b0) =
            __builtin_shuffle(u[k], u[k + 4], Index8{4, 5, 6, 7, 12, 13, 14, 15});
      }
    }
  }
  if (rows8 < rows) transpose_rows<float>(src + rows8 * src_stride, src_stride, rows - rows8, width, dst + rows8, dst_stride);
  if (width8 < width) transpose_rows<float>(src + width8, src_stride, rows8, width - width8, dst + width8 * dst_stride, dst_stride);
}
#endif

// (masked h_{t-1}) of steps first .. first+count-1 (default: all) as an (H, count·B) matrix, the
// right-hand factor of the weight gradient, written straight into place (no concatenated or
// masked copies of the sequence); steps are shared out over the threads.
template <typename T>
Tensor recurrent_inputs_transposed(const Tensor& h0, const Tensor& hidden, const SequenceRows<T>& mask,
                                   int64_t first = 0, int64_t count = -1) {
  const int64_t batch = hidden.size(1), H = hidden.size(2);
  const int64_t steps = count < 0 ? hidden.size(0) - first : count;
  Tensor inputs_t = at::empty({H, steps * batch}, hidden.options());
  const Tensor h0c = h0.contiguous();
  const T* h0_data = h0c.data_ptr<T>();
  const T* hidden_data = hidden.data_ptr<T>();
  T* out = inputs_t.data_ptr<T>();
  at::parallel_for(0, steps, std::max<int64_t>(1, 16384 / std::max<int64_t>(batch * H, 1)),
                   [&](int64_t begin, int64_t end) {
    std::vector<T> masked_rows(mask.present() ? batch * H : 0), scratch(H);
    for (int64_t column_step = begin; column_step < end; ++column_step) {
      const int64_t t = first + column_step;
      const T* h_prev = t == 0 ? h0_data : hidden_data + (t - 1) * batch * H;
      if (mask.present()) {
        for (int64_t b = 0; b < batch; ++b) {
          const T* m = mask.row(t, b, H, nullptr, scratch.data());
          for (int64_t j = 0; j < H; ++j) masked_rows[b * H + j] = h_prev[b * H + j] * m[j];
        }
        h_prev = masked_rows.data();
      }
      transpose_rows(h_prev, H, batch, H, out + column_step * batch, steps * batch);
    }
  });
  return inputs_t;
}

// ∂L/∂W = d_t · inputs_tᵀ, with d_t (rows of W, T·B) and inputs_t (H, T·B) both row-major.
Tensor weight_gradient(const Tensor& d_t, const Tensor& inputs_t, bool onednn) {
  return onednn ? onednn_linear(d_t, inputs_t) : at::mm(d_t, inputs_t.t());
}

template <typename T>
std::vector<Tensor> lstm_forward(const Tensor& xp_in, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                 const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                 const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell, const Mask& u_hidden,
                                 bool onednn) {
  at::NoGradGuard no_grad;
  // Read in place whatever the step and batch strides (recurrent_batchnorm hands over a batch-major view).
  const Tensor xp = xp_in.stride(2) == 1 ? xp_in : xp_in.contiguous();
  const int64_t xp_step_stride = xp.stride(0), xp_row_stride = xp.stride(1);
  const int64_t steps = xp.size(0), batch = xp.size(1), gate_width = xp.size(2), H = gate_width / 4;
  auto options = xp.options();
  Tensor gates = at::empty({steps, batch, gate_width}, options);
  Tensor cells = at::empty({steps, batch, H}, options);
  Tensor tanh_cells = at::empty({steps, batch, H}, options);
  Tensor hidden = at::empty({steps, batch, H}, options);
  const SequenceRows<T> mh(m_hidden_input), mc(m_candidate), mcell(m_cell), uc(u_cell), uh(u_hidden);
  std::vector<T> ones(gate_width, T(1)), zeros(gate_width, T(0));
  const Tensor bias = b_hh.has_value() && b_hh->defined() ? b_hh->contiguous() : Tensor();
  const T* bias_data = bias.defined() ? bias.data_ptr<T>() : zeros.data();
  const Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  Tensor next_input = mh.present() ? masked(h0c, at_step(m_hidden_input, 0)).contiguous() : Tensor();
  RecurrentProduct recurrent_product(w_hh, batch, std::nullopt, onednn);
  const int64_t task_rows = grain(batch, gate_width);
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor recurrent =
        recurrent_product(mh.present() ? next_input : (t == 0 ? h0c : hidden.select(0, t - 1))).contiguous();
    const T* rec = recurrent.data_ptr<T>();
    const T* x = xp.data_ptr<T>() + t * xp_step_stride;
    const T* h_prev = t == 0 ? h0c.data_ptr<T>() : hidden.data_ptr<T>() + (t - 1) * batch * H;
    const T* c_prev = t == 0 ? c0c.data_ptr<T>() : cells.data_ptr<T>() + (t - 1) * batch * H;
    const bool write_next = mh.present() && t + 1 < steps;
    T* next = write_next ? next_input.data_ptr<T>() : nullptr;
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(5 * H);
      for (int64_t b = begin; b < end; ++b) {
        LSTMForwardRow<T> row{rec + b * gate_width,
                              x + b * xp_row_stride,
                              bias_data,
                              h_prev + b * H,
                              c_prev + b * H,
                              mc.row(t, b, H, ones.data(), scratch.data()),
                              mcell.row(t, b, H, ones.data(), scratch.data() + H),
                              uc.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                              uh.row(t, b, H, ones.data(), scratch.data() + 3 * H),
                              write_next ? mh.row(t + 1, b, H, ones.data(), scratch.data() + 4 * H) : nullptr,
                              gates.data_ptr<T>() + (t * batch + b) * gate_width,
                              cells.data_ptr<T>() + (t * batch + b) * H,
                              tanh_cells.data_ptr<T>() + (t * batch + b) * H,
                              hidden.data_ptr<T>() + (t * batch + b) * H,
                              write_next ? next + b * H : nullptr};
        run_row(H, row);
      }
    });
  }
  return {hidden, cells, gates, tanh_cells};
}

template <typename T>
std::vector<std::optional<Tensor>> lstm_backward(const std::optional<Tensor>& grad_hidden,
                                                 const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
                                                 const Tensor& h0, const Tensor& c0, const Tensor& gates,
                                                 const Tensor& cells, const Tensor& tanh_cells, const Tensor& hidden,
                                                 const Mask& m_hidden_input, const Mask& m_candidate,
                                                 const Mask& m_cell, const Mask& u_cell, const Mask& u_hidden,
                                                 bool has_bias, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = gates.size(0), batch = gates.size(1), gate_width = gates.size(2), H = gate_width / 4;
  const SequenceRows<T> gh(grad_hidden), gc(grad_cells);
  const SequenceRows<T> mh(m_hidden_input), mc(m_candidate), mcell(m_cell), uc(u_cell), uh(u_hidden);
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  const Tensor c0c = c0.contiguous();
  auto options = gates.options();
  // ∂L/∂gates of all steps, transposed (column t·B + b is row b of step t): the weight gradient
  // is then one oneDNN product of two row-major matrices, with no large transpose after the loop.
  Tensor d_gates_t = at::empty({gate_width, steps * batch}, options);
  Tensor d_gates_step = at::empty({batch, gate_width}, options);
  Tensor d_c = at::zeros({batch, H}, options), carry = at::zeros({batch, H}, options);
  Tensor d_product;  // ∂L/∂(masked h_t) from step t+1's recurrent product
  RecurrentProduct backward_product(w_hh.t(), batch, std::nullopt, onednn);
  const int64_t task_rows = grain(batch, gate_width);
  for (int64_t t = steps - 1; t >= 0; --t) {
    const T* product = d_product.defined() ? d_product.data_ptr<T>() : nullptr;
    const T* c_prev = t == 0 ? c0c.data_ptr<T>() : cells.data_ptr<T>() + (t - 1) * batch * H;
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(7 * H);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t row_h = (t * batch + b) * H, row_g = (t * batch + b) * gate_width;
        LSTMBackwardRow<T> row{product ? product + b * H : zeros.data(),
                               product ? mh.row(t + 1, b, H, ones.data(), scratch.data()) : ones.data(),
                               gh.row(t, b, H, zeros.data(), scratch.data() + 5 * H),
                               gc.row(t, b, H, zeros.data(), scratch.data() + 6 * H),
                               gates.data_ptr<T>() + row_g,
                               tanh_cells.data_ptr<T>() + row_h,
                               c_prev + b * H,
                               mc.row(t, b, H, ones.data(), scratch.data() + H),
                               mcell.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                               uc.row(t, b, H, ones.data(), scratch.data() + 3 * H),
                               uh.row(t, b, H, ones.data(), scratch.data() + 4 * H),
                               d_gates_step.data_ptr<T>() + b * gate_width,
                               d_c.data_ptr<T>() + b * H,
                               carry.data_ptr<T>() + b * H};
        run_row(H, row);
      }
      transpose_rows(d_gates_step.data_ptr<T>() + begin * gate_width, gate_width, end - begin, gate_width,
                     d_gates_t.data_ptr<T>() + t * batch + begin, steps * batch);
    });
    d_product = backward_product(d_gates_step).contiguous();
  }
  Tensor d_h0 = masked(d_product, at_step(m_hidden_input, 0)) + carry;
  Tensor inputs_t = recurrent_inputs_transposed(h0, hidden, mh);
  Tensor grad_w = weight_gradient(d_gates_t, inputs_t, onednn);
  std::optional<Tensor> grad_b;
  if (has_bias) grad_b = d_gates_t.sum(1);
  // The gradient of xp as a (T, B, 4H) view of the transposed buffer: autograd and the input
  // projection's backward take strided gradients as they are.
  Tensor d_gates = d_gates_t.view({gate_width, steps, batch}).permute({1, 2, 0});
  return {d_gates, grad_w, grad_b, d_h0, d_c};
}

template <typename T>
std::vector<Tensor> gru_forward(const Tensor& xp_in, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                const Mask& u_hidden, bool onednn) {
  at::NoGradGuard no_grad;
  // Read in place whatever the step and batch strides (recurrent_batchnorm hands over a batch-major view).
  const Tensor xp = xp_in.stride(2) == 1 ? xp_in : xp_in.contiguous();
  const int64_t xp_step_stride = xp.stride(0), xp_row_stride = xp.stride(1);
  const int64_t steps = xp.size(0), batch = xp.size(1), gate_width = xp.size(2), H = gate_width / 3;
  auto options = xp.options();
  Tensor activations = at::empty({steps, batch, gate_width}, options);
  Tensor hidden_n = at::empty({steps, batch, H}, options);
  Tensor hidden = at::empty({steps, batch, H}, options);
  const SequenceRows<T> mh(m_hidden_input), mc(m_candidate), uh(u_hidden);
  std::vector<T> ones(H, T(1));
  const Tensor h0c = h0.contiguous();
  Tensor next_input = mh.present() ? masked(h0c, at_step(m_hidden_input, 0)).contiguous() : Tensor();
  RecurrentProduct recurrent_product(w_hh, batch, b_hh, onednn);
  const int64_t task_rows = grain(batch, gate_width);
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor recurrent =
        recurrent_product(mh.present() ? next_input : (t == 0 ? h0c : hidden.select(0, t - 1))).contiguous();
    const T* rec = recurrent.data_ptr<T>();
    const T* x = xp.data_ptr<T>() + t * xp_step_stride;
    const T* h_prev = t == 0 ? h0c.data_ptr<T>() : hidden.data_ptr<T>() + (t - 1) * batch * H;
    const bool write_next = mh.present() && t + 1 < steps;
    T* next = write_next ? next_input.data_ptr<T>() : nullptr;
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(3 * H);
      for (int64_t b = begin; b < end; ++b) {
        GRUForwardRow<T> row{rec + b * gate_width,
                             x + b * xp_row_stride,
                             h_prev + b * H,
                             mc.row(t, b, H, ones.data(), scratch.data()),
                             uh.row(t, b, H, ones.data(), scratch.data() + H),
                             write_next ? mh.row(t + 1, b, H, ones.data(), scratch.data() + 2 * H) : nullptr,
                             activations.data_ptr<T>() + (t * batch + b) * gate_width,
                             hidden_n.data_ptr<T>() + (t * batch + b) * H,
                             hidden.data_ptr<T>() + (t * batch + b) * H,
                             write_next ? next + b * H : nullptr};
        run_row(H, row);
      }
    });
  }
  return {hidden, activations, hidden_n};
}

template <typename T>
std::vector<std::optional<Tensor>> gru_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden_n,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = activations.size(0), batch = activations.size(1), gate_width = activations.size(2),
                H = gate_width / 3;
  const SequenceRows<T> gh(grad_hidden);
  const Tensor h0c = h0.contiguous();
  const SequenceRows<T> mh(m_hidden_input), mc(m_candidate), uh(u_hidden);
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  auto options = activations.options();
  // Transposed, as in the LSTM: column t·B + b is row b of step t.
  Tensor d_input_t = at::empty({gate_width, steps * batch}, options);
  Tensor d_input_step = at::empty({batch, gate_width}, options), d_recurrent = at::empty({batch, gate_width}, options);
  Tensor carry = at::zeros({batch, H}, options);
  Tensor d_product;
  RecurrentProduct backward_product(w_hh.t(), batch, std::nullopt, onednn);
  const int64_t task_rows = grain(batch, gate_width);
  for (int64_t t = steps - 1; t >= 0; --t) {
    const T* product = d_product.defined() ? d_product.data_ptr<T>() : nullptr;
    const T* h_prev = t == 0 ? h0c.data_ptr<T>() : hidden.data_ptr<T>() + (t - 1) * batch * H;
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(4 * H);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t row_h = (t * batch + b) * H, row_g = (t * batch + b) * gate_width;
        GRUBackwardRow<T> row{product ? product + b * H : zeros.data(),
                              product ? mh.row(t + 1, b, H, ones.data(), scratch.data()) : ones.data(),
                              gh.row(t, b, H, zeros.data(), scratch.data() + 3 * H),
                              activations.data_ptr<T>() + row_g,
                              hidden_n.data_ptr<T>() + row_h,
                              h_prev + b * H,
                              mc.row(t, b, H, ones.data(), scratch.data() + H),
                              uh.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                              d_input_step.data_ptr<T>() + b * gate_width,
                              d_recurrent.data_ptr<T>() + b * gate_width,
                              carry.data_ptr<T>() + b * H};
        run_row(H, row);
      }
      transpose_rows(d_input_step.data_ptr<T>() + begin * gate_width, gate_width, end - begin, gate_width,
                     d_input_t.data_ptr<T>() + t * batch + begin, steps * batch);
    });
    d_product = backward_product(d_recurrent).contiguous();
  }
  Tensor d_h0 = masked(d_product, at_step(m_hidden_input, 0)) + carry;
  Tensor inputs_t = recurrent_inputs_transposed(h0, hidden, mh);
  Tensor d_rz_t = d_input_t.narrow(0, 0, 2 * H);
  Tensor grad_w = at::empty({gate_width, H}, options);
  grad_w.narrow(0, 0, 2 * H).copy_(weight_gradient(d_rz_t, inputs_t, onednn));
  Tensor grad_w_n = grad_w.narrow(0, 2 * H, H).zero_();
  Tensor grad_b_n = at::zeros({H}, options);
  // The n rows' gradient flows through r: ∂L/∂W_hn = Σ (d_n ⊙ r)ᵀ h_{t-1}. Built in chunks of columns,
  // so that d_n ⊙ r never exists for the whole sequence at once (the GRU's memory is tight; its
  // time is not).
  const int64_t columns = steps * batch, chunk = std::min<int64_t>(columns, 1024);
  Tensor d_recurrent_n = at::empty({H, chunk}, options);
  const T* d_n_t = d_input_t.data_ptr<T>() + 2 * H * columns;
  const T* r = activations.data_ptr<T>();
  for (int64_t first = 0; first < columns; first += chunk) {
    const int64_t width = std::min(chunk, columns - first);
    T* out = d_recurrent_n.data_ptr<T>();
    at::parallel_for(0, H, 64, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j)
        for (int64_t c = 0; c < width; ++c)
          out[j * chunk + c] = d_n_t[j * columns + first + c] * r[(first + c) * gate_width + j];
    });
    Tensor part = d_recurrent_n.narrow(1, 0, width);
    grad_w_n.addmm_(part, inputs_t.narrow(1, first, width).t());
    if (has_bias) grad_b_n.add_(part.sum(1));
  }
  std::optional<Tensor> grad_b;
  if (has_bias) grad_b = at::cat({d_rz_t.sum(1), grad_b_n});
  Tensor d_input = d_input_t.view({gate_width, steps, batch}).permute({1, 2, 0});
  return {d_input, grad_w, grad_b, d_h0};
}

}  // namespace fast

std::vector<Tensor> lstm_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                 const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                 const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell, const Mask& u_hidden,
                                 bool onednn) {
  const int64_t H = xp.size(2) / 4;
  const Tensor no_tensor;
  if (fast::fits(xp, {&w_hh, b_hh.has_value() ? &*b_hh : &no_tensor, &h0, &c0},
                 {&m_hidden_input, &m_candidate, &m_cell, &u_cell, &u_hidden}, xp.size(0), xp.size(1), H)) {
    if (xp.scalar_type() == at::kFloat)
      return fast::lstm_forward<float>(xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell,
                                       u_hidden, onednn);
    return fast::lstm_forward<double>(xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden,
                                      onednn);
  }
  return lstm_forward_generic(xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn);
}

std::vector<std::optional<Tensor>> lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells,
    const Tensor& hidden, const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
    const Mask& u_cell, const Mask& u_hidden, bool has_bias, bool onednn) {
  const int64_t H = gates.size(2) / 4;
  const Tensor no_tensor;
  const Tensor& gh = grad_hidden.has_value() ? *grad_hidden : no_tensor;
  const Tensor& gc = grad_cells.has_value() ? *grad_cells : no_tensor;
  if (fast::fits(gates, {&gh, &gc, &w_hh, &h0, &c0, &cells, &tanh_cells, &hidden},
                 {&m_hidden_input, &m_candidate, &m_cell, &u_cell, &u_hidden}, gates.size(0), gates.size(1), H) &&
      gates.is_contiguous() && cells.is_contiguous() && tanh_cells.is_contiguous() && hidden.is_contiguous()) {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      return fast::lstm_backward<T>(grad_hidden, grad_cells, w_hh, h0, c0, gates, cells, tanh_cells, hidden,
                                    m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, has_bias, onednn);
    };
    return gates.scalar_type() == at::kFloat ? run(float()) : run(double());
  }
  return lstm_backward_generic(grad_hidden, grad_cells, w_hh, h0, c0, gates, cells, tanh_cells, hidden, m_hidden_input,
                               m_candidate, m_cell, u_cell, u_hidden, has_bias, onednn);
}

std::vector<Tensor> gru_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                const Mask& u_hidden, bool onednn) {
  const int64_t H = xp.size(2) / 3;
  const Tensor no_tensor;
  if (fast::fits(xp, {&w_hh, b_hh.has_value() ? &*b_hh : &no_tensor, &h0},
                 {&m_hidden_input, &m_candidate, &u_hidden}, xp.size(0), xp.size(1), H)) {
    if (xp.scalar_type() == at::kFloat)
      return fast::gru_forward<float>(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn);
    return fast::gru_forward<double>(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn);
  }
  return gru_forward_generic(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn);
}

std::vector<std::optional<Tensor>> gru_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden_n,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn) {
  const int64_t H = activations.size(2) / 3;
  if (fast::fits(activations, {&grad_hidden, &w_hh, &h0, &hidden_n, &hidden},
                 {&m_hidden_input, &m_candidate, &u_hidden}, activations.size(0), activations.size(1), H) &&
      activations.is_contiguous() && hidden_n.is_contiguous() && hidden.is_contiguous()) {
    if (activations.scalar_type() == at::kFloat)
      return fast::gru_backward<float>(grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input,
                                       m_candidate, u_hidden, has_bias, onednn);
    return fast::gru_backward<double>(grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input,
                                      m_candidate, u_hidden, has_bias, onednn);
  }
  return gru_backward_generic(grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input, m_candidate,
                              u_hidden, has_bias, onednn);
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

std::vector<Tensor> batchnorm_lstm_forward_generic(Tensor xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
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

std::vector<std::optional<Tensor>> batchnorm_lstm_backward_generic(
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

// -- the fast path of the batch-normalized LSTM ------------------------------------------------------
//
// Per step: the recurrent product, then statistics over the batch (a pass down the columns), a
// pass over the rows up to ĉ, statistics of ĉ, and a pass over the rows for the outputs. The
// backward pass mirrors it; the per-step column sums it needs for the batch-norm gradient are also
// the γ, β and bias gradients, accumulated on the way, so no per-step buffer other than ∂L/∂gates
// and ∂L/∂(recurrent projection) (both transposed, for the weight gradients) is kept.

namespace fast {

// A batch-norm step has four or five short parallel passes; each split costs a thread hand-off,
// which below this many elements per task costs more than it saves (measured at hidden 256).
constexpr int64_t kBatchNormTaskElements = 65536;

// Per column j in [begin, end) of a (rows × width) row-major matrix: mean and biased variance
// (two passes).
template <typename T>
REGBENCH_INLINE void column_mean_var_range(const T* x, int64_t rows, int64_t width, int64_t begin, int64_t end, T* mean,
                                           T* var) {
  for (int64_t j = begin; j < end; ++j) mean[j] = T(0), var[j] = T(0);
  for (int64_t b = 0; b < rows; ++b) {
    const T* row = x + b * width;
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = begin; j < end; ++j) mean[j] += row[j];
  }
  for (int64_t j = begin; j < end; ++j) mean[j] /= T(rows);
  for (int64_t b = 0; b < rows; ++b) {
    const T* row = x + b * width;
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = begin; j < end; ++j) {
      const T centered = row[j] - mean[j];
      var[j] += centered * centered;
    }
  }
  for (int64_t j = begin; j < end; ++j) var[j] /= T(rows);
}

// Per column j in [begin, end): Σ_b a[b, j] and Σ_b a[b, j]·x[b, j].
template <typename T>
REGBENCH_INLINE void column_sums_range(const T* a, const T* x, int64_t rows, int64_t width, int64_t begin, int64_t end,
                                       T* sum_a, T* sum_ax) {
  for (int64_t j = begin; j < end; ++j) sum_a[j] = T(0), sum_ax[j] = T(0);
  for (int64_t b = 0; b < rows; ++b) {
    const T *a_row = a + b * width, *x_row = x + b * width;
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = begin; j < end; ++j) {
      sum_a[j] += a_row[j];
      sum_ax[j] += a_row[j] * x_row[j];
    }
  }
}

REGBENCH_CLONES void run_column_mean_var(const float* x, int64_t rows, int64_t width, int64_t begin, int64_t end,
                                         float* mean, float* var) {
  column_mean_var_range(x, rows, width, begin, end, mean, var);
}
void run_column_mean_var(const double* x, int64_t rows, int64_t width, int64_t begin, int64_t end, double* mean,
                         double* var) {
  column_mean_var_range(x, rows, width, begin, end, mean, var);
}
REGBENCH_CLONES void run_column_sums(const float* a, const float* x, int64_t rows, int64_t width, int64_t begin,
                                     int64_t end, float* sum_a, float* sum_ax) {
  column_sums_range(a, x, rows, width, begin, end, sum_a, sum_ax);
}
void run_column_sums(const double* a, const double* x, int64_t rows, int64_t width, int64_t begin, int64_t end,
                     double* sum_a, double* sum_ax) {
  column_sums_range(a, x, rows, width, begin, end, sum_a, sum_ax);
}

template <typename T>
void column_mean_var(const T* x, int64_t rows, int64_t width, T* mean, T* var) {
  at::parallel_for(0, width, std::max<int64_t>(1, kBatchNormTaskElements / std::max<int64_t>(rows, 1)),
                   [&](int64_t begin, int64_t end) { run_column_mean_var(x, rows, width, begin, end, mean, var); });
}

template <typename T>
void column_sums(const T* a, const T* x, int64_t rows, int64_t width, T* sum_a, T* sum_ax) {
  at::parallel_for(0, width, std::max<int64_t>(1, kBatchNormTaskElements / std::max<int64_t>(rows, 1)),
                   [&](int64_t begin, int64_t end) { run_column_sums(a, x, rows, width, begin, end, sum_a, sum_ax); });
}

// The batch-normalized LSTM's row passes, one row each, as the plain LSTM's: every pointer valid
// (absent masks are rows of ones, absent gradients rows of zeros).
// Forward, up to ĉ: x̂_h = (W_h h - μ_h)·rstd_h, the activated gates, ĉ = (i·g·m + f·c_{t-1})·m_c.
template <typename T>
struct BatchNormGatesRow {
  const T *projection, *input, *bias, *mean_h, *rstd_h, *gamma_h, *m_candidate, *m_cell, *c_prev;
  T *normalized_h, *gates, *cell_hat;
};

template <typename T>
REGBENCH_INLINE void batchnorm_gates_row(int64_t H, const BatchNormGatesRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < 4 * H; ++j) {
    const T n_h = (a.projection[j] - a.mean_h[j]) * a.rstd_h[j];
    a.normalized_h[j] = n_h;
    a.gates[j] = (a.input[j] + a.bias[j]) + n_h * a.gamma_h[j];
  }
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T i = sigmoid(a.gates[j]), f = sigmoid(a.gates[H + j]), g = tanh_of(a.gates[2 * H + j]),
            o = sigmoid(a.gates[3 * H + j]);
    a.gates[j] = i, a.gates[H + j] = f, a.gates[2 * H + j] = g, a.gates[3 * H + j] = o;
    a.cell_hat[j] = (i * g * a.m_candidate[j] + f * a.c_prev[j]) * a.m_cell[j];
  }
}

// Forward, from ĉ: x̂_c, tanh(γ_c x̂_c + β_c), the new cell and hidden state (and h_t·m_next).
template <typename T>
struct BatchNormStateRow {
  const T *output_gate, *cell_hat, *c_prev, *h_prev, *u_cell, *u_hidden, *mean_c, *rstd_c, *gamma_c, *beta_c, *m_next;
  T *normalized_c, *tanh_cell, *cell, *hidden, *next_input;  // next_input may be null
};

template <typename T>
REGBENCH_INLINE void batchnorm_state_row(int64_t H, const BatchNormStateRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T n_c = (a.cell_hat[j] - a.mean_c[j]) * a.rstd_c[j];
    const T th = tanh_of(a.beta_c[j] + n_c * a.gamma_c[j]);
    a.normalized_c[j] = n_c;
    a.tanh_cell[j] = th;
    a.cell[j] = a.u_cell[j] * a.cell_hat[j] + (T(1) - a.u_cell[j]) * a.c_prev[j];
    a.hidden[j] = a.u_hidden[j] * (a.output_gate[j] * th) + (T(1) - a.u_hidden[j]) * a.h_prev[j];
  }
  if (a.next_input != nullptr) {
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = 0; j < H; ++j) a.next_input[j] = a.hidden[j] * a.m_next[j];
  }
}

// Backward, first pass: ∂L/∂h_t (kept in `carry` for the next pass) and ∂L/∂(γ_c x̂_c + β_c).
template <typename T>
struct BatchNormCellOutputRow {
  const T *d_product, *m_next, *grad_h, *u_hidden, *output_gate, *tanh_cell;
  T *d_cell_output, *carry;
};

template <typename T>
REGBENCH_INLINE void batchnorm_cell_output_row(int64_t H, const BatchNormCellOutputRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T d_h = a.d_product[j] * a.m_next[j] + a.carry[j] + a.grad_h[j];
    a.d_cell_output[j] = d_h * a.u_hidden[j] * (a.output_gate[j] * (T(1) - a.tanh_cell[j] * a.tanh_cell[j]));
    a.carry[j] = d_h;  // ∂L/∂h_t for now; the carry proper after the next pass
  }
}

// Backward, second pass: ∂L/∂ĉ through the cell's batch norm, the gate gradients, ∂L/∂c_{t-1}
// and the hidden state's carry. `centered` says whether the batch statistics' terms apply.
template <typename T>
struct BatchNormGateGradsRow {
  const T *gates, *normalized_c, *grad_c, *u_cell, *u_hidden, *m_candidate, *m_cell, *d_cell_output, *c_prev,
      *tanh_cell, *sum_dco, *sum_dco_n, *gamma_c, *rstd_c;
  T inverse_batch;
  bool centered;
  T *d_gates, *d_c, *carry;
};

template <typename T>
REGBENCH_INLINE void batchnorm_gate_grads_row(int64_t H, const BatchNormGateGradsRow<T>& a) {
  const T mean_weight = a.centered ? a.inverse_batch : T(0);
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T d_h = a.carry[j];
    const T d_normalized =
        a.d_cell_output[j] - a.sum_dco[j] * mean_weight - a.normalized_c[j] * (a.sum_dco_n[j] * mean_weight);
    const T dc_in = a.d_c[j] + a.grad_c[j];
    const T d_cell_hat = (d_normalized * (a.gamma_c[j] * a.rstd_c[j]) + dc_in * a.u_cell[j]) * a.m_cell[j];
    const T i = a.gates[j], f = a.gates[H + j], g = a.gates[2 * H + j], o = a.gates[3 * H + j], m = a.m_candidate[j];
    a.d_gates[j] = d_cell_hat * ((g * m) * (i * (T(1) - i)));
    a.d_gates[H + j] = d_cell_hat * (a.c_prev[j] * (f * (T(1) - f)));
    a.d_gates[2 * H + j] = d_cell_hat * ((i * m) * (T(1) - g * g));
    a.d_gates[3 * H + j] = d_h * a.u_hidden[j] * (a.tanh_cell[j] * (o * (T(1) - o)));
    a.d_c[j] = d_cell_hat * f + dc_in * (T(1) - a.u_cell[j]);
    a.carry[j] = d_h * (T(1) - a.u_hidden[j]);
  }
}

// Backward, third pass: ∂L/∂(W_h h_{t-1}) through the hidden batch norm.
template <typename T>
struct BatchNormProjectionGradRow {
  const T *d_gates, *normalized_h, *sum_dg, *sum_dg_n, *gamma_h, *rstd_h;
  T inverse_batch;
  bool centered;
  T* d_projection;
};

template <typename T>
REGBENCH_INLINE void batchnorm_projection_grad_row(int64_t H, const BatchNormProjectionGradRow<T>& a) {
  const T mean_weight = a.centered ? a.inverse_batch : T(0);
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < 4 * H; ++j) {
    const T d_normalized = a.d_gates[j] - a.sum_dg[j] * mean_weight - a.normalized_h[j] * (a.sum_dg_n[j] * mean_weight);
    a.d_projection[j] = d_normalized * (a.gamma_h[j] * a.rstd_h[j]);
  }
}

REGBENCH_CLONES void run_row(int64_t H, const BatchNormGatesRow<float>& a) { batchnorm_gates_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const BatchNormStateRow<float>& a) { batchnorm_state_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const BatchNormCellOutputRow<float>& a) { batchnorm_cell_output_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const BatchNormGateGradsRow<float>& a) { batchnorm_gate_grads_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const BatchNormProjectionGradRow<float>& a) {
  batchnorm_projection_grad_row(H, a);
}
void run_row(int64_t H, const BatchNormGatesRow<double>& a) { batchnorm_gates_row(H, a); }
void run_row(int64_t H, const BatchNormStateRow<double>& a) { batchnorm_state_row(H, a); }
void run_row(int64_t H, const BatchNormCellOutputRow<double>& a) { batchnorm_cell_output_row(H, a); }
void run_row(int64_t H, const BatchNormGateGradsRow<double>& a) { batchnorm_gate_grads_row(H, a); }
void run_row(int64_t H, const BatchNormProjectionGradRow<double>& a) { batchnorm_projection_grad_row(H, a); }

template <typename T>
std::vector<Tensor> batchnorm_lstm_forward(const Tensor& xp_in, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                           const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                           const Tensor& gamma_cell, const Tensor& beta_cell,
                                           const std::optional<std::vector<Tensor>>& running, double eps,
                                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                                           const Mask& u_cell, const Mask& u_hidden, bool onednn) {
  at::NoGradGuard no_grad;
  // Read in place whatever the step and batch strides (recurrent_batchnorm hands over a batch-major view).
  const Tensor xp = xp_in.stride(2) == 1 ? xp_in : xp_in.contiguous();
  const int64_t xp_step_stride = xp.stride(0), xp_row_stride = xp.stride(1);
  const int64_t steps = xp.size(0), batch = xp.size(1), gate_width = xp.size(2), H = gate_width / 4;
  const bool batch_statistics = !running.has_value();
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
  if (!batch_statistics) {
    mean_h.copy_((*running)[0].narrow(0, 0, steps)), var_h.copy_((*running)[1].narrow(0, 0, steps));
    mean_c.copy_((*running)[2].narrow(0, 0, steps)), var_c.copy_((*running)[3].narrow(0, 0, steps));
  }
  const SequenceRows<T> mh(m_hidden_input), mc(m_candidate), mcell(m_cell), uc(u_cell), uh(u_hidden);
  std::vector<T> ones(H, T(1)), zeros(gate_width, T(0));
  const Tensor bias = b_hh.has_value() && b_hh->defined() ? b_hh->contiguous() : Tensor();
  const T* bias_data = bias.defined() ? bias.data_ptr<T>() : zeros.data();
  const Tensor gh_c = gamma_hidden.contiguous(), gc_c = gamma_cell.contiguous(), bc_c = beta_cell.contiguous();
  const T *gamma_h = gh_c.data_ptr<T>(), *gamma_c = gc_c.data_ptr<T>(), *beta_c = bc_c.data_ptr<T>();
  const Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  Tensor next_input = mh.present() ? masked(h0c, at_step(m_hidden_input, 0)).contiguous() : Tensor();
  Tensor cell_hat_step = at::empty({batch, H}, options);
  T* cell_hat = cell_hat_step.data_ptr<T>();
  RecurrentProduct recurrent_product(w_hh, batch, std::nullopt, onednn);
  const int64_t task_rows = std::max<int64_t>(1, kBatchNormTaskElements / gate_width);
  const T epsilon = static_cast<T>(eps);
  for (int64_t t = 0; t < steps; ++t) {
    const Tensor projection =
        recurrent_product(mh.present() ? next_input : (t == 0 ? h0c : hidden.select(0, t - 1))).contiguous();
    const T* p = projection.data_ptr<T>();
    T *mu_h = mean_h.data_ptr<T>() + t * gate_width, *v_h = var_h.data_ptr<T>() + t * gate_width;
    T *mu_c = mean_c.data_ptr<T>() + t * H, *v_c = var_c.data_ptr<T>() + t * H;
    T *rs_h = rstd_hidden.data_ptr<T>() + t * gate_width, *rs_c = rstd_cells.data_ptr<T>() + t * H;
    if (batch_statistics) column_mean_var(p, batch, gate_width, mu_h, v_h);
    for (int64_t j = 0; j < gate_width; ++j) rs_h[j] = T(1) / std::sqrt(v_h[j] + epsilon);
    const T* x = xp.data_ptr<T>() + t * xp_step_stride;
    const T* h_prev = t == 0 ? h0c.data_ptr<T>() : hidden.data_ptr<T>() + (t - 1) * batch * H;
    const T* c_prev = t == 0 ? c0c.data_ptr<T>() : cells.data_ptr<T>() + (t - 1) * batch * H;
    // Rows, up to ĉ: x̂_h, the gates, ĉ.
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(2 * H);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t row_g = (t * batch + b) * gate_width;
        BatchNormGatesRow<T> row{p + b * gate_width,
                                 x + b * xp_row_stride,
                                 bias_data,
                                 mu_h,
                                 rs_h,
                                 gamma_h,
                                 mc.row(t, b, H, ones.data(), scratch.data()),
                                 mcell.row(t, b, H, ones.data(), scratch.data() + H),
                                 c_prev + b * H,
                                 normalized_hidden.data_ptr<T>() + row_g,
                                 gates.data_ptr<T>() + row_g,
                                 cell_hat + b * H};
        run_row(H, row);
      }
    });
    if (batch_statistics) column_mean_var(cell_hat, batch, H, mu_c, v_c);
    for (int64_t j = 0; j < H; ++j) rs_c[j] = T(1) / std::sqrt(v_c[j] + epsilon);
    const bool write_next = mh.present() && t + 1 < steps;
    T* next = write_next ? next_input.data_ptr<T>() : nullptr;
    // Rows: x̂_c, tanh, the new cell and hidden state.
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(3 * H);
      for (int64_t b = begin; b < end; ++b) {
        const int64_t row_h = (t * batch + b) * H;
        BatchNormStateRow<T> row{gates.data_ptr<T>() + (t * batch + b) * gate_width + 3 * H,
                                 cell_hat + b * H,
                                 c_prev + b * H,
                                 h_prev + b * H,
                                 uc.row(t, b, H, ones.data(), scratch.data()),
                                 uh.row(t, b, H, ones.data(), scratch.data() + H),
                                 mu_c,
                                 rs_c,
                                 gamma_c,
                                 beta_c,
                                 write_next ? mh.row(t + 1, b, H, ones.data(), scratch.data() + 2 * H) : nullptr,
                                 normalized_cells.data_ptr<T>() + row_h,
                                 tanh_cells.data_ptr<T>() + row_h,
                                 cells.data_ptr<T>() + row_h,
                                 hidden.data_ptr<T>() + row_h,
                                 write_next ? next + b * H : nullptr};
        run_row(H, row);
      }
    });
  }
  return {hidden, cells, mean_h, var_h, mean_c, var_c, gates, normalized_hidden, normalized_cells,
          rstd_hidden, rstd_cells, tanh_cells};
}

template <typename T>
std::vector<std::optional<Tensor>> batchnorm_lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden, const Tensor& gamma_cell, const Tensor& gates,
    const Tensor& normalized_hidden, const Tensor& normalized_cells, const Tensor& rstd_hidden,
    const Tensor& rstd_cells, const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
    const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
    const Mask& u_hidden, bool has_bias, bool batch_statistics, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = gates.size(0), batch = gates.size(1), gate_width = gates.size(2), H = gate_width / 4;
  auto options = gates.options();
  const SequenceRows<T> gh(grad_hidden), gc(grad_cells);
  const SequenceRows<T> mh(m_hidden_input), mc(m_candidate), mcell(m_cell), uc(u_cell), uh(u_hidden);
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  const Tensor c0c = c0.contiguous(), gh_c = gamma_hidden.contiguous(), gc_c = gamma_cell.contiguous();
  const T *gamma_h = gh_c.data_ptr<T>(), *gamma_c = gc_c.data_ptr<T>();
  // ∂L/∂(gate pre-activations) = ∂L/∂xp, batch-major (B, T, 4H): the layout of recurrent_batchnorm's
  // input normalization, whose F.batch_norm then takes it without a copy.
  Tensor d_gates_by_batch = at::empty({batch, steps, gate_width}, options);
  // ∂L/∂(W_h h_{t-1}), transposed as in the plain LSTM, but a chunk of steps at a time: the weight
  // gradient is accumulated chunk by chunk, so that this buffer (the size of the gates, which this
  // layer already keeps three of) is a quarter of the sequence.
  const int64_t chunk_steps = std::max<int64_t>(1, (steps + 3) / 4);
  Tensor d_projection_chunk = at::empty({gate_width * chunk_steps * batch}, options);
  Tensor grad_w;
  Tensor d_gates_step = at::empty({batch, gate_width}, options), d_projection_step = at::empty({batch, gate_width}, options);
  Tensor d_cell_output = at::empty({batch, H}, options);  // ∂L/∂(γ_c x̂_c + β_c) of this step
  Tensor d_c = at::zeros({batch, H}, options), carry = at::zeros({batch, H}, options);
  // Column sums of this step, and their totals over the steps (the γ, β and bias gradients).
  Tensor sums = at::empty({2, gate_width}, options), sums_c = at::empty({2, H}, options);
  Tensor grad_bias = at::zeros({gate_width}, options), grad_gamma_hidden = at::zeros({gate_width}, options);
  Tensor grad_beta_cell = at::zeros({H}, options), grad_gamma_cell = at::zeros({H}, options);
  T *sum_dg = sums.data_ptr<T>(), *sum_dg_n = sum_dg + gate_width, *sum_dco = sums_c.data_ptr<T>(), *sum_dco_n = sum_dco + H;
  Tensor d_product;
  RecurrentProduct backward_product(w_hh.t(), batch, std::nullopt, onednn);
  const int64_t task_rows = std::max<int64_t>(1, kBatchNormTaskElements / gate_width);
  const T inverse_batch = T(1) / T(batch);
  for (int64_t t = steps - 1; t >= 0; --t) {
    const T* product = d_product.defined() ? d_product.data_ptr<T>() : nullptr;
    const T* c_prev = t == 0 ? c0c.data_ptr<T>() : cells.data_ptr<T>() + (t - 1) * batch * H;
    const T *rs_h = rstd_hidden.data_ptr<T>() + t * gate_width, *rs_c = rstd_cells.data_ptr<T>() + t * H;
    const T* n_c_step = normalized_cells.data_ptr<T>() + t * batch * H;
    const T* n_h_step = normalized_hidden.data_ptr<T>() + t * batch * gate_width;
    const int64_t chunk_start = t - t % chunk_steps;
    const int64_t chunk_columns = (std::min(steps, chunk_start + chunk_steps) - chunk_start) * batch;
    // Rows: ∂L/∂h_t, ∂L/∂(the cell's normalized output).
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(3 * H);
      for (int64_t b = begin; b < end; ++b) {
        BatchNormCellOutputRow<T> row{product ? product + b * H : zeros.data(),
                                      product ? mh.row(t + 1, b, H, ones.data(), scratch.data()) : ones.data(),
                                      gh.row(t, b, H, zeros.data(), scratch.data() + H),
                                      uh.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                                      gates.data_ptr<T>() + (t * batch + b) * gate_width + 3 * H,
                                      tanh_cells.data_ptr<T>() + (t * batch + b) * H,
                                      d_cell_output.data_ptr<T>() + b * H,
                                      carry.data_ptr<T>() + b * H};
        run_row(H, row);
      }
    });
    column_sums(d_cell_output.data_ptr<T>(), n_c_step, batch, H, sum_dco, sum_dco_n);
    // Rows: ∂L/∂ĉ, the gate gradients, ∂L/∂c_{t-1} and the hidden state's carry.
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      std::vector<T> scratch(5 * H);
      for (int64_t b = begin; b < end; ++b) {
        BatchNormGateGradsRow<T> row{gates.data_ptr<T>() + (t * batch + b) * gate_width,
                                     n_c_step + b * H,
                                     gc.row(t, b, H, zeros.data(), scratch.data()),
                                     uc.row(t, b, H, ones.data(), scratch.data() + H),
                                     uh.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                                     mc.row(t, b, H, ones.data(), scratch.data() + 3 * H),
                                     mcell.row(t, b, H, ones.data(), scratch.data() + 4 * H),
                                     d_cell_output.data_ptr<T>() + b * H,
                                     c_prev + b * H,
                                     tanh_cells.data_ptr<T>() + (t * batch + b) * H,
                                     sum_dco,
                                     sum_dco_n,
                                     gamma_c,
                                     rs_c,
                                     inverse_batch,
                                     batch_statistics,
                                     d_gates_step.data_ptr<T>() + b * gate_width,
                                     d_c.data_ptr<T>() + b * H,
                                     carry.data_ptr<T>() + b * H};
        run_row(H, row);
      }
    });
    column_sums(d_gates_step.data_ptr<T>(), n_h_step, batch, gate_width, sum_dg, sum_dg_n);
    // Rows: ∂L/∂(W_h h_{t-1}) through the hidden batch norm.
    at::parallel_for(0, batch, task_rows, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        BatchNormProjectionGradRow<T> row{d_gates_step.data_ptr<T>() + b * gate_width,
                                          n_h_step + b * gate_width,
                                          sum_dg,
                                          sum_dg_n,
                                          gamma_h,
                                          rs_h,
                                          inverse_batch,
                                          batch_statistics,
                                          d_projection_step.data_ptr<T>() + b * gate_width};
        run_row(H, row);
        std::memcpy(d_gates_by_batch.data_ptr<T>() + (b * steps + t) * gate_width,
                    d_gates_step.data_ptr<T>() + b * gate_width, gate_width * sizeof(T));
      }
      transpose_rows(d_projection_step.data_ptr<T>() + begin * gate_width, gate_width, end - begin, gate_width,
                     d_projection_chunk.data_ptr<T>() + (t - chunk_start) * batch + begin, chunk_columns);
    });
    grad_bias.add_(sums[0]), grad_gamma_hidden.add_(sums[1]);
    grad_beta_cell.add_(sums_c[0]), grad_gamma_cell.add_(sums_c[1]);
    d_product = backward_product(d_projection_step).contiguous();
    if (t == chunk_start) {
      const Tensor d_chunk = d_projection_chunk.narrow(0, 0, gate_width * chunk_columns).view({gate_width, chunk_columns});
      Tensor part = weight_gradient(d_chunk, recurrent_inputs_transposed(h0, hidden, mh, chunk_start, chunk_columns / batch),
                                    onednn);
      grad_w = grad_w.defined() ? grad_w.add_(part) : part;
    }
  }
  Tensor d_h0 = masked(d_product, at_step(m_hidden_input, 0)) + carry;
  d_projection_chunk.reset();
  std::optional<Tensor> grad_b;
  if (has_bias) grad_b = grad_bias;
  return {d_gates_by_batch.transpose(0, 1), grad_w, grad_b, d_h0, d_c, grad_gamma_hidden, grad_gamma_cell,
          grad_beta_cell};
}

}  // namespace fast

std::vector<Tensor> batchnorm_lstm_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                           const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                           const Tensor& gamma_cell, const Tensor& beta_cell,
                                           const std::optional<std::vector<Tensor>>& running, double eps,
                                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                                           const Mask& u_cell, const Mask& u_hidden, bool onednn) {
  const int64_t H = xp.size(2) / 4;
  const Tensor no_tensor;
  bool fits = fast::fits(xp, {&w_hh, b_hh.has_value() ? &*b_hh : &no_tensor, &h0, &c0, &gamma_hidden, &gamma_cell,
                              &beta_cell},
                         {&m_hidden_input, &m_candidate, &m_cell, &u_cell, &u_hidden}, xp.size(0), xp.size(1), H);
  if (running.has_value())
    for (const Tensor& statistic : *running) fits = fits && fast::fits(xp, {&statistic}, {}, 0, 0, 0);
  if (fits) {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      return fast::batchnorm_lstm_forward<T>(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                                             m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn);
    };
    return xp.scalar_type() == at::kFloat ? run(float()) : run(double());
  }
  return batchnorm_lstm_forward_generic(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                                        m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn);
}

std::vector<std::optional<Tensor>> batchnorm_lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden, const Tensor& gamma_cell, const Tensor& gates,
    const Tensor& normalized_hidden, const Tensor& normalized_cells, const Tensor& rstd_hidden,
    const Tensor& rstd_cells, const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
    const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
    const Mask& u_hidden, bool has_bias, bool batch_statistics, bool onednn) {
  const int64_t H = gates.size(2) / 4;
  const Tensor no_tensor;
  const Tensor& gh = grad_hidden.has_value() ? *grad_hidden : no_tensor;
  const Tensor& gc = grad_cells.has_value() ? *grad_cells : no_tensor;
  const bool contiguous = gates.is_contiguous() && normalized_hidden.is_contiguous() &&
                          normalized_cells.is_contiguous() && rstd_hidden.is_contiguous() &&
                          rstd_cells.is_contiguous() && tanh_cells.is_contiguous() && cells.is_contiguous() &&
                          hidden.is_contiguous();
  if (contiguous && fast::fits(gates, {&gh, &gc, &w_hh, &h0, &c0, &gamma_hidden, &gamma_cell, &normalized_hidden,
                                       &normalized_cells, &rstd_hidden, &rstd_cells, &tanh_cells, &cells, &hidden},
                               {&m_hidden_input, &m_candidate, &m_cell, &u_cell, &u_hidden}, gates.size(0),
                               gates.size(1), H)) {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      return fast::batchnorm_lstm_backward<T>(grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, gates,
                                              normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells,
                                              cells, hidden, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden,
                                              has_bias, batch_statistics, onednn);
    };
    return gates.scalar_type() == at::kFloat ? run(float()) : run(double());
  }
  return batchnorm_lstm_backward_generic(grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, gates,
                                         normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells, cells,
                                         hidden, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, has_bias,
                                         batch_statistics, onednn);
}

// ---- Masks ----------------------------------------------------------------------------------
// A dropout mask for the CPU: `kept_value` with probability `keep_probability`, else 0, drawn in
// parallel. torch.rand runs one Mersenne Twister serially (about 2 ns an element here, two masks
// of (100, 32, 1000) cost as much as a tenth of an LSTM step); this draws from the counter-based
// Philox4x32-10 generator, one independent subsequence per block of 16,384 elements, so blocks
// can be split over threads and the result does not depend on how many there are. The Philox key
// is one 64-bit draw from torch's default CPU generator, so torch.manual_seed (and Lightning's
// seed_everything) makes the masks reproducible. An element is kept when its 32-bit draw u
// satisfies u < round(keep_probability · 2^32): the probability is exact to 2^-33, 0 and 1 exactly.
namespace fast {

constexpr int64_t kMaskBlock = 16384;  // elements per Philox subsequence

// The 32-bit draws of subsequence `block` of Philox4x32-10 with this key, positions 0 .. count-1
// rounded up to a whole number of kDrawsPerGroup (`out` must hold that many): the stream of
// at::Philox4_32(key, block, 0). tests/test_native.py checks it against Random123's known answer
// and against the generator written from its definition. Sixteen counters at a time, as plain
// arrays, so that the rounds vectorize.
constexpr int kPhiloxLanes = 16;
constexpr int64_t kDrawsPerGroup = 4 * kPhiloxLanes;
static_assert(kMaskBlock % kDrawsPerGroup == 0, "a mask block holds whole groups of draws");

REGBENCH_INLINE void philox_draws(uint64_t key, uint64_t block, int64_t count, uint32_t* out) {
  constexpr uint32_t kMultiplierA = 0xD2511F53, kMultiplierB = 0xCD9E8D57;
  constexpr uint32_t kKeyStepA = 0x9E3779B9, kKeyStepB = 0xBB67AE85;
  constexpr uint64_t kLow = 0xFFFFFFFFu;
  for (int64_t group = 0; group * 4 < count; group += kPhiloxLanes) {
    // 32-bit words held in 64-bit lanes, masked to their low half before each product, so that the
    // compiler uses a vector multiply.
    uint64_t c0[kPhiloxLanes], c1[kPhiloxLanes], c2[kPhiloxLanes], c3[kPhiloxLanes];
    for (int lane = 0; lane < kPhiloxLanes; ++lane) {
      const uint64_t counter = static_cast<uint64_t>(group + lane);
      c0[lane] = counter & kLow, c1[lane] = counter >> 32, c2[lane] = block & kLow, c3[lane] = block >> 32;
    }
    uint64_t k0 = key & kLow, k1 = key >> 32;
    for (int round = 0; round < 10; ++round) {
      for (int lane = 0; lane < kPhiloxLanes; ++lane) {
        const uint64_t product_a = (c0[lane] & kLow) * kMultiplierA;
        const uint64_t product_b = (c2[lane] & kLow) * kMultiplierB;
        const uint64_t next0 = (product_b >> 32) ^ c1[lane] ^ k0;
        const uint64_t next2 = (product_a >> 32) ^ c3[lane] ^ k1;
        c1[lane] = product_b & kLow;
        c3[lane] = product_a & kLow;
        c0[lane] = next0, c2[lane] = next2;
      }
      k0 = (k0 + kKeyStepA) & kLow, k1 = (k1 + kKeyStepB) & kLow;
    }
    uint32_t* group_out = out + group * 4;
    for (int lane = 0; lane < kPhiloxLanes; ++lane) {
      group_out[4 * lane] = static_cast<uint32_t>(c0[lane]), group_out[4 * lane + 1] = static_cast<uint32_t>(c1[lane]);
      group_out[4 * lane + 2] = static_cast<uint32_t>(c2[lane]), group_out[4 * lane + 3] = static_cast<uint32_t>(c3[lane]);
    }
  }
}

// out[i] = kept where draw i of the block is below the threshold, else 0; a threshold of 2^32
// (keep everything) is passed as keep_all, so that the comparison stays in 32 bits and vectorizes.
template <typename T>
REGBENCH_INLINE void mask_block(uint64_t key, uint64_t block, int64_t count, uint32_t threshold, bool keep_all, T kept,
                                T* out) {
  uint32_t draws[kMaskBlock];
  philox_draws(key, block, count, draws);
  for (int64_t i = 0; i < count; ++i) out[i] = (keep_all || draws[i] < threshold) ? kept : T(0);
}
REGBENCH_CLONES void run_mask_block(uint64_t key, uint64_t block, int64_t count, uint32_t threshold, bool keep_all,
                                    float kept, float* out) {
  mask_block(key, block, count, threshold, keep_all, kept, out);
}
void run_mask_block(uint64_t key, uint64_t block, int64_t count, uint32_t threshold, bool keep_all, double kept,
                    double* out) {
  mask_block(key, block, count, threshold, keep_all, kept, out);
}

}  // namespace fast

Tensor bernoulli_mask(std::vector<int64_t> sizes, double keep_probability, double kept_value, at::ScalarType dtype) {
  TORCH_CHECK(keep_probability >= 0.0 && keep_probability <= 1.0, "keep_probability must be in [0, 1], got ",
              keep_probability);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "bernoulli_mask draws float32 or float64 masks, got ", dtype);
  Tensor mask = at::empty(sizes, at::TensorOptions().dtype(dtype));
  uint64_t key;
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    key = at::check_generator<at::CPUGeneratorImpl>(generator)->random64();
  }
  const uint64_t threshold = static_cast<uint64_t>(std::llround(std::ldexp(keep_probability, 32)));
  const int64_t n = mask.numel();
  AT_DISPATCH_FLOATING_TYPES(dtype, "bernoulli_mask", [&] {
    scalar_t* out = mask.data_ptr<scalar_t>();
    const scalar_t kept = static_cast<scalar_t>(kept_value);
    at::parallel_for(0, (n + fast::kMaskBlock - 1) / fast::kMaskBlock, 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        const int64_t first = block * fast::kMaskBlock, count = std::min(n - first, fast::kMaskBlock);
        fast::run_mask_block(key, static_cast<uint64_t>(block), count, static_cast<uint32_t>(threshold),
                             threshold > 0xFFFFFFFFu, kept, out + first);
      }
    });
  });
  return mask;
}

// The first `count` draws of one subsequence, for the tests.
Tensor philox_draws(uint64_t key, uint64_t block, int64_t count) {
  TORCH_CHECK(count >= 0 && count <= fast::kMaskBlock, "count must be in [0, ", fast::kMaskBlock, "]");
  Tensor draws = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  std::vector<uint32_t> values(fast::kMaskBlock);
  fast::philox_draws(key, block, count, values.data());
  for (int64_t i = 0; i < count; ++i) draws.data_ptr<int64_t>()[i] = values[i];
  return draws;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bernoulli_mask", &bernoulli_mask);
  m.def("philox_draws", &philox_draws);
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
  // The loops made of ATen operations (any device and dtype), for the tests and for comparison.
  m.def("lstm_forward_generic", &lstm_forward_generic);
  m.def("lstm_backward_generic", &lstm_backward_generic);
  m.def("gru_forward_generic", &gru_forward_generic);
  m.def("gru_backward_generic", &gru_backward_generic);
  m.def("batchnorm_lstm_forward_generic", &batchnorm_lstm_forward_generic);
  m.def("batchnorm_lstm_backward_generic", &batchnorm_lstm_backward_generic);
  m.def("batchnorm_lstm_forward", &batchnorm_lstm_forward);
  m.def("batchnorm_lstm_backward", &batchnorm_lstm_backward);
}
