// The native loops as dispatcher operators, torch.ops.regbench.<name>: their schemas
// (TORCH_LIBRARY) and their kernels (TORCH_LIBRARY_IMPL), under the names (and with the arguments)
// of the Python loops in fused.py and fused_batchnorm.py. Only the registrations live here, so that
// the loops' sources hold no binding code; regularizers/native_ops.py gives every operator its fake
// (meta) implementation, and tests/test_native_ops.py checks them with torch.library.opcheck.
//
// The schemas' conventions:
// - a variable number of outputs is a fixed tuple: the forward passes return every tensor the
//   backward pass needs, the backward passes one gradient per differentiable input;
// - a gradient that does not exist (the bias's when has_bias is false) is an empty tensor, shape
//   (0,), of the gradients' dtype, not an undefined one, so that every output is a tensor for the
//   fake implementations and AOTAutograd; native_ops.Operators (native.loops()) gives None instead;
// - 64-bit unsigned arguments (philox_draws' key and block) are int, their bits reinterpreted.
// No operator has an autograd kernel: the autograd.Functions in fused.py and fused_batchnorm.py
// call the forward and backward operators themselves (every kernel runs under NoGradGuard), with
// what only they know (which outputs are used, gradients that arrive as None).
//
// The loops run on CPU tensors; the `_generic` loops, and the fast ones where their arguments do
// not fit the CPU rows, are ATen calls that run on any device, so they are registered for CUDA too.
// bernoulli_mask, philox_draws and parallel_threads take no tensor: they are CompositeExplicitAutograd,
// whatever the device;
// add_gaussian_noise has a CPU kernel only (weight_noise.py draws with torch.randn elsewhere), and so
// have column_batchnorm and its backward (recurrent_batchnorm.py uses F.batch_norm elsewhere).
#include "common.h"

#include <torch/extension.h>
#include <torch/library.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

template <size_t... I>
auto as_tuple(std::vector<Tensor>&& values, std::index_sequence<I...>) {
  return std::make_tuple(std::move(values[I])...);
}

// The loops' std::vector of outputs as the schema's fixed tuple (no copy: the handles move).
template <size_t N>
auto outputs(std::vector<Tensor> values) {
  TORCH_CHECK(values.size() == N, "regbench: expected ", N, " outputs, got ", values.size());
  return as_tuple(std::move(values), std::make_index_sequence<N>{});
}

// A gradient list whose missing entries (nullopt or undefined) become empty tensors.
template <size_t N>
auto gradients(std::vector<std::optional<Tensor>> values) {
  TORCH_CHECK(values.size() == N && values[0].has_value() && values[0]->defined(),
              "regbench: expected ", N, " gradients");
  const auto options = values[0]->options();
  std::vector<Tensor> defined;
  defined.reserve(N);
  for (auto& value : values)
    defined.push_back(value.has_value() && value->defined() ? std::move(*value) : at::empty({0}, options));
  return outputs<N>(std::move(defined));
}

std::optional<std::vector<Tensor>> as_vector(const std::optional<at::TensorList>& running) {
  if (!running.has_value()) return std::nullopt;
  return running->vec();
}

// The fast entry point (which runs the generic loops where the CPU rows do not fit) or the generic loops.
#define REGBENCH_PICK(name, ...) (Generic ? name##_generic(__VA_ARGS__) : name(__VA_ARGS__))

using Forward4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using Tuple3 = std::tuple<Tensor, Tensor, Tensor>;
using Tuple5 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using Tuple9 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using Tuple15 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                           Tensor, Tensor, Tensor>;
using Grads4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;

// -- LSTM ------------------------------------------------------------------------------------------

template <bool Generic>
Forward4 lstm_forward_op(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                         const Tensor& c0, const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                         const Mask& u_cell, const Mask& u_hidden, bool onednn, at::ArrayRef<double> kept_values) {
  return outputs<4>(REGBENCH_PICK(lstm_forward, xp, w_hh, b_hh, h0, c0, m_hidden_input, m_candidate, m_cell, u_cell,
                                  u_hidden, onednn, kept_values));
}

template <bool Generic>
Tuple5 lstm_backward_op(const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells,
                        const Tensor& w_hh, const Tensor& h0, const Tensor& c0, const Tensor& gates,
                        const Tensor& cells, const Tensor& tanh_cells, const Tensor& hidden,
                        const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
                        const Mask& u_hidden, bool has_bias, bool onednn, at::ArrayRef<double> kept_values) {
  return gradients<5>(REGBENCH_PICK(lstm_backward, grad_hidden, grad_cells, w_hh, h0, c0, gates, cells, tanh_cells,
                                    hidden, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, has_bias, onednn,
                                    kept_values));
}

