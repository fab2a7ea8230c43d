#include "ondevice/finetune.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>
#include <utility>

#include "ondevice/qas.h"
#include "runtime/error.h"
#include "runtime/kernels/cpu/int8_backward.h"
#include "runtime/kernels/cpu/requantize.h"
#include "runtime/rng.h"

namespace tern::ondevice {
namespace {

// The chain of layers and which ops each one runs.
struct Chain {
  std::vector<LayerSpec> layers;
  std::vector<int> op_of, add_of;
};

LayerKind kind_of(QuantOpKind k) {
  switch (k) {
    case QuantOpKind::conv2d:
      return LayerKind::kConv;
    case QuantOpKind::depthwise_conv2d:
      return LayerKind::kDepthwiseConv;
    case QuantOpKind::linear:
      return LayerKind::kLinear;
    default:
      return LayerKind::kAvgPool;  // both pools: weightless layers
  }
}

Chain build_chain(const QuantizedModel& m) {
  m.validate();
  Chain c;
  std::vector<int32_t> tensor_of = {0};  // chain tensor t -> the model tensor holding its final value
  std::set<std::string> names;
  for (size_t k = 0; k < m.ops.size(); ++k) {
    const QuantOp& op = m.ops[k];
    if (op.kind == QuantOpKind::add) {
      TERN_CHECK(!c.layers.empty(), "on-device training: add '", op.name, "' has no layer before it");
      const size_t prev = c.layers.size() - 1;
      const int32_t main = tensor_of[prev + 1];
      TERN_CHECK(op.input == main || op.input2 == main, "on-device training: add '", op.name,
                 "' does not read the output of the op before it ('", c.layers[prev].name, "')");
      TERN_CHECK(c.add_of[prev] < 0, "on-device training: two adds follow '", c.layers[prev].name, "'");
      const int32_t other = op.input == main ? op.input2 : op.input;
      const auto it = std::find(tensor_of.begin(), tensor_of.begin() + static_cast<long>(prev) + 1, other);
      TERN_CHECK(it != tensor_of.begin() + static_cast<long>(prev) + 1, "on-device training: add '", op.name,
                 "' adds tensor ", other, ", which is not an earlier output of the chain");
      c.layers[prev].residual_from = static_cast<int>(it - tensor_of.begin());
      c.add_of[prev] = static_cast<int>(k);
      tensor_of[prev + 1] = op.output;
      continue;
    }
    TERN_CHECK(op.input == tensor_of.back(), "on-device training: op ", k, " ('", op.name, "') reads tensor ",
               op.input, ", not the output of the op before it; only chains with residual adds are supported");
    const QuantTensor& in = m.tensors[static_cast<size_t>(op.input)];
    const QuantTensor& out = m.tensors[static_cast<size_t>(op.output)];
    LayerSpec l;
    l.name = op.name;
    if (l.name.empty() || l.name.find('|') != std::string::npos || names.count(l.name) > 0)
      l.name = detail::concat(op_kind_name(op.kind), k);
    names.insert(l.name);
    l.kind = kind_of(op.kind);
    l.input_elems = static_cast<size_t>(in.numel());
    l.output_elems = static_cast<size_t>(out.numel());
    if (op.has_weights()) {
      l.weight_elems = op.weight.size();
      l.bias_elems = op.bias.size();
      l.out_channels = op.out_channels();
      l.relu = op.activation != Activation::none;
    }
    if (op.kind == QuantOpKind::depthwise_conv2d) l.forward_scratch_bytes = static_cast<size_t>(in.h) * in.w;
    if (op.kind == QuantOpKind::max_pool)
      TERN_CHECK(op.kernel <= 16, "on-device training: max pool '", op.name, "' has a ", op.kernel,
                 "x", op.kernel, " window; backward supports up to 16x16");
    c.layers.push_back(std::move(l));
    c.op_of.push_back(static_cast<int>(k));
    c.add_of.push_back(-1);
    tensor_of.push_back(op.output);
  }
  TERN_CHECK(!c.layers.empty() && tensor_of.back() == m.output,
             "on-device training: the chain of ops does not end at the model's output tensor");
  return c;
}

std::string tensor_name(std::span<const LayerSpec> layers, int t) {
  return t == 0 ? std::string("input") : layers[static_cast<size_t>(t) - 1].name + ".out";
}

bool is_skip_source(std::span<const LayerSpec> layers, int t) {
  for (size_t j = static_cast<size_t>(t); j < layers.size(); ++j)
    if (layers[j].residual_from == t) return true;
  return false;
}

int first_trained_layer(std::span<const LayerSpec> layers) {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].train.trains()) return static_cast<int>(i);
  return static_cast<int>(layers.size());
}

