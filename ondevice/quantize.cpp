#include "ondevice/quantize.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "runtime/error.h"
#include "runtime/kernels/cpu/requantize.h"
#include "runtime/nn/activation.h"
#include "runtime/nn/conv.h"
#include "runtime/nn/dropout.h"
#include "runtime/nn/linear.h"
#include "runtime/nn/norm.h"
#include "runtime/nn/pool.h"

namespace tern::ondevice {

const char* calibration_name(Calibration c) { return c == Calibration::mse ? "mse" : "minmax"; }

Calibration parse_calibration(const std::string& name) {
  if (name == "minmax") return Calibration::min_max;
  if (name == "mse") return Calibration::mse;
  throw Error(detail::concat("unknown calibration '", name, "': expected minmax or mse"));
}

// --- Building blocks ---

ChannelAffine batch_norm_affine(BatchNorm2d& bn) {
  // Two probe rows through the layer in eval mode: x = 0 gives the shift exactly (the kernel
  // computes scale * x + shift), x = 4096 gives 4096 * scale + shift, and the power of two keeps
  // the multiplication exact, so the scale is off by one f32 rounding of the sum at most.
  constexpr float kProbe = 4096.0f;
  const int64_t c = bn.channels();
  const bool was_training = bn.training();
  bn.eval();
  Tensor x = Tensor::zeros({2, c});
  for (int64_t i = 0; i < c; ++i) x.f32()[c + i] = kProbe;
  const Tensor y = bn.forward(x);
  bn.train(was_training);
  ChannelAffine a;
  for (int64_t i = 0; i < c; ++i) {
    a.shift.push_back(y.f32()[i]);
    a.scale.push_back((y.f32()[c + i] - y.f32()[i]) / kProbe);
  }
  return a;
}

void fold_affine(const ChannelAffine& affine, std::vector<float>& weight, std::vector<float>& bias) {
  const size_t out = affine.scale.size();
  TERN_CHECK(out > 0 && weight.size() % out == 0, "fold_affine: weight of ", weight.size(),
             " values does not split into ", out, " output channels");
  if (bias.empty()) bias.assign(out, 0.0f);
  TERN_CHECK(bias.size() == out, "fold_affine: bias has ", bias.size(), " values, expected ", out);
  const size_t row = weight.size() / out;
  for (size_t o = 0; o < out; ++o) {
    for (size_t i = 0; i < row; ++i) weight[o * row + i] *= affine.scale[o];
    bias[o] = affine.scale[o] * bias[o] + affine.shift[o];
  }
}

RangeQuant range_quant(float lo, float hi) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  if (!(hi > lo)) return {};  // an all-zero tensor: any scale represents it
  RangeQuant q;
  q.scale = (hi - lo) / 255.0f;
  const double zp = std::round(-128.0 - static_cast<double>(lo) / q.scale);
  q.zero_point = static_cast<int32_t>(std::clamp(zp, -128.0, 127.0));
  return q;
}

RangeQuant mse_range_quant(const std::vector<double>& histogram, float lo, float hi) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  const size_t bins = histogram.size();
  if (!(hi > lo) || bins == 0) return range_quant(lo, hi);
  const double width = (static_cast<double>(hi) - lo) / static_cast<double>(bins);
  auto error_of = [&](const RangeQuant& q) {
    const QuantTensor t{.scale = q.scale, .zero_point = q.zero_point};
    double err = 0;
    for (size_t b = 0; b < bins; ++b) {
      if (histogram[b] == 0) continue;
      const double v = lo + (static_cast<double>(b) + 0.5) * width;
      const double d = v - t.dequantize(t.quantize(static_cast<float>(v)));
      err += histogram[b] * d * d;
    }
    return err;
  };
  // Each end moves on its own (a skewed distribution, e.g. a long positive tail, wants only one
  // end clipped): coordinate descent over [a * lo, b * hi], a and b from 1 down to 0.2 in steps of
  // 0.01, upper end, lower end, upper end again. Ties keep the wider range.
  float a = 1.0f, b = 1.0f;
  double best = error_of(range_quant(lo, hi));
  for (int round = 0; round < 3; ++round) {
    float& moving = round == 1 ? a : b;
    float best_at = moving;
    for (int step = 100; step >= 20; --step) {
      moving = static_cast<float>(step) / 100.0f;
      const double err = error_of(range_quant(a * lo, b * hi));
      if (err < best) {
        best = err;
        best_at = moving;
      }
    }
    moving = best_at;
  }
  return range_quant(a * lo, b * hi);
}

