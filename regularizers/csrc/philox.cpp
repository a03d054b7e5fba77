// The CPU's random numbers: a parallel Philox4x32-10 sampler keyed from torch's generator, for
// dropout masks (bernoulli_mask) and for weight noise (add_gaussian_noise), and its raw draws for
// the tests (philox_draws). Separate from the loops: it shares only rows.h's per-CPU clones with them.
#include "rows.h"

#include <initializer_list>
#include <mutex>

#if defined(REGBENCH_X86_CLONES)
#include <immintrin.h>
#endif

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
// and against the generator written from its definition. Sixteen counters at a time; this loop is
// the portable definition, philox_draws_avx2 below the same stream in AVX2, and philox_draws picks.
constexpr int kPhiloxLanes = 16;
constexpr int64_t kDrawsPerGroup = 4 * kPhiloxLanes;
static_assert(kMaskBlock % kDrawsPerGroup == 0, "a mask block holds whole groups of draws");

static void philox_draws_portable(uint64_t key, uint64_t block, int64_t count, uint32_t* out) {
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

#if defined(REGBENCH_X86_CLONES)
// The same draws with AVX2 in 32-bit lanes, 3.5x as fast as the portable loop (which the compiler
// vectorizes in 64-bit lanes only, and spills): two sets of 8 counters per group of 16, each
// round's 32x32 -> 64-bit products taken on the even lanes and on the odd ones (shifted down),
// then the low and high halves blended back into 8 lanes. In a block the counters stay below
// 2^32, so the second counter word is 0.
__attribute__((target("avx2"), always_inline)) inline void philox_round(__m256i& c0, __m256i& c1, __m256i& c2,
                                                                       __m256i& c3, __m256i key0, __m256i key1) {
  const __m256i multiplier_a = _mm256_set1_epi64x(0xD2511F53), multiplier_b = _mm256_set1_epi64x(0xCD9E8D57);
  const __m256i a_even = _mm256_mul_epu32(c0, multiplier_a);
  const __m256i a_odd = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), multiplier_a);
  const __m256i b_even = _mm256_mul_epu32(c2, multiplier_b);
  const __m256i b_odd = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), multiplier_b);
  const __m256i low_a = _mm256_blend_epi32(a_even, _mm256_slli_epi64(a_odd, 32), 0xAA);
  const __m256i high_a = _mm256_blend_epi32(_mm256_srli_epi64(a_even, 32), a_odd, 0xAA);
  const __m256i low_b = _mm256_blend_epi32(b_even, _mm256_slli_epi64(b_odd, 32), 0xAA);
  const __m256i high_b = _mm256_blend_epi32(_mm256_srli_epi64(b_even, 32), b_odd, 0xAA);
  c0 = _mm256_xor_si256(_mm256_xor_si256(high_b, c1), key0);
  c2 = _mm256_xor_si256(_mm256_xor_si256(high_a, c3), key1);
  c1 = low_b, c3 = low_a;
}

// The four words of 8 counters, one vector a word, stored counter by counter (out[4 * lane + word]).
__attribute__((target("avx2"), always_inline)) inline void store_by_counter(__m256i w0, __m256i w1, __m256i w2,
                                                                           __m256i w3, uint32_t* out) {
  const __m256i t0 = _mm256_unpacklo_epi32(w0, w1), t1 = _mm256_unpackhi_epi32(w0, w1);
  const __m256i t2 = _mm256_unpacklo_epi32(w2, w3), t3 = _mm256_unpackhi_epi32(w2, w3);
  const __m256i lanes04 = _mm256_unpacklo_epi64(t0, t2), lanes15 = _mm256_unpackhi_epi64(t0, t2);
  const __m256i lanes26 = _mm256_unpacklo_epi64(t1, t3), lanes37 = _mm256_unpackhi_epi64(t1, t3);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_permute2x128_si256(lanes04, lanes15, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8), _mm256_permute2x128_si256(lanes26, lanes37, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 16), _mm256_permute2x128_si256(lanes04, lanes15, 0x31));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 24), _mm256_permute2x128_si256(lanes26, lanes37, 0x31));
}

