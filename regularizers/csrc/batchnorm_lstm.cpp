// The batch-normalized LSTM's loops (regularizers/fused_batchnorm.py): the generic ones (ATen
// calls, any device) and the fast ones (CPU rows, as lstm_gru.cpp), with the entry points that pick
// between them. Its own file: the statistics passes and the batch-norm gradient are its alone.
#include "rows.h"

#include <atomic>
#include <exception>
#include <mutex>
#include <utility>
#ifdef _OPENMP
#include <omp.h>
#endif

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

// γ_x ⊙ BN_t(xp_t) of every step at once: {normalized, mean, var, rstd}, the statistics (steps, gates).
std::vector<Tensor> normalize_input_projection(const Tensor& xp, const Tensor& gamma_input,
                                               const std::optional<std::vector<Tensor>>& running, double eps) {
  const int64_t steps = xp.size(0);
  Tensor mean, var;
  if (running.has_value()) {
    // copies: outputs of the operator, which may not alias its inputs
    mean = (*running)[4].narrow(0, 0, steps).clone(), var = (*running)[5].narrow(0, 0, steps).clone();
  } else {
    std::tie(var, mean) = at::var_mean(xp, {1}, /*correction=*/0, /*keepdim=*/false);
  }
  Tensor rstd = (var + eps).rsqrt();
  return {(xp - mean.unsqueeze(1)) * (rstd * gamma_input).unsqueeze(1), mean, var, rstd};
}

// ∂L/∂xp and ∂L/∂γ_x through normalize_input_projection.
std::pair<Tensor, Tensor> normalize_input_projection_backward(const Tensor& d_normalized, const Tensor& projection,
                                                              const Tensor& mean, const Tensor& rstd,
                                                              const Tensor& gamma_input, bool batch_statistics) {
  Tensor x_hat = (projection - mean.unsqueeze(1)) * rstd.unsqueeze(1);
  Tensor grad_gamma = (d_normalized * x_hat).sum({0, 1});
  Tensor centered = d_normalized;
  if (batch_statistics)
    centered = d_normalized - d_normalized.mean({1}, true) - x_hat * (d_normalized * x_hat).mean({1}, true);
  return {centered * (gamma_input * rstd).unsqueeze(1), grad_gamma};
}

bool given(const std::optional<Tensor>& tensor) { return tensor.has_value() && tensor->defined(); }

}  // namespace

std::vector<Tensor> batchnorm_lstm_forward_generic(Tensor xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                           const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                           const Tensor& gamma_cell, const Tensor& beta_cell,
                                           const std::optional<std::vector<Tensor>>& running, double eps,
                                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                                           const Mask& u_cell, const Mask& u_hidden, bool onednn,
                                           const std::optional<Tensor>& gamma_input) {
  at::NoGradGuard no_grad;
  const int64_t steps = xp.size(0), batch = xp.size(1), gate_width = xp.size(2), H = gate_width / 4;
  const bool batch_statistics = !running.has_value();
  auto options = xp.options();
  Tensor mean_x = at::empty({0}, options), var_x = at::empty({0}, options), rstd_x = at::empty({0}, options);
  if (given(gamma_input)) {
    std::vector<Tensor> input = normalize_input_projection(xp, *gamma_input, running, eps);
    xp = input[0], mean_x = input[1], var_x = input[2], rstd_x = input[3];
  }
  if (b_hh.has_value() && b_hh->defined()) xp = xp + *b_hh;
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
  return {hidden, cells, mean_h, var_h, mean_c, var_c, mean_x, var_x, rstd_x, gates, normalized_hidden,
          normalized_cells, rstd_hidden, rstd_cells, tanh_cells};
}

std::vector<std::optional<Tensor>> batchnorm_lstm_backward_generic(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden, const Tensor& gamma_cell, const Tensor& gates,
    const Tensor& normalized_hidden, const Tensor& normalized_cells, const Tensor& rstd_hidden,
    const Tensor& rstd_cells, const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
    const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
    const Mask& u_hidden, bool has_bias, bool batch_statistics, bool onednn, const std::optional<Tensor>& projection,
    const std::optional<Tensor>& gamma_input, const std::optional<Tensor>& mean_input,
    const std::optional<Tensor>& rstd_input) {
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
  Tensor grad_xp = d_gates;
  std::optional<Tensor> grad_gamma_input;
  if (given(gamma_input))
    std::tie(grad_xp, grad_gamma_input) = normalize_input_projection_backward(
        d_gates, *projection, *mean_input, *rstd_input, *gamma_input, batch_statistics);
  return {grad_xp, grad_w, grad_b, d_h, d_c, grad_gamma_hidden, grad_gamma_cell, grad_beta_cell, grad_gamma_input};
}

// -- the fast path of the batch-normalized LSTM ------------------------------------------------------
//
// Before the loop, the input projection's statistics for every step (one pass over its batch-major
// columns); per step: the recurrent product, then statistics over the batch, a pass over the rows
// up to ĉ (which normalizes the input projection too), statistics of ĉ, and a pass over the rows
// for the outputs. The
// backward pass mirrors it; the per-step column sums it needs for the batch-norm gradient are also
// the γ, β and bias gradients, accumulated on the way, so no per-step buffer other than ∂L/∂gates
// and ∂L/∂(recurrent projection) (both transposed, for the weight gradients) is kept.

namespace fast {

// Where the rows are not split (a weight too large for a core's cache: see run_team below), a step's
// statistics passes are shared out over the columns; each split costs a thread hand-off, which
// below this many elements per task costs more than it saves (measured, 2 threads, before the team
// took the smaller shapes: 65,536 kept every pass of pMNIST cpu-v1 on one thread, 8,192 split them
// and smaller tasks gained no more).
constexpr int64_t kBatchNormTaskElements = 8192;

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

// Per column j in [begin, end): Σ_b a[b, j]·(raw[b, j] - mean[j]), raw's rows `raw_stride` apart
// (the input projection's, batch-major: a step's row of each sequence).
template <typename T>
REGBENCH_INLINE void centered_column_sums_range(const T* a, const T* raw, int64_t raw_stride, const T* mean,
                                                int64_t rows, int64_t width, int64_t begin, int64_t end, T* sum) {
  for (int64_t j = begin; j < end; ++j) sum[j] = T(0);
  for (int64_t b = 0; b < rows; ++b) {
    const T *a_row = a + b * width, *raw_row = raw + b * raw_stride;
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = begin; j < end; ++j) sum[j] += a_row[j] * (raw_row[j] - mean[j]);
  }
}