// -- GRU -------------------------------------------------------------------------------------------

template <bool Generic>
Tuple3 gru_forward_op(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                      const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn,
                      at::ArrayRef<double> kept_values) {
  return outputs<3>(REGBENCH_PICK(gru_forward, xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn,
                                  kept_values));
}

template <bool Generic>
Grads4 gru_backward_op(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0, const Tensor& activations,
                       const Tensor& hidden_n, const Tensor& hidden, const Mask& m_hidden_input,
                       const Mask& m_candidate, const Mask& u_hidden, bool has_bias, bool onednn,
                       at::ArrayRef<double> kept_values) {
  return gradients<4>(REGBENCH_PICK(gru_backward, grad_hidden, w_hh, h0, activations, hidden_n, hidden, m_hidden_input,
                                    m_candidate, u_hidden, has_bias, onednn, kept_values));
}

// -- tanh-RNN --------------------------------------------------------------------------------------

template <bool Generic>
Tensor rnn_forward_op(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh, const Tensor& h0,
                      const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool onednn,
                      at::ArrayRef<double> kept_values) {
  return REGBENCH_PICK(rnn_forward, xp, w_hh, b_hh, h0, m_hidden_input, m_candidate, u_hidden, onednn, kept_values);
}

template <bool Generic>
Grads4 rnn_backward_op(const Tensor& grad_hidden, const Tensor& w_hh, const Tensor& h0, const Tensor& hidden,
                       const Mask& m_hidden_input, const Mask& m_candidate, const Mask& u_hidden, bool has_bias,
                       bool onednn, at::ArrayRef<double> kept_values) {
  return gradients<4>(REGBENCH_PICK(rnn_backward, grad_hidden, w_hh, h0, hidden, m_hidden_input, m_candidate, u_hidden,
                                    has_bias, onednn, kept_values));
}

// -- the batch-normalized LSTM ---------------------------------------------------------------------

Forward4 column_batchnorm_op(const Tensor& x, const Tensor& gamma, const std::optional<Tensor>& beta, double eps) {
  return outputs<4>(column_batchnorm(x, gamma, beta, eps));
}

Tuple3 column_batchnorm_backward_op(const Tensor& grad_y, const Tensor& x, const Tensor& mean, const Tensor& rstd,
                                    const Tensor& gamma) {
  return outputs<3>(column_batchnorm_backward(grad_y, x, mean, rstd, gamma));
}

template <bool Generic>
Tuple15 batchnorm_lstm_forward_op(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                  const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                  const Tensor& gamma_cell, const Tensor& beta_cell,
                                  std::optional<at::TensorList> running, double eps, const Mask& m_hidden_input,
                                  const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
                                  const Mask& u_hidden, bool onednn, const std::optional<Tensor>& gamma_input) {
  return outputs<15>(REGBENCH_PICK(batchnorm_lstm_forward, xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, as_vector(running), eps,
                         m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn, gamma_input));
}

template <bool Generic>
Tuple9 batchnorm_lstm_backward_op(const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells,
                                  const Tensor& w_hh, const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                  const Tensor& gamma_cell, const Tensor& gates, const Tensor& normalized_hidden,
                                  const Tensor& normalized_cells, const Tensor& rstd_hidden, const Tensor& rstd_cells,
                                  const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
                                  const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                                  const Mask& u_cell, const Mask& u_hidden, bool has_bias, bool batch_statistics,
                                  bool onednn, const std::optional<Tensor>& projection,
                                  const std::optional<Tensor>& gamma_input, const std::optional<Tensor>& mean_input,
                                  const std::optional<Tensor>& rstd_input) {
  return gradients<9>(REGBENCH_PICK(batchnorm_lstm_backward, grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, gates, normalized_hidden,
                          normalized_cells, rstd_hidden, rstd_cells, tanh_cells, cells, hidden, m_hidden_input,
                          m_candidate, m_cell, u_cell, u_hidden, has_bias, batch_statistics, onednn, projection,
                          gamma_input, mean_input, rstd_input));
}

// -- the masks' sampler and their compact form ----------------------------------------------------

std::tuple<Tensor, double> compact_mask_op(const Tensor& mask) { return compact_mask(mask); }

Tensor bernoulli_mask_op(at::IntArrayRef sizes, double keep_probability, double kept_value, at::ScalarType dtype) {
  return bernoulli_mask(sizes.vec(), keep_probability, kept_value, dtype);
}

Tensor philox_draws_op(int64_t key, int64_t block, int64_t count, bool portable) {
  return philox_draws(static_cast<uint64_t>(key), static_cast<uint64_t>(block), count, portable);
}