// Whether depthwise layer i runs in place (as build_training_step decides it).
bool depthwise_in_place(std::span<const LayerSpec> layers, int i, const StepOptions& o) {
  const int L = static_cast<int>(layers.size());
  int last_use = i;
  for (int j = 0; j < L; ++j)
    if (layers[j].residual_from == i) last_use = std::max(last_use, j);
  if (layers[i].train.weight_ratio > 0) last_use = 2 * L - i;
  return o.in_place_depthwise && last_use == i && layers[i].output_elems <= layers[i].input_elems;
}

// Whether depthwise layer i writes its input gradient over its output gradient.
bool depthwise_backward_in_place(std::span<const LayerSpec> layers, int i, int first_trained,
                                 const StepOptions& o) {
  return layers[i].kind == LayerKind::kDepthwiseConv && i > first_trained && o.in_place_depthwise_backward &&
         !is_skip_source(layers, i);
}

struct Prepared {
  Chain chain;  // layers with the scheme and the scratch sizes this engine's kernels need
  TrainingStep step;
};

Prepared prepare(const QuantizedModel& model, const UpdateScheme& scheme, const StepOptions& o) {
  TERN_CHECK(o.apply == GradientApply::kPerLayer && (o.optimizer_states == 0 || o.optimizer_states == 1),
             "on-device training: the step applies SGD in place after each layer's backward; StepOptions "
             "must have apply = kPerLayer and optimizer_states 0 (plain SGD) or 1 (momentum), got ",
             o.optimizer_states, " states");
  TERN_CHECK(o.activation_bytes == 1 && o.gradient_bytes == 4 && o.trained_weight_bytes == 4 &&
                 o.trained_bias_bytes == 4 && o.alignment >= 4,
             "on-device training: the step stores int8 activations, f32 gradients and f32 master copies "
             "(element sizes 1, 4, 4, 4) at an alignment of at least 4");
  Prepared p;
  p.chain = build_chain(model);
  std::vector<LayerSpec>& layers = p.chain.layers;
  layers = with_update(layers, scheme);
  check_layers(layers);
  const int L = static_cast<int>(layers.size());
  const int first = first_trained_layer(layers);
  for (int i = 0; i < L; ++i) {
    LayerSpec& l = layers[i];
    const QuantOp& op = model.ops[static_cast<size_t>(p.chain.op_of[i])];
    const QuantTensor& in = model.tensors[static_cast<size_t>(op.input)];
    const QuantTensor& out = model.tensors[static_cast<size_t>(op.output)];
    const size_t in_pixels = static_cast<size_t>(in.h) * in.w, out_pixels = static_cast<size_t>(out.h) * out.w;
    if (l.kind == LayerKind::kDepthwiseConv && !depthwise_in_place(layers, i, o))
      l.forward_scratch_bytes = 2 * in_pixels;  // one channel's input plane and the kernel's own plane
    if (i < first) continue;
    const int add = p.chain.add_of[i];
    TERN_CHECK(add < 0 || model.ops[static_cast<size_t>(add)].activation == Activation::none,
               "on-device training: add '", model.ops[static_cast<size_t>(add)].name,
               "' has a fused activation; backward through it is not supported (train only layers after it)");
    if (depthwise_backward_in_place(layers, i, first, o))
      l.backward_scratch_bytes = (in_pixels + out_pixels) * 4;  // one channel's dy and dx planes
    else if (i > first && is_skip_source(layers, i))
      l.backward_scratch_bytes = l.input_elems * 4;  // dx, added to what the residual wrote
  }
  p.step = build_training_step(layers, o);

  // What the layer list cannot say: a max pool's backward needs the window position of each maximum
  // (one byte per output, live from its forward to its backward), and a linear classifier's output is
  // kept as f32 logits (its accumulators times s_x * s_w), which the loss starts from.
  for (int i = std::max(first, 0); i < L && first < L; ++i) {
    const QuantOp& op = model.ops[static_cast<size_t>(p.chain.op_of[i])];
    if (op.kind == QuantOpKind::max_pool && i > first)
      p.step.buffers.push_back(Buffer{layers[i].name + ".argmax", layers[i].name, BufferKind::kReluMask,
                                      layers[i].output_elems, o.alignment, i, 2 * L - i});
  }
  if (model.ops[static_cast<size_t>(p.chain.op_of[L - 1])].kind == QuantOpKind::linear) {
    const std::string name = tensor_name(layers, L);
    for (Buffer& b : p.step.buffers)
      if (b.name == name) b.size = std::max(b.size, layers[L - 1].output_elems * sizeof(float));
  }
  return p;
}

bool names_part(const std::string& name, const std::string& part) {
  size_t start = 0;
  while (true) {
    const size_t end = name.find('|', start);
    if (std::string_view(name).substr(start, end == std::string::npos ? std::string::npos : end - start) == part)
      return true;
    if (end == std::string::npos) return false;
    start = end + 1;
  }
}

int find_buffer(const MemoryPlan& plan, const std::string& part) {
  for (size_t b = 0; b < plan.buffers.size(); ++b)
    if (names_part(plan.buffers[b].name, part)) return static_cast<int>(b);
  return -1;
}