REGBENCH_CLONES void run_centered_column_sums(const float* a, const float* raw, int64_t raw_stride, const float* mean,
                                              int64_t rows, int64_t width, int64_t begin, int64_t end, float* sum) {
  centered_column_sums_range(a, raw, raw_stride, mean, rows, width, begin, end, sum);
}
void run_centered_column_sums(const double* a, const double* raw, int64_t raw_stride, const double* mean,
                              int64_t rows, int64_t width, int64_t begin, int64_t end, double* sum) {
  centered_column_sums_range(a, raw, raw_stride, mean, rows, width, begin, end, sum);
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

// The columns of a wide matrix (the input normalization's batch × (steps × gates)) in blocks, so
// that a block's rows stay in cache between the passes over it.
constexpr int64_t kColumnBlock = 1024;

// The columns shared out over the threads, each task a run of whole column blocks.
template <typename F>
void for_column_blocks(int64_t width, const F& block) {
  const int64_t blocks = (width + kColumnBlock - 1) / kColumnBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) block(k * kColumnBlock, std::min(width, (k + 1) * kColumnBlock));
  });
}

// -- a team of threads for a whole time loop --------------------------------------------------------
//
// A batch norm couples the batch rows at every step, so the plain LSTM's scheme (each thread runs
// the whole time loop on its own rows, never waiting) does not apply as it is; sharing each pass of
// each step out over the threads, a fork and a join each, made 2 threads slower than 1 at the CPU
// tracks' shapes. Here a team of threads runs the whole time loop, each thread on its own block of
// batch rows (its own products included), and meets the others only where the statistics need all
// rows: each thread puts its rows' column sums (or moments) into its slot of a shared buffer, waits
// at the team's barrier, and combines the slots in rank order itself (the same totals in every
// thread and from run to run; a different split rounds differently). A step of the forward pass
// meets twice, one of the backward pass twice, and the weight gradient's chunks three times each.
// OpenMP's team barrier where the loops are built with OpenMP (torch's own threads); else, or nested
// in another parallel region, a team of one, whose passes share themselves out as before.

struct TeamState {
  std::atomic<bool> failed{false};
  std::mutex lock;
  std::exception_ptr error;
};

struct Team {
  int64_t size = 1, rank = 0;
  TeamState* state = nullptr;

  // Runs a stretch of work between barriers. Once any thread has failed, every thread skips its work
  // but still meets every barrier (a thread that left the loop would leave the others waiting), and
  // the first error is rethrown after the team has finished.
  template <typename F>
  void run(const F& work) const {
    if (state->failed.load(std::memory_order_relaxed)) return;
    try {
      work();
    } catch (...) {
      std::lock_guard<std::mutex> guard(state->lock);
      if (!state->error) state->error = std::current_exception();
      state->failed.store(true);
    }
  }

  void barrier() const {
#ifdef _OPENMP
    if (size > 1) {
#pragma omp barrier
    }
#endif
  }

  // This thread's block of [0, count): the rows of the batch, or the rows of a weight gradient.
  std::pair<int64_t, int64_t> share(int64_t count) const {
    const int64_t block = (count + size - 1) / size;
    const int64_t begin = std::min(count, rank * block);
    return {begin, std::min(count, begin + block)};
  }
};

// Runs body(team) on a team of torch's threads where `split` (else on this thread, a team of one).
template <typename F>
void run_team(bool split, const F& body) {
  TeamState state;
#ifdef _OPENMP
  if (split && at::get_num_threads() > 1 && !at::in_parallel_region()) {
#pragma omp parallel num_threads(at::get_num_threads())
    {
      at::NoGradGuard no_grad;  // grad mode is per thread
      body(Team{omp_get_num_threads(), omp_get_thread_num(), &state});
    }
    if (state.error) std::rethrow_exception(state.error);
    return;
  }
#endif
  body(Team{1, 0, &state});
  if (state.error) std::rethrow_exception(state.error);
}

// out[j] = Σ_k slots[k · width + j], k in rank order.
template <typename T>
REGBENCH_INLINE void add_slots(const T* slots, int64_t count, int64_t width, T* out) {
  for (int64_t j = 0; j < width; ++j) out[j] = slots[j];
  for (int64_t k = 1; k < count; ++k) {
    const T* slot = slots + k * width;
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = 0; j < width; ++j) out[j] += slot[j];
  }
}

REGBENCH_CLONES void run_add_slots(const float* slots, int64_t count, int64_t width, float* out) {
  add_slots(slots, count, width, out);
}
void run_add_slots(const double* slots, int64_t count, int64_t width, double* out) {
  add_slots(slots, count, width, out);
}

// Shared slots for the team's partial column sums or moments: `sets` sets of team.size × width values.
template <typename T>
struct TeamSlots {
  std::vector<T> values;
  int64_t width, team_size;
  TeamSlots(int64_t sets, int64_t team_size_, int64_t width_)
      : values(size_t(sets * team_size_ * width_)), width(width_), team_size(team_size_) {}
  T* set(int64_t k) { return values.data() + k * team_size * width; }
};

// Per column: the mean and biased variance over the batch from each thread's own count, mean and
// biased variance, by Chan et al.'s pairwise update of M2 = count · variance, in rank order: one
// barrier, where a global mean first and the squares after it would take two.
template <typename T>
REGBENCH_INLINE void combine_moments(const T* means, const T* variances, const int64_t* counts, int64_t team_size,
                                     int64_t width, T* mean, T* var) {
  T count = T(counts[0]);
  for (int64_t j = 0; j < width; ++j) mean[j] = means[j], var[j] = variances[j] * count;
  for (int64_t k = 1; k < team_size; ++k) {
    const T n_k = T(counts[k]);
    if (n_k == T(0)) continue;
    const T total = count + n_k, weight = n_k / total, cross = count * n_k / total;
    const T *mean_k = means + k * width, *var_k = variances + k * width;
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = 0; j < width; ++j) {
      const T delta = mean_k[j] - mean[j];
      mean[j] += delta * weight;
      var[j] += var_k[j] * n_k + delta * delta * cross;
    }
    count = total;
  }
  for (int64_t j = 0; j < width; ++j) var[j] /= count;
}

REGBENCH_CLONES void run_combine_moments(const float* means, const float* variances, const int64_t* counts,
                                         int64_t team_size, int64_t width, float* mean, float* var) {
  combine_moments(means, variances, counts, team_size, width, mean, var);
}
void run_combine_moments(const double* means, const double* variances, const int64_t* counts, int64_t team_size,
                         int64_t width, double* mean, double* var) {
  combine_moments(means, variances, counts, team_size, width, mean, var);
}

// Mean and biased variance per column of the batch, of which `x` is this thread's `rows` rows (the
// whole batch in a team of one: then shared out over the columns). `means` and `variances`: the
// team's slots, each team.size × width, written again only after a barrier that follows every read
// of them (so two calls in a row take two pairs); `counts`: each thread's rows.
template <typename T>
void team_mean_var(const Team& team, const T* x, int64_t rows, int64_t batch, int64_t width, T* means, T* variances,
                   const int64_t* counts, T* mean, T* var) {
  if (team.size == 1) return team.run([&] { column_mean_var(x, batch, width, mean, var); });
  team.run([&] {
    T *my_mean = means + team.rank * width, *my_var = variances + team.rank * width;
    if (rows == 0) return;  // a count of 0: combine_moments skips the slot
    run_column_mean_var(x, rows, width, 0, width, my_mean, my_var);
  });
  team.barrier();
  team.run([&] { run_combine_moments(means, variances, counts, team.size, width, mean, var); });
}

