// On-device fine-tuning: one SGD step at batch 1 on a QuantizedModel, with every buffer of the step
// placed by a MemoryPlan inside one arena (after Lin et al. 2022's tiny-training). tern-finetune drives it.
//
// A step runs the plan's operators in order. Forward: the int8 kernels (cpu/int8_conv.h), keeping only
// the activations, ReLU masks and max-pool choices that the backward of a trained part needs. Loss:
// softmax cross-entropy on the f32 logits (a linear head's int32 accumulators times s_x * s_w). Backward,
// in f32, from the last layer down to the first one that trains: input gradients through frozen int8
// layers, bias gradients, the chosen channels' weight gradients; each layer's parameters are updated in
// place (SGD, QAS on or off) as soon as its backward has run, so no full gradient tensor is held. An
// inverted-residual block's backward runs as one op a group of hidden channels at a time (update_plan.h's
// FusedBlock), so neither are its hidden activations' gradients; the results are those of layer by layer.
//
// Parameters train in their quantised units (qas.h): each trained layer keeps a master copy of its
// trained weight rows (W / s_W) and of its bias (b / (s_W * s_x), f32) in the arena, updated by SGD; after
// each update the int8 weight is re-quantised as clamp(round(master), -127, 127) and the int32 bias as
// round(master). A device cannot rewrite flash, so the kernels of a trained layer read its frozen rows
// from the model and its trained rows (and int32 bias) from the arena: for an f32 master copy, from
// working buffers rebuilt by each op that reads them (only the ops' transient bytes, planned, and for a
// conv or linear layer only the trained rows, cpu::Int8SplitWeight); for a fixed-point one
// (FinetuneOptions::master_format int16 or int8), from its int8 plane in place. The scales (and so the
// requantisation multipliers) stay fixed, so the int8 graph is always a valid QuantizedModel and the
// master copy keeps the sub-step changes that rounding would lose (in expectation, for fixed point).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ondevice/memory_plan.h"
#include "ondevice/quantized_model.h"
#include "ondevice/step_executor.h"
#include "ondevice/update_plan.h"

namespace tern::ondevice {

// The layer chain update_plan works on, one LayerSpec per op of the model: a residual add is merged into
// the layer before it (that layer's residual_from names the other operand), a max pool becomes a
// weightless layer of kind kAvgPool (update_plan only tells weightless layers apart by name). Names are
// the ops' names. Throws tern::Error when the ops are not a chain (an op that does not read the previous
// op's output, or an add whose operand is not the previous output).
std::vector<LayerSpec> layer_specs(const QuantizedModel& model);

// The model's classifier (its last op, a linear layer writing the output) replaced by a new head of
// `classes` rows: weights zero or small random (normal with std 0.1 / sqrt(inputs), seeded) and
// zero biases, quantised with one per-channel scale for every row — the largest of the old head's scales,
// so that weights as large as the pretrained ones stay representable while they train.
enum class HeadInit : uint8_t { zeros, random };
void replace_head(QuantizedModel& model, int classes, HeadInit init, uint64_t seed);

struct FinetuneOptions {
  float lr = 0.01f;  // with QAS, the step size of the real-valued parameters (as for fp32 SGD)
  bool qas = true;   // quantization-aware scaling of the gradients (qas.h); off: raw quantised-unit grads
  // SGD momentum (PyTorch's form: v = momentum * v + g, then master -= lr * v), in quantised units after
  // QAS. Above 0 it needs step.optimizer_states = 1: one f32 velocity per trained value, planned in the
  // arena beside the master copies (so it shows in the peak); 0 is plain SGD with no state.
  float momentum = 0;
  // How the trained weight rows are kept between steps (step_executor.h): f32 master copies, or fixed
  // point with stochastic rounding (int16: 2 bytes per weight, int8: 1). It must agree with
  // step.trained_weight_bytes and step.working_rows: set_master_format sets all three.
  MasterFormat master_format = MasterFormat::f32;
  // Element sizes, alignment and strategy of the plan. apply must be kPerChannel with gradient_channels
  // kGradientChannelsAtOnce (updates in place as the gradients are ready, step_executor.h) and
  // optimizer_states 1 with momentum, 0 without; the constructor checks.
  StepOptions step;
};

// Sets options.master_format and the plan's sizes for it (step.trained_weight_bytes, step.working_rows).
void set_master_format(FinetuneOptions& options, MasterFormat format);
const char* master_format_name(MasterFormat format);
// "f32", "int16" or "int8"; throws tern::Error for anything else.
MasterFormat parse_master_format(const std::string& name);

// Fine-tunes a copy of a QuantizedModel with one update scheme. Not thread-safe.
class Finetuner {
 public:
  // Throws tern::Error for an invalid model or scheme, a scheme that trains something behind an add with a
  // fused activation (unsupported), or options other than in-place SGD.
  Finetuner(QuantizedModel model, const UpdateScheme& scheme, const FinetuneOptions& options = {});
  Finetuner(const Finetuner&) = delete;  // the allocator points at plan_
  Finetuner& operator=(const Finetuner&) = delete;