void quantize_weights_per_channel(const std::vector<float>& w, int64_t out, std::vector<int8_t>& q,
                                  std::vector<float>& scale) {
  TERN_CHECK(out > 0 && static_cast<int64_t>(w.size()) % out == 0, "quantize_weights_per_channel: ", w.size(),
             " values do not split into ", out, " rows");
  const size_t row = w.size() / static_cast<size_t>(out);
  q.resize(w.size());
  scale.resize(static_cast<size_t>(out));
  for (size_t o = 0; o < static_cast<size_t>(out); ++o) {
    float m = 0;
    for (size_t i = 0; i < row; ++i) m = std::max(m, std::fabs(w[o * row + i]));
    scale[o] = m > 0 ? m / 127.0f : 1.0f;
    for (size_t i = 0; i < row; ++i) {
      const float v = std::round(w[o * row + i] / scale[o]);
      q[o * row + i] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

namespace {

constexpr const char* kSupported =
    "supported: Conv2d (groups 1 or depthwise) or Linear, each optionally followed by BatchNorm2d and "
    "ReLU/ReLU6; Flatten; Dropout (dropped); MaxPool2d; GlobalAvgPool2d; Residual with an identity shortcut; "
    "nested Sequential";

// One QuantOp before quantisation, with the f32 modules it stands for.
struct Stage {
  QuantOpKind kind = QuantOpKind::conv2d;
  std::string name;
  Module* main = nullptr;  // Conv2d, Linear, MaxPool2d or GlobalAvgPool2d; null for add
  BatchNorm2d* bn = nullptr;
  Module* act = nullptr;
  Activation activation = Activation::none;
  int32_t input = 0, input2 = -1, output = 0;
  int64_t kernel = 1, stride = 1, pad = 0;
};

struct ConvGeometry {
  int64_t in = 0, out = 0, kernel = 0, stride = 0, pad = 0, groups = 1;
};

// Conv2d keeps its geometry private; its describe() ("Conv2d(3->16, k=3, s=2, p=1, g=16)") is the
// public record of it. The weight's shape is checked against what is parsed.
ConvGeometry conv_geometry(Conv2d& conv) {
  const std::string d = conv.describe();
  ConvGeometry g;
  const int n = std::sscanf(d.c_str(),
                            "Conv2d(%" SCNd64 "->%" SCNd64 ", k=%" SCNd64 ", s=%" SCNd64 ", p=%" SCNd64
                            ", g=%" SCNd64 ")",
                            &g.in, &g.out, &g.kernel, &g.stride, &g.pad, &g.groups);
  TERN_CHECK(n >= 5, "quantize: cannot read the geometry of '", d, "'");
  const Shape& ws = conv.weight.value.shape();
  TERN_CHECK(ws == Shape({g.out, g.in / g.groups, g.kernel, g.kernel}), "quantize: '", d, "' has weight ",
             conv.weight.value.str(), ", which does not match its description");
  return g;
}

void pool_geometry(MaxPool2d& pool, Stage& s) {
  const std::string d = pool.describe();
  s.pad = 0;
  const int n = std::sscanf(d.c_str(), "MaxPool2d(k=%" SCNd64 ", s=%" SCNd64 ", p=%" SCNd64 ")", &s.kernel,
                            &s.stride, &s.pad);
  TERN_CHECK(n >= 2, "quantize: cannot read the geometry of '", d, "'");
}

std::string param_path(const Param& p) {
  const std::string suffix = ".weight";
  const std::string& n = p.name;
  return n.size() > suffix.size() && n.ends_with(suffix) ? n.substr(0, n.size() - suffix.size()) : n;
}

class Lowering {
 public:
  std::vector<Stage> stages;
  int32_t num_tensors = 1;

  int32_t lower(Module& m, int32_t in) {
    if (auto* seq = dynamic_cast<Sequential*>(&m)) return lower_sequential(*seq, in);
    if (dynamic_cast<Residual*>(&m)) return lower_residual(m, in);
    std::vector<Module*> one = {&m};
    size_t i = 0;
    return lower_one(one, i, in);
  }

 private:
  int32_t flattened_ = -1;  // the tensor a Flatten last viewed as a vector

  int32_t lower_sequential(Sequential& seq, int32_t in) {
    std::vector<Module*> children;
    for (size_t i = 0; i < seq.size(); ++i) children.push_back(&seq[i]);
    int32_t cur = in;
    for (size_t i = 0; i < children.size();) cur = lower_one(children, i, cur);
    return cur;
  }

  // Lowers children[i] (and the BatchNorm2d / activation fused into it), advancing i.
  int32_t lower_one(const std::vector<Module*>& children, size_t& i, int32_t in) {
    Module& m = *children[i++];
    TERN_CHECK(flattened_ != in || dynamic_cast<Linear*>(&m) || dynamic_cast<Flatten*>(&m) ||
                   dynamic_cast<Dropout*>(&m),
               "quantize: ", m.describe(), " after Flatten is not supported (only Linear may follow it)");
    if (auto* seq = dynamic_cast<Sequential*>(&m)) return lower_sequential(*seq, in);
    if (dynamic_cast<Residual*>(&m)) return lower_residual(m, in);
    if (dynamic_cast<Flatten*>(&m)) {
      flattened_ = in;
      return in;
    }
    if (dynamic_cast<Dropout*>(&m)) return in;  // the identity at inference
    Stage s;
    s.main = &m;
    s.input = in;
    if (auto* conv = dynamic_cast<Conv2d*>(&m)) {
      const ConvGeometry g = conv_geometry(*conv);
      if (g.groups == 1) {
        s.kind = QuantOpKind::conv2d;
      } else {
        TERN_CHECK(
            g.groups == g.in && g.in == g.out, "quantize: ", m.describe(),
            " is a grouped convolution; only groups = 1 and depthwise (groups = in = out) are supported");
        s.kind = QuantOpKind::depthwise_conv2d;
      }
      TERN_CHECK(g.pad <= g.kernel / 2, "quantize: ", m.describe(),
                 ": padding beyond kernel / 2 is not supported");
      s.kernel = g.kernel;
      s.stride = g.stride;
      s.pad = g.pad;
      s.name = param_path(conv->weight);
      fuse(children, i, s);
    } else if (auto* linear = dynamic_cast<Linear*>(&m)) {
      s.kind = QuantOpKind::linear;
      s.name = param_path(linear->weight);
      fuse(children, i, s);
    } else if (auto* pool = dynamic_cast<MaxPool2d*>(&m)) {
      s.kind = QuantOpKind::max_pool;
      pool_geometry(*pool, s);
      s.name = detail::concat("max_pool", stages.size());
    } else if (dynamic_cast<GlobalAvgPool2d*>(&m)) {
      s.kind = QuantOpKind::global_avg_pool;
      s.name = detail::concat("avg_pool", stages.size());
    } else if (dynamic_cast<BatchNorm2d*>(&m) || dynamic_cast<ReLU*>(&m) || dynamic_cast<ReLU6*>(&m)) {
      throw Error(detail::concat("quantize: ", m.describe(),
                                 " must directly follow a Conv2d or Linear (or its ",
                                 "BatchNorm2d) to be folded into it; ", kSupported));
    } else {
      throw Error(detail::concat("quantize: cannot convert ", m.describe(), " to int8; ", kSupported));
    }
    s.output = num_tensors++;
    stages.push_back(s);
    return s.output;
  }

  // Takes a BatchNorm2d and then a ReLU / ReLU6 that directly follow children[i - 1].
  static void fuse(const std::vector<Module*>& children, size_t& i, Stage& s) {
    if (i < children.size()) {
      if (auto* bn = dynamic_cast<BatchNorm2d*>(children[i])) {
        s.bn = bn;
        ++i;
      }
    }
    if (i < children.size()) {
      if (dynamic_cast<ReLU*>(children[i])) {
        s.act = children[i++];
        s.activation = Activation::relu;
      } else if (dynamic_cast<ReLU6*>(children[i])) {
        s.act = children[i++];
        s.activation = Activation::relu6;
      }
    }
  }

  int32_t lower_residual(Module& r, int32_t in) {
    // Residual keeps its parts private; its first child (visit order) is the body, and describe()
    // is "Residual(<body>)" exactly when the shortcut is the identity, ", relu)" with a ReLU after.
    Module* body = nullptr;
    int seen = 0;
    r.visit([&](Module& m) {
      if (seen++ == 1) body = &m;
    });
    TERN_CHECK(body != nullptr, "quantize: ", r.describe(), " has no body");
    const std::string d = r.describe(), b = body->describe();
    bool relu = false;
    if (d == "Residual(" + b + ", relu)") {
      relu = true;
    } else {
      TERN_CHECK(d == "Residual(" + b + ")", "quantize: ", d,
                 ": only residual blocks with an identity shortcut are supported; ", kSupported);
    }
    const int32_t body_out = lower(*body, in);
    Stage s;
    s.kind = QuantOpKind::add;
    s.name = detail::concat("add", stages.size());
    s.input = in;
    s.input2 = body_out;
    s.activation = relu ? Activation::relu : Activation::none;
    s.output = num_tensors++;
    stages.push_back(s);
    return s.output;
  }
};

Tensor relu(const Tensor& x) {
  Tensor y = x.clone();
  float* p = y.f32();
  for (int64_t i = 0; i < y.numel(); ++i) p[i] = std::max(p[i], 0.0f);
  return y;
}

// Runs the stages in f32 with the model's own modules: values[t] = tensor t for one batch.
void run_f32(const std::vector<Stage>& stages, std::vector<Tensor>& values) {
  for (const Stage& s : stages) {
    const Tensor& x = values[static_cast<size_t>(s.input)];
    Tensor y;
    switch (s.kind) {
      case QuantOpKind::add: {
        const Tensor& b = values[static_cast<size_t>(s.input2)];
        y = Tensor::empty(x.shape());
        for (int64_t i = 0; i < y.numel(); ++i) y.f32()[i] = x.f32()[i] + b.f32()[i];
        if (s.activation == Activation::relu) y = relu(y);
        break;
      }
      case QuantOpKind::linear:
        y = s.main->forward(x.ndim() == 2 ? x : x.reshape({x.dim(0), -1}));
        break;
      default:
        y = s.main->forward(x);
    }
    if (s.bn) y = s.bn->forward(y);
    if (s.act) y = s.act->forward(y);
    values[static_cast<size_t>(s.output)] = y;
  }
}

// Per-tensor statistics over the calibration batches.
struct Stats {
  float lo = std::numeric_limits<float>::infinity(), hi = -std::numeric_limits<float>::infinity();
  std::vector<double> histogram;
};

void shape_from(const Tensor& t, QuantTensor& q) {
  if (t.ndim() == 4) {
    q.c = static_cast<int32_t>(t.dim(1));
    q.h = static_cast<int32_t>(t.dim(2));
    q.w = static_cast<int32_t>(t.dim(3));
  } else {
    q.h = q.w = 1;
    q.c = static_cast<int32_t>(t.numel() / t.dim(0));
  }
}

// Restores a module's training mode on scope exit.
class EvalGuard {
 public:
  explicit EvalGuard(Module& m) : m_(m), was_training_(m.training()) { m_.eval(); }
  ~EvalGuard() { m_.train(was_training_); }
  EvalGuard(const EvalGuard&) = delete;
  EvalGuard& operator=(const EvalGuard&) = delete;

 private:
  Module& m_;
  bool was_training_;
};

std::vector<float> to_vector(const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

// Fills op's weight, bias, scales and requantisation from the stage's f32 modules.
void quantize_weights(const Stage& s, const QuantTensor& in, const QuantTensor& out, QuantOp& op) {
  std::vector<float> w, b;
  int64_t c_out = 0;
  if (auto* conv = dynamic_cast<Conv2d*>(s.main)) {
    w = to_vector(conv->weight.value);
    if (conv->bias.value.defined()) b = to_vector(conv->bias.value);
    c_out = conv->weight.value.dim(0);
  } else {
    auto& linear = dynamic_cast<Linear&>(*s.main);
    w = to_vector(linear.weight.value);
    if (linear.bias.value.defined()) b = to_vector(linear.bias.value);
    c_out = linear.weight.value.dim(0);
  }
  if (s.bn) {
    TERN_CHECK(s.bn->channels() == c_out, "quantize: ", s.bn->describe(), " after '", s.name, "' has ",
               s.bn->channels(), " channels, the layer ", c_out);
    fold_affine(batch_norm_affine(*s.bn), w, b);
  }
  if (b.empty()) b.assign(static_cast<size_t>(c_out), 0.0f);

  // To the kernels' layouts: OIHW -> OHWI for a conv; a linear layer after Flatten of an [H, W, C]
  // tensor reads it in NHWC order, so its columns (c, h, w) move to (h, w, c).
  const int64_t row = static_cast<int64_t>(w.size()) / c_out;
  std::vector<float> r(w.size());
  if (s.kind == QuantOpKind::conv2d) {
    const int64_t k = s.kernel, ci = in.c;
    for (int64_t o = 0; o < c_out; ++o)
      for (int64_t c = 0; c < ci; ++c)
        for (int64_t t = 0; t < k * k; ++t)
          r[static_cast<size_t>(o * row + t * ci + c)] = w[static_cast<size_t>(o * row + c * k * k + t)];
  } else if (s.kind == QuantOpKind::linear && in.h * in.w > 1) {
    TERN_CHECK(row == in.numel(), "quantize: '", s.name, "' takes ", row, " inputs, its input has ",
               in.numel());
    const int64_t hw = int64_t{in.h} * in.w;
    for (int64_t o = 0; o < c_out; ++o)
      for (int64_t c = 0; c < in.c; ++c)
        for (int64_t p = 0; p < hw; ++p)
          r[static_cast<size_t>(o * row + p * in.c + c)] = w[static_cast<size_t>(o * row + c * hw + p)];
  } else {
    r = w;
  }
  quantize_weights_per_channel(r, c_out, op.weight, op.weight_scale);

  op.bias.resize(static_cast<size_t>(c_out));
  op.multiplier.resize(static_cast<size_t>(c_out));
  op.shift.resize(static_cast<size_t>(c_out));
  for (size_t o = 0; o < static_cast<size_t>(c_out); ++o) {
    const double bias_scale = static_cast<double>(in.scale) * op.weight_scale[o];
    const double q = std::round(b[o] / bias_scale);
    TERN_CHECK(std::fabs(q) < 2147483647.0, "quantize: the bias of channel ", o, " of '", s.name, "' (", b[o],
               ") does not fit int32 at scale ", bias_scale);
    op.bias[o] = static_cast<int32_t>(q);
    const cpu::QuantMultiplier m = cpu::quantize_multiplier(bias_scale / out.scale);
    op.multiplier[o] = m.multiplier;
    op.shift[o] = m.shift;
  }
}

void set_clamp(Activation a, const QuantTensor& out, QuantOp& op) {
  op.activation = a;
  op.act_min = -128;
  op.act_max = 127;
  if (a == Activation::none) return;
  op.act_min = std::max(-128, out.zero_point);
  if (a == Activation::relu6) {
    const double six = std::round(6.0 / out.scale) + out.zero_point;
    op.act_max = static_cast<int32_t>(std::clamp(six, static_cast<double>(op.act_min), 127.0));
  }
}

}  // namespace

QuantizedModel quantize_model(Sequential& model, const Tensor& calibration, const QuantizeOptions& options) {
  TERN_CHECK(calibration.defined() && calibration.ndim() == 4 && calibration.dtype() == DType::f32 &&
                 calibration.dim(0) > 0,
             "quantize: calibration images must be f32 [N, C, H, W] with N > 0, got ",
             calibration.defined() ? calibration.str() : std::string("an undefined tensor"));
  TERN_CHECK(options.batch > 0 && options.histogram_bins > 0,
             "quantize: batch and histogram_bins must be positive");
  model.params();  // sets every Param's dotted name, which names the ops
  Lowering lowering;
  const int32_t out_tensor = lowering.lower(model, 0);
  const std::vector<Stage>& stages = lowering.stages;
  TERN_CHECK(!stages.empty(), "quantize: the model has no layers");
  const size_t n_tensors = static_cast<size_t>(lowering.num_tensors);

  EvalGuard eval(model);
  QuantizedModel qm;
  qm.tensors.resize(n_tensors);
  qm.output = out_tensor;
  std::vector<Stats> stats(n_tensors);
  const int64_t n = calibration.dim(0);
  const bool mse = options.calibration == Calibration::mse;
  // Pass 1: shapes and ranges; pass 2 (MSE only): histograms over those ranges.
  for (int pass = 0; pass < (mse ? 2 : 1); ++pass) {
    for (int64_t b0 = 0; b0 < n; b0 += options.batch) {
      std::vector<Tensor> values(n_tensors);
      values[0] = calibration.slice(b0, std::min(n, b0 + options.batch));
      run_f32(stages, values);
      if (pass == 0 && b0 == 0) {
        for (size_t t = 0; t < n_tensors; ++t) shape_from(values[t], qm.tensors[t]);
        // The lowering must compute what the model computes, or the calibration means nothing.
        const Tensor want = model.forward(values[0]);
        const Tensor& got = values[static_cast<size_t>(out_tensor)];
        TERN_CHECK(want.numel() == got.numel(), "quantize: the converted graph makes ", got.str(),
                   ", the model ", want.str());
        for (int64_t i = 0; i < want.numel(); ++i)
          TERN_CHECK(std::fabs(want.f32()[i] - got.f32()[i]) <= 1e-4f * (1.0f + std::fabs(want.f32()[i])),
                     "quantize: the converted graph does not reproduce the model's output (", got.f32()[i],
                     " vs ", want.f32()[i], "); a layer was not understood: ", model.describe());
      }
      for (size_t t = 0; t < n_tensors; ++t) {
        const Tensor& v = values[t];
        Stats& st = stats[t];
        const float* p = v.f32();
        if (pass == 0) {
          for (int64_t i = 0; i < v.numel(); ++i) {
            st.lo = std::min(st.lo, p[i]);
            st.hi = std::max(st.hi, p[i]);
          }
        } else {
          const float lo = std::min(st.lo, 0.0f), hi = std::max(st.hi, 0.0f);
          if (!(hi > lo)) continue;
          const double bins = options.histogram_bins, inv = bins / (static_cast<double>(hi) - lo);
          if (st.histogram.empty()) st.histogram.assign(static_cast<size_t>(options.histogram_bins), 0.0);
          for (int64_t i = 0; i < v.numel(); ++i) {
            const double b = std::clamp(std::floor((p[i] - lo) * inv), 0.0, bins - 1);
            st.histogram[static_cast<size_t>(b)] += 1.0;
          }
        }
      }
    }
  }
  for (size_t t = 0; t < n_tensors; ++t) {
    TERN_CHECK(std::isfinite(stats[t].lo) && std::isfinite(stats[t].hi), "quantize: tensor ", t,
               " took non-finite values during calibration");
    const RangeQuant q = mse ? mse_range_quant(stats[t].histogram, stats[t].lo, stats[t].hi)
                             : range_quant(stats[t].lo, stats[t].hi);
    qm.tensors[t].scale = q.scale;
    qm.tensors[t].zero_point = q.zero_point;
  }

  for (const Stage& s : stages) {
    QuantOp op;
    op.kind = s.kind;
    op.name = s.name;
    op.input = s.input;
    op.input2 = s.input2;
    op.output = s.output;
    op.kernel = static_cast<int32_t>(s.kernel);
    op.stride = static_cast<int32_t>(s.stride);
    op.pad = static_cast<int32_t>(s.pad);
    const QuantTensor& in = qm.tensors[static_cast<size_t>(s.input)];
    QuantTensor& out = qm.tensors[static_cast<size_t>(s.output)];
    if (s.kind == QuantOpKind::global_avg_pool || s.kind == QuantOpKind::max_pool) {
      // Pooling keeps its input's quantisation: a mean or a max stays inside the input's range.
      out.scale = in.scale;
      out.zero_point = in.zero_point;
    } else if (s.kind == QuantOpKind::add) {
      const QuantTensor& in2 = qm.tensors[static_cast<size_t>(s.input2)];
      op.add_a_mult = in.scale / out.scale;
      op.add_b_mult = in2.scale / out.scale;
    } else {
      quantize_weights(s, in, out, op);
    }
    set_clamp(s.activation, out, op);
    qm.ops.push_back(std::move(op));
  }
  qm.validate();
  return qm;
}

}  // namespace tern::ondevice
