// The fast path's shared machinery (lstm_gru.cpp, rnn.cpp and batchnorm_lstm.cpp): the build's
// per-CPU clones, the vectorizable exp, sigmoid and tanh, reading masks row by row in place, the
// checks of what the fast path takes, the time loops that run the rows (each thread's block of
// batch rows through every step), and the recurrent inputs of the weight gradient, chunk by chunk.
// A header, because the row loops must inline these into each instruction-set clone.
#pragma once

#include "common.h"

namespace fast {

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// One build runs at its best on any x86-64 machine: the loader picks the AVX-512, AVX2 or baseline
// copy of each row function when the library is loaded.
#define REGBENCH_X86_CLONES
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

// A mask of shape (T or 1, B or 1, H or 1), or a gradient of shape (T, B, H), read row by row in
// place, whatever its strides: no contiguous copy (an expanded gradient such as that of a sum
// would otherwise become a full (T, B, H) tensor). A backward pass also reads masks in their compact
// form (compact_mask, masks.cpp): uint8 flags that stand for `kept` where set and for 0 elsewhere.
template <typename T>
struct SequenceRows {
  const T* data = nullptr;  // null: absent (or compact)
  const uint8_t* flags = nullptr;  // a compact mask's
  T kept = T(1);
  int64_t step_stride = 0, batch_stride = 0, unit_stride = 0;  // 0 along a dimension of size 1

  SequenceRows(const std::optional<Tensor>& tensor, double kept_value = 1.0) {
    if (!tensor.has_value() || !tensor->defined()) return;
    const Tensor& x = *tensor;
    if (x.scalar_type() == at::kByte) {
      flags = x.data_ptr<uint8_t>();
      kept = T(kept_value);
    } else {
      data = x.data_ptr<T>();
    }
    step_stride = x.size(0) > 1 ? x.stride(0) : 0;
    batch_stride = x.size(1) > 1 ? x.stride(1) : 0;
    unit_stride = x.size(2) > 1 ? x.stride(2) : 0;
  }
  bool present() const { return data != nullptr || flags != nullptr; }
  // Row b at step t: H values (gathered into `scratch` unless they lie contiguous); `absent` if absent.
  const T* row(int64_t t, int64_t b, int64_t H, const T* absent, T* scratch) const {
    if (flags != nullptr) {
      const uint8_t* set = flags + t * step_stride + b * batch_stride;
      // A product, not a select, so that it vectorizes (the flags are 0 or 1): the select took a
      // third of the tanh-RNN's step at pmnist/cpu-v1.
      if (unit_stride == 1) {
        for (int64_t j = 0; j < H; ++j) scratch[j] = kept * static_cast<T>(set[j]);
      } else {
        for (int64_t j = 0; j < H; ++j) scratch[j] = kept * static_cast<T>(set[j * unit_stride]);
      }
      return scratch;
    }
    if (data == nullptr) return absent;
    const T* values = data + t * step_stride + b * batch_stride;
    if (unit_stride == 1 || H == 1) return values;
    for (int64_t j = 0; j < H; ++j) scratch[j] = values[j * unit_stride];
    return scratch;
  }
};

// Whether a mask fits SequenceRows for a sequence of `steps` × `batch` × `H` (`compact`: a loop that
// takes kept_values, and so reads compact masks too; batch norm's loops take none).
inline bool mask_fits(const Mask& mask, int64_t steps, int64_t batch, int64_t H, at::ScalarType dtype,
                      bool compact = false) {
  if (!mask.has_value() || !mask->defined()) return true;
  const Tensor& m = *mask;
  return m.device().is_cpu() && (m.scalar_type() == dtype || (compact && m.scalar_type() == at::kByte)) &&
         m.dim() == 3 && (m.size(0) == 1 || m.size(0) == steps) && (m.size(1) == 1 || m.size(1) == batch) &&
         (m.size(2) == 1 || m.size(2) == H);
}

inline bool fits(const Tensor& reference, std::initializer_list<const Tensor*> tensors, std::initializer_list<const Mask*> masks,
          int64_t steps, int64_t batch, int64_t H, bool compact_masks = false) {
  const auto dtype = reference.scalar_type();
  if (!reference.device().is_cpu() || (dtype != at::kFloat && dtype != at::kDouble)) return false;
  for (const Tensor* t : tensors)
    if (t->defined() && (!t->device().is_cpu() || t->scalar_type() != dtype)) return false;
  for (const Mask* m : masks)
    if (!mask_fits(*m, steps, batch, H, dtype, compact_masks)) return false;
  return true;
}

// Rows per thread of the fast loops. A batch row's recurrence depends on no other row, so each
// thread runs the whole time loop on its own block of rows: no synchronisation between threads at
// any step, and the products inside a block run single-threaded. Split only while the recurrent
// weight fits a core's cache (each thread reads all of it every step; a larger one is better
// shared out by the product's own threads over its columns) and each block keeps a few rows.
// `weight_rows_per_unit`: the recurrent weight's rows per hidden unit (the LSTM's 4 bounds the
// GRU's 3 too; the tanh-RNN's weight is H × H).
inline int64_t row_block(int64_t batch, int64_t H, size_t element_size, int64_t weight_rows_per_unit = 4) {
  constexpr int64_t kMinRows = 4;
  constexpr size_t kCacheBytes = size_t(2) << 20;
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || size_t(weight_rows_per_unit * H) * size_t(H) * element_size > kCacheBytes)
    return std::max<int64_t>(batch, 1);
  const int64_t block = (batch + threads - 1) / threads;
  return block < kMinRows ? std::max<int64_t>(batch, 1) : block;
}

