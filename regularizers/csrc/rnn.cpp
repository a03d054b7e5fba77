// The tanh-RNN's loops: the fast CPU rows (float32 and float64), the generic ATen loops (any
// device and dtype, any mask shape), and the entry points that pick one of them.
//
//   a_t = tanh(xp_t + b + (h_{t-1} ⊙ m_hidden_input_t) W^T)
//   h_t = u_t ⊙ (a_t ⊙ m_candidate_t) + (1 - u_t) ⊙ h_{t-1}        (an absent mask is 1)
//
// The same structure as the LSTM's and GRU's (lstm_gru.cpp, generic_loops.cpp), for the same
// reason: a step of the generic loop is half a dozen ATen calls, each a dispatch and a pass over
// memory, where the fast one is one product and one pass over the rows. Both compute what
// rnn_forward and rnn_backward in fused.py compute; tests/test_native.py checks that they agree.
#include "rows.h"

// -- the generic loops: fused.py's operation for operation ------------------------------------------

std::vector<Tensor> rnn_forward_generic(const Tensor& xp_in, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                        const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                        const Mask& u_hidden, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = xp_in.size(0), batch = xp_in.size(1), H = xp_in.size(2);
  const Tensor xp = b_hh.has_value() && b_hh->defined() ? xp_in + *b_hh : xp_in;
  Tensor activations = at::empty({steps, batch, H}, xp.options());  // before the candidate mask
  Tensor hidden = at::empty({steps, batch, H}, xp.options());
  RecurrentProduct recurrent_product(w_hh, batch, std::nullopt, onednn);
  Tensor h = h0;
  for (int64_t t = 0; t < steps; ++t) {
    Tensor a_t = activations.select(0, t);
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
  return {hidden, activations};
}

std::vector<std::optional<Tensor>> rnn_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh,
                                                        const Tensor& h0, const Tensor& activations,
                                                        const Tensor& hidden, const Mask& m_hidden_input,
                                                        const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                        bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = activations.size(0), batch = activations.size(1);
  Tensor coefficient = masked(1 - activations * activations, m_candidate);  // ∂ĥ/∂(pre-activation)
  Tensor d_pre = at::empty(activations.sizes(), activations.options());
  RecurrentProduct backward_product(w_hh.t(), batch, std::nullopt, onednn);
  Tensor d_h = at::zeros_like(h0);
  for (int64_t t = steps - 1; t >= 0; --t) {
    d_h = d_h + grad_hidden.select(0, t);
    Tensor u_h = at_step(u_hidden, t);
    Tensor d_pre_t = d_pre.select(0, t);
    at::mul_out(d_pre_t, u_h.defined() ? d_h * u_h : d_h, coefficient.select(0, t));
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
  T *activation, *hidden, *next_input;  // next_input: h_t ⊙ m_hidden_input[t+1], or null
};

template <typename T>
REGBENCH_INLINE void rnn_forward_row(int64_t H, const RNNForwardRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    // (xp + b) + recurrent: the Python and generic loops' order of additions.
    const T activation = tanh_of((a.input[j] + a.bias[j]) + a.recurrent[j]);
    a.activation[j] = activation;
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
  const T *d_product, *m_next, *grad_h, *activation, *m_candidate, *u_hidden;
  T *d_pre, *carry;  // d_pre: this step's row of ∂L/∂(pre-activation); carry: in t+1's, out t's
};

template <typename T>
REGBENCH_INLINE void rnn_backward_row(int64_t H, const RNNBackwardRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < H; ++j) {
    const T d_h = a.d_product[j] * a.m_next[j] + a.carry[j] + a.grad_h[j];
    const T u_h = a.u_hidden[j], activation = a.activation[j];
    a.d_pre[j] = (d_h * u_h) * ((T(1) - activation * activation) * a.m_candidate[j]);
    a.carry[j] = d_h * (T(1) - u_h);
  }
}

// float32: one copy per instruction set (REGBENCH_CLONES); float64: plain.
REGBENCH_CLONES void run_row(int64_t H, const RNNForwardRow<float>& a) { rnn_forward_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const RNNBackwardRow<float>& a) { rnn_backward_row(H, a); }
void run_row(int64_t H, const RNNForwardRow<double>& a) { rnn_forward_row(H, a); }
void run_row(int64_t H, const RNNBackwardRow<double>& a) { rnn_backward_row(H, a); }

template <typename T>
std::vector<Tensor> rnn_forward(const Tensor& xp_in, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                const Mask& u_hidden, bool onednn) {
  at::NoGradGuard no_grad;
  // Read in place whatever the step and batch strides, as the LSTM's and GRU's do.
  const Tensor xp = xp_in.stride(2) == 1 ? xp_in : xp_in.contiguous();
  const int64_t xp_step_stride = xp.stride(0), xp_row_stride = xp.stride(1);
  const int64_t steps = xp.size(0), batch = xp.size(1), H = xp.size(2);
  auto options = xp.options();
  const SequenceRows<T> mh(m_hidden_input), mc(m_candidate), uh(u_hidden);
  Tensor hidden = at::empty({steps, batch, H}, options);
  // With no candidate or update mask h_t is a_t itself: the rows write a_t into `hidden` alone and
  // `activations` comes back empty (the op's outputs may not alias; the caller reads a_t from
  // `hidden`), a sequence's worth of memory less.
  const bool separate = mc.present() || uh.present();
  Tensor activations = at::empty({separate ? steps : 0, batch, H}, options);
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  const Tensor bias = b_hh.has_value() && b_hh->defined() ? b_hh->contiguous() : Tensor();
  const T* bias_data = bias.defined() ? bias.data_ptr<T>() : zeros.data();
  const Tensor h0c = h0.contiguous();
  Tensor next_input = mh.present() ? masked(h0c, at_step(m_hidden_input, 0)).contiguous() : Tensor();
  const int64_t block = row_block(batch, H, sizeof(T), 1);
  RecurrentProduct recurrent_product(w_hh, block, std::nullopt, onednn);
  const T* xp_data = xp.data_ptr<T>();
  T* hidden_data = hidden.data_ptr<T>();
  T* activations_data = separate ? activations.data_ptr<T>() : hidden_data;
  forward_time_loop<T>(h0c, hidden, next_input, mh.present(), recurrent_product, block, H, 3 * H,
                       [&](int64_t t, int64_t b, const T* rec, const T* h_prev, T* next, T* scratch) {
    RNNForwardRow<T> row{rec,
                         xp_data + t * xp_step_stride + b * xp_row_stride,
                         bias_data,
                         h_prev,
                         mc.row(t, b, H, ones.data(), scratch),
                         uh.row(t, b, H, ones.data(), scratch + H),
                         next ? mh.row(t + 1, b, H, ones.data(), scratch + 2 * H) : nullptr,
                         activations_data + (t * batch + b) * H,
                         hidden_data + (t * batch + b) * H,
                         next};
    run_row(H, row);
  });
  return {hidden, activations};
}

