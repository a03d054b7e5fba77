// The fast LSTM and GRU loops (CPU, float32 and float64), and the entry points that pick them or
// the generic loops (generic_loops.cpp).
//
// Why: at the benchmark's shapes the generic loops spend most of a step's time in a dozen
// separate ATen operations (a dispatch and a full pass over memory each). Here a step is one
// matrix product (oneDNN, weight packed once) and one hand-written loop over the batch's rows that
// does every element-wise operation of the step, reading each value once. It runs on CPU tensors
// of float32 (with a vectorizable exp) and float64 (with std::exp, for gradcheck); anything else
// (CUDA, half precision, unusual mask shapes) takes the generic loops. Same equations, same mask
// sites, same saved buffers as the generic loops; tests/test_native.py checks they agree.
#include "rows.h"

namespace fast {

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

template <typename T>
std::vector<Tensor> lstm_forward(const Tensor& xp_in, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                 const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                 const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell, const Mask& u_hidden,
                                 bool onednn, at::ArrayRef<double> kept_values) {
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
  const SequenceRows<T> mh(m_hidden_input, kept_at(kept_values, 0)), mc(m_candidate, kept_at(kept_values, 1)),
      mcell(m_cell, kept_at(kept_values, 2)), uc(u_cell, kept_at(kept_values, 3)), uh(u_hidden, kept_at(kept_values, 4));
  std::vector<T> ones(gate_width, T(1)), zeros(gate_width, T(0));
  const Tensor bias = b_hh.has_value() && b_hh->defined() ? b_hh->contiguous() : Tensor();
  const T* bias_data = bias.defined() ? bias.data_ptr<T>() : zeros.data();
  const Tensor h0c = h0.contiguous(), c0c = c0.contiguous();
  Tensor next_input =
      mh.present() ? masked(h0c, at_step(m_hidden_input, 0, kept_at(kept_values, 0), h0c.scalar_type())).contiguous() : Tensor();
  const int64_t block = row_block(batch, H, sizeof(T));
  RecurrentProduct recurrent_product(w_hh, block, std::nullopt, onednn);
  const T *xp_data = xp.data_ptr<T>(), *c0_data = c0c.data_ptr<T>();
  T *gates_data = gates.data_ptr<T>(), *cells_data = cells.data_ptr<T>();
  T *tanh_cells_data = tanh_cells.data_ptr<T>(), *hidden_data = hidden.data_ptr<T>();
  forward_time_loop<T>(h0c, hidden, next_input, mh.present(), recurrent_product, block, gate_width, 5 * H,
                       [&](int64_t t, int64_t b, const T* rec, const T* h_prev, T* next, T* scratch) {
    const int64_t row_h = (t * batch + b) * H;
    LSTMForwardRow<T> row{rec,
                          xp_data + t * xp_step_stride + b * xp_row_stride,
                          bias_data,
                          h_prev,
                          t == 0 ? c0_data + b * H : cells_data + row_h - batch * H,
                          mc.row(t, b, H, ones.data(), scratch),
                          mcell.row(t, b, H, ones.data(), scratch + H),
                          uc.row(t, b, H, ones.data(), scratch + 2 * H),
                          uh.row(t, b, H, ones.data(), scratch + 3 * H),
                          next ? mh.row(t + 1, b, H, ones.data(), scratch + 4 * H) : nullptr,
                          gates_data + (t * batch + b) * gate_width,
                          cells_data + row_h,
                          tanh_cells_data + row_h,
                          hidden_data + row_h,
                          next};
    run_row(H, row);
  });
  return {hidden, cells, gates, tanh_cells};
}

template <typename T>
std::vector<std::optional<Tensor>> lstm_backward(const std::optional<Tensor>& grad_hidden,
                                                 const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
                                                 const Tensor& h0, const Tensor& c0, const Tensor& gates,
                                                 const Tensor& cells, const Tensor& tanh_cells, const Tensor& hidden,
                                                 const Mask& m_hidden_input, const Mask& m_candidate,
                                                 const Mask& m_cell, const Mask& u_cell, const Mask& u_hidden,
                                                 bool has_bias, bool onednn, at::ArrayRef<double> kept_values) {
  at::NoGradGuard no_grad;
  const int64_t steps = gates.size(0), batch = gates.size(1), gate_width = gates.size(2), H = gate_width / 4;
  const SequenceRows<T> gh(grad_hidden), gc(grad_cells);
  const SequenceRows<T> mh(m_hidden_input, kept_at(kept_values, 0)), mc(m_candidate, kept_at(kept_values, 1)),
      mcell(m_cell, kept_at(kept_values, 2)), uc(u_cell, kept_at(kept_values, 3)), uh(u_hidden, kept_at(kept_values, 4));
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  const Tensor c0c = c0.contiguous();
  auto options = gates.options();
  // ∂L/∂gates of all steps, transposed (column t·B + b is row b of step t): the weight gradient
  // is then one oneDNN product of two row-major matrices, with no large transpose after the loop.
  Tensor d_gates_t = at::empty({gate_width, steps * batch}, options);
  Tensor d_gates_step = at::empty({batch, gate_width}, options);
  Tensor d_c = at::zeros({batch, H}, options), carry = at::zeros({batch, H}, options);
  // ∂L/∂(masked h_t) from step t+1's recurrent product; after the loop, that of step 0 (for h0).
  Tensor d_product = at::zeros({batch, H}, options);
  const int64_t block = row_block(batch, H, sizeof(T));
  // The product, its packed weight as large as the weight, is a temporary: freed before the
  // weight gradient is made.
  backward_time_loop<T>(steps, batch, block, gate_width, RecurrentProduct(w_hh.t(), block, std::nullopt, onednn),
                        d_gates_step, d_product,
                        [&](int64_t t, int64_t first, int64_t last, const T* product) {
    const T* c_prev = t == 0 ? c0c.data_ptr<T>() : cells.data_ptr<T>() + (t - 1) * batch * H;
    std::vector<T> scratch(7 * H);
    for (int64_t b = first; b < last; ++b) {
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
    transpose_rows(d_gates_step.data_ptr<T>() + first * gate_width, gate_width, last - first, gate_width,
                   d_gates_t.data_ptr<T>() + t * batch + first, steps * batch);
  });
  Tensor d_h0 = masked(d_product, at_step(m_hidden_input, 0, kept_at(kept_values, 0), gates.scalar_type())) + carry;
  Tensor grad_w = recurrent_weight_gradient<T>(d_gates_t, h0, hidden, mh);
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
                                const Mask& u_hidden, bool onednn, at::ArrayRef<double> kept_values) {
  at::NoGradGuard no_grad;
  // Read in place whatever the step and batch strides (recurrent_batchnorm hands over a batch-major view).
  const Tensor xp = xp_in.stride(2) == 1 ? xp_in : xp_in.contiguous();
  const int64_t xp_step_stride = xp.stride(0), xp_row_stride = xp.stride(1);
  const int64_t steps = xp.size(0), batch = xp.size(1), gate_width = xp.size(2), H = gate_width / 3;
  auto options = xp.options();
  Tensor activations = at::empty({steps, batch, gate_width}, options);
  Tensor hidden_n = at::empty({steps, batch, H}, options);
  Tensor hidden = at::empty({steps, batch, H}, options);
  const SequenceRows<T> mh(m_hidden_input, kept_at(kept_values, 0)), mc(m_candidate, kept_at(kept_values, 1)),
      uh(u_hidden, kept_at(kept_values, 2));
  std::vector<T> ones(H, T(1));
  const Tensor h0c = h0.contiguous();
  Tensor next_input =
      mh.present() ? masked(h0c, at_step(m_hidden_input, 0, kept_at(kept_values, 0), h0c.scalar_type())).contiguous() : Tensor();
  const int64_t block = row_block(batch, H, sizeof(T));
  RecurrentProduct recurrent_product(w_hh, block, b_hh, onednn);
  const T* xp_data = xp.data_ptr<T>();
  T *activations_data = activations.data_ptr<T>(), *hidden_n_data = hidden_n.data_ptr<T>();
  T* hidden_data = hidden.data_ptr<T>();
  forward_time_loop<T>(h0c, hidden, next_input, mh.present(), recurrent_product, block, gate_width, 3 * H,
                       [&](int64_t t, int64_t b, const T* rec, const T* h_prev, T* next, T* scratch) {
    GRUForwardRow<T> row{rec,
                         xp_data + t * xp_step_stride + b * xp_row_stride,
                         h_prev,
                         mc.row(t, b, H, ones.data(), scratch),
                         uh.row(t, b, H, ones.data(), scratch + H),
                         next ? mh.row(t + 1, b, H, ones.data(), scratch + 2 * H) : nullptr,
                         activations_data + (t * batch + b) * gate_width,
                         hidden_n_data + (t * batch + b) * H,
                         hidden_data + (t * batch + b) * H,
                         next};
    run_row(H, row);
  });
  return {hidden, activations, hidden_n};
}

template <typename T>
std::vector<std::optional<Tensor>> gru_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden_n,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn, at::ArrayRef<double> kept_values) {
  at::NoGradGuard no_grad;
  const int64_t steps = activations.size(0), batch = activations.size(1), gate_width = activations.size(2),
                H = gate_width / 3;
  const SequenceRows<T> gh(grad_hidden);
  const Tensor h0c = h0.contiguous();
  const SequenceRows<T> mh(m_hidden_input, kept_at(kept_values, 0)), mc(m_candidate, kept_at(kept_values, 1)),
      uh(u_hidden, kept_at(kept_values, 2));
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  auto options = activations.options();
  // Transposed, as in the LSTM: column t·B + b is row b of step t.
  Tensor d_input_t = at::empty({gate_width, steps * batch}, options);
  Tensor d_input_step = at::empty({batch, gate_width}, options), d_recurrent = at::empty({batch, gate_width}, options);
  Tensor carry = at::zeros({batch, H}, options);
  Tensor d_product = at::zeros({batch, H}, options);  // after the loop: ∂L/∂(masked h0) from step 0's product
  const int64_t block = row_block(batch, H, sizeof(T));
  // The product, its packed weight as large as the weight, is a temporary: freed before the
  // weight gradient is made.
  backward_time_loop<T>(steps, batch, block, gate_width, RecurrentProduct(w_hh.t(), block, std::nullopt, onednn),
                        d_recurrent, d_product,
                        [&](int64_t t, int64_t first, int64_t last, const T* product) {
    const T* h_prev = t == 0 ? h0c.data_ptr<T>() : hidden.data_ptr<T>() + (t - 1) * batch * H;
    std::vector<T> scratch(4 * H);
    for (int64_t b = first; b < last; ++b) {
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
    transpose_rows(d_input_step.data_ptr<T>() + first * gate_width, gate_width, last - first, gate_width,
                   d_input_t.data_ptr<T>() + t * batch + first, steps * batch);
  });
  Tensor d_h0 = masked(d_product, at_step(m_hidden_input, 0, kept_at(kept_values, 0), activations.scalar_type())) + carry;
  Tensor d_rz_t = d_input_t.narrow(0, 0, 2 * H);
  Tensor grad_w = at::zeros({gate_width, H}, options);
  Tensor grad_w_rz = grad_w.narrow(0, 0, 2 * H), grad_w_n = grad_w.narrow(0, 2 * H, H);
  Tensor grad_b_n = at::zeros({H}, options);
  // The n rows' gradient flows through r: ∂L/∂W_hn = Σ (d_n ⊙ r)ᵀ h_{t-1}. Built chunk by chunk of
  // the recurrent inputs, so that d_n ⊙ r never exists for the whole sequence at once (the GRU's
  // memory is tight; its time is not).
  const int64_t columns = steps * batch;
  const T* d_n_t = d_input_t.data_ptr<T>() + 2 * H * columns;
  const T* r = activations.data_ptr<T>();
  Tensor d_recurrent_n;
  for_each_recurrent_input_chunk<T>(h0, hidden, mh, gate_width, [&](int64_t first_step, int64_t count, const Tensor& rows) {
    const int64_t first = first_step * batch, width = count * batch;
    grad_w_rz.addmm_(d_rz_t.narrow(1, first, width), rows);
    if (!d_recurrent_n.defined() || d_recurrent_n.size(1) < width) d_recurrent_n = at::empty({H, width}, options);
    Tensor part = d_recurrent_n.narrow(1, 0, width);
    T* out = part.data_ptr<T>();
    const int64_t out_stride = d_recurrent_n.size(1);
    at::parallel_for(0, H, 64, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j)
        for (int64_t c = 0; c < width; ++c)
          out[j * out_stride + c] = d_n_t[j * columns + first + c] * r[(first + c) * gate_width + j];
    });
    grad_w_n.addmm_(part, rows);
    if (has_bias) grad_b_n.add_(part.sum(1));
  });
  std::optional<Tensor> grad_b;
  if (has_bias) grad_b = at::cat({d_rz_t.sum(1), grad_b_n});
  Tensor d_input = d_input_t.view({gate_width, steps, batch}).permute({1, 2, 0});
  return {d_input, grad_w, grad_b, d_h0};
}

}  // namespace fast

