// Post-training int8 conversion of a trained f32 model (a Sequential of runtime/nn modules) into
// a QuantizedModel: BatchNorm folded, per-channel symmetric int8 weights, int32 biases, int8
// activations whose ranges are calibrated on a few batches. tern-finetune calls it on a checkpoint.
//
// Supported, in a Sequential (nested Sequentials are flattened):
//   Conv2d (groups 1, or depthwise: groups == in == out channels), optionally followed by
//   BatchNorm2d, then optionally ReLU or ReLU6 — one op, BN folded and the activation fused;
//   Linear, optionally followed by BatchNorm2d and ReLU / ReLU6, the same way;
//   Flatten (no op: the next Linear's weight columns are permuted to NHWC order); Dropout (the
//   identity at inference, dropped);
//   MaxPool2d, GlobalAvgPool2d; Residual with an identity shortcut (MobileNetV2's blocks), with or
//   without a ReLU after the add.
// Anything else (a BatchNorm2d or ReLU with no conv before it, grouped convs, GroupNorm, HSwish,
// AvgPool2d, a Residual with a shortcut module, attention...) is refused with an Error
// naming the module and listing what is supported.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ondevice/quantized_model.h"
#include "runtime/nn/sequential.h"
#include "runtime/tensor/tensor.h"

namespace tern {
class BatchNorm2d;
}

namespace tern::ondevice {

enum class Calibration : uint8_t {
  min_max,  // the observed [min, max] of each activation
  mse,      // the clipping of [min, max] that minimises the quantisation MSE of the observed values
};
const char* calibration_name(Calibration c);
// "minmax" or "mse"; anything else is an Error listing both.
Calibration parse_calibration(const std::string& name);

struct QuantizeOptions {
  Calibration calibration = Calibration::min_max;
  int64_t batch = 64;         // calibration images per f32 forward
  int histogram_bins = 2048;  // MSE calibration's resolution over [min, max]
};

// Converts `model` (left unchanged, run in eval mode during calibration and restored to its mode
// afterwards) with activation ranges calibrated on `calibration` (f32 [N, C, H, W], normalised as
// in training; a few hundred images are plenty). Throws tern::Error for an unsupported layer, an
// input that is not [N, C, H, W], or a bias that overflows int32.
QuantizedModel quantize_model(Sequential& model, const Tensor& calibration,
                              const QuantizeOptions& options = {});

// --- Building blocks, exposed for tests ---

// The affine map an eval-mode BatchNorm2d applies per channel: y = scale[c] * x + shift[c].
struct ChannelAffine {
  std::vector<float> scale, shift;
};
// Measured by running the layer on probe inputs, so it is exactly what the layer computes
// (whatever its eps) up to f32 rounding.
ChannelAffine batch_norm_affine(BatchNorm2d& bn);
// w' = scale[o] * w[o, ...], b' = scale[o] * b[o] + shift[o], for w [out, ...] and b [out] (or
// empty for no bias): the conv or linear followed by the BN, as one layer.
void fold_affine(const ChannelAffine& affine, std::vector<float>& weight, std::vector<float>& bias);

// Asymmetric int8 parameters for a real range [lo, hi], widened to contain 0 so that zero (the
// padding) is exact: scale = (hi - lo) / 255, zero_point = round(-128 - lo / scale).
struct RangeQuant {
  float scale = 1.0f;
  int32_t zero_point = 0;
};
RangeQuant range_quant(float lo, float hi);
// MSE calibration: among the ranges [a * lo, b * hi], a and b in [0.2, 1], the one whose int8
// rounding and clipping error over a histogram of the observed values (bins equal parts of
// [lo, hi]) is smallest, found by coordinate descent on a grid of steps 0.01.
RangeQuant mse_range_quant(const std::vector<double>& histogram, float lo, float hi);

// Per-output-channel symmetric int8: scale[o] = max |w[o, :]| / 127 (1 for an all-zero row),
// q = clamp(round(w / scale), -127, 127). w is [out, row].
void quantize_weights_per_channel(const std::vector<float>& w, int64_t out, std::vector<int8_t>& q,
                                  std::vector<float>& scale);

}  // namespace tern::ondevice
