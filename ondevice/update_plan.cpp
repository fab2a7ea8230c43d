#include "ondevice/update_plan.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "runtime/error.h"
#include "runtime/rng.h"

namespace tern::ondevice {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::vector<std::string_view> split(std::string_view s, char separator) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t end = s.find(separator, start);
    parts.push_back(
        trim(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start)));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

// The index of `ratio` in kUpdateRatios, or -1.
int ratio_index(float ratio) {
  for (size_t r = 0; r < kUpdateRatios.size(); ++r)
    if (std::fabs(ratio - kUpdateRatios[r]) < 1e-6f) return static_cast<int>(r);
  return -1;
}

const char* ratio_text(float ratio) {
  switch (ratio_index(ratio)) {
    case 1:
      return "0.125";
    case 2:
      return "0.25";
    case 3:
      return "0.5";
    case 4:
      return "1";
    default:
      return "0";
  }
}

std::vector<int> layers_where(std::span<const LayerSpec> layers, bool (*keep)(const LayerSpec&)) {
  std::vector<int> out;
  for (size_t i = 0; i < layers.size(); ++i)
    if (keep(layers[i])) out.push_back(static_cast<int>(i));
  return out;
}
bool has_bias(const LayerSpec& l) { return l.bias_elems > 0; }
bool has_weight(const LayerSpec& l) { return l.weight_elems > 0; }
bool has_params(const LayerSpec& l) { return l.bias_elems > 0 || l.weight_elems > 0; }

std::string tensor_name(std::span<const LayerSpec> layers, int t) {
  return t == 0 ? std::string("input") : layers[t - 1].name + ".out";
}

// A non-negative count written in decimal digits.
int parse_count(std::string_view text, std::string_view what) {
  TERN_CHECK(!text.empty() && text.size() < 9 &&
                 std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }),
             "update scheme: '", what, "' needs a count of layers, like last=12; got '", text, "'");
  return std::atoi(std::string(text).c_str());
}

// "1", "0.5", "1/8", ...: one of kUpdateRatios.
float parse_ratio(std::string_view text, std::string_view layer) {
  const std::string s(text);
  double value = -1;
  const size_t slash = s.find('/');
  char* end = nullptr;
  if (slash == std::string::npos) {
    value = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size()) value = -1;
  } else {
    const std::string num = s.substr(0, slash), den = s.substr(slash + 1);
    const double n = std::strtod(num.c_str(), &end);
    const bool num_ok = !num.empty() && end == num.c_str() + num.size();
    const double d = std::strtod(den.c_str(), &end);
    const bool den_ok = !den.empty() && end == den.c_str() + den.size() && d != 0;
    if (num_ok && den_ok) value = n / d;
  }
  const int r = value >= 0 ? ratio_index(static_cast<float>(value)) : -1;
  TERN_CHECK(r >= 0, "update scheme: weight ratio '", text, "' for layer '", layer,
             "' is not one of 0, 1/8, 1/4, 1/2, 1 (also written 0.125, 0.25, 0.5)");
  return kUpdateRatios[r];
}

int find_layer(std::span<const LayerSpec> layers, std::string_view name) {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].name == name) return static_cast<int>(i);
  std::ostringstream known;
  for (size_t i = 0; i < layers.size(); ++i) known << (i ? ", " : "") << layers[i].name;
  throw Error("update scheme: no layer named '" + std::string(name) + "'; the model's layers are " +
              known.str());
}

// What the searches vary: the biases of the last bias_k layers with biases, and a ratio per layer.
struct Genome {
  int bias_k = 0;
  std::vector<int> ratio;  // index into kUpdateRatios, per layer (0 for layers without weights)
  bool operator<(const Genome& o) const { return std::tie(bias_k, ratio) < std::tie(o.bias_k, o.ratio); }
};

// The search problem: genome <-> scheme, its gain, and a memoised cost.
class SearchSpace {
 public:
  SearchSpace(std::span<const LayerSpec> layers, const Contributions& c, size_t budget,
              const SchemeCost& cost)
      : layers_(layers), contributions_(c), budget_(budget), cost_(cost) {
    check_layers(layers);
    bias_layers_ = layers_where(layers, has_bias);
    TERN_CHECK(c.weight.empty() || c.weight.size() == layers.size(), "update search: ", c.weight.size(),
               " rows of weight contributions for ", layers.size(), " layers");
    TERN_CHECK(c.bias_last.size() <= bias_layers_.size() + 1,
               "update search: bias contributions for the last ", c.bias_last.size() - 1,
               " layers, but the model has ", bias_layers_.size(), " layers with biases");
    max_bias_k_ = c.bias_last.empty() ? 0 : static_cast<int>(c.bias_last.size()) - 1;
    if (!c.weight.empty())
      for (size_t i = 0; i < layers.size(); ++i)
        if (has_weight(layers[i])) weight_layers_.push_back(static_cast<int>(i));
    TERN_CHECK(cost_, "update search: no cost function");
    const size_t nothing = cost_of(empty());
    TERN_CHECK(nothing <= budget, "update search: even training nothing needs ", format_bytes(nothing), " (",
               nothing, " bytes), over the budget of ", format_bytes(budget), " by ", nothing - budget,
               " bytes");
  }