// Σ_b a[b, j] and Σ_b a[b, j]·x[b, j] over the batch, of which `a` and `x` are this thread's rows;
// `slots`: 2 × team.size × width.
template <typename T>
void team_column_sums(const Team& team, const T* a, const T* x, int64_t rows, int64_t batch, int64_t width, T* slots,
                      T* sum_a, T* sum_ax) {
  if (team.size == 1) return team.run([&] { column_sums(a, x, batch, width, sum_a, sum_ax); });
  T *mine_a = slots + team.rank * width, *mine_ax = slots + (team.size + team.rank) * width;
  team.run([&] { run_column_sums(a, x, rows, width, 0, width, mine_a, mine_ax); });
  team.barrier();
  team.run([&] {
    run_add_slots(slots, team.size, width, sum_a);
    run_add_slots(slots + team.size * width, team.size, width, sum_ax);
  });
}

// team_column_sums, and with it Σ_b a[b, j]·(raw[b, j] - mean[j]) (the input normalization's term)
// where `raw` is given; `slots`: 3 × team.size × width.
template <typename T>
void team_gate_sums(const Team& team, const T* a, const T* x, const T* raw, int64_t raw_stride, const T* raw_mean,
                    int64_t rows, int64_t batch, int64_t width, T* slots, T* sum_a, T* sum_ax, T* sum_a_raw) {
  if (raw == nullptr) return team_column_sums(team, a, x, rows, batch, width, slots, sum_a, sum_ax);
  if (team.size == 1)
    return team.run([&] {
      at::parallel_for(0, width, std::max<int64_t>(1, kBatchNormTaskElements / std::max<int64_t>(batch, 1)),
                       [&](int64_t begin, int64_t end) {
                         run_column_sums(a, x, batch, width, begin, end, sum_a, sum_ax);
                         run_centered_column_sums(a, raw, raw_stride, raw_mean, batch, width, begin, end, sum_a_raw);
                       });
    });
  T *mine_a = slots + team.rank * width, *mine_ax = slots + (team.size + team.rank) * width;
  T* mine_raw = slots + (2 * team.size + team.rank) * width;
  team.run([&] {
    run_column_sums(a, x, rows, width, 0, width, mine_a, mine_ax);
    run_centered_column_sums(a, raw, raw_stride, raw_mean, rows, width, 0, width, mine_raw);
  });
  team.barrier();
  team.run([&] {
    run_add_slots(slots, team.size, width, sum_a);
    run_add_slots(slots + team.size * width, team.size, width, sum_ax);
    run_add_slots(slots + 2 * team.size * width, team.size, width, sum_a_raw);
  });
}

// The batch-normalized LSTM's row passes, one row each, as the plain LSTM's: every pointer valid
// (absent masks are rows of ones, absent gradients rows of zeros).
// Forward, up to ĉ: x̂_h = (W_h h - μ_h)·rstd_h, the activated gates, ĉ = (i·g·m + f·c_{t-1})·m_c.
// The input projection is normalized here: (x - μ_x)·(rstd_x·γ_x), with μ_x = 0 and a scale of 1
// where it arrives normalized.
template <typename T>
struct BatchNormGatesRow {
  const T *projection, *input, *input_mean, *input_scale, *bias, *mean_h, *rstd_h, *gamma_h, *m_candidate, *m_cell,
      *c_prev;
  T *normalized_h, *gates, *cell_hat;
};