// The row pass of one step over rows [begin, end): in this thread when the rows are a thread's
// block already, else shared out over the threads when there is enough work to share.
template <typename F>
inline void for_rows(int64_t begin, int64_t end, bool in_block, int64_t row_width, const F& pass) {
  constexpr int64_t kElementsPerTask = 16384;
  if (in_block) return pass(begin, end);
  const int64_t rows_per_task = std::max<int64_t>(1, kElementsPerTask / std::max<int64_t>(row_width, 1));
  at::parallel_for(begin, end, rows_per_task, pass);
}

// The time loops of the fast paths (lstm_gru.cpp, rnn.cpp). Each thread's block of batch rows
// (row_block) runs every step on its own: the recurrent product of the block's h_{t-1} (masked,
// `masked_input`: then `next_input` holds it, written by the rows of the step before), then
// `row(t, b, recurrent, h_prev, next, scratch)` for each row b, with `next` (where to write the
// masked h_t for step t+1) null when there is none to write, and `scratch_width` values of scratch
// (for SequenceRows::row). `product_width`: the product's columns per row.
template <typename T, typename Row>
void forward_time_loop(const Tensor& h0, const Tensor& hidden, const Tensor& next_input, bool masked_input,
                       const RecurrentProduct& product, int64_t block, int64_t product_width, int64_t scratch_width,
                       const Row& row) {
  const int64_t steps = hidden.size(0), batch = hidden.size(1), H = hidden.size(2);
  at::parallel_for(0, batch, block, [&](int64_t begin, int64_t end) {
    for (int64_t t = 0; t < steps; ++t) {
      const Tensor h_in = masked_input ? next_input : (t == 0 ? h0 : hidden.select(0, t - 1));
      const Tensor recurrent = product(h_in.narrow(0, begin, end - begin)).contiguous();
      const T* rec = recurrent.data_ptr<T>() - begin * product_width;  // indexed by the batch row b
      const T* h_prev = t == 0 ? h0.data_ptr<T>() : hidden.data_ptr<T>() + (t - 1) * batch * H;
      T* next = masked_input && t + 1 < steps ? next_input.data_ptr<T>() : nullptr;
      for_rows(begin, end, block < batch, product_width, [&](int64_t first, int64_t last) {
        std::vector<T> scratch(scratch_width);
        for (int64_t b = first; b < last; ++b)
          row(t, b, rec + b * product_width, h_prev + b * H, next ? next + b * H : nullptr, scratch.data());
      });
    }
  });
}

// The backward time loop, from the last step: `rows(t, first, last, later)` over the block's rows
// [first, last), where `later` is ∂L/∂(masked h_t) from step t+1's product (indexed by the batch
// row; null at the last step); then the block's rows of `product_input` (this step's gradient of
// the recurrent product, written by `rows`) times the transposed weight, for step t-1. After the
// loop, `d_product` holds step 0's: ∂L/∂(masked h0).
template <typename T, typename Rows>
void backward_time_loop(int64_t steps, int64_t batch, int64_t block, int64_t row_width, const RecurrentProduct& product,
                        const Tensor& product_input, const Tensor& d_product, const Rows& rows) {
  const int64_t H = d_product.size(1);
  at::parallel_for(0, batch, block, [&](int64_t begin, int64_t end) {
    Tensor product_rows;  // this block's rows of the product from the step after (later)
    for (int64_t t = steps - 1; t >= 0; --t) {
      const T* later = product_rows.defined() ? product_rows.data_ptr<T>() - begin * H : nullptr;
      for_rows(begin, end, block < batch, row_width, [&](int64_t first, int64_t last) { rows(t, first, last, later); });
      product_rows = product(product_input.narrow(0, begin, end - begin)).contiguous();
    }
    if (product_rows.defined()) d_product.narrow(0, begin, end - begin).copy_(product_rows);
  });
}

// Rows written as columns of a transposed buffer (transpose.cpp): dst[j * dst_stride + b] =
// src[b * src_stride + j] for b < rows, j < width.
void transpose_rows(const float* src, int64_t src_stride, int64_t rows, int64_t width, float* dst, int64_t dst_stride);
void transpose_rows(const double* src, int64_t src_stride, int64_t rows, int64_t width, double* dst,
                    int64_t dst_stride);