  Genome empty() const { return Genome{0, std::vector<int>(layers_.size(), 0)}; }
  int max_bias_k() const { return max_bias_k_; }
  const std::vector<int>& weight_layers() const { return weight_layers_; }
  size_t budget() const { return budget_; }

  UpdateScheme scheme(const Genome& g) const {
    UpdateScheme s = no_update(layers_);
    for (int k = 0; k < g.bias_k; ++k) s.layers[bias_layers_[bias_layers_.size() - 1 - k]].bias = true;
    for (size_t i = 0; i < layers_.size(); ++i) s.layers[i].weight_ratio = kUpdateRatios[g.ratio[i]];
    return s;
  }

  float gain(const Genome& g) const {
    float total = g.bias_k > 0 ? contributions_.bias_last[g.bias_k] : 0.0f;
    for (int i : weight_layers_)
      if (g.ratio[i] > 0) total += contributions_.weight[i][g.ratio[i]];
    return total;
  }

  size_t cost_of(const Genome& g) {
    auto it = memo_.find(g);
    if (it != memo_.end()) return it->second;
    ++evaluations_;
    const size_t c = cost_(scheme(g));
    memo_.emplace(g, c);
    return c;
  }

  SearchResult result(const Genome& g) { return SearchResult{scheme(g), gain(g), cost_of(g), evaluations_}; }

 private:
  std::span<const LayerSpec> layers_;
  const Contributions& contributions_;
  size_t budget_;
  const SchemeCost& cost_;
  std::vector<int> bias_layers_, weight_layers_;
  int max_bias_k_ = 0;
  std::map<Genome, size_t> memo_;
  int evaluations_ = 0;
};

}  // namespace

const char* layer_kind_name(LayerKind kind) {
  switch (kind) {
    case LayerKind::kConv:
      return "conv";
    case LayerKind::kDepthwiseConv:
      return "depthwise";
    case LayerKind::kLinear:
      return "linear";
    case LayerKind::kAvgPool:
      return "avgpool";
  }
  return "?";
}

int first_trained_layer(std::span<const LayerSpec> layers) {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].train.trains()) return static_cast<int>(i);
  return static_cast<int>(layers.size());
}

void check_layers(std::span<const LayerSpec> layers) {
  TERN_CHECK(!layers.empty(), "update plan: the model has no layers");
  std::set<std::string> names;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = layers[i];
    TERN_CHECK(!l.name.empty(), "update plan: layer ", i, " has no name");
    TERN_CHECK(names.insert(l.name).second, "update plan: two layers are named '", l.name, "'");
    TERN_CHECK(l.input_elems > 0 && l.output_elems > 0, "update plan: layer '", l.name, "' has input ",
               l.input_elems, " and output ", l.output_elems, " elements; expected both > 0");
    if (i > 0)
      TERN_CHECK(l.input_elems == layers[i - 1].output_elems, "update plan: layer '", l.name, "' reads ",
                 l.input_elems, " elements but '", layers[i - 1].name, "' writes ",
                 layers[i - 1].output_elems);
    if (l.weight_elems > 0)
      TERN_CHECK(l.out_channels > 0 && l.weight_elems % static_cast<size_t>(l.out_channels) == 0,
                 "update plan: layer '", l.name, "' has ", l.weight_elems, " weights, not a multiple of its ",
                 l.out_channels, " output channels");
    if (l.residual_from >= 0) {
      TERN_CHECK(l.residual_from <= static_cast<int>(i), "update plan: layer '", l.name, "' adds tensor ",
                 l.residual_from, ", which is not computed before it (tensor t is layer t's input)");
      const size_t skip =
          l.residual_from == 0 ? layers[0].input_elems : layers[l.residual_from - 1].output_elems;
      TERN_CHECK(skip == l.output_elems, "update plan: layer '", l.name, "' adds tensor ", l.residual_from,
                 " of ", skip, " elements to its output of ", l.output_elems);
    } else {
      TERN_CHECK(l.residual_from == -1, "update plan: layer '", l.name, "' has residual_from ",
                 l.residual_from, "; expected -1 or a tensor index");
    }
    TERN_CHECK(!l.train.bias || l.bias_elems > 0, "update plan: layer '", l.name,
               "' trains a bias it does not have");
    TERN_CHECK(ratio_index(l.train.weight_ratio) >= 0, "update plan: layer '", l.name,
               "' trains its weight at ratio ", l.train.weight_ratio,
               "; expected one of 0, 1/8, 1/4, 1/2, 1");
    TERN_CHECK(l.train.weight_ratio == 0 || l.weight_elems > 0, "update plan: layer '", l.name,
               "' trains a weight it does not have");
  }
}

