// The tanh-RNN's loops: the fast CPU rows (float32 and float64), the generic ATen loops (any
// device and dtype, any mask shape), and the entry points that pick one of them.
//
//   a_t = tanh(xp_t + b + (h_{t-1} ⊙ m_hidden_input_t) W^T)
//   h_t = u_t ⊙ (a_t ⊙ m_candidate_t) + (1 - u_t) ⊙ h_{t-1}        (an absent mask is 1)
//
// No a_t is kept for the backward pass: u⊙m⊙a_t = h_t - (1-u)⊙h_{t-1} is there in the hidden states,
// and ∂h_t/∂(pre-activation) = u⊙m⊙(1 - a_t²) needs a_t only where u⊙m ≠ 0 (recovered_coefficient),
// so the layer keeps one sequence-sized tensor less than it would, about a third of its memory.
//
// The same structure as the LSTM's and GRU's (lstm_gru.cpp, generic_loops.cpp), for the same
// reason: a step of the generic loop is half a dozen ATen calls, each a dispatch and a pass over
// memory, where the fast one is one product and one pass over the rows. Both compute what
// rnn_forward and rnn_backward in fused.py compute; tests/test_native.py checks that they agree.
#include "rows.h"

namespace {

// u⊙m⊙(1 - a²) from x = u⊙m⊙a = h_t - (1-u)⊙h_{t-1} and um = u⊙m: 0 where um is (a unit that kept
// its state, or a dropped candidate), else with a = x/um clamped to tanh's range, which bounds the
// error of the recovered coefficient by about 2 ulp of h whatever um is.
template <typename T>
REGBENCH_INLINE T recovered_coefficient(T x, T um) {
  T a = um != T(0) ? x / um : T(0);
  a = a > T(1) ? T(1) : (a < T(-1) ? T(-1) : a);
  return um * (T(1) - a * a);
}

}  // namespace

// -- the generic loops: fused.py's operation for operation ------------------------------------------

Tensor rnn_forward_generic(const Tensor& xp_in, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = xp_in.size(0), batch = xp_in.size(1), H = xp_in.size(2);
  const Tensor xp = b_hh.has_value() && b_hh->defined() ? xp_in + *b_hh : xp_in;
  Tensor hidden = at::empty({steps, batch, H}, xp.options());
  Tensor a_t = at::empty({batch, H}, xp.options());  // this step's activation, before the candidate mask
  RecurrentProduct recurrent_product(w_hh, batch, std::nullopt, onednn);
  Tensor h = h0;
  for (int64_t t = 0; t < steps; ++t) {
    at::add_out(a_t, xp.select(0, t), recurrent_product(masked(h, at_step(m_hidden_input, t)))).tanh_();
    Tensor u_h = at_step(u_hidden, t), m = at_step(m_candidate, t);
    Tensor hidden_t = hidden.select(0, t);
    if (u_h.defined()) {
      at::lerp_out(hidden_t, h, masked(a_t, m), u_h.expand_as(h));
    } else if (m.defined()) {
      at::mul_out(hidden_t, a_t, m);
    } else {
      hidden_t.copy_(a_t);
    }
    h = hidden_t;
  }
  return hidden;
}