template <typename T>
std::vector<std::optional<Tensor>> rnn_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden,
                                                const Mask& m_hidden_input, const Mask& m_candidate,
                                                const Mask& u_hidden, bool has_bias, bool onednn) {
  at::NoGradGuard no_grad;
  const int64_t steps = activations.size(0), batch = activations.size(1), H = activations.size(2);
  const SequenceRows<T> gh(grad_hidden), mh(m_hidden_input), mc(m_candidate), uh(u_hidden);
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  auto options = activations.options();
  // ∂L/∂(pre-activations) of all steps, transposed (column t·B + b is row b of step t), as the GRU's:
  // the weight gradient is then one product of two row-major matrices.
  Tensor d_pre_t = at::empty({H, steps * batch}, options);
  Tensor d_pre_step = at::empty({batch, H}, options);
  Tensor carry = at::zeros({batch, H}, options);
  Tensor d_product = at::zeros({batch, H}, options);  // after the loop: ∂L/∂(masked h0) from step 0's product
  const int64_t block = row_block(batch, H, sizeof(T), 1);
  RecurrentProduct backward_product(w_hh.t(), block, std::nullopt, onednn);
  backward_time_loop<T>(steps, batch, block, H, backward_product, d_pre_step, d_product,
                        [&](int64_t t, int64_t first, int64_t last, const T* product) {
    std::vector<T> scratch(4 * H);
    for (int64_t b = first; b < last; ++b) {
      RNNBackwardRow<T> row{product ? product + b * H : zeros.data(),
                            product ? mh.row(t + 1, b, H, ones.data(), scratch.data()) : ones.data(),
                            gh.row(t, b, H, zeros.data(), scratch.data() + H),
                            activations.data_ptr<T>() + (t * batch + b) * H,
                            mc.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                            uh.row(t, b, H, ones.data(), scratch.data() + 3 * H),
                            d_pre_step.data_ptr<T>() + b * H,
                            carry.data_ptr<T>() + b * H};
      run_row(H, row);
    }
    transpose_rows(d_pre_step.data_ptr<T>() + first * H, H, last - first, H,
                   d_pre_t.data_ptr<T>() + t * batch + first, steps * batch);
  });
  Tensor d_h0 = masked(d_product, at_step(m_hidden_input, 0)) + carry;
  Tensor grad_w = recurrent_weight_gradient<T>(d_pre_t, h0, hidden, mh);
  std::optional<Tensor> grad_b;
  if (has_bias) grad_b = d_pre_t.sum(1);
  // The gradient of xp as a (T, B, H) view of the transposed buffer, as the LSTM's and GRU's.
  Tensor d_pre = d_pre_t.view({H, steps, batch}).permute({1, 2, 0});
  return {d_pre, grad_w, grad_b, d_h0};
}

}  // namespace fast

// -- the entry points: the fast rows where the arguments fit them, else the generic loops -----------

std::vector<Tensor> rnn_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                const Mask& u_hidden, bool onednn) {
  const Tensor no_tensor;
  if (fast::fits(xp, {&w_hh, b_hh.has_value() ? &*b_hh : &no_tensor, &h0}, {&m_hidden_input, &m_candidate, &u_hidden},
                 xp.size(0), xp.size(1), xp.size(2))) {
    if (xp.scalar_type() == at::kFloat)
      return fast::rnn_forward<float>(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn);
    return fast::rnn_forward<double>(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn);
  }
  return rnn_forward_generic(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn);
}

std::vector<std::optional<Tensor>> rnn_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden,
                                                const Mask& m_hidden_input, const Mask& m_candidate,
                                                const Mask& u_hidden, bool has_bias, bool onednn) {
  if (fast::fits(activations, {&grad_hidden, &w_hh, &h0, &hidden}, {&m_hidden_input, &m_candidate, &u_hidden},
                 activations.size(0), activations.size(1), activations.size(2)) &&
      activations.is_contiguous() && hidden.is_contiguous()) {
    if (activations.scalar_type() == at::kFloat)
      return fast::rnn_backward<float>(grad_hidden, w_hh, h0, activations, hidden, m_hidden_input, m_candidate,
                                       u_hidden, has_bias, onednn);
    return fast::rnn_backward<double>(grad_hidden, w_hh, h0, activations, hidden, m_hidden_input, m_candidate,
                                      u_hidden, has_bias, onednn);
  }
  return rnn_backward_generic(grad_hidden, w_hh, h0, activations, hidden, m_hidden_input, m_candidate, u_hidden,
                              has_bias, onednn);
}