// Runs the rounds for the counters of draws 0 .. count-1 (rounded up to whole groups) and hands each
// 8 counters' four words to `sink(w0, w1, w2, w3, first)`, `first` being the index of their first
// draw; the sink stores them (store_by_counter puts them in the stream's order).
template <typename Sink>
__attribute__((target("avx2"), always_inline)) inline void philox_avx2(uint64_t key, uint64_t block, int64_t count,
                                                                      Sink& sink) {
  static_assert(kPhiloxLanes == 16, "a group is two vectors of 8 counters");
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), zero = _mm256_setzero_si256();
  const __m256i block_low = _mm256_set1_epi32(static_cast<int32_t>(block));
  const __m256i block_high = _mm256_set1_epi32(static_cast<int32_t>(block >> 32));
  for (int64_t group = 0; group * 4 < count; group += kPhiloxLanes) {
    __m256i a0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(group)), lane), a1 = zero;
    __m256i b0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(group + 8)), lane), b1 = zero;
    __m256i a2 = block_low, b2 = block_low, a3 = block_high, b3 = block_high;
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
      const __m256i key0 = _mm256_set1_epi32(static_cast<int32_t>(k0));
      const __m256i key1 = _mm256_set1_epi32(static_cast<int32_t>(k1));
      philox_round(a0, a1, a2, a3, key0, key1);  // two independent sets: one's products run during the other's
      philox_round(b0, b1, b2, b3, key0, key1);
      k0 += 0x9E3779B9u, k1 += 0xBB67AE85u;
    }
    sink(a0, a1, a2, a3, group * 4);
    sink(b0, b1, b2, b3, group * 4 + 32);
  }
}

struct StoreDraws {
  uint32_t* out;
  __attribute__((target("avx2"), always_inline)) void operator()(__m256i w0, __m256i w1, __m256i w2, __m256i w3,
                                                                int64_t first) {
    store_by_counter(w0, w1, w2, w3, out + first);
  }
};

// A float32 mask straight from the rounds' registers: each 32-bit draw compared with the threshold
// (unsigned, by flipping the sign bits for a signed comparison), `kept`'s bits where it is below.
// The last group's draws past `count` go to a scratch buffer: `out` is the mask itself.
struct StoreMask {
  float* out;
  int64_t count;
  __m256i threshold_flipped, kept_bits, sign;
  bool keep_all;
  __attribute__((target("avx2"), always_inline)) __m256i kept_where_below(__m256i w) const {
    const __m256i below = keep_all ? _mm256_set1_epi32(-1)
                                   : _mm256_cmpgt_epi32(threshold_flipped, _mm256_xor_si256(w, sign));
    return _mm256_and_si256(below, kept_bits);
  }
  __attribute__((target("avx2"), always_inline)) void operator()(__m256i w0, __m256i w1, __m256i w2, __m256i w3,
                                                                int64_t first) {
    if (first >= count) return;
    if (first + 32 <= count) {
      store_by_counter(kept_where_below(w0), kept_where_below(w1), kept_where_below(w2), kept_where_below(w3),
                       reinterpret_cast<uint32_t*>(out + first));
      return;
    }
    uint32_t scratch[32];
    store_by_counter(kept_where_below(w0), kept_where_below(w1), kept_where_below(w2), kept_where_below(w3), scratch);
    std::memcpy(out + first, scratch, sizeof(float) * static_cast<size_t>(count - first));
  }
};