std::vector<Tensor> lstm_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                 const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                 const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell, const Mask& u_hidden,
                                 bool onednn, at::ArrayRef<double> kept_values) {
  const int64_t H = xp.size(2) / 4;
  const Tensor no_tensor;
  if (fast::fits(xp, {&w_hh, b_hh.has_value() ? &*b_hh : &no_tensor, &h0, &c0},
                 {&m_hidden_input, &m_candidate, &m_cell, &u_cell, &u_hidden}, xp.size(0), xp.size(1), H,
                 /*compact_masks=*/true)) {
    if (xp.scalar_type() == at::kFloat)
      return fast::lstm_forward<float>(xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell,
                                       u_hidden, onednn, kept_values);
    return fast::lstm_forward<double>(xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden,
                                      onednn, kept_values);
  }
  return lstm_forward_generic(xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn,
                              kept_values);
}

std::vector<Tensor> lstm_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                         const Tensor& h0, const Tensor& c0, const Mask& m_hidden_input,
                                         const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
                                         const Mask& u_hidden, bool onednn, at::ArrayRef<double> kept_values) {
  const auto dtype = xp.scalar_type();
  return lstm_forward_generic(xp, w_hh, b_hh, h0, c0, expanded(m_hidden_input, kept_at(kept_values, 0), dtype),
                              expanded(m_candidate, kept_at(kept_values, 1), dtype),
                              expanded(m_cell, kept_at(kept_values, 2), dtype),
                              expanded(u_cell, kept_at(kept_values, 3), dtype),
                              expanded(u_hidden, kept_at(kept_values, 4), dtype), onednn);
}