template <typename T>
REGBENCH_INLINE void batchnorm_gates_row(int64_t H, const BatchNormGatesRow<T>& a) {
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < 4 * H; ++j) {
    const T n_h = (a.projection[j] - a.mean_h[j]) * a.rstd_h[j];
    a.normalized_h[j] = n_h;
    a.gates[j] = ((a.input[j] - a.input_mean[j]) * a.input_scale[j] + a.bias[j]) + n_h * a.gamma_h[j];
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

// Backward, third pass too, where the loop normalizes the input projection: ∂L/∂(W_x x_t) through
// that batch norm, ∂L/∂gates standing for ∂L/∂(its output).
template <typename T>
struct BatchNormInputGradRow {
  const T *d_gates, *raw, *mean_x, *rstd_x, *gamma_x, *sum_dg, *sum_dg_n;
  T inverse_batch;
  bool centered;
  T* d_raw;
};

template <typename T>
REGBENCH_INLINE void batchnorm_input_grad_row(int64_t H, const BatchNormInputGradRow<T>& a) {
  const T mean_weight = a.centered ? a.inverse_batch : T(0);
  REGBENCH_NO_LOOP_ALIASING
  for (int64_t j = 0; j < 4 * H; ++j) {
    const T n_x = (a.raw[j] - a.mean_x[j]) * a.rstd_x[j];
    const T d_normalized = a.d_gates[j] - a.sum_dg[j] * mean_weight - n_x * (a.sum_dg_n[j] * mean_weight);
    a.d_raw[j] = d_normalized * (a.gamma_x[j] * a.rstd_x[j]);
  }
}

REGBENCH_CLONES void run_row(int64_t H, const BatchNormGatesRow<float>& a) { batchnorm_gates_row(H, a); }
REGBENCH_CLONES void run_row(int64_t H, const BatchNormInputGradRow<float>& a) { batchnorm_input_grad_row(H, a); }
void run_row(int64_t H, const BatchNormInputGradRow<double>& a) { batchnorm_input_grad_row(H, a); }
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
                                           const Mask& u_cell, const Mask& u_hidden, bool onednn,
                                           const std::optional<Tensor>& gamma_input) {
  at::NoGradGuard no_grad;
  const int64_t steps = xp_in.size(0), batch = xp_in.size(1), gate_width = xp_in.size(2), H = gate_width / 4;
  const bool batch_statistics = !running.has_value(), normalizes_input = given(gamma_input);
  // Read in place whatever the step and batch strides (recurrent_batchnorm hands over a batch-major
  // view); a projection to normalize here, batch-major, so that its statistics are one column pass.
  const bool batch_major = xp_in.stride(2) == 1 && xp_in.stride(0) == gate_width && xp_in.stride(1) == steps * gate_width;
  const Tensor xp = normalizes_input ? (batch_major ? xp_in : xp_in.transpose(0, 1).contiguous().transpose(0, 1))
                                     : (xp_in.stride(2) == 1 ? xp_in : xp_in.contiguous());
  const int64_t xp_step_stride = xp.stride(0), xp_row_stride = xp.stride(1);
  auto options = xp.options();
  // The input normalization's statistics (steps, gates) and its scale rstd_x·γ_x; for a projection
  // that arrives normalized, a mean of 0 and a scale of 1.
  Tensor mean_x = at::empty({0}, options), var_x = at::empty({0}, options), rstd_x = at::empty({0}, options);
  Tensor scale_x;
  std::vector<T> ones_g(gate_width, T(1));
  if (normalizes_input) {
    mean_x = at::empty({steps, gate_width}, options), var_x = at::empty({steps, gate_width}, options);
    if (batch_statistics) {
      T *mean = mean_x.data_ptr<T>(), *var = var_x.data_ptr<T>();
      const T* raw = xp.data_ptr<T>();
      for_column_blocks(steps * gate_width, [&](int64_t begin, int64_t end) {
        run_column_mean_var(raw, batch, steps * gate_width, begin, end, mean, var);
      });
    } else {
      mean_x.copy_((*running)[4].narrow(0, 0, steps)), var_x.copy_((*running)[5].narrow(0, 0, steps));
    }
    rstd_x = (var_x + eps).rsqrt();
    scale_x = (rstd_x * gamma_input->unsqueeze(0)).contiguous();
  }
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
    at::rsqrt_out(rstd_hidden, var_h + eps), at::rsqrt_out(rstd_cells, var_c + eps);
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
  const int64_t block = row_block(batch, H, sizeof(T));
  RecurrentProduct recurrent_product(w_hh, block, std::nullopt, onednn);
  const T epsilon = static_cast<T>(eps);
  const bool split = block < batch;
  // Two pairs of slots, the hidden statistics' and the cell's (each read before the other is written).
  const int64_t team_bound = split ? at::get_num_threads() : 1;
  TeamSlots<T> slots(4, team_bound, gate_width);
  std::vector<int64_t> counts(team_bound);
  T *x_data = xp.data_ptr<T>(), *gates_data = gates.data_ptr<T>(), *n_h_data = normalized_hidden.data_ptr<T>();
  T *n_c_data = normalized_cells.data_ptr<T>(), *tanh_data = tanh_cells.data_ptr<T>();
  T *cells_data = cells.data_ptr<T>(), *hidden_data = hidden.data_ptr<T>();
  run_team(split, [&](const Team& team) {
    const auto [begin, end] = team.share(batch);
    const int64_t rows = end - begin;
    const bool in_block = team.size > 1;
    counts[team.rank] = rows;  // read after the first barrier
    // This thread's statistics of the step (every thread of a team holds the same; rank 0 stores them).
    std::vector<T> statistics(batch_statistics ? 3 * (gate_width + H) : 0);
    Tensor projection;
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t at_h = t * gate_width, at_c = t * H;
      T *mu_h = mean_h.data_ptr<T>() + at_h, *v_h = var_h.data_ptr<T>() + at_h, *rs_h = rstd_hidden.data_ptr<T>() + at_h;
      T *mu_c = mean_c.data_ptr<T>() + at_c, *v_c = var_c.data_ptr<T>() + at_c, *rs_c = rstd_cells.data_ptr<T>() + at_c;
      if (batch_statistics && team.size > 1) {
        T* mine = statistics.data();
        mu_h = mine, v_h = mine + gate_width, rs_h = mine + 2 * gate_width;
        mu_c = mine + 3 * gate_width, v_c = mu_c + H, rs_c = mu_c + 2 * H;
      }
      const T* h_prev = t == 0 ? h0c.data_ptr<T>() : hidden_data + (t - 1) * batch * H;
      const T* c_prev = t == 0 ? c0c.data_ptr<T>() : cells_data + (t - 1) * batch * H;
      team.run([&] {
        if (rows == 0) return;
        const Tensor input = mh.present() ? next_input : (t == 0 ? h0c : hidden.select(0, t - 1));
        projection = recurrent_product(input.narrow(0, begin, rows)).contiguous();
      });
      const T* p = rows > 0 && projection.defined() ? projection.data_ptr<T>() : nullptr;  // row b at p + (b - begin)·4H
      if (batch_statistics)
        team_mean_var(team, p, rows, batch, gate_width, slots.set(0), slots.set(1), counts.data(), mu_h, v_h);
      team.run([&] {
        if (batch_statistics)
          for (int64_t j = 0; j < gate_width; ++j) rs_h[j] = T(1) / std::sqrt(v_h[j] + epsilon);
        const T* x = x_data + t * xp_step_stride;
        const T* input_mean = normalizes_input ? mean_x.data_ptr<T>() + t * gate_width : zeros.data();
        const T* input_scale = normalizes_input ? scale_x.data_ptr<T>() + t * gate_width : ones_g.data();
        // Rows, up to ĉ: x̂_h, the gates, ĉ.
        for_rows(begin, end, in_block, gate_width, [&](int64_t first, int64_t last) {
          std::vector<T> scratch(2 * H);
          for (int64_t b = first; b < last; ++b) {
            const int64_t row_g = (t * batch + b) * gate_width;
            BatchNormGatesRow<T> row{p + (b - begin) * gate_width,
                                     x + b * xp_row_stride,
                                     input_mean,
                                     input_scale,
                                     bias_data,
                                     mu_h,
                                     rs_h,
                                     gamma_h,
                                     mc.row(t, b, H, ones.data(), scratch.data()),
                                     mcell.row(t, b, H, ones.data(), scratch.data() + H),
                                     c_prev + b * H,
                                     n_h_data + row_g,
                                     gates_data + row_g,
                                     cell_hat + b * H};
            run_row(H, row);
          }
        });
      });
      if (batch_statistics)
        team_mean_var(team, cell_hat + begin * H, rows, batch, H, slots.set(2), slots.set(3), counts.data(), mu_c, v_c);
      team.run([&] {
        if (batch_statistics)
          for (int64_t j = 0; j < H; ++j) rs_c[j] = T(1) / std::sqrt(v_c[j] + epsilon);
        const bool write_next = mh.present() && t + 1 < steps;
        T* next = write_next ? next_input.data_ptr<T>() : nullptr;
        // Rows: x̂_c, tanh, the new cell and hidden state (and this thread's rows of the next product's input).
        for_rows(begin, end, in_block, H, [&](int64_t first, int64_t last) {
          std::vector<T> scratch(3 * H);
          for (int64_t b = first; b < last; ++b) {
            const int64_t row_h = (t * batch + b) * H;
            BatchNormStateRow<T> row{gates_data + (t * batch + b) * gate_width + 3 * H,
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
                                     n_c_data + row_h,
                                     tanh_data + row_h,
                                     cells_data + row_h,
                                     hidden_data + row_h,
                                     write_next ? next + b * H : nullptr};
            run_row(H, row);
          }
        });
        if (batch_statistics && team.size > 1 && team.rank == 0) {
          std::memcpy(mean_h.data_ptr<T>() + at_h, mu_h, gate_width * sizeof(T));
          std::memcpy(var_h.data_ptr<T>() + at_h, v_h, gate_width * sizeof(T));
          std::memcpy(rstd_hidden.data_ptr<T>() + at_h, rs_h, gate_width * sizeof(T));
          std::memcpy(mean_c.data_ptr<T>() + at_c, mu_c, H * sizeof(T));
          std::memcpy(var_c.data_ptr<T>() + at_c, v_c, H * sizeof(T));
          std::memcpy(rstd_cells.data_ptr<T>() + at_c, rs_c, H * sizeof(T));
        }
      });
    }
  });
  return {hidden, cells, mean_h, var_h, mean_c, var_c, mean_x, var_x, rstd_x, gates, normalized_hidden,
          normalized_cells, rstd_hidden, rstd_cells, tanh_cells};
}