int32_t round_to_int32(double v) {
  const double r = std::nearbyint(v);
  return static_cast<int32_t>(std::clamp(r, -2147483647.0, 2147483647.0));
}

}  // namespace

std::vector<LayerSpec> layer_specs(const QuantizedModel& model) { return build_chain(model).layers; }

void replace_head(QuantizedModel& model, int classes, HeadInit init, uint64_t seed) {
  model.validate();
  TERN_CHECK(classes >= 1, "replace_head: classes must be >= 1, got ", classes);
  QuantOp* head = nullptr;
  for (QuantOp& op : model.ops)
    if (op.output == model.output) head = &op;
  TERN_CHECK(head != nullptr && head->kind == QuantOpKind::linear,
             "replace_head: the model's output is not written by a linear layer");
  const QuantTensor& in = model.tensors[static_cast<size_t>(head->input)];
  QuantTensor& out = model.tensors[static_cast<size_t>(head->output)];
  const int64_t inputs = in.numel();
  const float scale = *std::max_element(head->weight_scale.begin(), head->weight_scale.end());
  head->weight.assign(static_cast<size_t>(classes * inputs), 0);
  if (init == HeadInit::random) {
    Rng rng(seed, /*stream=*/7);
    const float sigma = 0.1f / std::sqrt(static_cast<float>(inputs));
    for (int8_t& w : head->weight)
      w = static_cast<int8_t>(std::clamp(std::nearbyint(sigma * rng.normal() / scale), -127.0f, 127.0f));
  }
  head->bias.assign(static_cast<size_t>(classes), 0);
  head->weight_scale.assign(static_cast<size_t>(classes), scale);
  // The output tensor's range only matters to the int8 requantisation (the logits come from the
  // accumulators); it keeps its calibrated scale.
  const cpu::QuantMultiplier q = cpu::quantize_multiplier(static_cast<double>(in.scale) * scale / out.scale);
  head->multiplier.assign(static_cast<size_t>(classes), q.multiplier);
  head->shift.assign(static_cast<size_t>(classes), q.shift);
  out.h = 1;
  out.w = 1;
  out.c = classes;
  model.validate();
}

MemoryPlan plan_finetune_step(const QuantizedModel& model, const UpdateScheme& scheme, const StepOptions& options) {
  Prepared p = prepare(model, scheme, options);
  return plan_memory(std::move(p.step.buffers), options.strategy, std::move(p.step.ops));
}

