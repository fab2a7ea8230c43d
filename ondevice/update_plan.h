// UpdatePlan: which parts of a model train on the device, and the buffers one training step then needs
// (after TinyTL and Lin et al. 2022's sparse update). tern-finetune turns its converted model into a
// LayerSpec list, picks or searches an update scheme, and plans the step's arena with memory_plan.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ondevice/memory_plan.h"

namespace tern::ondevice {

enum class LayerKind : uint8_t { kConv, kDepthwiseConv, kLinear, kAvgPool };
const char* layer_kind_name(LayerKind kind);

// The channel ratios a weight may be updated at (Lin et al. 2022): 0, 1/8, 1/4, 1/2, 1.
inline constexpr std::array<float, 5> kUpdateRatios = {0.0f, 0.125f, 0.25f, 0.5f, 1.0f};

// Which parts of one layer train.
struct LayerUpdate {
  bool bias = false;
  float weight_ratio = 0;  // the fraction of output channels whose weights train; one of kUpdateRatios
  bool trains() const { return bias || weight_ratio > 0; }
  bool operator==(const LayerUpdate&) const = default;
};

// One layer of a chain, at batch 1. Tensor 0 is the model input and tensor i + 1 the output of layer i,
// which reads tensor i: output = relu?(op(tensor i)) + tensor[residual_from].
struct LayerSpec {
  std::string name;  // unique; the update scheme names layers by it
  LayerKind kind = LayerKind::kConv;
  size_t input_elems = 0;  // equals the previous layer's output_elems
  size_t output_elems = 0;
  size_t weight_elems = 0;  // 0 for a layer without weights
  size_t bias_elems = 0;
  int out_channels = 0;    // weight rows; weight_elems is a multiple of it
  bool relu = false;       // a ReLU (or ReLU6) follows the op; backward needs its mask
  int residual_from = -1;  // a tensor index <= this layer's own input's, added to the output; -1: none
  bool pointwise = false;  // a 1x1 conv (stride 1, no padding): a fused block's expansion or projection
  bool global_pool = false;  // a global average pool: its backward spreads a gradient evenly over the pixels
  size_t forward_scratch_bytes = 0;  // the op's workspace (im2col, a depthwise channel)
  size_t backward_scratch_bytes = 0;
  LayerUpdate train;  // which parts train in this step
};

// The first layer with a trained part, where backward stops; layers.size() when nothing trains.
int first_trained_layer(std::span<const LayerSpec> layers);

// Checks the chain: unique names, matching sizes, residual indices, weights divisible into channels,
// trained parts that exist, ratios from kUpdateRatios. Throws tern::Error naming the layer.
void check_layers(std::span<const LayerSpec> layers);

// When the weight update happens. kAfterBackward is the usual order: every gradient is held until one
// optimizer step at the end. The others reorder operators so each update is applied in place as soon
// as its gradient is ready: a layer's gradient lives only during its backward op (kPerLayer), or only
// StepOptions::gradient_channels output channels' weight gradient exists at a time (kPerChannel, the
// sparse-update kernel's loop; a depthwise layer's rows are kernel x kernel values and its gradient is
// held whole, as its in-place backward needs it before the input gradient overwrites dy — except in a
// fused block, where it goes a group of channels at a time).
enum class GradientApply : uint8_t { kAfterBackward, kPerLayer, kPerChannel };

struct StepOptions {
  size_t activation_bytes = 1;      // per forward activation element: 1 for the int8 graph, 4 for fp32
  size_t gradient_bytes = 4;        // backward runs in f32
  size_t trained_weight_bytes = 4;  // the SRAM copy of a trained weight element (f32 master copy)
  size_t trained_bias_bytes = 4;    // int32 or f32 bias
  // The working copy of a trained tensor that the kernels read, when that is not the master copy
  // itself. The int8 engine cannot read a trained int8 weight from flash (its trained rows change),
  // so each op that needs it rounds the trained rows from the master copy into SRAM just before it
  // runs, for the forward and again for the backward's input gradient: a conv or linear layer's
  // trained rows only (1 byte per element; its kernels read the frozen rows from flash), a depthwise
  // layer's whole weight (its rows are kernel x kernel bytes); and the int32 bias (4 per element)
  // for the forward. 0: the kernels read the master copy (fp32 training).
  size_t working_weight_bytes = 1;
  size_t working_bias_bytes = 4;
  // Whether a conv or linear layer's kernels read its trained rows from such a working copy (an f32
  // master copy); false: from the SRAM copy itself, whose first plane is the int8 rows (a fixed-point
  // master copy, step_executor.h's MasterFormat int16 / int8, trained_weight_bytes 2 / 1).
  bool working_rows = true;
  int optimizer_states = 0;         // f32 values per trained element: 0 SGD, 1 momentum, 2 Adam
  GradientApply apply = GradientApply::kPerChannel;
  int gradient_channels = 4;  // kPerChannel: output channels whose weight gradient exists at once
  bool in_place_depthwise = true;  // a depthwise conv overwrites its input when nothing else reads it
  // Depthwise backward writes the input gradient over the output gradient, channel by channel (each
  // channel's weight gradient first; last channel first when the input is larger, at stride 2), unless a
  // residual already added into the input gradient.
  bool in_place_depthwise_backward = true;
  // Backward crosses an inverted-residual block (fused_blocks) as one op, this many bytes of hidden
  // gradient at a time; 0: layer by layer, each hidden gradient held whole.
  size_t hidden_group_bytes = 16 * 1024;
  // A global average pool's backward folds into the 1x1 conv before it (folded_pools); false: the pool's
  // backward writes the conv's whole output gradient.
  bool fold_pool_backward = true;
  size_t alignment = 4;  // every buffer's offset
  PlacementStrategy strategy = PlacementStrategy::kBestFit;
};

// An inverted-residual block (MobileNetV2's 1x1 expansion, depthwise conv, linear 1x1 projection) whose
// backward runs as one op, the projection's, a group of `group_channels` hidden channels at a time: the
// projection's input gradient for the group's channels, its depthwise backward (each channel stands
// alone), then the expansion's share of the block's input gradient, added up group by group. The hidden
// tensors' gradients, the largest buffers of a backward through a frozen block, exist a group at a time.
// A block is fused when backward reaches its depthwise conv (the first trained layer is at or below it);
// the expansion is part of it when backward reaches that too; nothing outside the block may read its
// hidden tensors, and the only residual into the block's input gradient is the projection's own.
struct FusedBlock {
  int first = 0;    // the expansion, or the depthwise conv when the block has none
  int project = 0;  // the 1x1 projection; the depthwise conv is project - 1
  int group_channels = 0;
  bool has_expansion() const { return first == project - 2; }
};
// The fused blocks of a chain with its `train` set, in order; none when hidden_group_bytes is 0.
// group_channels: as many as fit hidden_group_bytes of gradient (the depthwise conv's input and output
// planes), at least 1, at most a quarter of the hidden channels.
std::vector<FusedBlock> fused_blocks(std::span<const LayerSpec> layers, const StepOptions& options);
// The bytes of the hidden-gradient group of a fused block (the buffer "<projection>.hidden_grad_group"):
// the group's gradient planes before and after the depthwise conv (f32); when the depthwise weight
// trains, the group's channels of its saved input (int8), which its weight gradient reads; when the
// expansion's weight trains, the slot table of its rows of the group's channels (int32) and, with an
// f32 master copy (working_rows), those rows as the kernels read them (int8, rebuilt group by group,
// in place of a working copy of all its trained rows).
size_t hidden_group_bytes(std::span<const LayerSpec> layers, const FusedBlock& block,
                          const StepOptions& options);

// The global average pools (their layer indices) whose backward folds into the 1x1 conv before them:
// that conv's output gradient is the pool's output gradient / pixels wherever its ReLU passed, so its
// backward builds it a pixel's row at a time (for the input and bias gradients) and a few channels'
// columns at a time (for the weight gradients) instead of holding it whole — in a classifier head, the
// widest gradient of the step's top. Folded where the conv's backward runs (the first trained layer is
// at or below it), the conv has no residual and nothing else adds its output; none when
// fold_pool_backward is false. The pool's own backward op then does nothing.
std::vector<int> folded_pools(std::span<const LayerSpec> layers, const StepOptions& options);
// The bytes the conv before a folded pool (layer `conv`) builds its output gradient in (the buffer
// "<conv>.pooled_grad"): a pixel's row (f32, one per output channel) and, when its weight trains,
// gradient_channels columns over the pixels.
size_t pooled_gradient_bytes(std::span<const LayerSpec> layers, int conv, const StepOptions& options);

// The buffers and operators of one training step. Operators: layer i's forward at i, the loss at L
// (L layers), then layer i's backward at 2L - i for every layer from the last down to the first one
// that trains, then "optimizer.step" when apply is kAfterBackward. Backward stops at the first trained
// layer; a frozen weight's gradient is never computed; an activation is saved only when a trained
// weight needs it; a gradient is computed only for tensors a trained part lies behind.
struct TrainingStep {
  std::vector<Buffer> buffers;
  std::vector<std::string> ops;
};
TrainingStep build_training_step(std::span<const LayerSpec> layers, const StepOptions& options = {});
// build_training_step, then plan_memory with options.strategy.
MemoryPlan plan_training_step(std::span<const LayerSpec> layers, const StepOptions& options = {});

// An update scheme: one LayerUpdate per layer of a model.
struct UpdateScheme {
  std::vector<LayerUpdate> layers;
  bool operator==(const UpdateScheme&) const = default;
};
UpdateScheme no_update(std::span<const LayerSpec> layers);
UpdateScheme full_update(std::span<const LayerSpec> layers);
// Weights and biases of the last k layers that have parameters.
UpdateScheme last_k_update(std::span<const LayerSpec> layers, int k);
// Every bias, no weight (TinyTL).
UpdateScheme bias_only_update(std::span<const LayerSpec> layers);
// The scheme with every weight and bias of the last layer trained: a new classifier head must learn
// (tern-finetune and the bare-metal demo always train it).
UpdateScheme with_last_layer_trained(UpdateScheme scheme, std::span<const LayerSpec> layers);
// The layers with `train` set from the scheme.
std::vector<LayerSpec> with_update(std::span<const LayerSpec> layers, const UpdateScheme& scheme);

// Parses --update. Accepted, case-sensitive:
//   "full" | "none" | "bias" (every bias) | "last=K" (weights and biases of the last K layers with
//   parameters), or sections joined by ';':
//   "bias:last=K" (biases of the last K layers that have biases) | "bias:all" | "bias:NAME,NAME..."
//   "weight:NAME=RATIO,...": RATIO is 0, 1, 0.5, 0.25, 0.125, 1/2, 1/4 or 1/8; "weight:last=K"
//   updates all channels of the last K layers with weights.
// Example: "bias:last=12;weight:conv21=1,conv36=0.125". Throws tern::Error naming the bad part and
// what was expected (unknown layer names list the known ones).
UpdateScheme parse_update_scheme(std::string_view spec, std::span<const LayerSpec> layers);
// The scheme in the syntax parse_update_scheme reads ("none" when nothing trains).
std::string describe(const UpdateScheme& scheme, std::span<const LayerSpec> layers);

// ceil(ratio * out_channels): the number of output channels a weight ratio updates.
int channels_for_ratio(int out_channels, float ratio);
// The channels_for_ratio(out_channels, ratio) output channels with the largest weight L2 norm, in
// increasing index order (ties: the lower index). `weight` is [out_channels][elements per channel].
std::vector<int> select_channels_by_norm(std::span<const float> weight, int out_channels, float ratio);
// The same for an int8 weight with one scale per output channel (norm of the real values).
std::vector<int> select_channels_by_norm(std::span<const int8_t> weight, std::span<const float> scales,
                                         int out_channels, float ratio);

// Per-layer contributions, measured as in Lin et al. 2022 (the accuracy gained by updating one part;
// contribution.h measures them on a converted model).
struct Contributions {
  // bias_last[k]: the gain of updating the biases of the last k layers that have biases; bias_last[0]
  // is 0. At most one more entry than there are such layers.
  std::vector<float> bias_last;
  // weight[i][r]: the gain of updating layer i's weight at kUpdateRatios[r] (entry 0 is ignored).
  // One row per layer; rows of layers without weights are ignored.
  std::vector<std::array<float, 5>> weight;
};

// The cost of a scheme, to compare with the budget. peak_memory_cost plans the step and returns the
// arena peak; a caller with its own cost model passes any function.
using SchemeCost = std::function<size_t(const UpdateScheme&)>;
SchemeCost peak_memory_cost(std::span<const LayerSpec> layers, const StepOptions& options = {});

// A search result: always a scheme of the form bias:last=k plus weights at ratios.
struct SearchResult {
  UpdateScheme scheme;
  float contribution = 0;
  size_t cost = 0;
  int evaluations = 0;  // calls of the cost function
};

// Greedy: from training nothing, repeatedly take the change (more bias layers, or a larger ratio for
// one weight) with the most gain per extra byte among those that stay within the budget and gain
// something, until none is left. Throws tern::Error when training nothing already exceeds the budget.
SearchResult greedy_search(std::span<const LayerSpec> layers, const Contributions& contributions,
                           size_t budget, const SchemeCost& cost);

struct EvolutionOptions {
  int population = 40;
  int generations = 40;
  float mutation = 0.1f;  // per gene
  uint64_t seed = 0;
};
// Evolutionary search (elitist, uniform crossover, per-gene mutation) for the most gain within the
// budget; deterministic for a seed. Throws like greedy_search.
SearchResult evolutionary_search(std::span<const LayerSpec> layers, const Contributions& contributions,
                                 size_t budget, const SchemeCost& cost, const EvolutionOptions& options = {});

}  // namespace tern::ondevice