std::vector<FusedBlock> fused_blocks(std::span<const LayerSpec> layers, const StepOptions& o) {
  std::vector<FusedBlock> blocks;
  if (o.hidden_group_bytes == 0) return blocks;
  const int L = static_cast<int>(layers.size());
  const int first_trained = first_trained_layer(layers);
  auto is_pointwise = [&](int i) {
    return i >= 0 && layers[i].kind == LayerKind::kConv && layers[i].pointwise;
  };
  // Whether a layer other than `except` adds tensor t.
  auto residual_reads = [&](int t, int except) {
    for (int j = 0; j < L; ++j)
      if (j != except && layers[j].residual_from == t) return true;
    return false;
  };
  for (int p = 1; p < L; ++p) {
    const int d = p - 1;
    if (!is_pointwise(p) || layers[p].relu || layers[d].kind != LayerKind::kDepthwiseConv ||
        d < first_trained || layers[d].residual_from >= 0 || residual_reads(p, -1))
      continue;
    const int hidden = layers[d].out_channels;
    const int e = d - 1;
    const bool expansion = e >= first_trained && is_pointwise(e) && layers[e].out_channels == hidden &&
                           layers[e].residual_from < 0 && !residual_reads(d, -1);
    const int first = expansion ? e : d;
    // The projection's residual may add into the block's input gradient, or into none (a tensor at or
    // below the first trained layer has no gradient).
    const int skip = layers[p].residual_from;
    if ((skip > first_trained && skip != first) || residual_reads(first, p)) continue;
    // At most a quarter of the hidden channels: the group's two planes then hold at most half of what
    // the layer-by-layer backward's one hidden gradient (written over itself by the depthwise conv) does.
    const size_t planes = (layers[d].input_elems + layers[d].output_elems) / static_cast<size_t>(hidden);
    const size_t fit = o.hidden_group_bytes / (planes * o.gradient_bytes);
    const int group = static_cast<int>(std::clamp<size_t>(fit, 1, std::max(1, hidden / 4)));
    blocks.push_back(FusedBlock{first, p, group});
  }
  return blocks;
}

size_t hidden_group_bytes(std::span<const LayerSpec> layers, const FusedBlock& b, const StepOptions& o) {
  const LayerSpec& d = layers[static_cast<size_t>(b.project - 1)];
  const size_t hidden = static_cast<size_t>(d.out_channels), group = static_cast<size_t>(b.group_channels);
  const size_t in_plane = d.input_elems / hidden, out_plane = d.output_elems / hidden;
  const size_t gradients = (in_plane + out_plane) * group * o.gradient_bytes;
  const size_t dw_input = d.train.weight_ratio > 0 ? in_plane * group * o.activation_bytes : 0;
  const LayerSpec& e = layers[static_cast<size_t>(b.first)];
  // The expansion's trained rows among the group's channels (at most the group, at most those it trains)
  // when they are rounded from an f32 master copy (a fixed-point one is read in place), and their slots.
  const size_t row_bytes =
      o.working_rows ? e.weight_elems / static_cast<size_t>(e.out_channels) * o.working_weight_bytes : 0;
  const size_t expansion_rows =
      b.has_expansion() && e.train.weight_ratio > 0
          ? std::min<size_t>(group,
                             static_cast<size_t>(channels_for_ratio(e.out_channels, e.train.weight_ratio))) *
                    row_bytes +
                group * sizeof(int32_t)
          : 0;
  return gradients + dw_input + expansion_rows;
}

std::vector<int> folded_pools(std::span<const LayerSpec> layers, const StepOptions& o) {
  std::vector<int> pools;
  if (!o.fold_pool_backward) return pools;
  const int L = static_cast<int>(layers.size());
  const int first_trained = first_trained_layer(layers);
  for (int g = std::max(1, first_trained + 1); g < L; ++g) {
    const LayerSpec& conv = layers[g - 1];
    if (!layers[g].global_pool || conv.kind != LayerKind::kConv || !conv.pointwise || conv.residual_from >= 0)
      continue;
    if (std::any_of(layers.begin(), layers.end(), [&](const LayerSpec& l) { return l.residual_from == g; }))
      continue;
    pools.push_back(g);
  }
  return pools;
}

size_t pooled_gradient_bytes(std::span<const LayerSpec> layers, int conv, const StepOptions& o) {
  const LayerSpec& l = layers[static_cast<size_t>(conv)];
  const size_t channels = static_cast<size_t>(l.out_channels), pixels = l.output_elems / channels;
  const size_t trained_rows =
      l.train.weight_ratio > 0 ? static_cast<size_t>(channels_for_ratio(l.out_channels, l.train.weight_ratio))
                               : 0;
  const size_t columns = std::min(trained_rows, static_cast<size_t>(o.gradient_channels));
  return (channels + pixels * columns) * o.gradient_bytes;
}

