#include "ondevice/finetune.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string_view>
#include <utility>

#include "ondevice/step_executor.h"
#include "runtime/error.h"
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
      l.pointwise = op.kind == QuantOpKind::conv2d && op.kernel == 1 && op.stride == 1 && op.pad == 0;
    }
    l.global_pool = op.kind == QuantOpKind::global_avg_pool;
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
  TERN_CHECK(o.apply == GradientApply::kPerChannel && o.gradient_channels == kGradientChannelsAtOnce &&
                 (o.optimizer_states == 0 || o.optimizer_states == 1),
             "on-device training: the step applies SGD in place as each layer's gradients are ready, ",
             kGradientChannelsAtOnce, " output channels at a time; StepOptions must have apply = kPerChannel, "
             "gradient_channels = ", kGradientChannelsAtOnce, " and optimizer_states 0 (plain SGD) or 1 "
             "(momentum), got ", o.optimizer_states, " states");
  TERN_CHECK(o.activation_bytes == 1 && o.gradient_bytes == 4 && o.trained_bias_bytes == 4 &&
                 o.working_weight_bytes == 1 && o.working_bias_bytes == 4 && o.alignment >= 4,
             "on-device training: the step stores int8 activations, f32 gradients, f32 bias master copies "
             "and int8 / int32 working copies (element sizes 1, 4, 4, 1, 4) at an alignment of at least 4");
  TERN_CHECK(
      (o.trained_weight_bytes == 4 && o.working_rows) ||
          ((o.trained_weight_bytes == 2 || o.trained_weight_bytes == 1) && !o.working_rows),
      "on-device training: a trained weight is kept as f32 (4 bytes, read through working copies) or in "
      "fixed point (2 or 1 bytes, read in place): StepOptions has trained_weight_bytes ",
      o.trained_weight_bytes, " and working_rows ", o.working_rows, " (set_master_format sets both)");
  Prepared p;
  p.chain = build_chain(model);
  std::vector<LayerSpec>& layers = p.chain.layers;
  layers = with_update(layers, scheme);
  check_layers(layers);
  const int L = static_cast<int>(layers.size());
  const int first = first_trained_layer(layers);
  std::vector<bool> fused(L, false);  // runs its backward inside a fused block's op: no scratch of its own
  for (const FusedBlock& b : fused_blocks(layers, o))
    for (int i = b.first; i <= b.project; ++i) fused[i] = true;
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
    if (fused[i]) continue;
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
  TERN_CHECK(options.step.trained_weight_bytes == static_cast<size_t>(options.master_format),
             "on-device training: master format ", master_format_name(options.master_format), " needs ",
             static_cast<int>(options.master_format), "-byte trained weights in the plan, got ",
             options.step.trained_weight_bytes, " (set_master_format sets both)");
  Prepared p = prepare(model_, scheme, options.step);
  layers_ = std::move(p.chain.layers);
  op_of_ = std::move(p.chain.op_of);
  add_of_ = std::move(p.chain.add_of);
  plan_ = plan_memory(std::move(p.step.buffers), options.step.strategy, std::move(p.step.ops));
  const int L = static_cast<int>(layers_.size());
  first_trained_ = first_trained_layer(layers_);
  build_program();

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
  // shares their bytes), so they are written once here, from pointers at their planned offsets.
  std::vector<std::byte*> fixed(plan_.buffers.size());
  for (size_t b = 0; b < fixed.size(); ++b) fixed[b] = reinterpret_cast<std::byte*>(arena_.data()) + plan_.offsets[b];
  init_trained_state(program_, fixed.data());
}

