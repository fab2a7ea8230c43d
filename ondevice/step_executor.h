// The on-device training step as the device runs it: a planned step (Finetuner, finetune.h) flattened
// into plain records, executed op by op with no heap, no exceptions and no C++ library containers, so
// the host's tern-finetune and the bare-metal build (ondevice/baremetal) run the very same code.
//
// A step is operators 0..num_ops-1 (update_plan.h's numbering): layer i's forward at i, the loss at L,
// then layer i's backward (and its in-place SGD update) at 2L - i down to the first trained layer.
// Every buffer of the plan is addressed through a table of pointers, one per plan buffer, that the
// caller keeps valid while the buffer is live: the host takes them from an ArenaAllocator op by op
// (measuring the high-water mark), the device computes them once from the plan's offsets.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/kernels/cpu/int8_conv.h"
#include "runtime/kernels/cpu/int8_elementwise.h"

namespace tern::ondevice {

// The kinds of ops a layer runs: QuantOpKind's values (quantized_model.h, which the device does not
// compile; finetune.cpp checks that they agree).
enum class StepOpKind : uint32_t { conv2d = 1, depthwise_conv2d = 2, linear = 3, global_avg_pool = 5, max_pool = 6 };

// One layer of the chain (a model op, with a following residual add merged in), everything its
// forward, backward and update read, as values, parameter addresses and plan buffer indices (-1: none).
// tern-model-to-c writes every field out for the device (write_step in ondevice/baremetal/
// model_to_c.cpp): a field added here must be written there too.
struct StepLayer {
  StepOpKind kind = StepOpKind::conv2d;
  int32_t op = -1;    // the model op it runs (its weights' place in the model image)

  // Geometry: conv, depthwise and linear (a 1x1 conv of one pixel) use conv; max pool uses pool;
  // global average pool reads in_pixels x in_c.
  cpu::Int8ConvShape conv;
  cpu::Int8PoolShape pool;
  int32_t in_pixels = 0, in_c = 0;
  int64_t in_elems = 0, out_elems = 0;

  // Quantisation.
  int32_t in_zero_point = 0, out_zero_point = 0;
  float in_scale = 1.0f;
  int32_t act_min = -128, act_max = 127;

  // Parameters in the model (flash on a device; frozen there, the trained parts rebuilt in SRAM).
  const int8_t* weight = nullptr;  // [c_out, cols]
  const int32_t* bias = nullptr;   // [c_out]
  const float* weight_scale = nullptr;
  const int32_t* multiplier = nullptr;
  const int32_t* shift = nullptr;
  int32_t out_channels = 0;
  int64_t weight_elems = 0;
  // Where the host mirrors each update so its QuantizedModel holds the trained values (null on a device).
  int8_t* weight_mirror = nullptr;
  int32_t* bias_mirror = nullptr;

  // A residual add after the op: y = add(y, value of tensor residual_from) (or add(skip, y)).
  int32_t residual_from = -1;
  bool add_main_first = true;
  cpu::Int8AddParams add;

  // What trains: the bias, and the weight rows of channels[0..channel_count);
  // channel_slot [out_channels] is j for channels[j] and -1 for a frozen channel.
  bool train_bias = false;
  const int32_t* channels = nullptr;
  const int32_t* channel_slot = nullptr;
  int32_t channel_count = 0;

  // Plan buffers. value_in / value_out are tensors i and i + 1 (the same buffer when a depthwise
  // conv runs in place); grad_in / grad_out their gradients.
  int32_t value_in = -1, value_out = -1, grad_in = -1, grad_out = -1;
  int32_t mask = -1, argmax = -1, forward_scratch = -1, backward_scratch = -1;
  // The working copy of a trained weight that the forward and the backward's input gradient read: a
  // conv or linear layer's trained rows in int8 (the frozen rows are read from the model), a
  // depthwise layer's whole int8 weight.
  int32_t weight_master = -1, weight_grad = -1, weight_state = -1, weight_working = -1,
          weight_working_backward = -1;
  int32_t bias_master = -1, bias_grad = -1, bias_state = -1, bias_working = -1;