TrainingStep build_training_step(std::span<const LayerSpec> layers, const StepOptions& o) {
  check_layers(layers);
  TERN_CHECK(o.activation_bytes > 0 && o.gradient_bytes > 0, "update plan: element sizes must be > 0");
  TERN_CHECK(o.optimizer_states >= 0, "update plan: optimizer_states must be >= 0");
  TERN_CHECK(o.gradient_channels >= 1, "update plan: gradient_channels must be >= 1, got ", o.gradient_channels);
  const int L = static_cast<int>(layers.size());
  const int first_trained = first_trained_layer(layers);
  const bool trains = first_trained < L;
  // Layer i's backward runs at op 2L - i, or inside its fused block's op (that of the projection).
  const std::vector<FusedBlock> blocks = fused_blocks(layers, o);
  std::vector<int> runs_in(L);
  std::vector<bool> hidden(L + 1, false);  // tensors inside a fused block: no whole gradient
  std::vector<bool> expansion(L, false);   // a fused block's expansion: its rows rebuilt a group at a time
  std::vector<size_t> group_of(L, 0);      // a fused block's depthwise conv: its gradient a group at a time
  for (int i = 0; i < L; ++i) runs_in[i] = i;
  for (const FusedBlock& b : blocks) {
    expansion[b.first] = b.has_expansion();
    group_of[b.project - 1] = static_cast<size_t>(b.group_channels);
    for (int i = b.first; i < b.project; ++i) runs_in[i] = b.project;
    for (int t = b.first + 1; t <= b.project; ++t) hidden[t] = true;
  }
  const std::vector<int> pools = folded_pools(layers, o);
  // The pool's backward runs in the conv's op; the conv's output gradient is never whole.
  for (int g : pools) {
    runs_in[g] = g - 1;
    hidden[g] = true;
  }
  auto backward_op = [&](int i) { return 2 * L - runs_in[i]; };
  const int optimizer_op =
      trains && o.apply == GradientApply::kAfterBackward ? 2 * L - first_trained + 1 : -1;
  const int last_op = !trains ? L : optimizer_op >= 0 ? optimizer_op : 2 * L - first_trained;

  TrainingStep step;
  step.ops.resize(last_op + 1);
  for (int i = 0; i < L; ++i) step.ops[i] = layers[i].name + ".forward";
  step.ops[L] = "loss";
  for (int i = first_trained; i < L; ++i)
    step.ops[2 * L - i] =
        layers[i].name + ".backward" +
        (runs_in[i] != i ? " (in " + layers[runs_in[i]].name + ".backward)" : std::string());
  if (optimizer_op >= 0) step.ops[optimizer_op] = "optimizer.step";

  auto add = [&](std::string name, const std::string& layer, BufferKind kind, size_t size, int first,
                 int last) {
    if (size == 0) return;
    step.buffers.push_back(Buffer{std::move(name), layer, kind, size, o.alignment, first, last});
  };
  auto charged_to = [&](int t) { return t == 0 ? std::string("input") : layers[t - 1].name; };

  // Forward tensors: tensor t lives from the op that writes it to its last reader, which is backward of
  // layer t when a trained weight of layer t needs it (the only reason to save an activation).
  std::vector<size_t> elems(L + 1);
  elems[0] = layers[0].input_elems;
  for (int t = 1; t <= L; ++t) elems[t] = layers[t - 1].output_elems;
  std::vector<int> last_use(L + 1);
  for (int t = 0; t <= L; ++t) last_use[t] = t;  // layer t's forward, or the loss for t == L
  std::vector<bool> saved(L + 1, false);
  for (int j = 0; j < L; ++j) {
    if (layers[j].residual_from >= 0)
      last_use[layers[j].residual_from] = std::max(last_use[layers[j].residual_from], j);
    if (layers[j].train.weight_ratio > 0) {
      saved[j] = true;
      last_use[j] = std::max(last_use[j], backward_op(j));
    }
  }
  std::vector<int> buffer_of(L + 1, -1);
  for (int t = 0; t <= L; ++t) {
    const size_t bytes = elems[t] * o.activation_bytes;
    const BufferKind kind = saved[t] ? BufferKind::kSaved : BufferKind::kActivation;
    const int i = t - 1;  // the layer that writes tensor t
    const bool in_place = t > 0 && o.in_place_depthwise && layers[i].kind == LayerKind::kDepthwiseConv &&
                          last_use[i] == i && layers[i].output_elems <= layers[i].input_elems;
    if (in_place) {  // the depthwise conv writes its output over its input, which nothing reads later
      Buffer& b = step.buffers[buffer_of[i]];
      b.name += "|" + tensor_name(layers, t);
      b.size = std::max(b.size, bytes);
      b.last = std::max(b.last, last_use[t]);
      if (saved[t]) b.kind = BufferKind::kSaved;
      buffer_of[t] = buffer_of[i];
    } else {
      buffer_of[t] = static_cast<int>(step.buffers.size());
      step.buffers.push_back(Buffer{tensor_name(layers, t), charged_to(t), kind, bytes, o.alignment,
                                    std::max(i, 0), last_use[t]});
    }
    if (t > 0)
      add(layers[i].name + ".scratch", layers[i].name, BufferKind::kScratch, layers[i].forward_scratch_bytes,
          i, i);
  }
  if (!trains) return step;

  for (int i = first_trained; i < L; ++i) {
    const LayerSpec& l = layers[i];
    if (l.relu)
      add(l.name + ".relu_mask", l.name, BufferKind::kReluMask, (l.output_elems + 7) / 8, i, backward_op(i));
    add(l.name + ".backward_scratch", l.name, BufferKind::kScratch, l.backward_scratch_bytes, backward_op(i),
        backward_op(i));
  }

  // Activation gradients, only behind a trained part: the gradient of tensor t (t > first_trained) is
  // written by the loss (t == L), by backward of layer t, or first by a residual that adds tensor t,
  // and read by backward of layer t - 1.
  // A depthwise layer t can write the gradient of tensor t over that of tensor t + 1 (its output), which
  // nothing reads later, when no residual has added into the gradient of tensor t before.
  std::vector<int> grad_buffer(L + 2, -1);
  for (int t = L; t > first_trained; --t) {
    if (hidden[t]) continue;
    const std::string name = tensor_name(layers, t) + ".grad";
    const size_t bytes = elems[t] * o.gradient_bytes;
    bool skip_source = false;
    int first = t == L ? L : backward_op(t);
    for (int j = t; j < L; ++j) {
      if (layers[j].residual_from == t) {
        skip_source = true;
        first = std::min(first, backward_op(j));
      }
    }
    if (t < L && o.in_place_depthwise_backward && layers[t].kind == LayerKind::kDepthwiseConv &&
        !skip_source && runs_in[t] == t) {
      Buffer& b = step.buffers[grad_buffer[t + 1]];
      b.name += "|" + name;
      b.size = std::max(b.size, bytes);
      b.last = backward_op(t - 1);
      grad_buffer[t] = grad_buffer[t + 1];
    } else {
      grad_buffer[t] = static_cast<int>(step.buffers.size());
      step.buffers.push_back(
          Buffer{name, charged_to(t), BufferKind::kGradient, bytes, o.alignment, first, backward_op(t - 1)});
    }
  }

  for (const FusedBlock& b : blocks)
    add(layers[b.project].name + ".hidden_grad_group", layers[b.project].name, BufferKind::kGradient,
        hidden_group_bytes(layers, b, o), backward_op(b.project), backward_op(b.project));
  for (int g : pools)
    add(layers[g - 1].name + ".pooled_grad", layers[g - 1].name, BufferKind::kGradient,
        pooled_gradient_bytes(layers, g - 1, o), backward_op(g - 1), backward_op(g - 1));

  // Trained parameters: their SRAM (master) copy and optimizer state live through the whole step (and
  // between steps); a gradient lives until the update that consumes it.
  const size_t state_bytes = static_cast<size_t>(o.optimizer_states) * sizeof(float);
  for (int i = first_trained; i < L; ++i) {
    const LayerSpec& l = layers[i];
    const int backward = backward_op(i);
    const int grad_last = optimizer_op >= 0 ? optimizer_op : backward;
    if (l.train.weight_ratio > 0) {
      const size_t per_channel = l.weight_elems / static_cast<size_t>(l.out_channels);
      const size_t n =
          per_channel * static_cast<size_t>(channels_for_ratio(l.out_channels, l.train.weight_ratio));
      add(l.name + ".weight", l.name, BufferKind::kTrainedParam, n * o.trained_weight_bytes, 0, last_op);
      // Working copies, rebuilt by the op that reads them: the forward, and the backward when it
      // computes an input gradient (every trained layer but the first).
      const bool depthwise = l.kind == LayerKind::kDepthwiseConv;
      const size_t working = (depthwise ? l.weight_elems : n) * o.working_weight_bytes;
      if (depthwise || o.working_rows) {
        add(l.name + ".weight.working", l.name, BufferKind::kScratch, working, i, i);
        if (i > first_trained && !expansion[i])
          add(l.name + ".weight.working_backward", l.name, BufferKind::kScratch, working, backward, backward);
      }
      const size_t channels_at_once =
          group_of[i] > 0 ? std::min(n / per_channel, group_of[i])
          : depthwise     ? n / per_channel
                          : std::min(n / per_channel, static_cast<size_t>(o.gradient_channels));
      const size_t grad = o.apply == GradientApply::kPerChannel ? channels_at_once * per_channel : n;
      add(l.name + ".weight.grad", l.name, BufferKind::kGradient, grad * o.gradient_bytes, backward,
          grad_last);
      add(l.name + ".weight.state", l.name, BufferKind::kOptimizerState, n * state_bytes, 0, last_op);
    }
    if (l.train.bias) {
      add(l.name + ".bias", l.name, BufferKind::kTrainedParam, l.bias_elems * o.trained_bias_bytes, 0,
          last_op);
      add(l.name + ".bias.working", l.name, BufferKind::kScratch, l.bias_elems * o.working_bias_bytes, i, i);
      // One value per output channel, computed in one pass over dy even when weights go by channel.
      add(l.name + ".bias.grad", l.name, BufferKind::kGradient, l.bias_elems * o.gradient_bytes, backward,
          grad_last);
      add(l.name + ".bias.state", l.name, BufferKind::kOptimizerState, l.bias_elems * state_bytes, 0,
          last_op);
    }
  }
  return step;
}