// How many threads at::parallel_for hands `tasks` one-element tasks to, as compiled into this library:
// ATen's parallel_for is inline, so without OpenMP in this build (native.py's flags) every one of
// the loops' parallel_for calls ran on a single thread whatever torch.set_num_threads said.
int64_t parallel_threads_op(int64_t tasks) {
  std::vector<std::atomic<bool>> seen(std::max(at::get_num_threads(), 1));
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // so that no thread takes every task
    seen[std::min<int64_t>(at::get_thread_num(), int64_t(seen.size()) - 1)] = true;
  });
  int64_t count = 0;
  for (const auto& flag : seen) count += flag ? 1 : 0;
  return count;
}

}  // namespace

#define REGBENCH_MASKS_LSTM "Tensor? m_hidden_input, Tensor? m_candidate, Tensor? m_cell, Tensor? u_cell, Tensor? u_hidden"
#define REGBENCH_MASKS_GRU "Tensor? m_hidden_input, Tensor? m_candidate, Tensor? u_hidden"
#define REGBENCH_MASKS_RNN REGBENCH_MASKS_GRU  // the tanh-RNN has the GRU's mask sites
// The loops' masks may be compact (uint8 flags, compact_mask): the value each stands for, one per
// mask in the order above; empty when none is.
#define REGBENCH_KEPT_VALUES "float[] kept_values=[]"

TORCH_LIBRARY(regbench, m) {
  m.def("bernoulli_mask(int[] sizes, float keep_probability, float kept_value, ScalarType dtype) -> Tensor",
        {at::Tag::nondeterministic_seeded});
  m.def("philox_draws(int key, int block, int count, bool portable=False) -> Tensor");
  m.def("compact_mask(Tensor mask) -> (Tensor flags, float kept_value)");
  m.def("parallel_threads(int tasks) -> int");
  m.def("add_gaussian_noise(Tensor weight, float sigma, bool portable=False) -> Tensor", {at::Tag::nondeterministic_seeded});
  m.def("column_batchnorm(Tensor x, Tensor gamma, Tensor? beta, float eps) -> (Tensor y, Tensor mean, Tensor var, "
        "Tensor rstd)");
  m.def("column_batchnorm_backward(Tensor grad_y, Tensor x, Tensor mean, Tensor rstd, Tensor gamma) -> "
        "(Tensor grad_x, Tensor grad_gamma, Tensor grad_beta)");
  // std::string schemas: Library::def parses its text at once.
  struct Schemas {
    torch::Library& m;
    void def(const std::string& schema) { m.def(schema.c_str()); }
  } schemas{m};
  for (const char* suffix : {"", "_generic"}) {
    const std::string s(suffix);
    schemas.def("lstm_forward" + s + "(Tensor xp, Tensor w_hh, Tensor? b_hh, Tensor h0, Tensor c0, " REGBENCH_MASKS_LSTM
          ", bool onednn, " REGBENCH_KEPT_VALUES ") -> (Tensor hidden, Tensor cells, Tensor gates, Tensor tanh_cells)");
    schemas.def("lstm_backward" + s + "(Tensor? grad_hidden, Tensor? grad_cells, Tensor w_hh, Tensor h0, Tensor c0, "
          "Tensor gates, Tensor cells, Tensor tanh_cells, Tensor hidden, " REGBENCH_MASKS_LSTM
          ", bool has_bias, bool onednn, " REGBENCH_KEPT_VALUES ") -> (Tensor grad_xp, Tensor grad_w_hh, "
          "Tensor grad_b_hh, Tensor grad_h0, Tensor grad_c0)");
    schemas.def("gru_forward" + s + "(Tensor xp, Tensor w_hh, Tensor? b_hh, Tensor h0, " REGBENCH_MASKS_GRU
          ", bool onednn, " REGBENCH_KEPT_VALUES ") -> (Tensor hidden, Tensor activations, Tensor hidden_n)");
    schemas.def("gru_backward" + s + "(Tensor grad_hidden, Tensor w_hh, Tensor h0, Tensor activations, Tensor hidden_n, "
          "Tensor hidden, " REGBENCH_MASKS_GRU ", bool has_bias, bool onednn, " REGBENCH_KEPT_VALUES ") -> "
          "(Tensor grad_xp, Tensor grad_w_hh, Tensor grad_b_hh, Tensor grad_h0)");
    schemas.def("rnn_forward" + s + "(Tensor xp, Tensor w_hh, Tensor? b_hh, Tensor h0, " REGBENCH_MASKS_RNN
          ", bool onednn, " REGBENCH_KEPT_VALUES ") -> Tensor hidden");
    schemas.def("rnn_backward" + s + "(Tensor grad_hidden, Tensor w_hh, Tensor h0, Tensor hidden, "
          REGBENCH_MASKS_RNN ", bool has_bias, bool onednn, " REGBENCH_KEPT_VALUES ") -> (Tensor grad_xp, "
          "Tensor grad_w_hh, Tensor grad_b_hh, Tensor grad_h0)");
    schemas.def("batchnorm_lstm_forward" + s + "(Tensor xp, Tensor w_hh, Tensor? b_hh, Tensor h0, Tensor c0, "
          "Tensor gamma_hidden, Tensor gamma_cell, Tensor beta_cell, Tensor[]? running, float eps, " REGBENCH_MASKS_LSTM
          ", bool onednn, Tensor? gamma_input=None) -> (Tensor hidden, Tensor cells, Tensor mean_hidden, "
          "Tensor var_hidden, Tensor mean_cells, Tensor var_cells, Tensor mean_input, Tensor var_input, "
          "Tensor rstd_input, Tensor gates, Tensor normalized_hidden, Tensor normalized_cells, Tensor rstd_hidden, "
          "Tensor rstd_cells, Tensor tanh_cells)");
    schemas.def("batchnorm_lstm_backward" + s + "(Tensor? grad_hidden, Tensor? grad_cells, Tensor w_hh, Tensor h0, "
          "Tensor c0, Tensor gamma_hidden, Tensor gamma_cell, Tensor gates, Tensor normalized_hidden, "
          "Tensor normalized_cells, Tensor rstd_hidden, Tensor rstd_cells, Tensor tanh_cells, Tensor cells, "
          "Tensor hidden, " REGBENCH_MASKS_LSTM ", bool has_bias, bool batch_statistics, bool onednn, "
          "Tensor? projection=None, Tensor? gamma_input=None, Tensor? mean_input=None, Tensor? rstd_input=None) -> "
          "(Tensor grad_xp, Tensor grad_w_hh, Tensor grad_b_hh, Tensor grad_h0, Tensor grad_c0, "
          "Tensor grad_gamma_hidden, Tensor grad_gamma_cell, Tensor grad_beta_cell, Tensor grad_gamma_input)");
  }
}