std::vector<std::optional<Tensor>> lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells,
    const Tensor& hidden, const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
    const Mask& u_cell, const Mask& u_hidden, bool has_bias, bool onednn, at::ArrayRef<double> kept_values) {
  const int64_t H = gates.size(2) / 4;
  const Tensor no_tensor;
  const Tensor& gh = grad_hidden.has_value() ? *grad_hidden : no_tensor;
  const Tensor& gc = grad_cells.has_value() ? *grad_cells : no_tensor;
  if (fast::fits(gates, {&gh, &gc, &w_hh, &h0, &c0, &cells, &tanh_cells, &hidden},
                 {&m_hidden_input, &m_candidate, &m_cell, &u_cell, &u_hidden}, gates.size(0), gates.size(1), H,
                 /*compact_masks=*/true) &&
      gates.is_contiguous() && cells.is_contiguous() && tanh_cells.is_contiguous() && hidden.is_contiguous()) {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      return fast::lstm_backward<T>(grad_hidden, grad_cells, w_hh, h0, c0, gates, cells, tanh_cells, hidden,
                                    m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, has_bias, onednn,
                                    kept_values);
    };
    return gates.scalar_type() == at::kFloat ? run(float()) : run(double());
  }
  return lstm_backward_generic(grad_hidden, grad_cells, w_hh, h0, c0, gates, cells, tanh_cells, hidden, m_hidden_input,
                               m_candidate, m_cell, u_cell, u_hidden, has_bias, onednn, kept_values);
}

