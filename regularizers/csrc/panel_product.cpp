// The recurrent step's matrix product on the CPU in float32: C = A · Wᵀ (+ bias) for a few rows of
// A (the batch, or one thread's block of it) against a weight packed once per call into panels.
//
// Why: a step's product is small (32 × 128 by 128 × 512 at the benchmark's shapes) and runs
// thousands of times per training step. oneDNN's inner product spends as long again on its per-call
// set-up as on the arithmetic there (48 µs against 20 µs here at that shape, one thread), and
// MKL's sgemm is slower still on this project's CPUs. Here the weight is packed once into panels of
// 32 columns of C (k-major, so that a panel's row k is two 16-float vectors), and a register-blocked
// kernel computes 6 rows × 32 columns at a time with 12 vector accumulators and no set-up at all.
// Weights too large for a core's cache (over 8 MiB) stay with oneDNN, which blocks for the caches.
#include "rows.h"

namespace fast {

namespace {

constexpr int64_t kPanel = 32;  // columns of C per panel: two vectors of 16 floats
typedef float v16 __attribute__((vector_size(64)));

REGBENCH_INLINE v16 load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// C[r, 0:columns] = Σ_k A[r, k] · panel[k, 0:columns] (+ bias) for r < Rows.
template <int Rows>
REGBENCH_INLINE void panel_block(int64_t K, const float* A, int64_t lda, const float* panel, const float* bias,
                                 float* C, int64_t ldc, int64_t columns) {
  v16 acc[Rows][2];
  const v16 b0 = bias ? load16(bias) : v16{}, b1 = bias ? load16(bias + 16) : v16{};
  for (int r = 0; r < Rows; ++r) acc[r][0] = b0, acc[r][1] = b1;
  for (int64_t k = 0; k < K; ++k) {
    const v16 w0 = load16(panel + k * kPanel), w1 = load16(panel + k * kPanel + 16);
    for (int r = 0; r < Rows; ++r) {
      const float a = A[r * lda + k];
      acc[r][0] += a * w0;
      acc[r][1] += a * w1;
    }
  }
  for (int r = 0; r < Rows; ++r) {
    if (columns == kPanel) {
      std::memcpy(C + r * ldc, &acc[r][0], sizeof(v16));
      std::memcpy(C + r * ldc + 16, &acc[r][1], sizeof(v16));
    } else {
      float row[kPanel];
      std::memcpy(row, &acc[r][0], sizeof(v16));
      std::memcpy(row + 16, &acc[r][1], sizeof(v16));
      for (int64_t c = 0; c < columns; ++c) C[r * ldc + c] = row[c];
    }
  }
}

}  // namespace

REGBENCH_CLONES void panel_product_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                                        const float* panels, const float* bias, float* C, int64_t ldc,
                                        int64_t first_panel, int64_t last_panel) {
  for (int64_t p = first_panel; p < last_panel; ++p) {
    const float* panel = panels + p * K * kPanel;
    const float* panel_bias = bias ? bias + p * kPanel : nullptr;
    const int64_t columns = std::min(kPanel, N - p * kPanel);
    float* out = C + p * kPanel;
    int64_t m = 0;
    for (; m + 6 <= M; m += 6) panel_block<6>(K, A + m * lda, lda, panel, panel_bias, out + m * ldc, ldc, columns);
    const float* a = A + m * lda;
    float* c = out + m * ldc;
    switch (M - m) {
      case 5: panel_block<5>(K, a, lda, panel, panel_bias, c, ldc, columns); break;
      case 4: panel_block<4>(K, a, lda, panel, panel_bias, c, ldc, columns); break;
      case 3: panel_block<3>(K, a, lda, panel, panel_bias, c, ldc, columns); break;
      case 2: panel_block<2>(K, a, lda, panel, panel_bias, c, ldc, columns); break;
      case 1: panel_block<1>(K, a, lda, panel, panel_bias, c, ldc, columns); break;
      default: break;
    }
  }
}

PanelWeight::PanelWeight(const Tensor& weight, const std::optional<Tensor>& bias_in) {
  const Tensor w = weight.contiguous();  // (N, K): C = A · wᵀ
  N = w.size(0), K = w.size(1);
  const int64_t count = (N + kPanel - 1) / kPanel;
  panels = at::zeros({count * K * kPanel}, w.options());
  const float* source = w.data_ptr<float>();
  float* target = panels.data_ptr<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) target[(n / kPanel) * K * kPanel + k * kPanel + n % kPanel] = source[n * K + k];
  if (bias_in.has_value() && bias_in->defined()) {
    bias = at::zeros({count * kPanel}, w.options());
    bias.narrow(0, 0, N).copy_(*bias_in);
  }
}

bool PanelWeight::suits(const Tensor& weight) {
  constexpr int64_t kLargestBytes = int64_t(8) << 20;
  return weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.dim() == 2 &&
         weight.numel() * int64_t(sizeof(float)) <= kLargestBytes;
}

Tensor PanelWeight::operator()(const Tensor& x_in) const {
  const Tensor x = x_in.contiguous();  // a block of a step's rows already is
  const int64_t M = x.size(0);
  Tensor out = at::empty({M, N}, x.options());
  const int64_t count = (N + kPanel - 1) / kPanel;
  const float* bias_data = bias.defined() ? bias.data_ptr<float>() : nullptr;
  // Inside a thread's block (the loops' row blocks) this runs in that thread; called with the whole
  // batch, the panels are shared out over the threads when there is enough work.
  const int64_t panels_per_task = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(M * K * kPanel, 1));
  at::parallel_for(0, count, panels_per_task, [&](int64_t begin, int64_t end) {
    panel_product_rows(M, N, K, x.data_ptr<float>(), K, panels.data_ptr<float>(), bias_data,
                       out.data_ptr<float>(), N, begin, end);
  });
  return out;
}

}  // namespace fast