MemoryPlan plan_training_step(std::span<const LayerSpec> layers, const StepOptions& options) {
  TrainingStep step = build_training_step(layers, options);
  return plan_memory(std::move(step.buffers), options.strategy, std::move(step.ops));
}

UpdateScheme no_update(std::span<const LayerSpec> layers) {
  return UpdateScheme{std::vector<LayerUpdate>(layers.size())};
}

UpdateScheme full_update(std::span<const LayerSpec> layers) {
  UpdateScheme s = no_update(layers);
  for (size_t i = 0; i < layers.size(); ++i)
    s.layers[i] = {layers[i].bias_elems > 0, layers[i].weight_elems > 0 ? 1.0f : 0.0f};
  return s;
}

UpdateScheme last_k_update(std::span<const LayerSpec> layers, int k) {
  const std::vector<int> with_params = layers_where(layers, has_params);
  TERN_CHECK(k >= 0 && k <= static_cast<int>(with_params.size()), "update scheme: last=", k,
             " but the model has ", with_params.size(), " layers with parameters");
  UpdateScheme s = no_update(layers);
  for (int n = 0; n < k; ++n) {
    const int i = with_params[with_params.size() - 1 - n];
    s.layers[i] = {layers[i].bias_elems > 0, layers[i].weight_elems > 0 ? 1.0f : 0.0f};
  }
  return s;
}