std::vector<std::optional<Tensor>> lstm_backward_generic(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gates, const Tensor& cells, const Tensor& tanh_cells,
    const Tensor& hidden, const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
    const Mask& u_cell, const Mask& u_hidden, bool has_bias, bool onednn, at::ArrayRef<double> kept_values) {
  const auto dtype = gates.scalar_type();
  return lstm_backward_generic(grad_hidden, grad_cells, w_hh, h0, c0, gates, cells, tanh_cells, hidden,
                               expanded(m_hidden_input, kept_at(kept_values, 0), dtype),
                               expanded(m_candidate, kept_at(kept_values, 1), dtype),
                               expanded(m_cell, kept_at(kept_values, 2), dtype),
                               expanded(u_cell, kept_at(kept_values, 3), dtype),
                               expanded(u_hidden, kept_at(kept_values, 4), dtype), has_bias, onednn);
}

std::vector<Tensor> gru_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                const Mask& u_hidden, bool onednn, at::ArrayRef<double> kept_values) {
  const int64_t H = xp.size(2) / 3;
  const Tensor no_tensor;
  if (fast::fits(xp, {&w_hh, b_hh.has_value() ? &*b_hh : &no_tensor, &h0},
                 {&m_hidden_input, &m_candidate, &u_hidden}, xp.size(0), xp.size(1), H, /*compact_masks=*/true)) {
    if (xp.scalar_type() == at::kFloat)
      return fast::gru_forward<float>(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values);
    return fast::gru_forward<double>(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values);
  }
  return gru_forward_generic(xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values);
}