template <typename T>
std::vector<std::optional<Tensor>> batchnorm_lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden, const Tensor& gamma_cell, const Tensor& gates,
    const Tensor& normalized_hidden, const Tensor& normalized_cells, const Tensor& rstd_hidden,
    const Tensor& rstd_cells, const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
    const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
    const Mask& u_hidden, bool has_bias, bool batch_statistics, bool onednn, const std::optional<Tensor>& projection,
    const std::optional<Tensor>& gamma_input, const std::optional<Tensor>& mean_input,
    const std::optional<Tensor>& rstd_input) {
  at::NoGradGuard no_grad;
  const int64_t steps = gates.size(0), batch = gates.size(1), gate_width = gates.size(2), H = gate_width / 4;
  auto options = gates.options();
  const SequenceRows<T> gh(grad_hidden), gc(grad_cells);
  const SequenceRows<T> mh(m_hidden_input), mc(m_candidate), mcell(m_cell), uc(u_cell), uh(u_hidden);
  std::vector<T> ones(H, T(1)), zeros(H, T(0));
  const Tensor c0c = c0.contiguous(), gh_c = gamma_hidden.contiguous(), gc_c = gamma_cell.contiguous();
  const T *gamma_h = gh_c.data_ptr<T>(), *gamma_c = gc_c.data_ptr<T>();
  // ∂L/∂xp, batch-major (B, T, 4H), as recurrent_batchnorm's input projection: ∂L/∂(W_x x) where the
  // loop normalizes it (then the input terms join the step's column sums), else ∂L/∂gates.
  Tensor d_gates_by_batch = at::empty({batch, steps, gate_width}, options);
  const bool normalizes_input = given(gamma_input);
  Tensor raw_c, mean_x_c, rstd_x_c, gamma_x_c, grad_gamma_input;
  if (normalizes_input) {
    raw_c = projection->stride(2) == 1 ? *projection : projection->contiguous();
    mean_x_c = mean_input->contiguous(), rstd_x_c = rstd_input->contiguous(), gamma_x_c = gamma_input->contiguous();
    grad_gamma_input = at::zeros({gate_width}, options);
  }
  const T* raw_data = normalizes_input ? raw_c.data_ptr<T>() : nullptr;
  const int64_t raw_step_stride = normalizes_input ? raw_c.stride(0) : 0, raw_row_stride = normalizes_input ? raw_c.stride(1) : 0;
  // ∂L/∂(W_h h_{t-1}), transposed as in the plain LSTM, but a chunk of steps at a time: the weight
  // gradient is accumulated chunk by chunk, so that this buffer (the size of the gates, which this
  // layer already keeps three of) is a quarter of the sequence.
  const int64_t chunk_steps = std::max<int64_t>(1, (steps + 3) / 4);
  Tensor d_projection_chunk = at::empty({gate_width * chunk_steps * batch}, options);
  Tensor input_rows;    // the chunk's recurrent inputs, where they must be built (recurrent_input_rows)
  Tensor chunk_inputs;  // this chunk's: a view of h0 or `hidden`, or of input_rows
  Tensor grad_w = at::zeros({gate_width, H}, options);
  Tensor d_gates_step = at::empty({batch, gate_width}, options), d_projection_step = at::empty({batch, gate_width}, options);
  Tensor d_cell_output = at::empty({batch, H}, options);  // ∂L/∂(γ_c x̂_c + β_c) of this step
  Tensor d_c = at::zeros({batch, H}, options), carry = at::zeros({batch, H}, options);
  Tensor d_product = at::zeros({batch, H}, options);  // after the loop: ∂L/∂(masked h0)
  // The γ, β and bias gradients: the per-step column sums, added up over the steps.
  Tensor grad_bias = at::zeros({gate_width}, options), grad_gamma_hidden = at::zeros({gate_width}, options);
  Tensor grad_beta_cell = at::zeros({H}, options), grad_gamma_cell = at::zeros({H}, options);
  const int64_t block = row_block(batch, H, sizeof(T));
  RecurrentProduct backward_product(w_hh.t(), block, std::nullopt, onednn);
  const T inverse_batch = T(1) / T(batch);
  const bool split = block < batch;
  // Two sets of slots, one for each kind of column sum in a step (cell output, gates), so that a set
  // is written again only after a barrier that follows every read of it.
  TeamSlots<T> cell_slots(2, split ? at::get_num_threads() : 1, H), gate_slots(3, split ? at::get_num_threads() : 1, gate_width);
  const T *gates_data = gates.data_ptr<T>(), *tanh_data = tanh_cells.data_ptr<T>(), *cells_data = cells.data_ptr<T>();
  T *d_gates = d_gates_step.data_ptr<T>(), *d_projection = d_projection_step.data_ptr<T>();
  T *d_cell_out = d_cell_output.data_ptr<T>(), *d_c_data = d_c.data_ptr<T>(), *carry_data = carry.data_ptr<T>();
  run_team(split, [&](const Team& team) {
    const auto [begin, end] = team.share(batch);
    const int64_t rows = end - begin;
    const bool in_block = team.size > 1;
    std::vector<T> sums(3 * gate_width + 2 * H);
    T *sum_dg = sums.data(), *sum_dg_n = sum_dg + gate_width, *sum_dco = sum_dg_n + gate_width, *sum_dco_n = sum_dco + H;
    T* sum_dg_x = sum_dco_n + H;  // Σ_b ∂L/∂gates·x̂_x, where the loop normalizes the input
    Tensor product_rows;  // this thread's rows of ∂L/∂(masked h_t) from step t+1's product
    for (int64_t t = steps - 1; t >= 0; --t) {
      const T* product = product_rows.defined() ? product_rows.data_ptr<T>() - begin * H : nullptr;  // by batch row
      const T* c_prev = t == 0 ? c0c.data_ptr<T>() : cells_data + (t - 1) * batch * H;
      const T *rs_h = rstd_hidden.data_ptr<T>() + t * gate_width, *rs_c = rstd_cells.data_ptr<T>() + t * H;
      const T* n_c_step = normalized_cells.data_ptr<T>() + t * batch * H;
      const T* n_h_step = normalized_hidden.data_ptr<T>() + t * batch * gate_width;
      const int64_t chunk_start = t - t % chunk_steps;
      const int64_t chunk_columns = (std::min(steps, chunk_start + chunk_steps) - chunk_start) * batch;
      // Rows: ∂L/∂h_t, ∂L/∂(the cell's normalized output).
      team.run([&] {
        for_rows(begin, end, in_block, gate_width, [&](int64_t first, int64_t last) {
          std::vector<T> scratch(3 * H);
          for (int64_t b = first; b < last; ++b) {
            BatchNormCellOutputRow<T> row{product ? product + b * H : zeros.data(),
                                          product ? mh.row(t + 1, b, H, ones.data(), scratch.data()) : ones.data(),
                                          gh.row(t, b, H, zeros.data(), scratch.data() + H),
                                          uh.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                                          gates_data + (t * batch + b) * gate_width + 3 * H,
                                          tanh_data + (t * batch + b) * H,
                                          d_cell_out + b * H,
                                          carry_data + b * H};
            run_row(H, row);
          }
        });
      });
      team_column_sums(team, d_cell_out + begin * H, n_c_step + begin * H, rows, batch, H, cell_slots.set(0), sum_dco,
                       sum_dco_n);
      // Rows: ∂L/∂ĉ, the gate gradients, ∂L/∂c_{t-1} and the hidden state's carry.
      team.run([&] {
        for_rows(begin, end, in_block, gate_width, [&](int64_t first, int64_t last) {
          std::vector<T> scratch(5 * H);
          for (int64_t b = first; b < last; ++b) {
            BatchNormGateGradsRow<T> row{gates_data + (t * batch + b) * gate_width,
                                         n_c_step + b * H,
                                         gc.row(t, b, H, zeros.data(), scratch.data()),
                                         uc.row(t, b, H, ones.data(), scratch.data() + H),
                                         uh.row(t, b, H, ones.data(), scratch.data() + 2 * H),
                                         mc.row(t, b, H, ones.data(), scratch.data() + 3 * H),
                                         mcell.row(t, b, H, ones.data(), scratch.data() + 4 * H),
                                         d_cell_out + b * H,
                                         c_prev + b * H,
                                         tanh_data + (t * batch + b) * H,
                                         sum_dco,
                                         sum_dco_n,
                                         gamma_c,
                                         rs_c,
                                         inverse_batch,
                                         batch_statistics,
                                         d_gates + b * gate_width,
                                         d_c_data + b * H,
                                         carry_data + b * H};
            run_row(H, row);
          }
        });
      });
      const T* raw_step = normalizes_input ? raw_data + t * raw_step_stride : nullptr;
      const T* mean_x = normalizes_input ? mean_x_c.data_ptr<T>() + t * gate_width : nullptr;
      const T* rstd_x = normalizes_input ? rstd_x_c.data_ptr<T>() + t * gate_width : nullptr;
      team_gate_sums(team, d_gates + begin * gate_width, n_h_step + begin * gate_width,
                     raw_step ? raw_step + begin * raw_row_stride : nullptr, raw_row_stride, mean_x, rows, batch,
                     gate_width, gate_slots.set(0), sum_dg, sum_dg_n, sum_dg_x);
      team.run([&] {
        // Rows: ∂L/∂(W_h h_{t-1}) through the hidden batch norm, kept transposed for the weight gradient.
        if (normalizes_input)
          for (int64_t j = 0; j < gate_width; ++j) sum_dg_x[j] *= rstd_x[j];  // Σ dg·(raw - μ_x) → Σ dg·x̂_x
        for_rows(begin, end, in_block, gate_width, [&](int64_t first, int64_t last) {
          for (int64_t b = first; b < last; ++b) {
            BatchNormProjectionGradRow<T> row{d_gates + b * gate_width, n_h_step + b * gate_width, sum_dg, sum_dg_n,
                                              gamma_h, rs_h, inverse_batch, batch_statistics,
                                              d_projection + b * gate_width};
            run_row(H, row);
            T* d_xp = d_gates_by_batch.data_ptr<T>() + (b * steps + t) * gate_width;
            if (normalizes_input) {
              BatchNormInputGradRow<T> input_row{d_gates + b * gate_width, raw_step + b * raw_row_stride, mean_x, rstd_x,
                                                 gamma_x_c.data_ptr<T>(), sum_dg, sum_dg_x, inverse_batch,
                                                 batch_statistics, d_xp};
              run_row(H, input_row);
            } else {
              std::memcpy(d_xp, d_gates + b * gate_width, gate_width * sizeof(T));
            }
          }
          transpose_rows(d_projection + first * gate_width, gate_width, last - first, gate_width,
                         d_projection_chunk.data_ptr<T>() + (t - chunk_start) * batch + first, chunk_columns);
        });
        // The step's column sums into their totals (every thread of a team holds the same sums).
        if (team.rank == 0) {
          T *total_bias = grad_bias.data_ptr<T>(), *total_gamma_h = grad_gamma_hidden.data_ptr<T>();
          T *total_beta_c = grad_beta_cell.data_ptr<T>(), *total_gamma_c = grad_gamma_cell.data_ptr<T>();
          for (int64_t j = 0; j < gate_width; ++j) total_bias[j] += sum_dg[j], total_gamma_h[j] += sum_dg_n[j];
          for (int64_t j = 0; j < H; ++j) total_beta_c[j] += sum_dco[j], total_gamma_c[j] += sum_dco_n[j];
          if (normalizes_input) {
            T* total_gamma_x = grad_gamma_input.data_ptr<T>();
            for (int64_t j = 0; j < gate_width; ++j) total_gamma_x[j] += sum_dg_x[j];
          }
        }
        if (rows > 0) product_rows = backward_product(d_projection_step.narrow(0, begin, rows)).contiguous();
      });
      if (t == chunk_start) {
        // The chunk's weight gradient, each thread a block of its rows, once every thread has written
        // its columns of the chunk (and before any writes the next chunk's).
        team.barrier();
        team.run([&] {
          if (team.rank == 0)
            chunk_inputs = recurrent_input_rows<T>(h0, hidden, mh, chunk_start, chunk_columns / batch, input_rows);
        });
        team.barrier();
        team.run([&] {
          const auto [first, last] = team.share(gate_width);
          if (last <= first) return;
          const Tensor d_chunk =
              d_projection_chunk.narrow(0, 0, gate_width * chunk_columns).view({gate_width, chunk_columns});
          grad_w.narrow(0, first, last - first).addmm_(d_chunk.narrow(0, first, last - first), chunk_inputs);
        });
        team.barrier();
      }
    }
    team.run([&] {
      if (product_rows.defined()) d_product.narrow(0, begin, rows).copy_(product_rows);
    });
  });
  Tensor d_h0 = masked(d_product, at_step(m_hidden_input, 0)) + carry;
  d_projection_chunk.reset();
  std::optional<Tensor> grad_b;
  if (has_bias) grad_b = grad_bias;
  std::optional<Tensor> grad_gamma_x;
  if (normalizes_input) grad_gamma_x = grad_gamma_input;
  return {d_gates_by_batch.transpose(0, 1), grad_w, grad_b, d_h0, d_c, grad_gamma_hidden, grad_gamma_cell,
          grad_beta_cell, grad_gamma_x};
}