Finetuner::Finetuner(QuantizedModel model, const UpdateScheme& scheme, const FinetuneOptions& options)
    : model_(std::move(model)), options_(options) {
  TERN_CHECK(std::isfinite(options.lr) && options.lr >= 0, "on-device training: lr must be >= 0, got ",
             options.lr);
  TERN_CHECK(std::isfinite(options.momentum) && options.momentum >= 0 && options.momentum < 1,
             "on-device training: momentum must be in [0, 1), got ", options.momentum);
  TERN_CHECK((options.momentum > 0) == (options.step.optimizer_states == 1),
             "on-device training: momentum ", options.momentum, " needs step.optimizer_states = ",
             options.momentum > 0 ? 1 : 0, " (a planned velocity per trained value), got ",
             options.step.optimizer_states);
  Prepared p = prepare(model_, scheme, options.step);
  layers_ = std::move(p.chain.layers);
  op_of_ = std::move(p.chain.op_of);
  add_of_ = std::move(p.chain.add_of);
  plan_ = plan_memory(std::move(p.step.buffers), options.step.strategy, std::move(p.step.ops));
  const int L = static_cast<int>(layers_.size());
  first_trained_ = first_trained_layer(layers_);

  value_buf_.assign(static_cast<size_t>(L) + 1, -1);
  grad_buf_.assign(static_cast<size_t>(L) + 1, -1);
  for (int t = 0; t <= L; ++t) {
    value_buf_[t] = find_buffer(plan_, tensor_name(layers_, t));
    grad_buf_[t] = find_buffer(plan_, tensor_name(layers_, t) + ".grad");
    TERN_CHECK(value_buf_[t] >= 0, "on-device training: the plan has no buffer for ", tensor_name(layers_, t));
  }
  auto per_layer = [&](std::vector<int>& v, const char* suffix) {
    v.assign(static_cast<size_t>(L), -1);
    for (int i = 0; i < L; ++i) v[i] = find_buffer(plan_, layers_[i].name + suffix);
  };
  per_layer(mask_buf_, ".relu_mask");
  per_layer(argmax_buf_, ".argmax");
  per_layer(fscratch_buf_, ".scratch");
  per_layer(bscratch_buf_, ".backward_scratch");
  per_layer(weight_buf_, ".weight");
  per_layer(weight_grad_buf_, ".weight.grad");
  per_layer(bias_buf_, ".bias");
  per_layer(bias_grad_buf_, ".bias.grad");
  per_layer(weight_state_buf_, ".weight.state");
  per_layer(weight_working_buf_, ".weight.working");
  per_layer(weight_working_backward_buf_, ".weight.working_backward");
  per_layer(bias_working_buf_, ".bias.working");
  per_layer(bias_state_buf_, ".bias.state");

  for (int i = 0; i < L; ++i) {
    if (layers_[i].kind != LayerKind::kDepthwiseConv || value_buf_[i] == value_buf_[i + 1]) continue;
    const QuantTensor& in = model_.tensors[static_cast<size_t>(model_.ops[static_cast<size_t>(op_of_[i])].input)];
    TERN_CHECK(fscratch_buf_[i] >= 0 && plan_.buffers[fscratch_buf_[i]].size >= 2 * static_cast<size_t>(in.h) * in.w,
               "on-device training: depthwise layer '", layers_[i].name,
               "' does not run in place but its scratch was planned for in place");
  }
  const QuantOp& last = model_.ops[static_cast<size_t>(op_of_[L - 1])];
  logits_f32_ = last.kind == QuantOpKind::linear;

  acquire_at_.assign(static_cast<size_t>(plan_.num_ops), {});
  release_after_.assign(static_cast<size_t>(plan_.num_ops), {});
  for (size_t b = 0; b < plan_.buffers.size(); ++b) {
    acquire_at_[static_cast<size_t>(plan_.buffers[b].first)].push_back(static_cast<int>(b));
    release_after_[static_cast<size_t>(plan_.buffers[b].last)].push_back(static_cast<int>(b));
  }
  ptr_.assign(plan_.buffers.size(), nullptr);
  grad_written_.assign(static_cast<size_t>(L) + 1, 0);
  arena_.assign(std::max<size_t>(1, (plan_.peak + 7) / 8), 0);
  allocator_ = std::make_unique<ArenaAllocator>(
      plan_, std::span<std::byte>(reinterpret_cast<std::byte*>(arena_.data()), arena_.size() * 8));

  // The master copies live in the arena for the whole step and between steps (no other buffer ever
  // shares their bytes), so they are written once here.
  channels_.assign(static_cast<size_t>(L), {});
  auto at = [&](int b) { return reinterpret_cast<float*>(reinterpret_cast<std::byte*>(arena_.data()) + plan_.offsets[b]); };
  for (int i = first_trained_; i < L; ++i) {
    const QuantOp& op = model_.ops[static_cast<size_t>(op_of_[i])];
    if (layers_[i].train.weight_ratio > 0) {
      const std::vector<int> ch = select_channels_by_norm(op.weight, op.weight_scale, op.out_channels(),
                                                          layers_[i].train.weight_ratio);
      channels_[i].assign(ch.begin(), ch.end());
      TERN_CHECK(weight_working_buf_[i] >= 0 && plan_.buffers[weight_working_buf_[i]].size >= op.weight.size() &&
                     (i == first_trained_ || (weight_working_backward_buf_[i] >= 0 &&
                                              plan_.buffers[weight_working_backward_buf_[i]].size >= op.weight.size())),
                 "on-device training: no working copy planned for the weight of '", layers_[i].name, "'");
      const size_t cols = op.weight.size() / static_cast<size_t>(op.out_channels());
      TERN_CHECK(weight_buf_[i] >= 0 && plan_.buffers[weight_buf_[i]].size >= ch.size() * cols * 4,
                 "on-device training: no master copy planned for the weight of '", layers_[i].name, "'");
      float* master = at(weight_buf_[i]);
      for (size_t j = 0; j < ch.size(); ++j)
        for (size_t e = 0; e < cols; ++e)
          master[j * cols + e] = static_cast<float>(op.weight[static_cast<size_t>(ch[j]) * cols + e]);
      if (options_.momentum > 0) {
        const int v = weight_state_buf_[i];
        TERN_CHECK(v >= 0 && plan_.buffers[v].size >= ch.size() * cols * 4,
                   "on-device training: no momentum buffer planned for the weight of '", layers_[i].name, "'");
        std::fill_n(at(weight_state_buf_[i]), ch.size() * cols, 0.0f);
      }
    }
    if (layers_[i].train.bias) {
      TERN_CHECK(bias_buf_[i] >= 0, "on-device training: no master copy planned for the bias of '",
                 layers_[i].name, "'");
      TERN_CHECK(bias_working_buf_[i] >= 0 &&
                     plan_.buffers[bias_working_buf_[i]].size >= op.bias.size() * sizeof(int32_t),
                 "on-device training: no working copy planned for the bias of '", layers_[i].name, "'");
      float* master = at(bias_buf_[i]);
      for (size_t c = 0; c < op.bias.size(); ++c) master[c] = static_cast<float>(op.bias[c]);
      if (options_.momentum > 0) {
        TERN_CHECK(bias_state_buf_[i] >= 0,
                   "on-device training: no momentum buffer planned for the bias of '", layers_[i].name, "'");
        std::fill_n(at(bias_state_buf_[i]), op.bias.size(), 0.0f);
      }
    }
  }
}