UpdateScheme bias_only_update(std::span<const LayerSpec> layers) {
  UpdateScheme s = no_update(layers);
  for (size_t i = 0; i < layers.size(); ++i) s.layers[i].bias = layers[i].bias_elems > 0;
  return s;
}

UpdateScheme with_last_layer_trained(UpdateScheme scheme, std::span<const LayerSpec> layers) {
  TERN_CHECK(!layers.empty() && scheme.layers.size() == layers.size(), "update scheme has ", scheme.layers.size(),
             " entries for ", layers.size(), " layers");
  scheme.layers.back() = LayerUpdate{layers.back().bias_elems > 0, layers.back().weight_elems > 0 ? 1.0f : 0.0f};
  return scheme;
}

std::vector<LayerSpec> with_update(std::span<const LayerSpec> layers, const UpdateScheme& scheme) {
  TERN_CHECK(scheme.layers.size() == layers.size(), "update scheme has ", scheme.layers.size(),
             " entries for ", layers.size(), " layers");
  std::vector<LayerSpec> out(layers.begin(), layers.end());
  for (size_t i = 0; i < out.size(); ++i) out[i].train = scheme.layers[i];
  return out;
}

UpdateScheme parse_update_scheme(std::string_view spec_text, std::span<const LayerSpec> layers) {
  check_layers(layers);
  const std::string_view spec = trim(spec_text);
  if (spec == "full") return full_update(layers);
  if (spec == "none") return no_update(layers);
  if (spec == "bias" || spec == "bias-only") return bias_only_update(layers);
  if (spec.starts_with("last=")) return last_k_update(layers, parse_count(spec.substr(5), spec));

  UpdateScheme s = no_update(layers);
  std::vector<bool> weight_given(layers.size(), false);
  for (std::string_view section : split(spec, ';')) {
    const size_t colon = section.find(':');
    TERN_CHECK(colon != std::string_view::npos, "update scheme '", spec, "': section '", section,
               "' is not bias:... or weight:...; expected full, none, bias, last=K or sections like "
               "bias:last=12;weight:conv21=1,conv36=0.125");
    const std::string_view target = trim(section.substr(0, colon));
    const std::vector<std::string_view> items = split(section.substr(colon + 1), ',');
    if (target == "bias") {
      const std::vector<int> bias_layers = layers_where(layers, has_bias);
      for (std::string_view item : items) {
        if (item == "all") {
          for (int i : bias_layers) s.layers[i].bias = true;
        } else if (item.starts_with("last=")) {
          const int k = parse_count(item.substr(5), item);
          TERN_CHECK(k <= static_cast<int>(bias_layers.size()), "update scheme: bias:last=", k,
                     " but the model has ", bias_layers.size(), " layers with biases");
          for (int n = 0; n < k; ++n) s.layers[bias_layers[bias_layers.size() - 1 - n]].bias = true;
        } else {
          TERN_CHECK(!item.empty(), "update scheme '", spec, "': empty item in the bias section");
          const int i = find_layer(layers, item);
          TERN_CHECK(layers[i].bias_elems > 0, "update scheme: layer '", item, "' has no bias to update");
          s.layers[i].bias = true;
        }
      }
    } else if (target == "weight") {
      const std::vector<int> weight_layers = layers_where(layers, has_weight);
      for (std::string_view item : items) {
        std::vector<std::pair<int, float>> updates;
        if (item.starts_with("last=")) {
          const int k = parse_count(item.substr(5), item);
          TERN_CHECK(k <= static_cast<int>(weight_layers.size()), "update scheme: weight:last=", k,
                     " but the model has ", weight_layers.size(), " layers with weights");
          for (int n = 0; n < k; ++n) updates.emplace_back(weight_layers[weight_layers.size() - 1 - n], 1.0f);
        } else {
          const size_t eq = item.find('=');
          TERN_CHECK(eq != std::string_view::npos, "update scheme: weight item '", item,
                     "' needs a ratio, like conv21=0.25 (or last=K)");
          const std::string_view name = trim(item.substr(0, eq));
          const int i = find_layer(layers, name);
          TERN_CHECK(layers[i].weight_elems > 0, "update scheme: layer '", name, "' has no weight to update");
          updates.emplace_back(i, parse_ratio(trim(item.substr(eq + 1)), name));
        }
        for (const auto& [i, ratio] : updates) {
          TERN_CHECK(!weight_given[i], "update scheme: the weight of layer '", layers[i].name,
                     "' is given twice");
          weight_given[i] = true;
          s.layers[i].weight_ratio = ratio;
        }
      }
    } else {
      throw Error("update scheme '" + std::string(spec) + "': unknown section '" + std::string(target) +
                  "'; expected bias or weight");
    }
  }
  return s;
}