  // A fused inverted-residual block (update_plan.h's FusedBlock): on its projection, the block's first
  // layer, the hidden channels a group takes and the buffer of the group's gradients. fused_into: the
  // layer whose backward op does this one's (its own then does nothing): on the layers of a block before
  // the projection, the projection; on a folded global average pool (update_plan.h's folded_pools), the
  // 1x1 conv before it, whose pooled_grad is the buffer it builds its output gradient in (its grad_out
  // is then none: the pool's output gradient, the next layer's grad_out, stands for it).
  int32_t fused_first = -1, hidden_group_channels = 0, hidden_group = -1;
  int32_t fused_into = -1;
  int32_t pooled_grad = -1;
};

// A conv or linear layer's weight gradient is computed and applied this many output channels at a
// time, after its input gradient (the plan's weight.grad holds that many rows: GradientApply::
// kPerChannel); a depthwise layer's, whose rows are kernel x kernel values, all at once.
constexpr int32_t kGradientChannelsAtOnce = 4;

// How a trained weight row is kept in SRAM between steps, in quantised units (value / s_W). f32: a float
// per weight, rounded to int8 into a working copy by each op that reads it. int16: the int8 weight as the
// kernels read it (round(value)) followed, in a second plane of the same buffer, by 8 fraction bits
// (value - round(value) in 1/256 steps, stored + 128). int8: the int8 weight alone. The fixed-point
// forms round each update stochastically to their step (1/256 or 1), so in expectation no update is
// lost, at 2 or 1 bytes per weight instead of 4 + 1.
enum class MasterFormat : uint8_t { f32 = 4, int16 = 2, int8 = 1 };

struct StepProgram {
  const StepLayer* layers = nullptr;
  int32_t layer_count = 0;
  int32_t first_trained = 0;  // layer_count when nothing trains
  int32_t num_ops = 0;
  int32_t num_classes = 0;
  bool logits_f32 = false;     // the last layer is a linear whose output buffer holds f32 logits
  int32_t output_zero_point = 0;  // the output tensor's quantisation, when the logits are int8
  float output_scale = 1.0f;
  float lr = 0.01f;
  float momentum = 0.0f;
  bool qas = true;
  MasterFormat master_format = MasterFormat::f32;  // of the trained weight rows
  // The key of this step's stochastic rounding (MasterFormat int16 / int8): the caller changes it every
  // step, as it sets lr; each weight's rounding draws from (key, layer, element), in whatever order
  // the updates run, so a step's result does not depend on how its backward is scheduled.
  uint32_t rounding_key = 0;
};

struct StepResult {
  float loss = 0;      // the cross-entropy before the update
  int predicted = -1;  // argmax of the logits before the update
};

// Per-step state the executor keeps between ops: which gradients a residual already wrote.
// `grad_written` has layer_count + 1 entries; clear it (all 0) before op 0 of each step.
struct StepState {
  uint8_t* grad_written = nullptr;
  StepResult result;
};

// Runs operator k of the step: the input image (int8, quantised to tensor 0) must be in buffer
// layers[0].value_in before op 0, `buffers[b]` must point at every buffer live at op k, and the
// label is in [0, num_classes). The loss op fills state.result. Ops up to L alone are a forward
// pass (inference with the step's current parameters).
void run_step_op(const StepProgram& program, int k, std::byte* const* buffers, int label,
                 StepState& state) noexcept;

// Writes the master copies (and zero momentum) of every trained parameter from the model's values,
// before the first step: the weight rows of the trained channels in the program's master_format,
// the bias as f32.
void init_trained_state(const StepProgram& program, std::byte* const* buffers) noexcept;

}  // namespace tern::ondevice