#define REGBENCH_LOOP_KERNELS(m)                                                         \
  m.impl("lstm_forward", &lstm_forward_op<false>);                                       \
  m.impl("lstm_backward", &lstm_backward_op<false>);                                     \
  m.impl("gru_forward", &gru_forward_op<false>);                                         \
  m.impl("gru_backward", &gru_backward_op<false>);                                       \
  m.impl("rnn_forward", &rnn_forward_op<false>);                                         \
  m.impl("rnn_backward", &rnn_backward_op<false>);                                       \
  m.impl("batchnorm_lstm_forward", &batchnorm_lstm_forward_op<false>);                   \
  m.impl("batchnorm_lstm_backward", &batchnorm_lstm_backward_op<false>);                 \
  m.impl("lstm_forward_generic", &lstm_forward_op<true>);                                \
  m.impl("lstm_backward_generic", &lstm_backward_op<true>);                              \
  m.impl("gru_forward_generic", &gru_forward_op<true>);                                  \
  m.impl("gru_backward_generic", &gru_backward_op<true>);                                \
  m.impl("rnn_forward_generic", &rnn_forward_op<true>);                                  \
  m.impl("rnn_backward_generic", &rnn_backward_op<true>);                                \
  m.impl("batchnorm_lstm_forward_generic", &batchnorm_lstm_forward_op<true>);            \
  m.impl("batchnorm_lstm_backward_generic", &batchnorm_lstm_backward_op<true>)

TORCH_LIBRARY_IMPL(regbench, CPU, m) {
  REGBENCH_LOOP_KERNELS(m);
  m.impl("add_gaussian_noise", &add_gaussian_noise);
  m.impl("compact_mask", &compact_mask_op);
  m.impl("column_batchnorm", &column_batchnorm_op);
  m.impl("column_batchnorm_backward", &column_batchnorm_backward_op);
}

TORCH_LIBRARY_IMPL(regbench, CUDA, m) { REGBENCH_LOOP_KERNELS(m); }

TORCH_LIBRARY_IMPL(regbench, CompositeExplicitAutograd, m) {
  m.impl("bernoulli_mask", &bernoulli_mask_op);
  m.impl("philox_draws", &philox_draws_op);
  m.impl("parallel_threads", &parallel_threads_op);
}

// cpp_extension.load imports the library as a Python module; the operators are its content.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "regbench's native loops; the operators are torch.ops.regbench.*";
}