std::string describe(const UpdateScheme& scheme, std::span<const LayerSpec> layers) {
  TERN_CHECK(scheme.layers.size() == layers.size(), "update scheme has ", scheme.layers.size(),
             " entries for ", layers.size(), " layers");
  const std::vector<int> bias_layers = layers_where(layers, has_bias);
  std::vector<int> biased;
  for (int i : bias_layers)
    if (scheme.layers[i].bias) biased.push_back(i);
  std::string out;
  if (!biased.empty()) {
    const bool is_last_k = std::equal(biased.begin(), biased.end(), bias_layers.end() - biased.size());
    out = "bias:";
    if (is_last_k) {
      out += "last=" + std::to_string(biased.size());
    } else {
      for (size_t n = 0; n < biased.size(); ++n) out += (n ? "," : "") + layers[biased[n]].name;
    }
  }
  std::string weights;
  for (size_t i = 0; i < layers.size(); ++i)
    if (scheme.layers[i].weight_ratio > 0)
      weights +=
          (weights.empty() ? "" : ",") + layers[i].name + "=" + ratio_text(scheme.layers[i].weight_ratio);
  if (!weights.empty()) out += (out.empty() ? "" : ";") + std::string("weight:") + weights;
  return out.empty() ? "none" : out;
}

int channels_for_ratio(int out_channels, float ratio) {
  if (ratio <= 0) return 0;
  return std::min(out_channels,
                  static_cast<int>(std::ceil(static_cast<double>(ratio) * out_channels - 1e-9)));
}

namespace {
std::vector<int> top_channels(const std::vector<double>& norms, float ratio) {
  const int k = channels_for_ratio(static_cast<int>(norms.size()), ratio);
  std::vector<int> order(norms.size());
  for (size_t c = 0; c < order.size(); ++c) order[c] = static_cast<int>(c);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return norms[a] > norms[b]; });
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}
}  // namespace

std::vector<int> select_channels_by_norm(std::span<const float> weight, int out_channels, float ratio) {
  TERN_CHECK(out_channels > 0 && weight.size() % static_cast<size_t>(out_channels) == 0,
             "channel selection: ", weight.size(), " weights do not split into ", out_channels,
             " output channels");
  const size_t per = weight.size() / static_cast<size_t>(out_channels);
  std::vector<double> norms(out_channels, 0.0);
  for (int c = 0; c < out_channels; ++c)
    for (size_t k = 0; k < per; ++k)
      norms[c] += static_cast<double>(weight[c * per + k]) * weight[c * per + k];
  return top_channels(norms, ratio);
}

std::vector<int> select_channels_by_norm(std::span<const int8_t> weight, std::span<const float> scales,
                                         int out_channels, float ratio) {
  TERN_CHECK(out_channels > 0 && weight.size() % static_cast<size_t>(out_channels) == 0,
             "channel selection: ", weight.size(), " weights do not split into ", out_channels,
             " output channels");
  TERN_CHECK(scales.size() == static_cast<size_t>(out_channels), "channel selection: ", scales.size(),
             " scales for ", out_channels, " output channels");
  const size_t per = weight.size() / static_cast<size_t>(out_channels);
  std::vector<double> norms(out_channels, 0.0);
  for (int c = 0; c < out_channels; ++c) {
    double sum = 0;
    for (size_t k = 0; k < per; ++k) sum += static_cast<double>(weight[c * per + k]) * weight[c * per + k];
    norms[c] = sum * static_cast<double>(scales[c]) * scales[c];
  }
  return top_channels(norms, ratio);
}