// -- the input normalization: BN(W_x x_t; γ_x) + b for all steps at once ------------------------
//
// recurrent_batchnorm's reference loop (layer.use_fused = False) normalizes the input projection of
// every step before the loop, as one batch norm over a (batch, steps × gates) matrix whose columns
// are the (step, gate) pairs (the fast loop above does it inside its passes). ATen's CPU
// batch norm takes such a wide matrix through its channels-last kernels (at digits/cpu-v1's
// (32, 25,600), one thread: 0.78 ms forward and 0.90 ms backward, against these passes' 0.52 and
// 0.80 ms); these column passes are the same arithmetic, a block of columns at a time so that the
// block's rows stay in cache between the passes.

// y = (x - μ)·(rstd·γ) + β over the columns [begin, end), with μ, biased σ², rstd = 1/√(σ² + ε).
template <typename T>
REGBENCH_INLINE void column_batchnorm_range(const T* x, int64_t rows, int64_t width, int64_t begin, int64_t end,
                                            const T* gamma, const T* beta, T epsilon, T* y, T* mean, T* var,
                                            T* rstd) {
  column_mean_var_range(x, rows, width, begin, end, mean, var);
  T scale[kColumnBlock];  // rstd·γ, once a column rather than once an element
  for (int64_t j = begin; j < end; ++j) {
    rstd[j] = T(1) / std::sqrt(var[j] + epsilon);
    scale[j - begin] = rstd[j] * gamma[j];
  }
  for (int64_t b = 0; b < rows; ++b) {
    const T* in = x + b * width + begin;
    T* out = y + b * width + begin;
    const T* m = mean + begin;
    if (beta != nullptr) {
      const T* shift = beta + begin;
      REGBENCH_NO_LOOP_ALIASING
      for (int64_t j = 0; j < end - begin; ++j) out[j] = (in[j] - m[j]) * scale[j] + shift[j];
    } else {
      REGBENCH_NO_LOOP_ALIASING
      for (int64_t j = 0; j < end - begin; ++j) out[j] = (in[j] - m[j]) * scale[j];
    }
  }
}