// The step as plain records (step_executor.h), every buffer found in the plan by name and checked
// against what the executor will write into it.
void Finetuner::build_program() {
  static_assert(static_cast<uint32_t>(StepOpKind::conv2d) == static_cast<uint32_t>(QuantOpKind::conv2d) &&
                static_cast<uint32_t>(StepOpKind::depthwise_conv2d) ==
                    static_cast<uint32_t>(QuantOpKind::depthwise_conv2d) &&
                static_cast<uint32_t>(StepOpKind::linear) == static_cast<uint32_t>(QuantOpKind::linear) &&
                static_cast<uint32_t>(StepOpKind::global_avg_pool) ==
                    static_cast<uint32_t>(QuantOpKind::global_avg_pool) &&
                static_cast<uint32_t>(StepOpKind::max_pool) == static_cast<uint32_t>(QuantOpKind::max_pool));
  const int L = static_cast<int>(layers_.size());
  auto find = [&](const std::string& name) { return find_buffer(plan_, name); };
  auto require = [&](int b, size_t bytes, const std::string& what, int i) {
    TERN_CHECK(b >= 0 && plan_.buffers[static_cast<size_t>(b)].size >= bytes, "on-device training: no ", what,
               " of ", bytes, " bytes planned for '", layers_[static_cast<size_t>(i)].name, "'");
    return b;
  };
  const std::vector<FusedBlock> blocks = fused_blocks(layers_, options_.step);
  // Whether layer i's input is a hidden tensor of a fused block (its gradient is never held whole).
  auto is_hidden_in_fused_block = [&](int i) {
    return std::any_of(blocks.begin(), blocks.end(),
                       [&](const FusedBlock& b) { return i > b.first && i <= b.project; });
  };
  const std::vector<int> pools = folded_pools(layers_, options_.step);
  auto is_folded_pool = [&](int i) { return std::find(pools.begin(), pools.end(), i) != pools.end(); };
  auto is_fused_expansion = [&](int i) {
    return std::any_of(blocks.begin(), blocks.end(),
                       [&](const FusedBlock& b) { return b.has_expansion() && i == b.first; });
  };
  channels_.assign(static_cast<size_t>(L), {});
  channel_slots_.assign(static_cast<size_t>(L), {});
  step_layers_.assign(static_cast<size_t>(L), StepLayer{});
  for (int i = 0; i < L; ++i) {
    const LayerSpec& spec = layers_[static_cast<size_t>(i)];
    QuantOp& op = model_.ops[static_cast<size_t>(op_of_[i])];
    const QuantTensor& in = model_.tensors[static_cast<size_t>(op.input)];
    const QuantTensor& out = model_.tensors[static_cast<size_t>(op.output)];
    StepLayer& l = step_layers_[static_cast<size_t>(i)];
    l.kind = static_cast<StepOpKind>(op.kind);
    l.op = op_of_[i];
    if (op.has_weights()) l.conv = model_.conv_shape(op);
    if (op.kind == QuantOpKind::max_pool) l.pool = model_.pool_shape(op);
    l.in_pixels = in.h * in.w;
    l.in_c = in.c;
    l.in_elems = in.numel();
    l.out_elems = out.numel();
    l.in_zero_point = in.zero_point;
    l.out_zero_point = out.zero_point;
    l.in_scale = in.scale;
    l.act_min = op.act_min;
    l.act_max = op.act_max;
    if (op.has_weights()) {
      l.weight = op.weight.data();
      l.bias = op.bias.data();
      l.weight_scale = op.weight_scale.data();
      l.multiplier = op.multiplier.data();
      l.shift = op.shift.data();
      l.out_channels = op.out_channels();
      l.weight_elems = static_cast<int64_t>(op.weight.size());
      l.weight_mirror = op.weight.data();
      l.bias_mirror = op.bias.data();
    }
    if (add_of_[i] >= 0) {
      const QuantOp& add = model_.ops[static_cast<size_t>(add_of_[i])];
      l.residual_from = spec.residual_from;
      l.add_main_first = add.input == op.output;
      l.add = cpu::Int8AddParams{.a_zero_point = model_.tensors[static_cast<size_t>(add.input)].zero_point,
                                 .b_zero_point = model_.tensors[static_cast<size_t>(add.input2)].zero_point,
                                 .y_zero_point = model_.tensors[static_cast<size_t>(add.output)].zero_point,
                                 .a_mult = add.add_a_mult,
                                 .b_mult = add.add_b_mult,
                                 .act_min = add.act_min,
                                 .act_max = add.act_max};
    }
    l.value_in = find(tensor_name(layers_, i));
    l.value_out = find(tensor_name(layers_, i + 1));
    TERN_CHECK(l.value_in >= 0 && l.value_out >= 0, "on-device training: the plan has no buffer for the tensors of '",
               spec.name, "'");
    l.grad_in = find(tensor_name(layers_, i) + ".grad");
    l.grad_out = find(tensor_name(layers_, i + 1) + ".grad");
    l.mask = find(spec.name + ".relu_mask");
    l.argmax = find(spec.name + ".argmax");
    l.forward_scratch = find(spec.name + ".scratch");
    l.backward_scratch = find(spec.name + ".backward_scratch");
    if (spec.kind == LayerKind::kDepthwiseConv && l.value_in != l.value_out)
      require(l.forward_scratch, 2 * static_cast<size_t>(in.h) * in.w, "depthwise scratch (not in place)", i);
    if (i < first_trained_) continue;

    l.train_bias = spec.train.bias;
    if (spec.train.weight_ratio > 0) {
      const std::vector<int> ch =
          select_channels_by_norm(op.weight, op.weight_scale, op.out_channels(), spec.train.weight_ratio);
      channels_[static_cast<size_t>(i)].assign(ch.begin(), ch.end());
      std::vector<int32_t>& slot = channel_slots_[static_cast<size_t>(i)];
      slot.assign(static_cast<size_t>(op.out_channels()), -1);
      for (size_t j = 0; j < ch.size(); ++j) slot[static_cast<size_t>(ch[j])] = static_cast<int32_t>(j);
      l.channels = channels_[static_cast<size_t>(i)].data();
      l.channel_slot = slot.data();
      l.channel_count = static_cast<int32_t>(ch.size());
      const size_t cols = op.weight.size() / static_cast<size_t>(op.out_channels());
      const size_t trained = ch.size() * cols * static_cast<size_t>(options_.master_format);
      // What the executor holds (step_executor.h): a conv or linear layer's gradient a few channels at a
      // time and its trained rows as the working copy; a depthwise layer's whole weight and gradient.
      const bool depthwise = spec.kind == LayerKind::kDepthwiseConv;
      // In a fused block the depthwise conv's gradient is a group's rows at a time.
      const auto block =
          std::find_if(blocks.begin(), blocks.end(), [&](const FusedBlock& b) { return i == b.project - 1; });
      const size_t grad_rows = !depthwise ? std::min<size_t>(ch.size(), kGradientChannelsAtOnce)
                               : block != blocks.end()
                                   ? std::min<size_t>(ch.size(), static_cast<size_t>(block->group_channels))
                                   : ch.size();
      const size_t working = depthwise ? op.weight.size() : ch.size() * cols;
      l.weight_master = require(find(spec.name + ".weight"), trained, "weight master copy", i);
      l.weight_grad = require(find(spec.name + ".weight.grad"), grad_rows * cols * sizeof(float), "weight gradient", i);
      const bool reads_working = depthwise || options_.step.working_rows;
      if (reads_working)
        l.weight_working = require(find(spec.name + ".weight.working"), working, "weight working copy", i);
      if (reads_working && i > first_trained_ && !is_fused_expansion(i))
        l.weight_working_backward =
            require(find(spec.name + ".weight.working_backward"), working, "weight working copy", i);
      if (options_.momentum > 0) l.weight_state = require(find(spec.name + ".weight.state"), trained, "velocity", i);
    }
    if (spec.train.bias) {
      const size_t bytes = op.bias.size() * sizeof(float);
      l.bias_master = require(find(spec.name + ".bias"), bytes, "bias master copy", i);
      l.bias_grad = require(find(spec.name + ".bias.grad"), bytes, "bias gradient", i);
      l.bias_working = require(find(spec.name + ".bias.working"), op.bias.size() * sizeof(int32_t),
                               "bias working copy", i);
      if (options_.momentum > 0) l.bias_state = require(find(spec.name + ".bias.state"), bytes, "velocity", i);
    }
    if (i > first_trained_ && !is_hidden_in_fused_block(i) && !is_folded_pool(i))
      TERN_CHECK(l.grad_in >= 0, "on-device training: no input-gradient buffer for '", spec.name, "'");
  }
  for (int g : pools) {
    step_layers_[static_cast<size_t>(g)].fused_into = g - 1;
    step_layers_[static_cast<size_t>(g - 1)].pooled_grad =
        require(find(layers_[static_cast<size_t>(g - 1)].name + ".pooled_grad"),
                pooled_gradient_bytes(layers_, g - 1, options_.step), "pooled gradient", g - 1);
  }
  for (const FusedBlock& b : blocks) {
    StepLayer& project = step_layers_[static_cast<size_t>(b.project)];
    project.fused_first = b.first;
    project.hidden_group_channels = b.group_channels;
    project.hidden_group =
        require(find(layers_[static_cast<size_t>(b.project)].name + ".hidden_grad_group"),
                hidden_group_bytes(layers_, b, options_.step), "hidden-gradient group", b.project);
    for (int i = b.first; i < b.project; ++i) step_layers_[static_cast<size_t>(i)].fused_into = b.project;
  }
  const QuantOp& last = model_.ops[static_cast<size_t>(op_of_[L - 1])];
  const QuantTensor& output = model_.tensors[static_cast<size_t>(model_.output)];
  program_ = StepProgram{.layers = step_layers_.data(),
                         .layer_count = L,
                         .first_trained = first_trained_,
                         .num_ops = plan_.num_ops,
                         .num_classes = model_.num_classes(),
                         .logits_f32 = last.kind == QuantOpKind::linear,
                         .output_zero_point = output.zero_point,
                         .output_scale = output.scale,
                         .lr = options_.lr,
                         .momentum = options_.momentum,
                         .qas = options_.qas,
                         .master_format = options_.master_format};
}