// Rows t·B + b, for the steps t in [first, first + count), of the recurrent product's inputs
// h_{t-1} ⊙ m_t (h_0 at t = 0): a view of h0 or of `hidden` as they lie in memory where no mask
// applies and the steps do not mix h0 with `hidden`; else built into `buffer` (grown as needed),
// rows shared out over the threads.
template <typename T>
Tensor recurrent_input_rows(const Tensor& h0, const Tensor& hidden, const SequenceRows<T>& mask, int64_t first,
                            int64_t count, Tensor& buffer) {
  const int64_t batch = hidden.size(1), H = hidden.size(2);
  if (!mask.present() && first >= 1) return hidden.narrow(0, first - 1, count).view({count * batch, H});
  const Tensor h0c = h0.contiguous();
  if (!mask.present() && count == 1) return h0c;
  if (!buffer.defined() || buffer.size(0) < count * batch) buffer = at::empty({count * batch, H}, hidden.options());
  const T* h0_data = h0c.data_ptr<T>();
  const T* hidden_data = hidden.data_ptr<T>();
  T* out = buffer.data_ptr<T>();
  at::parallel_for(0, count * batch, std::max<int64_t>(1, 16384 / std::max<int64_t>(H, 1)),
                   [&](int64_t begin, int64_t end) {
    std::vector<T> scratch(H);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t t = first + r / batch, b = r % batch;
      const T* h_prev = (t == 0 ? h0_data : hidden_data + (t - 1) * batch * H) + b * H;
      const T* m = mask.row(t, b, H, nullptr, scratch.data());
      for (int64_t j = 0; j < H; ++j) out[r * H + j] = m ? h_prev[j] * m[j] : h_prev[j];
    }
  });
  return buffer.narrow(0, 0, count * batch);
}

// The recurrent inputs (recurrent_input_rows) handed to use(first_step, steps, rows) a chunk of whole
// steps at a time, so that they never exist for the whole sequence at once: a copy of them was the
// largest allocation of the GRU's and tanh-RNN's backward, as large as their saved hidden states. A
// chunk is at most kChunkRows rows and at most an eighth of the sequence: a short sequence
// (word-level PTB's 35 steps of 20 rows) fits in one chunk of 2,048 rows, which made the copy as
// large as the states again (the 2-layer tanh-RNN's peak at word_ptb/small went from 1.13x torch's
// to under it with the eighth). But where the weight gradient the chunks are multiplied into
// (`gradient_rows` × H) outgrows a core's cache, each chunk reads and writes all of it, and a chunk
// of few rows is slow: at word_ptb/medium (2,600 × 650) an eighth is 5 steps of 20 rows, and the
// product of the whole sequence's 700 rows took 45 ms in chunks of 700, 54 ms in chunks of 100 and
// 166 ms in chunks of 20. There a chunk has at least kLargeGradientChunkRows rows. Step 0 (h0)
// opens the first chunk rather than going alone (20 rows against a 6.8 MB gradient: 4.7 ms).
template <typename T, typename Use>
void for_each_recurrent_input_chunk(const Tensor& h0, const Tensor& hidden, const SequenceRows<T>& mask,
                                    int64_t gradient_rows, const Use& use) {
  constexpr int64_t kChunkRows = 2048;  // as fast in at::addmm as one product of the whole sequence
  constexpr int64_t kChunksAtLeast = 8;
  constexpr int64_t kLargeGradientChunkRows = 256;
  constexpr size_t kCacheBytes = size_t(2) << 20;  // as row_block's
  const int64_t steps = hidden.size(0), batch = std::max<int64_t>(hidden.size(1), 1), H = hidden.size(2);
  int64_t per_chunk = std::min(kChunkRows / batch, (steps + kChunksAtLeast - 1) / kChunksAtLeast);
  if (size_t(gradient_rows) * size_t(H) * sizeof(T) > kCacheBytes)
    per_chunk = std::max(per_chunk, (kLargeGradientChunkRows + batch - 1) / batch);
  per_chunk = std::max<int64_t>(per_chunk, 1);
  Tensor buffer;
  for (int64_t first = 0; first < steps; first += per_chunk) {
    const int64_t count = std::min(per_chunk, steps - first);
    use(first, count, recurrent_input_rows<T>(h0, hidden, mask, first, count, buffer));
    if (!mask.present()) buffer = Tensor();  // unmasked, only the chunk with h0 is a copy
  }
}

// ∂L/∂W_hh = Σ_t d_t · (h_{t-1} ⊙ m_t): d_t holds the rows of W_hh × the steps·B columns (column
// t·B + b is row b of step t), times the recurrent inputs chunk by chunk (at::addmm takes the
// strided column block of d_t as it is; the first chunk's product is the gradient's first value).
template <typename T>
Tensor recurrent_weight_gradient(const Tensor& d_t, const Tensor& h0, const Tensor& hidden, const SequenceRows<T>& mask) {
  const int64_t batch = hidden.size(1);
  Tensor grad;
  for_each_recurrent_input_chunk<T>(h0, hidden, mask, d_t.size(0), [&](int64_t first, int64_t count, const Tensor& rows) {
    const Tensor d = d_t.narrow(1, first * batch, count * batch);
    if (grad.defined()) grad.addmm_(d, rows); else grad = at::mm(d, rows);
  });
  if (!grad.defined()) grad = at::zeros({d_t.size(0), hidden.size(2)}, hidden.options());  // no steps
  return grad;
}

}  // namespace fast