// Gaussian noise straight from the rounds' registers (noise_block's Box-Muller, 8 pairs a vector):
// words 0 and 1 of each counter are one pair (u1, u2), words 2 and 3 the next, as in the stream's
// order, and the four results go back into that order (store_by_counter) beside the weight's values.
// noise_block's loop vectorizes only after a pass that writes all the block's draws out and reads them
// back as pairs; here draws, transform and sum stay in registers and a 32-value scratch (2.37 -> 1.87 ns
// an element at float32 on one thread, measured on the 2600 x 650 word-PTB weight).
struct StoreNoise {
  const float* in;
  float* out;
  int64_t count;
  float sigma;
  __attribute__((target("avx2"), always_inline)) static __m256 polynomial(__m256 x, std::initializer_list<float> c) {
    __m256 p = _mm256_set1_ps(*c.begin());  // Horner's rule, the highest coefficient first
    for (auto it = c.begin() + 1; it != c.end(); ++it) p = _mm256_add_ps(_mm256_mul_ps(p, x), _mm256_set1_ps(*it));
    return p;
  }
  // r = sqrt(-2 ln u1), log_vectorizable's steps in 8 lanes
  __attribute__((target("avx2"), always_inline)) static __m256 radius(__m256i draws) {
    const __m256 u1 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_srli_epi32(draws, 8), _mm256_set1_epi32(1))),
                                    _mm256_set1_ps(5.9604644775390625e-8f));
    const __m256i bits = _mm256_castps_si256(u1);
    const __m256i e = _mm256_sub_epi32(_mm256_srai_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x004afb0d)), 23),
                                       _mm256_set1_epi32(127));
    const __m256 m = _mm256_castsi256_ps(_mm256_sub_epi32(bits, _mm256_slli_epi32(e, 23)));
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 s = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one)), s2 = _mm256_mul_ps(s, s);
    const __m256 p = polynomial(s2, {1.0f / 9.0f, 1.0f / 7.0f, 1.0f / 5.0f, 1.0f / 3.0f, 1.0f});
    const __m256 log_u1 = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.0f), s), p),
                                        _mm256_mul_ps(_mm256_cvtepi32_ps(e), _mm256_set1_ps(0.693147180559945309f)));
    return _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), log_u1));
  }
  // (r cos 2πu2, r sin 2πu2), cos_sin_of_turns's steps in 8 lanes; the quarter turn's swap and signs
  // by blend and sign bits: turns 1 and 3 swap cosine and sine, 1 and 2 negate the first, 2 and 3 the second.
  __attribute__((target("avx2"), always_inline)) static void pair(__m256i first, __m256i second, __m256& z0, __m256& z1) {
    const __m256 r = radius(first);
    const __m256 u2 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(second, 8)), _mm256_set1_ps(5.9604644775390625e-8f));
    const __m256 quarter = _mm256_mul_ps(u2, _mm256_set1_ps(4.0f));
    const __m256i q = _mm256_cvttps_epi32(_mm256_add_ps(quarter, _mm256_set1_ps(0.5f)));
    const __m256 theta = _mm256_mul_ps(_mm256_sub_ps(quarter, _mm256_cvtepi32_ps(q)), _mm256_set1_ps(1.57079632679489662f));
    const __m256 t2 = _mm256_mul_ps(theta, theta);
    const __m256 c = polynomial(t2, {1.0f / 40320.0f, -1.0f / 720.0f, 1.0f / 24.0f, -0.5f, 1.0f});
    const __m256 sn = _mm256_mul_ps(polynomial(t2, {1.0f / 362880.0f, -1.0f / 5040.0f, 1.0f / 120.0f, -1.0f / 6.0f, 1.0f}), theta);
    const __m256i turn = _mm256_and_si256(q, _mm256_set1_epi32(3));
    const __m256 swap = _mm256_castsi256_ps(_mm256_slli_epi32(turn, 31));  // bit 0 of the turn, as the blend's sign bit
    const __m256 a = _mm256_blendv_ps(c, sn, swap), b = _mm256_blendv_ps(sn, c, swap);
    const __m256 negate_a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(turn, _mm256_set1_epi32(1)), _mm256_set1_epi32(2)), 30));
    const __m256 negate_b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(turn, _mm256_set1_epi32(2)), 30));
    z0 = _mm256_mul_ps(r, _mm256_xor_ps(a, negate_a));
    z1 = _mm256_mul_ps(r, _mm256_xor_ps(b, negate_b));
  }
  __attribute__((target("avx2"), always_inline)) void operator()(__m256i w0, __m256i w1, __m256i w2, __m256i w3,
                                                                int64_t first) {
    if (first >= count) return;
    __m256 z0, z1, z2, z3;
    pair(w0, w1, z0, z1);
    pair(w2, w3, z2, z3);
    alignas(32) float z[32];
    store_by_counter(_mm256_castps_si256(z0), _mm256_castps_si256(z1), _mm256_castps_si256(z2),
                     _mm256_castps_si256(z3), reinterpret_cast<uint32_t*>(z));
    const int64_t n = std::min<int64_t>(32, count - first);
    if (n == 32) {
      const __m256 scale = _mm256_set1_ps(sigma);
      for (int i = 0; i < 32; i += 8)
        _mm256_storeu_ps(out + first + i, _mm256_add_ps(_mm256_loadu_ps(in + first + i),
                                                        _mm256_mul_ps(scale, _mm256_load_ps(z + i))));
      return;
    }
    for (int64_t i = 0; i < n; ++i) out[first + i] = in[first + i] + sigma * z[i];
  }
};