void Finetuner::set_lr(float lr) {
  TERN_CHECK(std::isfinite(lr) && lr >= 0, "on-device training: lr must be >= 0, got ", lr);
  options_.lr = lr;
}

std::byte* Finetuner::buf(int index) const {
  return index >= 0 ? ptr_[static_cast<size_t>(index)] : nullptr;
}

// The int8 weight an op of layer i reads. A frozen one is the model's (flash, on a device). A trained
// one is rebuilt in its planned working buffer, as a device must (flash cannot be rewritten): the
// model's rows with the trained rows rounded from their master copy. (On the host update() also
// writes the rounded values into the model, so that model() holds them; the rebuild reads only the
// frozen rows from it.)
const int8_t* Finetuner::weight(int i, int working_buf) const {
  const QuantOp& op = model_.ops[static_cast<size_t>(op_of_[i])];
  int8_t* to = reinterpret_cast<int8_t*>(buf(working_buf));
  if (to == nullptr) return op.weight.data();
  std::memcpy(to, op.weight.data(), op.weight.size());
  const std::vector<int32_t>& ch = channels_[static_cast<size_t>(i)];
  const size_t cols = op.weight.size() / static_cast<size_t>(op.out_channels());
  const float* master = reinterpret_cast<const float*>(buf(weight_buf_[i]));
  for (size_t j = 0; j < ch.size(); ++j)
    for (size_t e = 0; e < cols; ++e)
      to[static_cast<size_t>(ch[j]) * cols + e] =
          static_cast<int8_t>(std::clamp(std::nearbyint(master[j * cols + e]), -127.0f, 127.0f));
  return to;
}

// The int32 bias layer i's forward reads: the model's, or, when it trains, rounded from its master copy.
const int32_t* Finetuner::bias(int i) const {
  const QuantOp& op = model_.ops[static_cast<size_t>(op_of_[i])];
  int32_t* to = reinterpret_cast<int32_t*>(buf(bias_working_buf_[i]));
  if (to == nullptr) return op.bias.data();
  const float* master = reinterpret_cast<const float*>(buf(bias_buf_[i]));
  for (size_t c = 0; c < op.bias.size(); ++c) to[c] = round_to_int32(master[c]);
  return to;
}

StepResult Finetuner::step(const float* image, int label) {
  const int L = static_cast<int>(layers_.size());
  TERN_CHECK(label >= 0 && label < model_.num_classes(), "on-device training: label ", label,
             " is outside [0, ", model_.num_classes(), ")");
  std::fill(grad_written_.begin(), grad_written_.end(), 0);
  StepResult result;
  for (int k = 0; k < plan_.num_ops; ++k) {
    for (int b : acquire_at_[static_cast<size_t>(k)]) {
      ptr_[static_cast<size_t>(b)] = allocator_->acquire(b);
      TERN_CHECK(ptr_[static_cast<size_t>(b)] != nullptr, "on-device training: the arena refused buffer '",
                 plan_.buffers[static_cast<size_t>(b)].name, "' at ", plan_.op_name(k));
    }
    if (k == 0) {  // the input image, quantised into tensor 0's buffer
      const QuantTensor& t = model_.tensors[0];
      int8_t* q = reinterpret_cast<int8_t*>(buf(value_buf_[0]));
      for (int32_t c = 0; c < t.c; ++c)
        for (int32_t p = 0; p < t.h * t.w; ++p)
          q[static_cast<int64_t>(p) * t.c + c] = t.quantize(image[static_cast<int64_t>(c) * t.h * t.w + p]);
    }
    if (k < L) {
      forward_op(k);
    } else if (k == L) {
      loss_op(label, result);
    } else if (k <= 2 * L - first_trained_) {
      backward_op(2 * L - k);
    }
    for (int b : release_after_[static_cast<size_t>(k)]) {
      allocator_->release(b);
      ptr_[static_cast<size_t>(b)] = nullptr;
    }
  }
  high_water_ = allocator_->high_water();
  return result;
}

