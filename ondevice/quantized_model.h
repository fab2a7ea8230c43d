// QuantizedModel: an int8 network as the device runs it — a list of int8 operators over NHWC
// activation tensors at batch 1. quantize.h makes one from a trained f32 model, model_format.h
// saves and loads it, and tern-finetune trains its chosen parts (qas.h scales their gradients).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/kernels/cpu/int8_conv.h"
#include "runtime/kernels/cpu/int8_elementwise.h"

namespace tern::ondevice {

// One activation tensor of one image: [h, w, c] int8 with real value scale * (q - zero_point).
struct QuantTensor {
  int32_t h = 1, w = 1, c = 1;
  float scale = 1.0f;
  int32_t zero_point = 0;

  int64_t numel() const { return int64_t{h} * w * c; }
  float dequantize(int8_t q) const {
    return scale * static_cast<float>(static_cast<int32_t>(q) - zero_point);
  }
  int8_t quantize(float v) const;  // clamp(round(v / scale) + zero_point)
};

// Values are part of the file format (model_format.h): never renumber.
enum class QuantOpKind : uint32_t {
  conv2d = 1,            // kxk, groups 1: cpu::int8_conv2d
  depthwise_conv2d = 2,  // groups == channels, in place: cpu::int8_depthwise_conv2d_inplace
  linear = 3,            // cpu::int8_linear; reads its input tensor as one vector (h * w * c)
  add = 4,               // residual add: cpu::int8_add(input, input2)
  global_avg_pool = 5,   // cpu::int8_global_avg_pool, same scale and zero point as its input
  max_pool = 6,          // cpu::int8_max_pool2d, same scale and zero point as its input
};
const char* op_kind_name(QuantOpKind kind);

// The activation fused into an op's output clamp (the f32 model's ReLU / ReLU6 after it).
enum class Activation : uint32_t { none = 0, relu = 1, relu6 = 2 };

struct QuantOp {
  QuantOpKind kind = QuantOpKind::conv2d;
  std::string name;  // the f32 module's path ("3.body.0"), for update plans and messages
  int32_t input = 0;
  int32_t input2 = -1;  // add only: the second operand (the residual)
  int32_t output = 0;
  int32_t kernel = 1, stride = 1, pad = 0;  // conv, depthwise, max_pool
  Activation activation = Activation::none;
  int32_t act_min = -128, act_max = 127;       // the output clamp in int8 units (conv, linear, add)
  float add_a_mult = 1.0f, add_b_mult = 1.0f;  // add: s_input / s_output, s_input2 / s_output

  // conv2d: [c_out, kernel, kernel, c_in] (OHWI); depthwise: [c, kernel, kernel]; linear: [out, in]
  // with `in` in the input tensor's NHWC order. Symmetric per output channel, in [-127, 127].
  std::vector<int8_t> weight;
  std::vector<int32_t> bias;        // [c_out], units of s_x * weight_scale[c]
  std::vector<float> weight_scale;  // [c_out]
  std::vector<int32_t> multiplier;  // [c_out]: s_x * weight_scale[c] / s_y as cpu::QuantMultiplier
  std::vector<int32_t> shift;       // [c_out]

  bool has_weights() const {
    return kind == QuantOpKind::conv2d || kind == QuantOpKind::depthwise_conv2d ||
           kind == QuantOpKind::linear;
  }
  int32_t out_channels() const { return static_cast<int32_t>(weight_scale.size()); }
  cpu::Requant requant() const;
};

class QuantizedModel {
 public:
  std::vector<QuantTensor> tensors;  // tensors[0] is the model input
  std::vector<QuantOp> ops;          // in execution order
  int32_t output = 0;                // the logits tensor, [1, 1, classes]

  // The f32 input an image is given in: [in_channels, height, width] (NCHW of one sample),
  // normalised as for the f32 model; quantize_input maps it to tensors[0].
  int32_t in_channels() const { return tensors.at(0).c; }
  int32_t height() const { return tensors.at(0).h; }
  int32_t width() const { return tensors.at(0).w; }
  int32_t num_classes() const {
    return static_cast<int32_t>(tensors.at(static_cast<size_t>(output)).numel());
  }

  // Geometry of a conv, depthwise or linear op (linear: a 1x1 conv of one pixel).
  cpu::Int8ConvShape conv_shape(const QuantOp& op) const;
  cpu::Int8PoolShape pool_shape(const QuantOp& op) const;

  // Checks every index, shape and array length; throws tern::Error naming the op. The loader
  // and the converter call it, so a model that passes runs without out-of-bounds accesses.
  void validate() const;

  // f32 [C, H, W] image -> int8 tensors[0] (NHWC).
  std::vector<int8_t> quantize_input(const float* image) const;
  // Runs every op; values[t] receives tensor t (values[0] must hold the quantized input).
  // Depthwise convolutions run in place on a copy of their input.
  void run(std::vector<std::vector<int8_t>>& values) const;
  // The f32 logits of one image (quantize_input, run, logits).
  std::vector<float> forward(const float* image) const;
  // The logits from a run's values. When the output comes from a linear op (every classifier
  // here) they are its int32 accumulators times s_x * s_w[c], in f32: not rounded to the output
  // tensor's step and not clipped to its calibrated range, which test images may exceed. The
  // loss of on-device training starts from these. Otherwise the output tensor, dequantised.
  std::vector<float> logits(const std::vector<std::vector<int8_t>>& values) const;

  // Bytes of weights, biases, multipliers and shifts (what the device keeps in flash).
  int64_t parameter_bytes() const;
  // One line per op: kind, name, shapes, quantisation.
  std::string summary() const;
};

}  // namespace tern::ondevice