__attribute__((target("avx2"))) static void noise_block_avx2(uint64_t key, uint64_t block, int64_t count, float sigma,
                                                             const float* in, float* out) {
  StoreNoise sink{in, out, count, sigma};
  philox_avx2(key, block, count, sink);
}

__attribute__((target("avx2"))) static void philox_draws_avx2(uint64_t key, uint64_t block, int64_t count,
                                                              uint32_t* out) {
  StoreDraws sink{out};
  philox_avx2(key, block, count, sink);
}

__attribute__((target("avx2"))) static void mask_block_avx2(uint64_t key, uint64_t block, int64_t count,
                                                            uint32_t threshold, bool keep_all, float kept, float* out) {
  int32_t kept_as_int;
  std::memcpy(&kept_as_int, &kept, sizeof kept_as_int);
  StoreMask sink{out, count, _mm256_set1_epi32(static_cast<int32_t>(threshold ^ 0x80000000u)),
                 _mm256_set1_epi32(kept_as_int), _mm256_set1_epi32(static_cast<int32_t>(0x80000000u)), keep_all};
  philox_avx2(key, block, count, sink);
}
#endif

// The dispatch: AVX2 where the CPU has it.
static bool cpu_has_avx2() {
#if defined(REGBENCH_X86_CLONES)
  static const bool has_avx2 = __builtin_cpu_supports("avx2");
  return has_avx2;
#else
  return false;
#endif
}