void Finetuner::forward_op(int i) {
  const QuantOp& op = model_.ops[static_cast<size_t>(op_of_[i])];
  const QuantTensor& in = model_.tensors[static_cast<size_t>(op.input)];
  const QuantTensor& out = model_.tensors[static_cast<size_t>(op.output)];
  const int8_t* x = reinterpret_cast<const int8_t*>(buf(value_buf_[i]));
  int8_t* y = reinterpret_cast<int8_t*>(buf(value_buf_[i + 1]));
  const int8_t* weights = weight(i, weight_working_buf_[i]);
  const int32_t* biases = bias(i);
  cpu::Requant rq = op.requant();
  rq.out_zero_point = out.zero_point;
  switch (op.kind) {
    case QuantOpKind::conv2d:
      cpu::int8_conv2d(model_.conv_shape(op), x, in.zero_point, weights, biases, rq, y);
      break;
    case QuantOpKind::depthwise_conv2d: {
      const cpu::Int8ConvShape s = model_.conv_shape(op);
      int8_t* scratch = reinterpret_cast<int8_t*>(buf(fscratch_buf_[i]));
      if (value_buf_[i] == value_buf_[i + 1]) {
        cpu::int8_depthwise_conv2d_inplace(s, y, in.zero_point, weights, biases, rq, scratch);
        break;
      }
      // The input is still needed: one channel at a time through the scratch planes.
      const int64_t in_pixels = int64_t{s.h} * s.w, out_pixels = int64_t{s.out_h()} * s.out_w();
      cpu::Int8ConvShape one = s;
      one.c_in = one.c_out = 1;
      const int kk = s.kernel * s.kernel;
      for (int32_t c = 0; c < s.c_out; ++c) {
        for (int64_t p = 0; p < in_pixels; ++p) scratch[p] = x[p * s.c_in + c];
        cpu::Requant rc = rq;
        rc.multiplier += c;
        rc.shift += c;
        cpu::int8_depthwise_conv2d_inplace(one, scratch, in.zero_point, weights + c * kk,
                                           biases + c, rc, scratch + in_pixels);
        for (int64_t p = 0; p < out_pixels; ++p) y[p * s.c_out + c] = scratch[p];
      }
      break;
    }
    case QuantOpKind::linear:
      if (i == static_cast<int>(layers_.size()) - 1 && logits_f32_) {
        int32_t* acc = reinterpret_cast<int32_t*>(y);
        const int32_t n = op.out_channels();
        cpu::int8_linear_accumulate(x, in.zero_point, weights, biases,
                                    static_cast<int32_t>(in.numel()), n, acc);
        float* logits = reinterpret_cast<float*>(y);
        for (int32_t c = 0; c < n; ++c) logits[c] = in.scale * op.weight_scale[c] * static_cast<float>(acc[c]);
      } else {
        cpu::int8_linear(x, in.zero_point, weights, biases, static_cast<int32_t>(in.numel()),
                         op.out_channels(), rq, y);
      }
      break;
    case QuantOpKind::max_pool: {
      const cpu::Int8PoolShape s = model_.pool_shape(op);
      cpu::int8_max_pool2d(s, x, y);
      if (uint8_t* arg = reinterpret_cast<uint8_t*>(buf(argmax_buf_[i]))) {
        for (int32_t oh = 0; oh < s.out_h(); ++oh)
          for (int32_t ow = 0; ow < s.out_w(); ++ow)
            for (int32_t c = 0; c < s.c; ++c) {
              int best = -1;
              int32_t best_v = -129;
              for (int32_t kh = 0; kh < s.kernel; ++kh)
                for (int32_t kw = 0; kw < s.kernel; ++kw) {
                  const int32_t ih = oh * s.stride - s.pad + kh, iw = ow * s.stride - s.pad + kw;
                  if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                  const int32_t v = x[(int64_t{ih} * s.w + iw) * s.c + c];
                  if (v > best_v) {
                    best_v = v;
                    best = kh * s.kernel + kw;
                  }
                }
              arg[(int64_t{oh} * s.out_w() + ow) * s.c + c] = static_cast<uint8_t>(best);
            }
      }
      break;
    }
    case QuantOpKind::global_avg_pool:
      cpu::int8_global_avg_pool(x, in.h * in.w, in.c, in.zero_point, y);
      break;
    case QuantOpKind::add:
      break;  // merged into the layer before it
  }
  if (uint8_t* bits = reinterpret_cast<uint8_t*>(buf(mask_buf_[i])))
    cpu::clamp_mask_bits(y, out.numel(), op.act_min, op.act_max, bits);
  if (add_of_[i] >= 0) {
    const QuantOp& add = model_.ops[static_cast<size_t>(add_of_[i])];
    const int8_t* skip = reinterpret_cast<const int8_t*>(buf(value_buf_[layers_[i].residual_from]));
    const bool main_first = add.input == op.output;
    const cpu::Int8AddParams p{.a_zero_point = model_.tensors[static_cast<size_t>(add.input)].zero_point,
                               .b_zero_point = model_.tensors[static_cast<size_t>(add.input2)].zero_point,
                               .y_zero_point = model_.tensors[static_cast<size_t>(add.output)].zero_point,
                               .a_mult = add.add_a_mult,
                               .b_mult = add.add_b_mult,
                               .act_min = add.act_min,
                               .act_max = add.act_max};
    cpu::int8_add(main_first ? y : skip, main_first ? skip : y, out.numel(), p, y);
  }
}