std::vector<std::optional<Tensor>> rnn_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh,
                                                        const Tensor& h0, const Tensor& hidden,
                                                        const Mask& m_hidden_input, const Mask& m_candidate,
                                                        const Mask& u_hidden, bool has_bias, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = hidden.size(0), batch = hidden.size(1);
  // ∂h_t/∂(pre-activation) = u⊙m⊙(1 - a_t²) of all steps, a_t recovered from the states (see the top).
  Tensor coefficient;
  const bool has_u = u_hidden.has_value() && u_hidden->defined(), has_m = m_candidate.has_value() && m_candidate->defined();
  if (!has_u && !has_m) {
    coefficient = 1 - hidden * hidden;
  } else {
    const Tensor um = has_u ? masked(*u_hidden, m_candidate) : *m_candidate;
    const Tensor x = has_u ? hidden - (1 - *u_hidden) * previous(h0, hidden) : hidden;
    const Tensor a = at::where(um != 0, x / um, at::zeros_like(x)).clamp_(-1, 1);
    coefficient = um * (1 - a * a);
  }
  Tensor d_pre = at::empty(hidden.sizes(), hidden.options());
  RecurrentProduct backward_product(w_hh.t(), batch, std::nullopt, onednn);
  Tensor d_h = at::zeros_like(h0);
  for (int64_t t = steps - 1; t >= 0; --t) {
    d_h = d_h + grad_hidden.select(0, t);
    Tensor u_h = at_step(u_hidden, t);
    Tensor d_pre_t = d_pre.select(0, t);
    at::mul_out(d_pre_t, d_h, coefficient.select(0, t));
    Tensor d_h_previous = backward_product(d_pre_t);
    Tensor m = at_step(m_hidden_input, t);
    if (m.defined()) d_h_previous.mul_(m);
    if (u_h.defined()) d_h_previous.addcmul_(d_h, 1 - u_h);
    d_h = d_h_previous;
  }
  auto [grad_w, grad_b] = weight_grads(d_pre, h0, hidden, m_hidden_input, has_bias);
  return {d_pre, grad_w, grad_b, d_h};
}

// -- the fast rows --------------------------------------------------------------------------------

namespace fast {

// One step of one batch row; as in lstm_gru.cpp every pointer is valid (an absent mask is a row
// of ones, an absent bias or gradient a row of zeros), so the loop has no branches.
template <typename T>
struct RNNForwardRow {
  const T *recurrent, *input, *bias, *h_prev, *m_candidate, *u_hidden, *m_next;
  T *hidden, *next_input;  // next_input: h_t ⊙ m_hidden_input[t+1], or null
};

template <typename T>
REGBENCH_INLINE void rnn_forward_row(int64_t H, const RNNForwardRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    // (xp + b) + recurrent: the Python and generic loops' order of additions.
    const T activation = tanh_of((a.input[j] + a.bias[j]) + a.recurrent[j]);
    a.hidden[j] = a.u_hidden[j] * (activation * a.m_candidate[j]) + (T(1) - a.u_hidden[j]) * a.h_prev[j];
  }
  if (a.next_input != nullptr) {
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = 0; j < H; ++j) a.next_input[j] = a.hidden[j] * a.m_next[j];
  }
}

template <typename T>
struct RNNBackwardRow {
  // d_h_t = (∂L/∂h_t from step t+1's product) ⊙ m_hidden_input[t+1] + carry + grad_hidden[t]
  const T *d_product, *m_next, *grad_h, *hidden, *h_prev, *m_candidate, *u_hidden;
  T *d_pre, *carry;  // d_pre: this step's row of ∂L/∂(pre-activation); carry: in t+1's, out t's
};

template <typename T>
REGBENCH_INLINE void rnn_backward_row(int64_t H, const RNNBackwardRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T d_h = a.d_product[j] * a.m_next[j] + a.carry[j] + a.grad_h[j];
    const T u_h = a.u_hidden[j];
    a.d_pre[j] = d_h * recovered_coefficient(a.hidden[j] - (T(1) - u_h) * a.h_prev[j], u_h * a.m_candidate[j]);
    a.carry[j] = d_h * (T(1) - u_h);
  }
}

// float32: one copy per instruction set (REGBENCH_CLONES); float64: plain.
REGBENCH_CLONES void run_row(int64_t H, const RNNForwardRow<float>& a) { rnn_forward_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const RNNBackwardRow<float>& a) { rnn_backward_row(H, a); }
void run_row(int64_t H, const RNNForwardRow<double>& a) { rnn_forward_row(H, a); }
void run_row(int64_t H, const RNNBackwardRow<double>& a) { rnn_backward_row(H, a); }