static void philox_draws(uint64_t key, uint64_t block, int64_t count, uint32_t* out, bool portable = false) {
#if defined(REGBENCH_X86_CLONES)
  if (cpu_has_avx2() && !portable) return philox_draws_avx2(key, block, count, out);
#endif
  philox_draws_portable(key, block, count, out);
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
REGBENCH_CLONES void run_mask_block_portable(uint64_t key, uint64_t block, int64_t count, uint32_t threshold,
                                             bool keep_all, float kept, float* out) {
  mask_block(key, block, count, threshold, keep_all, kept, out);
}
void run_mask_block(uint64_t key, uint64_t block, int64_t count, uint32_t threshold, bool keep_all, float kept,
                    float* out) {
#if defined(REGBENCH_X86_CLONES)
  if (cpu_has_avx2()) return mask_block_avx2(key, block, count, threshold, keep_all, kept, out);
#endif
  run_mask_block_portable(key, block, count, threshold, keep_all, kept, out);
}
void run_mask_block(uint64_t key, uint64_t block, int64_t count, uint32_t threshold, bool keep_all, double kept,
                    double* out) {
  mask_block(key, block, count, threshold, keep_all, kept, out);
}

// Gaussian draws by the Box-Muller transform of pairs of Philox draws, with the logarithm, sine and
// cosine written as polynomials so that a block's loop vectorizes (torch.randn runs one Mersenne
// Twister serially, about 10 ns an element here: weight noise on the 2 x 650 word-PTB LSTM drew
// 6.8 M of them per forward pass, a third of the step). Uniforms have 24 bits, as float32 does:
// u1 = (a + 1)·2^-24 in (0, 1], u2 = b·2^-24 in [0, 1); z0 = r cos(2πu2), z1 = r sin(2πu2) with
// r = sqrt(-2 ln u1), so |z| ≤ sqrt(48 ln 2) = 5.77 (a tail of probability 8e-9 is cut).
REGBENCH_INLINE float log_vectorizable(float x) {  // x > 0 and normal
  int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  // x = m · 2^e with m in [sqrt(1/2), sqrt(2)): the exponent of x·sqrt(2), the mantissa scaled back.
  int32_t e = ((bits + 0x004afb0d) >> 23) - 127;  // 0x004afb0d: the bits that take sqrt(2)·2^-1 to 1
  int32_t m_bits = bits - (e << 23);
  float m;
  std::memcpy(&m, &m_bits, sizeof m);
  // ln m = 2 atanh(s) with s = (m-1)/(m+1), |s| ≤ 0.1716: five odd terms leave an error below 1e-9.
  const float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  float p = 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  p = p * s2 + 1.0f;
  return 2.0f * s * p + static_cast<float>(e) * 0.693147180559945309f;
}

// cos(2πx) and sin(2πx) for x in [0, 1): the nearest quarter turn q/4 taken out, θ = 2π(x - q/4) in
// [-π/4, π/4] by Taylor polynomials (error below 2e-9), then turned back by q quarter turns.
REGBENCH_INLINE void cos_sin_of_turns(float x, float& cosine, float& sine) {
  const float quarter = x * 4.0f;
  const int32_t q = static_cast<int32_t>(quarter + 0.5f);
  const float theta = (quarter - static_cast<float>(q)) * 1.57079632679489662f, t2 = theta * theta;
  float c = 1.0f / 40320.0f;
  c = c * t2 - 1.0f / 720.0f;
  c = c * t2 + 1.0f / 24.0f;
  c = c * t2 - 0.5f;
  c = c * t2 + 1.0f;
  float sn = 1.0f / 362880.0f;
  sn = sn * t2 - 1.0f / 5040.0f;
  sn = sn * t2 + 1.0f / 120.0f;
  sn = sn * t2 - 1.0f / 6.0f;
  sn = sn * t2 + 1.0f;
  sn = sn * theta;
  const int32_t turn = q & 3;  // (cos, sin) turned by 0, 90, 180 or 270 degrees
  const float cos_a = turn == 0 ? c : turn == 1 ? -sn : turn == 2 ? -c : sn;
  const float sin_a = turn == 0 ? sn : turn == 1 ? c : turn == 2 ? -sn : -c;
  cosine = cos_a, sine = sin_a;
}

// out[i] = in[i] + sigma · z_i for the count elements of one block (count even, or the last z dropped).
template <typename T>
REGBENCH_INLINE void noise_block(uint64_t key, uint64_t block, int64_t count, float sigma, const T* in, T* out) {
  uint32_t draws[kMaskBlock];
  philox_draws(key, block, count + (count & 1), draws);
  float z[kMaskBlock];
  const int64_t pairs = (count + 1) / 2;
  for (int64_t i = 0; i < pairs; ++i) {
    const float u1 = static_cast<float>((draws[2 * i] >> 8) + 1) * 5.9604644775390625e-8f;  // 2^-24
    const float u2 = static_cast<float>(draws[2 * i + 1] >> 8) * 5.9604644775390625e-8f;
    const float r = std::sqrt(-2.0f * log_vectorizable(u1));
    float c, s;
    cos_sin_of_turns(u2, c, s);
    z[2 * i] = r * c, z[2 * i + 1] = r * s;
  }
  for (int64_t i = 0; i < count; ++i) out[i] = in[i] + static_cast<T>(sigma * z[i]);
}
REGBENCH_CLONES void run_noise_block_portable(uint64_t key, uint64_t block, int64_t count, float sigma,
                                              const float* in, float* out) {
  noise_block(key, block, count, sigma, in, out);
}
void run_noise_block(uint64_t key, uint64_t block, int64_t count, float sigma, const float* in, float* out,
                     bool portable) {
#if defined(REGBENCH_X86_CLONES)
  if (cpu_has_avx2() && !portable) return noise_block_avx2(key, block, count, sigma, in, out);
#endif
  run_noise_block_portable(key, block, count, sigma, in, out);
}
void run_noise_block(uint64_t key, uint64_t block, int64_t count, float sigma, const double* in, double* out,
                     bool /*portable: double has one loop*/) {
  noise_block(key, block, count, sigma, in, out);
}

}  // namespace fast