void Finetuner::loss_op(int label, StepResult& result) {
  const int L = static_cast<int>(layers_.size());
  const int n = model_.num_classes();
  const std::byte* out = buf(value_buf_[L]);
  const QuantTensor& t = model_.tensors[static_cast<size_t>(model_.output)];
  auto logit = [&](int c) {
    return logits_f32_ ? reinterpret_cast<const float*>(out)[c]
                       : t.dequantize(reinterpret_cast<const int8_t*>(out)[c]);
  };
  float m = logit(0);
  result.predicted = 0;
  for (int c = 1; c < n; ++c) {
    if (logit(c) > m) {
      m = logit(c);
      result.predicted = c;
    }
  }
  double sum = 0;
  for (int c = 0; c < n; ++c) sum += std::exp(static_cast<double>(logit(c) - m));
  result.loss = static_cast<float>(std::log(sum) + m - logit(label));
  if (float* g = reinterpret_cast<float*>(buf(grad_buf_[L]))) {
    for (int c = 0; c < n; ++c)
      g[c] = static_cast<float>(std::exp(static_cast<double>(logit(c) - m)) / sum) - (c == label ? 1.0f : 0.0f);
    grad_written_[static_cast<size_t>(L)] = 1;
  }
}

void Finetuner::backward_op(int i) {
  const LayerSpec& l = layers_[i];
  QuantOp& op = model_.ops[static_cast<size_t>(op_of_[i])];
  const QuantTensor& in = model_.tensors[static_cast<size_t>(op.input)];
  const QuantTensor& out = model_.tensors[static_cast<size_t>(op.output)];
  float* dy = reinterpret_cast<float*>(buf(grad_buf_[i + 1]));
  const int64_t n_out = static_cast<int64_t>(l.output_elems), n_in = static_cast<int64_t>(l.input_elems);

  // The residual's share of the gradient, before the mask of the fused activation.
  if (add_of_[i] >= 0) {
    const int r = l.residual_from;
    if (float* g = reinterpret_cast<float*>(buf(grad_buf_[r]))) {
      if (grad_written_[static_cast<size_t>(r)]) {
        for (int64_t e = 0; e < n_out; ++e) g[e] += dy[e];
      } else {
        std::memcpy(g, dy, static_cast<size_t>(n_out) * sizeof(float));
        grad_written_[static_cast<size_t>(r)] = 1;
      }
    }
  }
  if (const uint8_t* bits = reinterpret_cast<const uint8_t*>(buf(mask_buf_[i]))) cpu::apply_mask_bits(bits, n_out, dy);

  // Where the input gradient goes: straight into its buffer, or into the scratch when a residual already
  // wrote a share of it there (then added).
  const bool wants_dx = i > first_trained_;
  float* dx_target = reinterpret_cast<float*>(buf(grad_buf_[i]));
  const bool accumulate = wants_dx && grad_written_[static_cast<size_t>(i)] != 0;
  float* dx = accumulate ? reinterpret_cast<float*>(buf(bscratch_buf_[i])) : dx_target;
  TERN_CHECK(!wants_dx || dx != nullptr, "on-device training: no input-gradient buffer for '", l.name, "'");

  if (op.has_weights()) {
    const int8_t* weights = wants_dx ? weight(i, weight_working_backward_buf_[i]) : nullptr;
    const cpu::Int8ConvShape s = model_.conv_shape(op);
    const int64_t pixels = op.kind == QuantOpKind::linear ? 1 : int64_t{out.h} * out.w;
    const int8_t* x = reinterpret_cast<const int8_t*>(buf(value_buf_[i]));
    const std::vector<int32_t>& ch = channels_[static_cast<size_t>(i)];
    const int32_t k = static_cast<int32_t>(ch.size());
    if (l.train.bias) cpu::bias_grad(dy, pixels, op.out_channels(), reinterpret_cast<float*>(buf(bias_grad_buf_[i])));
    if (k > 0) {
      float* dw = reinterpret_cast<float*>(buf(weight_grad_buf_[i]));
      if (op.kind == QuantOpKind::conv2d)
        cpu::conv2d_weight_grad_channels(s, x, in.zero_point, in.scale, dy, ch.data(), k, dw);
      else if (op.kind == QuantOpKind::depthwise_conv2d)
        cpu::depthwise_weight_grad_channels(s, x, in.zero_point, in.scale, dy, ch.data(), k, dw);
      else
        cpu::linear_weight_grad_channels(x, in.zero_point, in.scale, s.c_in, dy, ch.data(), k, dw);
    }
    if (wants_dx) {
      if (op.kind == QuantOpKind::conv2d) {
        cpu::conv2d_input_grad(s, dy, weights, op.weight_scale.data(), dx);
      } else if (op.kind == QuantOpKind::linear) {
        cpu::linear_input_grad(dy, weights, op.weight_scale.data(), s.c_in, s.c_out, dx);
      } else if (grad_buf_[i] != grad_buf_[i + 1]) {
        cpu::depthwise_input_grad(s, dy, weights, op.weight_scale.data(), dx);
      } else {
        // dx over dy, one channel at a time: channel c's elements sit at p * c_in + c in both, so
        // writing channel c's dx touches only channel c's dy (already copied) or bytes past dy.
        float* plane_dy = reinterpret_cast<float*>(buf(bscratch_buf_[i]));
        const int64_t in_pixels = int64_t{s.h} * s.w, out_pixels = int64_t{s.out_h()} * s.out_w();
        float* plane_dx = plane_dy + out_pixels;
        cpu::Int8ConvShape one = s;
        one.c_in = one.c_out = 1;
        const int kk = s.kernel * s.kernel;
        for (int32_t c = 0; c < s.c_in; ++c) {
          for (int64_t p = 0; p < out_pixels; ++p) plane_dy[p] = dy[p * s.c_in + c];
          cpu::depthwise_input_grad(one, plane_dy, weights + c * kk, op.weight_scale.data() + c, plane_dx);
          for (int64_t p = 0; p < in_pixels; ++p) dx[p * s.c_in + c] = plane_dx[p];
        }
      }
    }
    update(i);
  } else if (wants_dx) {
    std::fill(dx, dx + n_in, 0.0f);
    if (op.kind == QuantOpKind::max_pool) {
      const cpu::Int8PoolShape s = model_.pool_shape(op);
      const uint8_t* arg = reinterpret_cast<const uint8_t*>(buf(argmax_buf_[i]));
      for (int32_t oh = 0; oh < s.out_h(); ++oh)
        for (int32_t ow = 0; ow < s.out_w(); ++ow)
          for (int32_t c = 0; c < s.c; ++c) {
            const int64_t o = (int64_t{oh} * s.out_w() + ow) * s.c + c;
            const int32_t ih = oh * s.stride - s.pad + arg[o] / s.kernel;
            const int32_t iw = ow * s.stride - s.pad + arg[o] % s.kernel;
            dx[(int64_t{ih} * s.w + iw) * s.c + c] += dy[o];
          }
    } else {  // global average pool: dy [c] spread evenly over the pixels
      const int64_t pixels = int64_t{in.h} * in.w;
      for (int64_t p = 0; p < pixels; ++p)
        for (int32_t c = 0; c < in.c; ++c) dx[p * in.c + c] = dy[c] / static_cast<float>(pixels);
    }
  }
  if (accumulate) {
    for (int64_t e = 0; e < n_in; ++e) dx_target[e] += dx[e];
  } else if (wants_dx) {
    grad_written_[static_cast<size_t>(i)] = 1;
  }
}