  // One training step on one image (f32 [C, H, W], normalised as in training) with its label in
  // [0, num_classes). No heap allocation: every buffer comes from the arena by the plan.
  StepResult step(const float* image, int label);
  // The same on an image already quantised to the model's input (int8 NHWC, as QuantizedModel::
  // quantize_input gives it), as the device receives it.
  StepResult step(const int8_t* image, int label);
  // The learning rate of the following steps (a schedule sets it before each step). Throws tern::Error
  // for a negative or non-finite rate.
  void set_lr(float lr);
  float lr() const { return program_.lr; }
  // The int8 model's prediction for one image (QuantizedModel::forward; allocates, for evaluation).
  int predict(const float* image) const;
  // The class the step's own forward pass predicts for a quantised image: the executor's ops up to the
  // loss, reading the trained parameters from the arena as the device does (no allocation).
  int predict_quantized(const int8_t* image);

  const QuantizedModel& model() const { return model_; }
  // The layers with the scheme's `train` set, as planned (scratch sizes included).
  const std::vector<LayerSpec>& layers() const { return layers_; }
  const MemoryPlan& plan() const { return plan_; }
  // The highest arena byte any buffer reached so far (ArenaAllocator's high-water mark, over all steps).
  size_t high_water() const { return high_water_; }
  // The output channels whose weights train in layer i (empty when its weight is frozen).
  const std::vector<int32_t>& trained_channels(int layer) const { return channels_.at(static_cast<size_t>(layer)); }
  // The step as plain records (step_executor.h), for a device program: its parameter pointers point
  // into model(), its buffer indices into plan().
  const StepProgram& program() const { return program_; }

 private:
  void build_program();
  StepResult run_ops(const float* image, const int8_t* quantized, int label, int last_op);

  QuantizedModel model_;
  FinetuneOptions options_;
  std::vector<LayerSpec> layers_;
  std::vector<int> op_of_;   // layers_[i] runs model_.ops[op_of_[i]]
  std::vector<int> add_of_;  // and then model_.ops[add_of_[i]] (a merged residual add), or -1
  MemoryPlan plan_;
  std::vector<uint64_t> arena_;  // the arena, 8-byte aligned
  std::unique_ptr<ArenaAllocator> allocator_;
  int first_trained_ = 0;

  // The step as the executor runs it (step_executor.h); its records point into model_ and channels_.
  std::vector<std::vector<int32_t>> channels_;  // per layer: the output channels whose weights train
  std::vector<std::vector<int32_t>> channel_slots_;  // per layer: each output channel's place in channels_, or -1
  std::vector<StepLayer> step_layers_;
  StepProgram program_;
  std::vector<std::vector<int>> acquire_at_, release_after_;
  std::vector<std::byte*> ptr_;        // per plan buffer, while live
  std::vector<uint8_t> grad_written_;  // per tensor, within a step: a residual already wrote its gradient
  size_t high_water_ = 0;
  int64_t steps_ = 0;  // training steps run: the stochastic rounding's key (StepProgram::rounding_key)
};

// The plan a Finetuner with this scheme would use (tern-finetune prints and checks it before training).
MemoryPlan plan_finetune_step(const QuantizedModel& model, const UpdateScheme& scheme, const StepOptions& options);

}  // namespace tern::ondevice
