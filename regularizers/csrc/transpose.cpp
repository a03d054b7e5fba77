// The transposes of the fast backward passes: a step's gate gradients and recurrent inputs,
// rows written as the columns of the weight gradient's factors. On their own because the float32
// one is hand-vectorized (8 x 8 blocks in registers) and is the only code here that needs it.
#include "rows.h"

namespace fast {
namespace {

// dst[j * dst_stride + b] = src[b * src_stride + j] for b < rows, j < width: rows written as
// columns of a transposed buffer. In tiles of 16 columns, so that both sides stay in the L1 cache
// (ATen's strided copy of the same transposed view is several times slower). Serial: callers run
// it inside a task of their own parallel pass, so that a step costs one thread hand-off, not two.
template <typename T>
void transpose_tiles(const T* src, int64_t src_stride, int64_t rows, int64_t width, T* dst, int64_t dst_stride) {
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

}  // namespace

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
  if (rows8 < rows) transpose_tiles<float>(src + rows8 * src_stride, src_stride, rows - rows8, width, dst + rows8, dst_stride);
  if (width8 < width) transpose_tiles<float>(src + width8, src_stride, rows8, width - width8, dst + width8 * dst_stride, dst_stride);
}
#else
void transpose_rows(const float* src, int64_t src_stride, int64_t rows, int64_t width, float* dst, int64_t dst_stride) {
  transpose_tiles(src, src_stride, rows, width, dst, dst_stride);
}
#endif

void transpose_rows(const double* src, int64_t src_stride, int64_t rows, int64_t width, double* dst,
                    int64_t dst_stride) {
  transpose_tiles(src, src_stride, rows, width, dst, dst_stride);
}

}  // namespace fast