StepResult Finetuner::step(const float* image, int label) { return run_ops(image, nullptr, label, plan_.num_ops - 1); }

StepResult Finetuner::step(const int8_t* image, int label) { return run_ops(nullptr, image, label, plan_.num_ops - 1); }

int Finetuner::predict_quantized(const int8_t* image) {
  return run_ops(nullptr, image, 0, static_cast<int>(layers_.size())).predicted;
}

// Ops 0..last_op of the step on one image (f32, quantised here, or already int8), every buffer taken
// from the arena by the plan for the ops that use it; buffers still held after last_op (a forward
// pass alone stops before the backward that would release them) are given back at the end.
StepResult Finetuner::run_ops(const float* image, const int8_t* quantized, int label, int last_op) {
  TERN_CHECK(label >= 0 && label < model_.num_classes(), "on-device training: label ", label,
             " is outside [0, ", model_.num_classes(), ")");
  std::fill(grad_written_.begin(), grad_written_.end(), 0);
  const bool trains = last_op > static_cast<int>(layers_.size());
  if (trains) program_.rounding_key = static_cast<uint32_t>(steps_);
  StepState state{grad_written_.data(), {}};
  for (int k = 0; k <= last_op; ++k) {
    for (int b : acquire_at_[static_cast<size_t>(k)]) {
      ptr_[static_cast<size_t>(b)] = allocator_->acquire(b);
      TERN_CHECK(ptr_[static_cast<size_t>(b)] != nullptr, "on-device training: the arena refused buffer '",
                 plan_.buffers[static_cast<size_t>(b)].name, "' at ", plan_.op_name(k));
    }
    if (k == 0) {  // the input image into tensor 0's buffer
      const QuantTensor& t = model_.tensors[0];
      int8_t* q = reinterpret_cast<int8_t*>(ptr_[static_cast<size_t>(program_.layers[0].value_in)]);
      if (quantized != nullptr) {
        std::memcpy(q, quantized, static_cast<size_t>(t.numel()));
      } else {
        for (int32_t c = 0; c < t.c; ++c)
          for (int32_t p = 0; p < t.h * t.w; ++p)
            q[static_cast<int64_t>(p) * t.c + c] = t.quantize(image[static_cast<int64_t>(c) * t.h * t.w + p]);
      }
    }
    run_step_op(program_, k, ptr_.data(), label, state);
    for (int b : release_after_[static_cast<size_t>(k)]) {
      allocator_->release(b);
      ptr_[static_cast<size_t>(b)] = nullptr;
    }
  }
  for (size_t b = 0; b < ptr_.size(); ++b) {
    if (ptr_[b] == nullptr) continue;
    allocator_->release(static_cast<int>(b));
    ptr_[b] = nullptr;
  }
  high_water_ = allocator_->high_water();
  if (trains) ++steps_;
  return state.result;
}

const char* master_format_name(MasterFormat f) {
  return f == MasterFormat::f32 ? "f32" : f == MasterFormat::int16 ? "int16" : "int8";
}

MasterFormat parse_master_format(const std::string& name) {
  if (name == "f32") return MasterFormat::f32;
  if (name == "int16") return MasterFormat::int16;
  if (name == "int8") return MasterFormat::int8;
  throw Error("expected f32, int16 or int8, got '" + name + "'");
}

void set_master_format(FinetuneOptions& options, MasterFormat f) {
  options.master_format = f;
  options.step.trained_weight_bytes = static_cast<size_t>(f);
  options.step.working_rows = f == MasterFormat::f32;
}

void Finetuner::set_lr(float lr) {
  TERN_CHECK(std::isfinite(lr) && lr >= 0, "on-device training: lr must be >= 0, got ", lr);
  program_.lr = lr;
}

int Finetuner::predict(const float* image) const {
  const std::vector<float> logits = model_.forward(image);
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

}  // namespace tern::ondevice