// One 64-bit key from torch's default CPU generator: torch.manual_seed fixes every draw made from it.
static uint64_t philox_key() {
  auto generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return at::check_generator<at::CPUGeneratorImpl>(generator)->random64();
}

Tensor bernoulli_mask(std::vector<int64_t> sizes, double keep_probability, double kept_value, at::ScalarType dtype) {
  TORCH_CHECK(keep_probability >= 0.0 && keep_probability <= 1.0, "keep_probability must be in [0, 1], got ",
              keep_probability);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "bernoulli_mask draws float32 or float64 masks, got ", dtype);
  Tensor mask = at::empty(sizes, at::TensorOptions().dtype(dtype));
  const uint64_t key = philox_key();
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

// weight + sigma · N(0, 1), drawn in parallel in blocks of independent Philox subsequences (so the
// result does not depend on the thread count), for CPU float32 and float64 tensors.
Tensor add_gaussian_noise(const Tensor& weight, double sigma, bool portable) {
  TORCH_CHECK(weight.device().is_cpu() && (weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kDouble),
              "add_gaussian_noise takes CPU float32 or float64 tensors, got ", weight.scalar_type(), " on ",
              weight.device());
  const Tensor in = weight.contiguous();
  Tensor out = at::empty_like(in);
  const uint64_t key = philox_key();
  const int64_t n = in.numel();
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "add_gaussian_noise", [&] {
    const scalar_t* source = in.data_ptr<scalar_t>();
    scalar_t* target = out.data_ptr<scalar_t>();
    at::parallel_for(0, (n + fast::kMaskBlock - 1) / fast::kMaskBlock, 1, [&](int64_t begin, int64_t end) {
      for (int64_t block = begin; block < end; ++block) {
        const int64_t first = block * fast::kMaskBlock, count = std::min(n - first, fast::kMaskBlock);
        fast::run_noise_block(key, static_cast<uint64_t>(block), count, static_cast<float>(sigma), source + first,
                              target + first, portable);
      }
    });
  });
  return out;
}

// The first `count` draws of one subsequence, for the tests (`portable`: by the loop without AVX2).
Tensor philox_draws(uint64_t key, uint64_t block, int64_t count, bool portable) {
  TORCH_CHECK(count >= 0 && count <= fast::kMaskBlock, "count must be in [0, ", fast::kMaskBlock, "]");
  Tensor draws = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  std::vector<uint32_t> values(fast::kMaskBlock);
  fast::philox_draws(key, block, count, values.data(), portable);
  for (int64_t i = 0; i < count; ++i) draws.data_ptr<int64_t>()[i] = values[i];
  return draws;
}