template <typename T>
Tensor rnn_forward(const Tensor& xp_in, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                   const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn,
                   at::ArrayRef<double> kept_values) {
  at::NoGradGuard no_grad;
  // Read in place whatever the step and batch strides, as the LSTM's and GRU's do.
  const Tensor xp = xp_in.stride(2) == 1 ? xp_in : xp_in.contiguous();
  const int64_t xp_step_stride = xp.stride(0), xp_row_stride = xp.stride(1);
  const int64_t steps = xp.size(0), batch = xp.size(1), H = xp.size(2);
  auto options = xp.options();
  const SequenceRows<T> mh(m_hidden_input, kept_at(kept_values, 0)), mc(m_candidate, kept_at(kept_values, 1)),
      uh(u_hidden, kept_at(kept_values, 2));
  Tensor hidden = at::empty({steps, batch, H}, options);
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  const Tensor bias = b_hh.has_value() && b_hh->defined() ? b_hh->contiguous() : Tensor();
  const T* bias_data = bias.defined() ? bias.data_ptr<T>() : zeros.data();
  const Tensor h0c = h0.contiguous();
  Tensor next_input =
      mh.present() ? masked(h0c, at_step(m_hidden_input, 0, kept_at(kept_values, 0), h0c.scalar_type())).contiguous() : Tensor();
  const int64_t block = row_block(batch, H, sizeof(T), 1);
  RecurrentProduct recurrent_product(w_hh, block, std::nullopt, onednn);
  const T* xp_data = xp.data_ptr<T>();
  T* hidden_data = hidden.data_ptr<T>();
  forward_time_loop<T>(h0c, hidden, next_input, mh.present(), recurrent_product, block, H, 3 * H,
                       [&](int64_t t, int64_t b, const T* rec, const T* h_prev, T* next, T* scratch) {
    RNNForwardRow<T> row{rec,
                         xp_data + t * xp_step_stride + b * xp_row_stride,
                         bias_data,
                         h_prev,
                         mc.row(t, b, H, ones.data(), scratch),
                         uh.row(t, b, H, ones.data(), scratch + H),
                         next ? mh.row(t + 1, b, H, ones.data(), scratch + 2 * H) : nullptr,
                         hidden_data + (t * batch + b) * H,
                         next};
    run_row(H, row);
  });
  return hidden;
}

template <typename T>
std::vector<std::optional<Tensor>> rnn_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn, at::ArrayRef<double> kept_values) {
  at::NoGradGuard no_grad;
  const int64_t steps = hidden.size(0), batch = hidden.size(1), H = hidden.size(2);
  const SequenceRows<T> gh(grad_hidden), mh(m_hidden_input, kept_at(kept_values, 0)),
      mc(m_candidate, kept_at(kept_values, 1)), uh(u_hidden, kept_at(kept_values, 2));
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  auto options = hidden.options();
  const Tensor h0c = h0.contiguous();
  const T* h0_data = h0c.data_ptr<T>();
  const T* hidden_data = hidden.data_ptr<T>();
  // ∂L/∂(pre-activations) of all steps, transposed (column t·B + b is row b of step t), as the GRU's:
  // the weight gradient is then one product of two row-major matrices.
  Tensor d_pre_t = at::empty({H, steps * batch}, options);
  Tensor d_pre_step = at::empty({batch, H}, options);
  Tensor carry = at::zeros({batch, H}, options);
  Tensor d_product = at::zeros({batch, H}, options);  // after the loop: ∂L/∂(masked h0) from step 0's product
  const int64_t block = row_block(batch, H, sizeof(T), 1);
  // The product, its packed weight as large as the weight, is a temporary: freed before the
  // weight gradient is made.
  backward_time_loop<T>(steps, batch, block, H, RecurrentProduct(w_hh.t(), block, std::nullopt, onednn),
                        d_pre_step, d_product,
                        [&](int64_t t, int64_t first, int64_t last, const T* product) {
    std::vector<T> scratch(4 * H);
    for (int64_t b = first; b < last; ++b) {
      RNNBackwardRow<T> row{product ? product + b * H : zeros.data(),
                            product ? mh.row(t + 1, b, H, ones.data(), scratch.data()) : ones.data(),
                            gh.row(t, b, H, zeros.data(), scratch.data() + H),
                            hidden_data + (t * batch + b) * H,
                            (t == 0 ? h0_data : hidden_data + (t - 1) * batch * H) + b * H,
                            mc.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                            uh.row(t, b, H, ones.data(), scratch.data() + 3 * H),
                            d_pre_step.data_ptr<T>() + b * H,
                            carry.data_ptr<T>() + b * H};
      run_row(H, row);
    }
    transpose_rows(d_pre_step.data_ptr<T>() + first * H, H, last - first, H,
                   d_pre_t.data_ptr<T>() + t * batch + first, steps * batch);
  });
  Tensor d_h0 = masked(d_product, at_step(m_hidden_input, 0, kept_at(kept_values, 0), hidden.scalar_type())) + carry;
  Tensor grad_w = recurrent_weight_gradient<T>(d_pre_t, h0, hidden, mh);
  std::optional<Tensor> grad_b;
  if (has_bias) grad_b = d_pre_t.sum(1);
  // The gradient of xp as a (T, B, H) view of the transposed buffer, as the LSTM's and GRU's.
  Tensor d_pre = d_pre_t.view({H, steps, batch}).permute({1, 2, 0});
  return {d_pre, grad_w, grad_b, d_h0};
}

}  // namespace fast

