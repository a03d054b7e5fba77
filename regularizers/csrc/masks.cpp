// The compact form in which the autograd Functions (fused.py) keep a dropout or zoneout mask for the
// backward pass: one byte an entry (set where the mask is not 0) and the one value it holds there,
// instead of a float an entry. A per-step mask is a sequence-sized tensor; for the tanh-RNN, whose
// loops keep nothing else of that size but its hidden states, two such masks made its peak memory
// up to 1.15x torch.nn.RNN's. The backward rows read the bytes as they are (SequenceRows, rows.h).
#include "common.h"

#include <atomic>

namespace {

template <typename T>
std::tuple<Tensor, double> compact(const Tensor& mask) {
  const Tensor values = mask.contiguous();
  const T* data = values.data_ptr<T>();
  const int64_t count = values.numel();
  T kept = T(0);
  for (int64_t i = 0; i < count && kept == T(0); ++i) kept = data[i];
  if (kept == T(0)) kept = T(1);  // all zeros: any value stands for them
  Tensor flags = at::empty(values.sizes(), values.options().dtype(at::kByte));
  uint8_t* out = flags.data_ptr<uint8_t>();
  std::atomic<bool> two_valued{true};
  at::parallel_for(0, count, 1 << 16, [&](int64_t begin, int64_t end) {
    // Branch-free, so that it vectorizes: a branchy loop took 4.5 ns an entry, a tenth of a zoneout
    // LSTM's training step at digits/cpu-v1.
    uint8_t other = 0;
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t set = data[i] != T(0);
      out[i] = set;
      other |= set & static_cast<uint8_t>(data[i] != kept);
    }
    if (other) two_valued = false;
  });
  if (!two_valued) return {at::empty({0}, values.options().dtype(at::kByte)), 0.0};
  return {flags, static_cast<double>(kept)};
}

}  // namespace

std::tuple<Tensor, double> compact_mask(const Tensor& mask) {
  TORCH_CHECK(mask.device().is_cpu() && (mask.scalar_type() == at::kFloat || mask.scalar_type() == at::kDouble),
              "compact_mask: expected a float32 or float64 CPU mask, got ", mask.scalar_type(), " on ", mask.device());
  return mask.scalar_type() == at::kFloat ? compact<float>(mask) : compact<double>(mask);
}