void Finetuner::update(int i) {
  const LayerSpec& l = layers_[i];
  QuantOp& op = model_.ops[static_cast<size_t>(op_of_[i])];
  const float s_x = model_.tensors[static_cast<size_t>(op.input)].scale;
  const float lr = options_.lr, mu = options_.momentum;
  const float* ws = op.weight_scale.data();
  // With momentum the gradient becomes the velocity v = mu * v + g (PyTorch's SGD), kept in the arena.
  auto with_momentum = [mu](float* g, float* v, int64_t n) {
    if (v == nullptr) return;
    for (int64_t e = 0; e < n; ++e) g[e] = v[e] = mu * v[e] + g[e];
  };
  if (l.train.bias) {
    float* g = reinterpret_cast<float*>(buf(bias_grad_buf_[i]));
    float* master = reinterpret_cast<float*>(buf(bias_buf_[i]));
    const int64_t c_out = op.out_channels();
    to_quantized_bias_grad(g, c_out, nullptr, ws, s_x);
    qas_scale_bias_grad(g, c_out, nullptr, ws, s_x, options_.qas);
    with_momentum(g, reinterpret_cast<float*>(buf(bias_state_buf_[i])), c_out);
    for (int64_t c = 0; c < c_out; ++c) {
      master[c] -= lr * g[c];
      op.bias[static_cast<size_t>(c)] = round_to_int32(master[c]);
    }
  }
  const std::vector<int32_t>& ch = channels_[static_cast<size_t>(i)];
  if (!ch.empty()) {
    float* g = reinterpret_cast<float*>(buf(weight_grad_buf_[i]));
    float* master = reinterpret_cast<float*>(buf(weight_buf_[i]));
    const int64_t k = static_cast<int64_t>(ch.size());
    const int64_t cols = static_cast<int64_t>(op.weight.size()) / op.out_channels();
    to_quantized_weight_grad(g, k, cols, ch.data(), ws);
    qas_scale_weight_grad(g, k, cols, ch.data(), ws, options_.qas);
    with_momentum(g, reinterpret_cast<float*>(buf(weight_state_buf_[i])), k * cols);
    for (int64_t j = 0; j < k; ++j) {
      int8_t* w = op.weight.data() + int64_t{ch[static_cast<size_t>(j)]} * cols;
      for (int64_t e = 0; e < cols; ++e) {
        float& m = master[j * cols + e];
        m -= lr * g[j * cols + e];
        w[e] = static_cast<int8_t>(std::clamp(std::nearbyint(m), -127.0f, 127.0f));
      }
    }
  }
}

int Finetuner::predict(const float* image) const {
  const std::vector<float> logits = model_.forward(image);
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace tern::ondevice