// Its gradient with batch statistics: ∂L/∂β = Σ_b dy, ∂L/∂γ = Σ_b dy·x̂, and
// ∂L/∂x = γ·rstd·(dy - mean_b(dy) - x̂·mean_b(dy·x̂)), over the columns [begin, end).
template <typename T>
REGBENCH_INLINE void column_batchnorm_backward_range(const T* dy, const T* x, int64_t rows, int64_t width,
                                                     int64_t begin, int64_t end, const T* mean, const T* rstd,
                                                     const T* gamma, T* dx, T* grad_gamma, T* grad_beta) {
  for (int64_t j = begin; j < end; ++j) grad_beta[j] = T(0), grad_gamma[j] = T(0);
  for (int64_t b = 0; b < rows; ++b) {
    const T *d = dy + b * width, *in = x + b * width;
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = begin; j < end; ++j) {
      grad_beta[j] += d[j];
      grad_gamma[j] += d[j] * (in[j] - mean[j]);
    }
  }
  for (int64_t j = begin; j < end; ++j) grad_gamma[j] *= rstd[j];
  const T inverse_rows = T(1) / T(rows);
  for (int64_t b = 0; b < rows; ++b) {
    const T *d = dy + b * width, *in = x + b * width;
    T* out = dx + b * width;
    REGBENCH_NO_LOOP_ALIASING
    for (int64_t j = begin; j < end; ++j) {
      const T normalized = (in[j] - mean[j]) * rstd[j];
      out[j] = (gamma[j] * rstd[j]) *
               (d[j] - grad_beta[j] * inverse_rows - normalized * (grad_gamma[j] * inverse_rows));
    }
  }
}

REGBENCH_CLONES void run_column_batchnorm(const float* x, int64_t rows, int64_t width, int64_t begin, int64_t end,
                                          const float* gamma, const float* beta, float epsilon, float* y, float* mean,
                                          float* var, float* rstd) {
  column_batchnorm_range(x, rows, width, begin, end, gamma, beta, epsilon, y, mean, var, rstd);
}
void run_column_batchnorm(const double* x, int64_t rows, int64_t width, int64_t begin, int64_t end,
                          const double* gamma, const double* beta, double epsilon, double* y, double* mean,
                          double* var, double* rstd) {
  column_batchnorm_range(x, rows, width, begin, end, gamma, beta, epsilon, y, mean, var, rstd);
}
REGBENCH_CLONES void run_column_batchnorm_backward(const float* dy, const float* x, int64_t rows, int64_t width,
                                                   int64_t begin, int64_t end, const float* mean, const float* rstd,
                                                   const float* gamma, float* dx, float* grad_gamma,
                                                   float* grad_beta) {
  column_batchnorm_backward_range(dy, x, rows, width, begin, end, mean, rstd, gamma, dx, grad_gamma, grad_beta);
}
void run_column_batchnorm_backward(const double* dy, const double* x, int64_t rows, int64_t width, int64_t begin,
                                   int64_t end, const double* mean, const double* rstd, const double* gamma,
                                   double* dx, double* grad_gamma, double* grad_beta) {
  column_batchnorm_backward_range(dy, x, rows, width, begin, end, mean, rstd, gamma, dx, grad_gamma, grad_beta);
}

void check_columns(const Tensor& x, const char* what) {
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
              "regbench::", what, " takes a 2-D CPU float32 or float64 tensor, got ", x.sizes(), " ", x.scalar_type(),
              " on ", x.device());
}

}  // namespace fast

std::vector<Tensor> column_batchnorm(const Tensor& x_in, const Tensor& gamma_in, const std::optional<Tensor>& beta_in,
                                     double eps) {
  at::NoGradGuard no_grad;
  fast::check_columns(x_in, "column_batchnorm");
  const Tensor x = x_in.contiguous(), gamma = gamma_in.to(x.scalar_type()).contiguous();
  const Tensor beta = beta_in.has_value() && beta_in->defined() ? beta_in->to(x.scalar_type()).contiguous() : Tensor();
  const int64_t rows = x.size(0), width = x.size(1);
  TORCH_CHECK(gamma.numel() == width && (!beta.defined() || beta.numel() == width),
              "regbench::column_batchnorm: gamma and beta need one value per column (", width, ")");
  Tensor y = at::empty_like(x), mean = at::empty({width}, x.options()), var = at::empty({width}, x.options()),
         rstd = at::empty({width}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "column_batchnorm", [&] {
    const scalar_t* beta_data = beta.defined() ? beta.data_ptr<scalar_t>() : nullptr;
    fast::for_column_blocks(width, [&](int64_t begin, int64_t end) {
      fast::run_column_batchnorm(x.data_ptr<scalar_t>(), rows, width, begin, end, gamma.data_ptr<scalar_t>(),
                                 beta_data, static_cast<scalar_t>(eps), y.data_ptr<scalar_t>(),
                                 mean.data_ptr<scalar_t>(), var.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>());
    });
  });
  return {y, mean, var, rstd};
}