// -- the entry points: the fast rows where the arguments fit them, else the generic loops -----------

Tensor rnn_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                   const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn,
                   at::ArrayRef<double> kept_values) {
  const Tensor no_tensor;
  if (fast::fits(xp, {&w_hh, b_hh.has_value() ? &*b_hh : &no_tensor, &h0}, {&m_hidden_input, &m_candidate, &u_hidden},
                 xp.size(0), xp.size(1), xp.size(2), /*compact_masks=*/true)) {
    if (xp.scalar_type() == at::kFloat)
      return fast::rnn_forward<float>(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values);
    return fast::rnn_forward<double>(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values);
  }
  return rnn_forward_generic(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values);
}

Tensor rnn_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn,
                           at::ArrayRef<double> kept_values) {
  const auto dtype = xp.scalar_type();
  return rnn_forward_generic(xp, w_hh, b_hh, h0, expanded(m_hidden_input, kept_at(kept_values, 0), dtype),
                             expanded(m_candidate, kept_at(kept_values, 1), dtype),
                             expanded(u_hidden, kept_at(kept_values, 2), dtype), onednn);
}

std::vector<std::optional<Tensor>> rnn_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn, at::ArrayRef<double> kept_values) {
  if (fast::fits(hidden, {&grad_hidden, &w_hh, &h0}, {&m_hidden_input, &m_candidate, &u_hidden}, hidden.size(0),
                 hidden.size(1), hidden.size(2), /*compact_masks=*/true) &&
      hidden.is_contiguous()) {
    if (hidden.scalar_type() == at::kFloat)
      return fast::rnn_backward<float>(grad_hidden, w_hh, h0, hidden, m_hidden_input, m_candidate, u_hidden, has_bias,
                                       onednn, kept_values);
    return fast::rnn_backward<double>(grad_hidden, w_hh, h0, hidden, m_hidden_input, m_candidate, u_hidden, has_bias,
                                      onednn, kept_values);
  }
  return rnn_backward_generic(grad_hidden, w_hh, h0, hidden, m_hidden_input, m_candidate, u_hidden, has_bias, onednn,
                              kept_values);
}

std::vector<std::optional<Tensor>> rnn_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh,
                                                        const Tensor& h0, const Tensor& hidden,
                                                        const Mask& m_hidden_input, const Mask& m_candidate,
                                                        const Mask& u_hidden, bool has_bias, bool onednn,
                                                        at::ArrayRef<double> kept_values) {
  const auto dtype = hidden.scalar_type();
  return rnn_backward_generic(grad_hidden, w_hh, h0, hidden, expanded(m_hidden_input, kept_at(kept_values, 0), dtype),
                              expanded(m_candidate, kept_at(kept_values, 1), dtype),
                              expanded(u_hidden, kept_at(kept_values, 2), dtype), has_bias, onednn);
}
