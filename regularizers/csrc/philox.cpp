// The CPU's dropout masks: a parallel Philox4x32-10 sampler keyed from torch's generator
// (bernoulli_mask), and its raw draws for the tests (philox_draws). Separate from the loops: it
// shares only rows.h's per-CPU clones with them.
#include "rows.h"

#include <mutex>

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
// and against the generator written from its definition. Sixteen counters at a time, as plain
// arrays, so that the rounds vectorize.
constexpr int kPhiloxLanes = 16;
constexpr int64_t kDrawsPerGroup = 4 * kPhiloxLanes;
static_assert(kMaskBlock % kDrawsPerGroup == 0, "a mask block holds whole groups of draws");

REGBENCH_INLINE void philox_draws(uint64_t key, uint64_t block, int64_t count, uint32_t* out) {
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

// out[i] = kept where draw i of the block is below the threshold, else 0; a threshold of 2^32
// (keep everything) is passed as keep_all, so that the comparison stays in 32 bits and vectorizes.
template <typename T>
REGBENCH_INLINE void mask_block(uint64_t key, uint64_t block, int64_t count, uint32_t threshold, bool keep_all, T kept,
                                T* out) {
  uint32_t draws[kMaskBlock];
  philox_draws(key, block, count, draws);
  for (int64_t i = 0; i < count; ++i) out[i] = (keep_all || draws[i] < threshold) ? kept : T(0);
}
REGBENCH_CLONES void run_mask_block(uint64_t key, uint64_t block, int64_t count, uint32_t threshold, bool keep_all,
                                    float kept, float* out) {
  mask_block(key, block, count, threshold, keep_all, kept, out);
}
void run_mask_block(uint64_t key, uint64_t block, int64_t count, uint32_t threshold, bool keep_all, double kept,
                    double* out) {
  mask_block(key, block, count, threshold, keep_all, kept, out);
}

}  // namespace fast

Tensor bernoulli_mask(std::vector<int64_t> sizes, double keep_probability, double kept_value, at::ScalarType dtype) {
  TORCH_CHECK(keep_probability >= 0.0 && keep_probability <= 1.0, "keep_probability must be in [0, 1], got ",
              keep_probability);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "bernoulli_mask draws float32 or float64 masks, got ", dtype);
  Tensor mask = at::empty(sizes, at::TensorOptions().dtype(dtype));
  uint64_t key;
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    key = at::check_generator<at::CPUGeneratorImpl>(generator)->random64();
  }
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

// The first `count` draws of one subsequence, for the tests.
Tensor philox_draws(uint64_t key, uint64_t block, int64_t count) {
  TORCH_CHECK(count >= 0 && count <= fast::kMaskBlock, "count must be in [0, ", fast::kMaskBlock, "]");
  Tensor draws = at::empty({count}, at::TensorOptions().dtype(at::kLong));
  std::vector<uint32_t> values(fast::kMaskBlock);
  fast::philox_draws(key, block, count, values.data());
  for (int64_t i = 0; i < count; ++i) draws.data_ptr<int64_t>()[i] = values[i];
  return draws;
}
