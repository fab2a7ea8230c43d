#include "ondevice/quantized_model.h"

#include <cmath>
#include <sstream>

#include "runtime/error.h"
#include "runtime/kernels/cpu/requantize.h"

namespace tern::ondevice {

int8_t QuantTensor::quantize(float v) const { return cpu::saturate_round(v / scale, zero_point, -128, 127); }

const char* op_kind_name(QuantOpKind kind) {
  switch (kind) {
    case QuantOpKind::conv2d:
      return "conv2d";
    case QuantOpKind::depthwise_conv2d:
      return "depthwise_conv2d";
    case QuantOpKind::linear:
      return "linear";
    case QuantOpKind::add:
      return "add";
    case QuantOpKind::global_avg_pool:
      return "global_avg_pool";
    case QuantOpKind::max_pool:
      return "max_pool";
  }
  return "unknown";
}

cpu::Requant QuantOp::requant() const {
  return cpu::Requant{.multiplier = multiplier.data(),
                      .shift = shift.data(),
                      .out_zero_point = 0,
                      .act_min = act_min,
                      .act_max = act_max};
}

cpu::Int8ConvShape QuantizedModel::conv_shape(const QuantOp& op) const {
  const QuantTensor& in = tensors.at(static_cast<size_t>(op.input));
  if (op.kind == QuantOpKind::linear)
    return cpu::Int8ConvShape{1, 1, static_cast<int32_t>(in.numel()), op.out_channels(), 1, 1, 0};
  return cpu::Int8ConvShape{in.h, in.w, in.c, op.out_channels(), op.kernel, op.stride, op.pad};
}

cpu::Int8PoolShape QuantizedModel::pool_shape(const QuantOp& op) const {
  const QuantTensor& in = tensors.at(static_cast<size_t>(op.input));
  return cpu::Int8PoolShape{in.h, in.w, in.c, op.kernel, op.stride, op.pad};
}

namespace {

void check_tensor(const QuantTensor& t, size_t i) {
  TERN_CHECK(t.h >= 1 && t.w >= 1 && t.c >= 1, "quantized model: tensor ", i, " has shape ", t.h, "x", t.w,
             "x", t.c, "; every dimension must be >= 1");
  TERN_CHECK(std::isfinite(t.scale) && t.scale > 0, "quantized model: tensor ", i, " has scale ", t.scale,
             "; expected a positive finite number");
  TERN_CHECK(t.zero_point >= -128 && t.zero_point <= 127, "quantized model: tensor ", i, " has zero point ",
             t.zero_point, "; expected [-128, 127]");
}

bool same_shape(const QuantTensor& a, const QuantTensor& b) { return a.h == b.h && a.w == b.w && a.c == b.c; }
bool same_quant(const QuantTensor& a, const QuantTensor& b) {
  return a.scale == b.scale && a.zero_point == b.zero_point;
}

}  // namespace

void QuantizedModel::validate() const {
  TERN_CHECK(!tensors.empty(), "quantized model: no tensors");
  for (size_t i = 0; i < tensors.size(); ++i) check_tensor(tensors[i], i);
  const int32_t n = static_cast<int32_t>(tensors.size());
  std::vector<bool> written(tensors.size(), false);
  written[0] = true;
  for (size_t i = 0; i < ops.size(); ++i) {
    const QuantOp& op = ops[i];
    const std::string where =
        detail::concat("quantized model: op ", i, " (", op_kind_name(op.kind), " '", op.name, "')");
    auto readable = [&](int32_t t) { return t >= 0 && t < n && written[static_cast<size_t>(t)]; };
    TERN_CHECK(readable(op.input), where, ": input tensor ", op.input,
               " does not exist or is not computed yet");
    TERN_CHECK(op.output > 0 && op.output < n && !written[static_cast<size_t>(op.output)], where,
               ": output tensor ", op.output, " is out of range or written twice");
    const QuantTensor& in = tensors[static_cast<size_t>(op.input)];
    const QuantTensor& out = tensors[static_cast<size_t>(op.output)];
    TERN_CHECK(op.act_min >= -128 && op.act_min <= op.act_max && op.act_max <= 127, where, ": clamp [",
               op.act_min, ", ", op.act_max, "] is not inside [-128, 127]");
    if (op.kind == QuantOpKind::conv2d || op.kind == QuantOpKind::depthwise_conv2d ||
        op.kind == QuantOpKind::max_pool) {
      TERN_CHECK(op.kernel >= 1 && op.stride >= 1 && op.pad >= 0 && op.pad <= op.kernel / 2, where,
                 ": kernel ", op.kernel, ", stride ", op.stride, ", padding ", op.pad,
                 " unsupported (kernel, stride >= 1, 0 <= padding <= kernel / 2)");
      TERN_CHECK(in.h + 2 * op.pad >= op.kernel && in.w + 2 * op.pad >= op.kernel, where, ": input ", in.h,
                 "x", in.w, " is smaller than the kernel");
    }
    if (op.has_weights()) {
      const size_t c_out = op.weight_scale.size();
      TERN_CHECK(
          c_out >= 1 && op.bias.size() == c_out && op.multiplier.size() == c_out && op.shift.size() == c_out,
          where, ": bias, multiplier and shift must have one entry per output channel (", c_out, ")");
      for (size_t c = 0; c < c_out; ++c)
        TERN_CHECK(op.shift[c] >= -31 && op.shift[c] <= 30 && op.multiplier[c] >= 0, where,
                   ": requantisation of channel ", c, " out of range (multiplier ", op.multiplier[c],
                   ", shift ", op.shift[c], ")");
      const cpu::Int8ConvShape s = conv_shape(op);
      int64_t weights = 0;
      if (op.kind == QuantOpKind::conv2d) {
        weights = int64_t{s.c_out} * s.kernel * s.kernel * s.c_in;
        TERN_CHECK(out.h == s.out_h() && out.w == s.out_w() && out.c == s.c_out, where, ": output tensor is ",
                   out.h, "x", out.w, "x", out.c, ", the convolution makes ", s.out_h(), "x", s.out_w(), "x",
                   s.c_out);
      } else if (op.kind == QuantOpKind::depthwise_conv2d) {
        weights = int64_t{s.c_out} * s.kernel * s.kernel;
        TERN_CHECK(in.c == s.c_out && out.h == s.out_h() && out.w == s.out_w() && out.c == s.c_out, where,
                   ": a depthwise convolution of ", in.h, "x", in.w, "x", in.c, " cannot make ", out.h, "x",
                   out.w, "x", out.c);
        TERN_CHECK(int64_t{s.out_h()} * s.out_w() <= int64_t{in.h} * in.w, where,
                   ": in-place depthwise convolution needs an output no larger than its input");
      } else {
        weights = int64_t{s.c_out} * s.c_in;
        TERN_CHECK(out.numel() == s.c_out, where, ": output tensor has ", out.numel(), " elements, expected ",
                   s.c_out);
      }
      TERN_CHECK(static_cast<int64_t>(op.weight.size()) == weights, where, ": weight has ", op.weight.size(),
                 " elements, expected ", weights);
    } else if (op.kind == QuantOpKind::add) {
      TERN_CHECK(readable(op.input2), where, ": second input tensor ", op.input2, " is not computed yet");
      const QuantTensor& in2 = tensors[static_cast<size_t>(op.input2)];
      TERN_CHECK(same_shape(in, in2) && same_shape(in, out), where,
                 ": operands and result must have one shape");
      TERN_CHECK(std::isfinite(op.add_a_mult) && std::isfinite(op.add_b_mult), where,
                 ": non-finite multipliers");
    } else if (op.kind == QuantOpKind::global_avg_pool) {
      TERN_CHECK(out.h == 1 && out.w == 1 && out.c == in.c && same_quant(in, out), where,
                 ": output must be 1x1x", in.c, " with the input's scale and zero point");
    } else if (op.kind == QuantOpKind::max_pool) {
      const cpu::Int8PoolShape s = pool_shape(op);
      TERN_CHECK(out.h == s.out_h() && out.w == s.out_w() && out.c == in.c && same_quant(in, out), where,
                 ": output must be ", s.out_h(), "x", s.out_w(), "x", in.c,
                 " with the input's scale and zero point");
    } else {
      TERN_CHECK(false, where, ": unknown op kind ", static_cast<uint32_t>(op.kind));
    }
    written[static_cast<size_t>(op.output)] = true;
  }
  TERN_CHECK(output >= 0 && output < n && written[static_cast<size_t>(output)],
             "quantized model: output tensor ", output, " is never computed");
}

std::vector<int8_t> QuantizedModel::quantize_input(const float* image) const {
  const QuantTensor& t = tensors.at(0);
  std::vector<int8_t> q(static_cast<size_t>(t.numel()));
  for (int32_t c = 0; c < t.c; ++c)
    for (int32_t i = 0; i < t.h * t.w; ++i)
      q[static_cast<size_t>(i) * t.c + c] = t.quantize(image[static_cast<int64_t>(c) * t.h * t.w + i]);
  return q;
}

void QuantizedModel::run(std::vector<std::vector<int8_t>>& values) const {
  values.resize(tensors.size());
  for (const QuantOp& op : ops) {
    const QuantTensor& in = tensors[static_cast<size_t>(op.input)];
    const QuantTensor& out = tensors[static_cast<size_t>(op.output)];
    const std::vector<int8_t>& x = values[static_cast<size_t>(op.input)];
    std::vector<int8_t>& y = values[static_cast<size_t>(op.output)];
    cpu::Requant rq = op.requant();
    rq.out_zero_point = out.zero_point;
    switch (op.kind) {
      case QuantOpKind::conv2d:
        y.resize(static_cast<size_t>(out.numel()));
        cpu::int8_conv2d(conv_shape(op), x.data(), in.zero_point, op.weight.data(), op.bias.data(), rq,
                         y.data());
        break;
      case QuantOpKind::depthwise_conv2d: {
        y = x;
        std::vector<int8_t> scratch(static_cast<size_t>(int64_t{in.h} * in.w));
        cpu::int8_depthwise_conv2d_inplace(conv_shape(op), y.data(), in.zero_point, op.weight.data(),
                                           op.bias.data(), rq, scratch.data());
        y.resize(static_cast<size_t>(out.numel()));
        break;
      }
      case QuantOpKind::linear:
        y.resize(static_cast<size_t>(out.numel()));
        cpu::int8_linear(x.data(), in.zero_point, op.weight.data(), op.bias.data(),
                         static_cast<int32_t>(in.numel()), op.out_channels(), rq, y.data());
        break;
      case QuantOpKind::add: {
        const QuantTensor& in2 = tensors[static_cast<size_t>(op.input2)];
        const cpu::Int8AddParams p{.a_zero_point = in.zero_point,
                                   .b_zero_point = in2.zero_point,
                                   .y_zero_point = out.zero_point,
                                   .a_mult = op.add_a_mult,
                                   .b_mult = op.add_b_mult,
                                   .act_min = op.act_min,
                                   .act_max = op.act_max};
        y.resize(static_cast<size_t>(out.numel()));
        cpu::int8_add(x.data(), values[static_cast<size_t>(op.input2)].data(), out.numel(), p, y.data());
        break;
      }
      case QuantOpKind::global_avg_pool:
        y.resize(static_cast<size_t>(out.numel()));
        cpu::int8_global_avg_pool(x.data(), in.h * in.w, in.c, in.zero_point, y.data());
        break;
      case QuantOpKind::max_pool:
        y.resize(static_cast<size_t>(out.numel()));
        cpu::int8_max_pool2d(pool_shape(op), x.data(), y.data());
        break;
    }
  }
}

std::vector<float> QuantizedModel::forward(const float* image) const {
  std::vector<std::vector<int8_t>> values(tensors.size());
  values[0] = quantize_input(image);
  run(values);
  return logits(values);
}

std::vector<float> QuantizedModel::logits(const std::vector<std::vector<int8_t>>& values) const {
  const QuantTensor& t = tensors.at(static_cast<size_t>(output));
  for (const QuantOp& op : ops) {
    if (op.output != output || op.kind != QuantOpKind::linear) continue;
    const QuantTensor& in = tensors[static_cast<size_t>(op.input)];
    const int32_t c_out = op.out_channels();
    std::vector<int32_t> acc(static_cast<size_t>(c_out));
    cpu::int8_linear_accumulate(values.at(static_cast<size_t>(op.input)).data(), in.zero_point,
                                op.weight.data(), op.bias.data(), static_cast<int32_t>(in.numel()), c_out,
                                acc.data());
    std::vector<float> out(acc.size());
    for (size_t c = 0; c < acc.size(); ++c)
      out[c] = in.scale * op.weight_scale[c] * static_cast<float>(acc[c]);
    return out;
  }
  const std::vector<int8_t>& q = values.at(static_cast<size_t>(output));
  std::vector<float> out(q.size());
  for (size_t i = 0; i < q.size(); ++i) out[i] = t.dequantize(q[i]);
  return out;
}

int64_t QuantizedModel::parameter_bytes() const {
  int64_t bytes = 0;
  for (const QuantOp& op : ops)
    bytes += static_cast<int64_t>(op.weight.size() +
                                  4 * (op.bias.size() + op.multiplier.size() + op.shift.size()));
  return bytes;
}

std::string QuantizedModel::summary() const {
  std::ostringstream out;
  const QuantTensor& t0 = tensors.at(0);
  out << "input " << t0.h << "x" << t0.w << "x" << t0.c << " scale " << t0.scale << " zp " << t0.zero_point
      << "\n";
  for (const QuantOp& op : ops) {
    const QuantTensor& t = tensors[static_cast<size_t>(op.output)];
    out << op_kind_name(op.kind) << " " << op.name << " -> " << t.h << "x" << t.w << "x" << t.c << " scale "
        << t.scale << " zp " << t.zero_point;
    if (op.has_weights()) out << " k" << op.kernel << " s" << op.stride << " weights " << op.weight.size();
    if (op.activation != Activation::none) out << (op.activation == Activation::relu ? " relu" : " relu6");
    out << "\n";
  }
  return out.str();
}

}  // namespace tern::ondevice