std::vector<Tensor> column_batchnorm_backward(const Tensor& grad_y, const Tensor& x_in, const Tensor& mean,
                                              const Tensor& rstd, const Tensor& gamma_in) {
  at::NoGradGuard no_grad;
  fast::check_columns(x_in, "column_batchnorm_backward");
  const Tensor x = x_in.contiguous(), dy = grad_y.to(x.scalar_type()).contiguous();
  const Tensor gamma = gamma_in.to(x.scalar_type()).contiguous();
  const Tensor mean_c = mean.contiguous(), rstd_c = rstd.contiguous();
  const int64_t rows = x.size(0), width = x.size(1);
  TORCH_CHECK(dy.sizes() == x.sizes() && gamma.numel() == width && mean_c.numel() == width && rstd_c.numel() == width,
              "regbench::column_batchnorm_backward: grad_y must have x's shape and gamma, mean, rstd one value per "
              "column");
  Tensor dx = at::empty_like(x), grad_gamma = at::empty({width}, x.options()), grad_beta = at::empty({width}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "column_batchnorm_backward", [&] {
    fast::for_column_blocks(width, [&](int64_t begin, int64_t end) {
      fast::run_column_batchnorm_backward(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), rows, width, begin, end,
                                          mean_c.data_ptr<scalar_t>(), rstd_c.data_ptr<scalar_t>(),
                                          gamma.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
                                          grad_gamma.data_ptr<scalar_t>(), grad_beta.data_ptr<scalar_t>());
    });
  });
  return {dx, grad_gamma, grad_beta};
}

std::vector<Tensor> batchnorm_lstm_forward(const Tensor& xp, const Tensor& w_hh, const std::optional<Tensor>& b_hh,
                                           const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden,
                                           const Tensor& gamma_cell, const Tensor& beta_cell,
                                           const std::optional<std::vector<Tensor>>& running, double eps,
                                           const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell,
                                           const Mask& u_cell, const Mask& u_hidden, bool onednn,
                                           const std::optional<Tensor>& gamma_input) {
  const int64_t H = xp.size(2) / 4;
  const Tensor no_tensor;
  TORCH_CHECK(!running.has_value() || running->size() == (given(gamma_input) ? 6u : 4u),
              "regbench::batchnorm_lstm_forward: running takes the mean and variance of the recurrent projection and "
              "of the cell (and of the input projection, with gamma_input), got ", running->size(), " tensors");
  bool fits = fast::fits(xp, {&w_hh, b_hh.has_value() ? &*b_hh : &no_tensor, &h0, &c0, &gamma_hidden, &gamma_cell,
                              &beta_cell, given(gamma_input) ? &*gamma_input : &no_tensor},
                         {&m_hidden_input, &m_candidate, &m_cell, &u_cell, &u_hidden}, xp.size(0), xp.size(1), H);
  if (running.has_value())
    for (const Tensor& statistic : *running) fits = fits && fast::fits(xp, {&statistic}, {}, 0, 0, 0);
  if (fits) {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      return fast::batchnorm_lstm_forward<T>(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                                             m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn, gamma_input);
    };
    return xp.scalar_type() == at::kFloat ? run(float()) : run(double());
  }
  return batchnorm_lstm_forward_generic(xp, w_hh, b_hh, h0, c0, gamma_hidden, gamma_cell, beta_cell, running, eps,
                                        m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, onednn, gamma_input);
}

std::vector<std::optional<Tensor>> batchnorm_lstm_backward(
    const std::optional<Tensor>& grad_hidden, const std::optional<Tensor>& grad_cells, const Tensor& w_hh,
    const Tensor& h0, const Tensor& c0, const Tensor& gamma_hidden, const Tensor& gamma_cell, const Tensor& gates,
    const Tensor& normalized_hidden, const Tensor& normalized_cells, const Tensor& rstd_hidden,
    const Tensor& rstd_cells, const Tensor& tanh_cells, const Tensor& cells, const Tensor& hidden,
    const Mask& m_hidden_input, const Mask& m_candidate, const Mask& m_cell, const Mask& u_cell,
    const Mask& u_hidden, bool has_bias, bool batch_statistics, bool onednn, const std::optional<Tensor>& projection,
    const std::optional<Tensor>& gamma_input, const std::optional<Tensor>& mean_input,
    const std::optional<Tensor>& rstd_input) {
  const int64_t H = gates.size(2) / 4;
  const Tensor no_tensor;
  const bool normalizes_input = given(gamma_input);
  TORCH_CHECK(!normalizes_input || (given(projection) && given(mean_input) && given(rstd_input)),
              "regbench::batchnorm_lstm_backward: gamma_input needs the projection, mean_input and rstd_input too");
  const Tensor& raw = normalizes_input ? *projection : no_tensor;
  const Tensor& mean_x = normalizes_input ? *mean_input : no_tensor;
  const Tensor& rstd_x = normalizes_input ? *rstd_input : no_tensor;
  const Tensor& gamma_x = normalizes_input ? *gamma_input : no_tensor;
  const Tensor& gh = grad_hidden.has_value() ? *grad_hidden : no_tensor;
  const Tensor& gc = grad_cells.has_value() ? *grad_cells : no_tensor;
  const bool contiguous = gates.is_contiguous() && normalized_hidden.is_contiguous() &&
                          normalized_cells.is_contiguous() && rstd_hidden.is_contiguous() &&
                          rstd_cells.is_contiguous() && tanh_cells.is_contiguous() && cells.is_contiguous() &&
                          hidden.is_contiguous();
  if (contiguous && fast::fits(gates, {&gh, &gc, &w_hh, &h0, &c0, &gamma_hidden, &gamma_cell, &normalized_hidden,
                                       &normalized_cells, &rstd_hidden, &rstd_cells, &tanh_cells, &cells, &hidden, &raw,
                                       &mean_x, &rstd_x, &gamma_x},
                               {&m_hidden_input, &m_candidate, &m_cell, &u_cell, &u_hidden}, gates.size(0),
                               gates.size(1), H)) {
    auto run = [&](auto tag) {
      using T = decltype(tag);
      return fast::batchnorm_lstm_backward<T>(grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, gates,
                                              normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells,
                                              cells, hidden, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden,
                                              has_bias, batch_statistics, onednn, projection, gamma_input, mean_input,
                                              rstd_input);
    };
    return gates.scalar_type() == at::kFloat ? run(float()) : run(double());
  }
  return batchnorm_lstm_backward_generic(grad_hidden, grad_cells, w_hh, h0, c0, gamma_hidden, gamma_cell, gates,
                                         normalized_hidden, normalized_cells, rstd_hidden, rstd_cells, tanh_cells, cells,
                                         hidden, m_hidden_input, m_candidate, m_cell, u_cell, u_hidden, has_bias,
                                         batch_statistics, onednn, projection, gamma_input, mean_input, rstd_input);
}
