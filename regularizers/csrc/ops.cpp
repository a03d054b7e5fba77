// The Python bindings of the native loops: every function that regularizers/native.py exposes,
// under the names (and with the arguments) of the Python loops in fused.py and fused_batchnorm.py.
// Only the bindings live here, so that the loops' sources hold no binding code.
#include "common.h"

#include <torch/extension.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bernoulli_mask", &bernoulli_mask);
  m.def("philox_draws", &philox_draws);
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
  // The loops made of ATen operations (any device and dtype), for the tests and for comparison.
  m.def("lstm_forward_generic", &lstm_forward_generic);
  m.def("lstm_backward_generic", &lstm_backward_generic);
  m.def("gru_forward_generic", &gru_forward_generic);
  m.def("gru_backward_generic", &gru_backward_generic);
  m.def("batchnorm_lstm_forward_generic", &batchnorm_lstm_forward_generic);
  m.def("batchnorm_lstm_backward_generic", &batchnorm_lstm_backward_generic);
  m.def("batchnorm_lstm_forward", &batchnorm_lstm_forward);
  m.def("batchnorm_lstm_backward", &batchnorm_lstm_backward);
}