std::vector<Tensor> gru_forward_generic(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                        const Tensor& h0, const Mask& m_hidden_input, const Mask& m_candidate,
                                        const Mask& u_hidden, bool onednn, at::ArrayRef<double> kept_values) {
  const auto dtype = xp.scalar_type();
  return gru_forward_generic(xp, w_hh, b_hh, h0, expanded(m_hidden_input, kept_at(kept_values, 0), dtype),
                             expanded(m_candidate, kept_at(kept_values, 1), dtype),
                             expanded(u_hidden, kept_at(kept_values, 2), dtype), onednn);
}

std::vector<std::optional<Tensor>> gru_backward(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                const Tensor& activations, const Tensor& hidden_n,
                                                const Tensor& hidden, const Mask& m_hidden_input,
                                                const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                bool onednn, at::ArrayRef<double> kept_values) {
  const int64_t H = activations.size(2) / 3;
  if (fast::fits(activations, {&grad_hidden, &w_hh, &h0, &hidden_n, &hidden},
                 {&m_hidden_input, &m_candidate, &u_hidden}, activations.size(0), activations.size(1), H,
                 /*compact_masks=*/true) &&
      activations.is_contiguous() && hidden_n.is_contiguous() && hidden.is_contiguous()) {
    if (activations.scalar_type() == at::kFloat)
      return fast::gru_backward<float>(grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input,
                                       m_candidate, u_hidden, has_bias, onednn, kept_values);
    return fast::gru_backward<double>(grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input,
                                      m_candidate, u_hidden, has_bias, onednn, kept_values);
  }
  return gru_backward_generic(grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input, m_candidate,
                              u_hidden, has_bias, onednn, kept_values);
}

std::vector<std::optional<Tensor>> gru_backward_generic(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0,
                                                        const Tensor& activations, const Tensor& hidden_n,
                                                        const Tensor& hidden, const Mask& m_hidden_input,
                                                        const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                                                        bool onednn, at::ArrayRef<double> kept_values) {
  const auto dtype = activations.scalar_type();
  return gru_backward_generic(grad_hidden, w_hh, h0, activations, hidden_n, hidden,
                              expanded(m_hidden_input, kept_at(kept_values, 0), dtype),
                              expanded(m_candidate, kept_at(kept_values, 1), dtype),
                              expanded(u_hidden, kept_at(kept_values, 2), dtype), has_bias, onednn);
}
