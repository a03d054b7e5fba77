// The recurrent step's matrix product on the CPU in float32: C = A · Wᵀ (+ bias) for a few rows of
// A (the batch, or one thread's block of it) against a weight packed once per call into panels.
//
// Why: a step's product is small (32 × 128 by 128 × 512 at the benchmark's shapes) and runs
// thousands of times per training step. oneDNN's inner product spends as long again on its per-call
// set-up as on the arithmetic there (48 µs against 20 µs here at that shape, one thread), and
// MKL's sgemm is slower still on this project's CPUs. Here the weight is packed once into panels of
// 32 columns of C (k-major), and a register-blocked kernel computes 6 rows × 2 vectors of columns at
// a time with 12 vector accumulators and no set-up at all. The vector is the CPU's own width
// (16 floats with AVX-512, 8 with AVX2, 4 otherwise): a GCC vector wider than the target's registers
// is emulated through memory, 45x slower (1.4 against 65 GFLOPS on an AVX2 core), and an AVX2 core
// has 16 registers, too few for 24 accumulators. Narrower vectors take the panel in 2 or 4 slices.
// Weights too large for a core's cache (over 8 MiB) stay with oneDNN, which blocks for the caches.
#include "rows.h"

namespace fast {

namespace {

constexpr int64_t kPanel = 32;  // columns of C per panel
typedef float Vec16 __attribute__((vector_size(64)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec4 __attribute__((vector_size(16)));

template <class V>
REGBENCH_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// C[r, 0:columns] = Σ_k A[r, k] · panel[k, 0:columns] (+ bias) for r < Rows and columns ≤ 2 vectors;
// `panel` points at the slice's first column in a panel of kPanel columns.
template <class V, int Rows>
REGBENCH_INLINE void panel_block(int64_t K, const float* A, int64_t lda, const float* panel, const float* bias,
                                 float* C, int64_t ldc, int64_t columns) {
  constexpr int64_t L = sizeof(V) / sizeof(float);
  V acc[Rows][2];
  const V b0 = bias ? load<V>(bias) : V{}, b1 = bias ? load<V>(bias + L) : V{};
  for (int r = 0; r < Rows; ++r) acc[r][0] = b0, acc[r][1] = b1;
  for (int64_t k = 0; k < K; ++k) {
    const V w0 = load<V>(panel + k * kPanel), w1 = load<V>(panel + k * kPanel + L);
    for (int r = 0; r < Rows; ++r) {
      const float a = A[r * lda + k];
      acc[r][0] += a * w0;
      acc[r][1] += a * w1;
    }
  }
  for (int r = 0; r < Rows; ++r) {
    if (columns == 2 * L) {
      std::memcpy(C + r * ldc, &acc[r][0], sizeof(V));
      std::memcpy(C + r * ldc + L, &acc[r][1], sizeof(V));
    } else {
      float row[2 * L];
      std::memcpy(row, &acc[r][0], sizeof(V));
      std::memcpy(row + L, &acc[r][1], sizeof(V));
      for (int64_t c = 0; c < columns; ++c) C[r * ldc + c] = row[c];
    }
  }
}

template <class V>
REGBENCH_INLINE void panel_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* panels,
                                const float* bias, float* C, int64_t ldc, int64_t first_panel, int64_t last_panel) {
  constexpr int64_t slice = 2 * sizeof(V) / sizeof(float);  // columns per block
  for (int64_t p = first_panel; p < last_panel; ++p) {
    for (int64_t first = p * kPanel; first < std::min((p + 1) * kPanel, N); first += slice) {
      const float* panel = panels + p * K * kPanel + (first - p * kPanel);
      const float* slice_bias = bias ? bias + first : nullptr;
      const int64_t columns = std::min(slice, N - first);
      float* out = C + first;
      int64_t m = 0;
      for (; m + 6 <= M; m += 6)
        panel_block<V, 6>(K, A + m * lda, lda, panel, slice_bias, out + m * ldc, ldc, columns);
      const float* a = A + m * lda;
      float* c = out + m * ldc;
      switch (M - m) {
        case 5: panel_block<V, 5>(K, a, lda, panel, slice_bias, c, ldc, columns); break;
        case 4: panel_block<V, 4>(K, a, lda, panel, slice_bias, c, ldc, columns); break;
        case 3: panel_block<V, 3>(K, a, lda, panel, slice_bias, c, ldc, columns); break;
        case 2: panel_block<V, 2>(K, a, lda, panel, slice_bias, c, ldc, columns); break;
        case 1: panel_block<V, 1>(K, a, lda, panel, slice_bias, c, ldc, columns); break;
        default: break;
      }
    }
  }
}

using PanelRows = void (*)(int64_t, int64_t, int64_t, const float*, int64_t, const float*, const float*, float*,
                           int64_t, int64_t, int64_t);

void panel_rows_baseline(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* panels,
                         const float* bias, float* C, int64_t ldc, int64_t first, int64_t last) {
  panel_rows<Vec4>(M, N, K, A, lda, panels, bias, C, ldc, first, last);
}

#ifdef REGBENCH_X86_CLONES
__attribute__((target("arch=x86-64-v3"))) void panel_rows_avx2(int64_t M, int64_t N, int64_t K, const float* A,
                                                                int64_t lda, const float* panels, const float* bias,
                                                                float* C, int64_t ldc, int64_t first, int64_t last) {
  panel_rows<Vec8>(M, N, K, A, lda, panels, bias, C, ldc, first, last);
}

__attribute__((target("arch=x86-64-v4"))) void panel_rows_avx512(int64_t M, int64_t N, int64_t K, const float* A,
                                                                  int64_t lda, const float* panels, const float* bias,
                                                                  float* C, int64_t ldc, int64_t first, int64_t last) {
  panel_rows<Vec16>(M, N, K, A, lda, panels, bias, C, ldc, first, last);
}
#endif

// The kernel of this CPU's vector width, chosen once (the row functions' clones choose the same way).
PanelRows pick_panel_rows() {
#ifdef REGBENCH_X86_CLONES
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return panel_rows_avx512;
  if (__builtin_cpu_supports("x86-64-v3")) return panel_rows_avx2;
#endif
  return panel_rows_baseline;
}

}  // namespace

void panel_product_rows(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* panels,
                        const float* bias, float* C, int64_t ldc, int64_t first_panel, int64_t last_panel) {
  static const PanelRows rows = pick_panel_rows();
  rows(M, N, K, A, lda, panels, bias, C, ldc, first_panel, last_panel);
}

PanelWeight::PanelWeight(const Tensor& weight, const std::optional<Tensor>& bias_in) {
  // (N, K): C = A · wᵀ. Read as it lies, in the order of its memory: the backward passes hand over
  // Wᵀ as a transposed view, whose contiguous copy was as large as a tanh-RNN layer's hidden states
  // at word_ptb/medium and set its peak memory.
  const Tensor& w = weight;
  N = w.size(0), K = w.size(1);
  const int64_t count = (N + kPanel - 1) / kPanel;
  panels = at::zeros({count * K * kPanel}, w.options());
  const float* source = w.data_ptr<float>();
  const int64_t row_stride = w.stride(0), column_stride = w.stride(1);
  float* target = panels.data_ptr<float>();
  auto place = [&](int64_t n, int64_t k) {
    target[(n / kPanel) * K * kPanel + k * kPanel + n % kPanel] = source[n * row_stride + k * column_stride];
  };
  if (column_stride == 1 || row_stride != 1) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) place(n, k);
  } else {
    for (int64_t k = 0; k < K; ++k)
      for (int64_t n = 0; n < N; ++n) place(n, k);
  }
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