SchemeCost peak_memory_cost(std::span<const LayerSpec> layers, const StepOptions& options) {
  auto owned = std::make_shared<const std::vector<LayerSpec>>(layers.begin(), layers.end());
  return [owned, options](const UpdateScheme& scheme) {
    return plan_training_step(with_update(*owned, scheme), options).peak;
  };
}

SearchResult greedy_search(std::span<const LayerSpec> layers, const Contributions& contributions,
                           size_t budget, const SchemeCost& cost) {
  SearchSpace space(layers, contributions, budget, cost);
  Genome current = space.empty();
  while (true) {
    const float current_gain = space.gain(current);
    const size_t current_cost = space.cost_of(current);
    Genome best;
    double best_score = -1, best_gain = 0;
    auto consider = [&](const Genome& candidate) {
      const double gain = static_cast<double>(space.gain(candidate)) - current_gain;
      if (gain <= 0) return;
      const size_t c = space.cost_of(candidate);
      if (c > budget) return;
      const double extra = c > current_cost ? static_cast<double>(c - current_cost) : 0.0;
      const double score = gain / (extra + 1.0);  // a change that costs no bytes ranks by its gain
      if (score > best_score || (score == best_score && gain > best_gain)) {
        best = candidate;
        best_score = score;
        best_gain = gain;
      }
    };
    for (int k = current.bias_k + 1; k <= space.max_bias_k(); ++k) {
      Genome g = current;
      g.bias_k = k;
      consider(g);
    }
    for (int i : space.weight_layers()) {
      for (int r = current.ratio[i] + 1; r < static_cast<int>(kUpdateRatios.size()); ++r) {
        Genome g = current;
        g.ratio[i] = r;
        consider(g);
      }
    }
    if (best_score < 0) return space.result(current);
    current = std::move(best);
  }
}

SearchResult evolutionary_search(std::span<const LayerSpec> layers, const Contributions& contributions,
                                 size_t budget, const SchemeCost& cost, const EvolutionOptions& options) {
  TERN_CHECK(
      options.population >= 2 && options.generations >= 0 && options.mutation >= 0 && options.mutation <= 1,
      "evolutionary search: population ", options.population, ", generations ", options.generations,
      " and mutation ", options.mutation, "; expected population >= 2, generations >= 0, 0 <= mutation <= 1");
  SearchSpace space(layers, contributions, budget, cost);
  Rng rng(options.seed, 7);
  const int num_ratios = static_cast<int>(kUpdateRatios.size());
  auto random_ratio = [&] { return static_cast<int>(rng.below(static_cast<uint32_t>(num_ratios))); };
  auto random_k = [&] { return static_cast<int>(rng.below(static_cast<uint32_t>(space.max_bias_k() + 1))); };

  // Feasible genomes first, by gain, then by cost; infeasible ones by how far over the budget.
  struct Scored {
    Genome genome;
    bool feasible;
    float gain;
    size_t cost;
  };
  auto score = [&](Genome g) {
    const size_t c = space.cost_of(g);
    const float gain = space.gain(g);
    return Scored{std::move(g), c <= budget, gain, c};
  };
  auto better = [](const Scored& a, const Scored& b) {
    if (a.feasible != b.feasible) return a.feasible;
    if (a.feasible && a.gain != b.gain) return a.gain > b.gain;
    return a.cost < b.cost;
  };

  std::vector<Scored> population;
  population.push_back(score(space.empty()));  // feasible: the search space checked it
  while (static_cast<int>(population.size()) < options.population) {
    Genome g = space.empty();
    g.bias_k = random_k();
    for (int i : space.weight_layers())
      if (rng.uniform() < 0.25f) g.ratio[i] = random_ratio();
    population.push_back(score(std::move(g)));
  }
  Scored best = population[0];
  for (const Scored& s : population)
    if (better(s, best)) best = s;

  const int parents = std::max(2, options.population / 2);
  const int elites = std::max(1, options.population / 4);
  for (int generation = 0; generation < options.generations; ++generation) {
    std::stable_sort(population.begin(), population.end(), better);
    std::vector<Scored> next(population.begin(), population.begin() + elites);
    while (static_cast<int>(next.size()) < options.population) {
      const Genome& a = population[rng.below(static_cast<uint32_t>(parents))].genome;
      const Genome& b = population[rng.below(static_cast<uint32_t>(parents))].genome;
      Genome child = a;
      if (rng.below(2)) child.bias_k = b.bias_k;
      if (rng.uniform() < options.mutation) child.bias_k = random_k();
      for (int i : space.weight_layers()) {
        if (rng.below(2)) child.ratio[i] = b.ratio[i];
        if (rng.uniform() < options.mutation) child.ratio[i] = random_ratio();
      }
      next.push_back(score(std::move(child)));
      if (better(next.back(), best)) best = next.back();
    }
    population = std::move(next);
  }
  return space.result(best.genome);
}

}  // namespace tern::ondevice
