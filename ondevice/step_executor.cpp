#include "ondevice/step_executor.h"

#include <math.h>

#include <cstring>

#include "ondevice/qas.h"
#include "runtime/kernels/cpu/int8_backward.h"
#include "runtime/kernels/cpu/mix32.h"
#include "runtime/kernels/cpu/requantize.h"
#include "runtime/kernels/cpu/sparse_update.h"

// Only the C library and the shared kernels: this file is compiled for the bare-metal target too,
// where there is no C++ standard library beyond a few shims (ondevice/baremetal/include).
namespace tern::ondevice {
namespace {

template <typename T>
T* at(std::byte* const* buffers, int32_t index) {
  return index >= 0 ? reinterpret_cast<T*>(buffers[index]) : nullptr;
}

int8_t round_to_int8(float v) {
  const float r = nearbyintf(v);
  return static_cast<int8_t>(r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r));
}

int32_t round_to_int32(double v) {
  const double r = nearbyint(v);
  return static_cast<int32_t>(r < -2147483647.0 ? -2147483647.0 : (r > 2147483647.0 ? 2147483647.0 : r));
}

bool is(const StepLayer& l, StepOpKind kind) { return l.kind == kind; }

bool has_weights(const StepLayer& l) {
  return is(l, StepOpKind::conv2d) || is(l, StepOpKind::depthwise_conv2d) || is(l, StepOpKind::linear);
}

// Rows j0 .. j0 + count of a layer's trained weight as the kernels read them (int8), from its master
// copy: rounded from f32, or the int8 plane of a fixed-point copy.
void trained_rows_int8(const StepProgram& p, const StepLayer& l, std::byte* const* buffers, int32_t j0,
                       int32_t count, int8_t* to) {
  const int64_t cols = l.weight_elems / l.out_channels, n = count * cols;
  if (p.master_format == MasterFormat::f32) {
    const float* master = at<float>(buffers, l.weight_master) + j0 * cols;
    for (int64_t e = 0; e < n; ++e) to[e] = round_to_int8(master[e]);
  } else {
    std::memcpy(to, at<int8_t>(buffers, l.weight_master) + j0 * cols, static_cast<size_t>(n));
  }
}

// A depthwise layer's int8 weight as an op reads it: the model's when frozen, or rebuilt in its working
// buffer (the model's rows with the trained rows from their master copy), as a device must: flash
// cannot be rewritten. (Its rows are kernel x kernel bytes: the whole copy is small.)
const int8_t* weight_for_op(const StepProgram& p, const StepLayer& l, std::byte* const* buffers,
                            int32_t working) {
  int8_t* to = at<int8_t>(buffers, working);
  if (to == nullptr) return l.weight;
  std::memcpy(to, l.weight, static_cast<size_t>(l.weight_elems));
  const int64_t cols = l.weight_elems / l.out_channels;
  for (int32_t j = 0; j < l.channel_count; ++j)
    trained_rows_int8(p, l, buffers, j, 1, to + l.channels[j] * cols);
  return to;
}

// A conv or linear layer's weight as an op reads it: the model's array when frozen; with trained rows,
// the model's rows for the frozen channels and the trained rows (cpu::Int8SplitWeight, channel_count
// rows, not a copy of the whole weight): an f32 master copy's rounded into the working buffer, a
// fixed-point copy's int8 plane itself. apply(op) calls op with whichever it is (the kernels take both).
struct WeightView {
  const int8_t* whole = nullptr;
  cpu::Int8SplitWeight split;

  template <typename Op>
  void apply(Op&& op) const {
    if (whole != nullptr)
      op(whole);
    else
      op(split);
  }
};

WeightView weight_view(const StepProgram& p, const StepLayer& l, std::byte* const* buffers, int32_t working) {
  if (l.channel_count == 0) return WeightView{l.weight, {}};
  const int64_t cols = l.weight_elems / l.out_channels;
  int8_t* rows = at<int8_t>(buffers, l.weight_master);
  if (p.master_format == MasterFormat::f32) {
    rows = at<int8_t>(buffers, working);
    trained_rows_int8(p, l, buffers, 0, l.channel_count, rows);
  }
  return WeightView{nullptr, cpu::Int8SplitWeight{l.weight, rows, l.channel_slot, cols}};
}

template <typename Op>
void with_weight(const StepProgram& p, const StepLayer& l, std::byte* const* buffers, int32_t working,
                 Op&& op) {
  weight_view(p, l, buffers, working).apply(op);
}

// The int32 bias the forward reads: the model's, or rounded from its master copy when it trains.
const int32_t* bias_for_forward(const StepLayer& l, std::byte* const* buffers) {
  int32_t* to = at<int32_t>(buffers, l.bias_working);
  if (to == nullptr) return l.bias;
  const float* master = at<float>(buffers, l.bias_master);
  for (int32_t c = 0; c < l.out_channels; ++c) to[c] = round_to_int32(master[c]);
  return to;
}

void forward(const StepProgram& p, int i, std::byte* const* buffers) {
  const StepLayer& l = p.layers[i];
  const int8_t* x = at<int8_t>(buffers, l.value_in);
  int8_t* y = at<int8_t>(buffers, l.value_out);
  const int32_t* biases = bias_for_forward(l, buffers);
  const cpu::Requant rq{l.multiplier, l.shift, l.out_zero_point, l.act_min, l.act_max};
  if (is(l, StepOpKind::conv2d)) {
    with_weight(p, l, buffers, l.weight_working,
                [&](const auto& w) { cpu::int8_conv2d(l.conv, x, l.in_zero_point, w, biases, rq, y); });
  } else if (is(l, StepOpKind::depthwise_conv2d)) {
    const int8_t* weights = weight_for_op(p, l, buffers, l.weight_working);
    int8_t* scratch = at<int8_t>(buffers, l.forward_scratch);
    if (l.value_in == l.value_out) {
      cpu::int8_depthwise_conv2d_inplace(l.conv, y, l.in_zero_point, weights, biases, rq, scratch);
    } else {
      // The input is still needed: one channel at a time through the scratch planes.
      const cpu::Int8ConvShape& s = l.conv;
      const int64_t in_pixels = int64_t{s.h} * s.w, out_pixels = int64_t{s.out_h()} * s.out_w();
      cpu::Int8ConvShape one = s;
      one.c_in = one.c_out = 1;
      const int kk = s.kernel * s.kernel;
      for (int32_t c = 0; c < s.c_out; ++c) {
        for (int64_t px = 0; px < in_pixels; ++px) scratch[px] = x[px * s.c_in + c];
        cpu::Requant rc = rq;
        rc.multiplier += c;
        rc.shift += c;
        cpu::int8_depthwise_conv2d_inplace(one, scratch, l.in_zero_point, weights + c * kk, biases + c, rc,
                                           scratch + in_pixels);
        for (int64_t px = 0; px < out_pixels; ++px) y[px * s.c_out + c] = scratch[px];
      }
    }
  } else if (is(l, StepOpKind::linear)) {
    const int32_t in = static_cast<int32_t>(l.in_elems), n = l.out_channels;
    if (i == p.layer_count - 1 && p.logits_f32) {
      int32_t* acc = reinterpret_cast<int32_t*>(y);
      with_weight(p, l, buffers, l.weight_working, [&](const auto& w) {
        cpu::int8_linear_accumulate(x, l.in_zero_point, w, biases, in, n, acc);
      });
      float* logits = reinterpret_cast<float*>(y);
      for (int32_t c = 0; c < n; ++c) logits[c] = l.in_scale * l.weight_scale[c] * static_cast<float>(acc[c]);
    } else {
      with_weight(p, l, buffers, l.weight_working,
                  [&](const auto& w) { cpu::int8_linear(x, l.in_zero_point, w, biases, in, n, rq, y); });
    }
  } else if (is(l, StepOpKind::max_pool)) {
    const cpu::Int8PoolShape& s = l.pool;
    cpu::int8_max_pool2d(s, x, y);
    if (uint8_t* arg = at<uint8_t>(buffers, l.argmax)) {  // where each maximum was, for backward
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
  } else if (is(l, StepOpKind::global_avg_pool)) {
    cpu::int8_global_avg_pool(x, l.in_pixels, l.in_c, l.in_zero_point, y);
  }
  if (uint8_t* bits = at<uint8_t>(buffers, l.mask)) cpu::clamp_mask_bits(y, l.out_elems, l.act_min, l.act_max, bits);
  if (l.residual_from >= 0) {
    const int8_t* skip = at<int8_t>(buffers, p.layers[l.residual_from].value_in);
    cpu::int8_add(l.add_main_first ? y : skip, l.add_main_first ? skip : y, l.out_elems, l.add, y);
  }
}

void loss(const StepProgram& p, int label, std::byte* const* buffers, StepState& state) {
  const StepLayer& last = p.layers[p.layer_count - 1];
  const std::byte* out = at<std::byte>(buffers, last.value_out);
  const int n = p.num_classes;
  auto logit = [&](int c) {
    return p.logits_f32 ? reinterpret_cast<const float*>(out)[c]
                        : p.output_scale * static_cast<float>(static_cast<int32_t>(reinterpret_cast<const int8_t*>(
                                                                  out)[c]) -
                                                              p.output_zero_point);
  };
  StepResult& result = state.result;
  float m = logit(0);
  result.predicted = 0;
  for (int c = 1; c < n; ++c) {
    if (logit(c) > m) {
      m = logit(c);
      result.predicted = c;
    }
  }
  double sum = 0;
  for (int c = 0; c < n; ++c) sum += exp(static_cast<double>(logit(c) - m));
  result.loss = static_cast<float>(log(sum) + m - logit(label));
  if (float* g = at<float>(buffers, last.grad_out)) {
    for (int c = 0; c < n; ++c)
      g[c] = static_cast<float>(exp(static_cast<double>(logit(c) - m)) / sum) - (c == label ? 1.0f : 0.0f);
    state.grad_written[p.layer_count] = 1;
  }
}

// SGD on the layer's trained parts, in their quantised units (qas.h), as soon as their gradient is
// ready. With momentum the gradient becomes the velocity v = mu * v + g (PyTorch's SGD), kept in the arena.
void with_momentum(float mu, float* g, float* v, int64_t n) {
  if (v == nullptr) return;
  for (int64_t e = 0; e < n; ++e) g[e] = v[e] = mu * v[e] + g[e];
}

void update_bias(const StepProgram& p, const StepLayer& l, std::byte* const* buffers) {
  float* g = at<float>(buffers, l.bias_grad);
  float* master = at<float>(buffers, l.bias_master);
  const int64_t c_out = l.out_channels;
  to_quantized_bias_grad(g, c_out, nullptr, l.weight_scale, l.in_scale);
  qas_scale_bias_grad(g, c_out, nullptr, l.weight_scale, l.in_scale, p.qas);
  with_momentum(p.momentum, g, at<float>(buffers, l.bias_state), c_out);
  for (int64_t c = 0; c < c_out; ++c) {
    master[c] -= p.lr * g[c];
    if (l.bias_mirror) l.bias_mirror[c] = round_to_int32(master[c]);
  }
}

// The trained rows j0 .. j0 + count from their gradient g [count, cols].
void update_weight_rows(const StepProgram& p, const StepLayer& l, int32_t j0, int32_t count, float* g,
                        std::byte* const* buffers) {
  const int64_t cols = l.weight_elems / l.out_channels, n = count * cols;
  const int32_t* channels = l.channels + j0;
  to_quantized_weight_grad(g, count, cols, channels, l.weight_scale);
  qas_scale_weight_grad(g, count, cols, channels, l.weight_scale, p.qas);
  float* v = at<float>(buffers, l.weight_state);
  with_momentum(p.momentum, g, v ? v + j0 * cols : nullptr, n);
  if (p.master_format == MasterFormat::f32) {
    float* master = at<float>(buffers, l.weight_master) + j0 * cols;
    for (int64_t e = 0; e < n; ++e) master[e] -= p.lr * g[e];
  } else {
    int8_t* hi = at<int8_t>(buffers, l.weight_master);
    uint8_t* lo = p.master_format == MasterFormat::int16
                      ? reinterpret_cast<uint8_t*>(hi) + l.channel_count * cols + j0 * cols
                      : nullptr;
    const uint32_t layer_key =
        cpu::mix32(p.rounding_key * 0x9e3779b9U + static_cast<uint32_t>(&l - p.layers));
    cpu::fixed_point_sgd(hi + j0 * cols, lo, g, n, p.lr, layer_key, j0 * cols);
  }
  if (l.weight_mirror)
    for (int32_t j = 0; j < count; ++j)
      trained_rows_int8(p, l, buffers, j0 + j, 1, l.weight_mirror + channels[j] * cols);
}

// A conv or linear layer's trained rows, their gradient computed and applied kGradientChannelsAtOnce
// output channels at a time from its saved input x and its output gradient dy.
void update_weight_by_channels(const StepProgram& p, const StepLayer& l, const int8_t* x, const float* dy,
                               std::byte* const* buffers) {
  float* dw = at<float>(buffers, l.weight_grad);
  for (int32_t j0 = 0; j0 < l.channel_count; j0 += kGradientChannelsAtOnce) {
    const int32_t n =
        l.channel_count - j0 < kGradientChannelsAtOnce ? l.channel_count - j0 : kGradientChannelsAtOnce;
    if (is(l, StepOpKind::conv2d))
      cpu::conv2d_weight_grad_channels(l.conv, x, l.in_zero_point, l.in_scale, dy, l.channels + j0, n, dw);
    else
      cpu::linear_weight_grad_channels(x, l.in_zero_point, l.in_scale, l.conv.c_in, dy, l.channels + j0, n,
                                       dw);
    update_weight_rows(p, l, j0, n, dw, buffers);
  }
}

// The trained rows j, j + 1, ... of l whose channels lie below `end`, at most `most`: their channels
// less c0 in local[], and how many.
constexpr int32_t kLocalRows = 16;
int32_t rows_in_group(const StepLayer& l, int32_t j, int32_t end, int32_t c0, int32_t most, int32_t* local) {
  int32_t m = 0;
  while (m < most && j + m < l.channel_count && l.channels[j + m] < end) {
    local[m] = l.channels[j + m] - c0;
    ++m;
  }
  return m;
}

// A fused block's depthwise conv (shape `one`: the group's n channels from c0): the gradients of its
// trained rows j, ... in the group, from the group's output gradient g_out and its saved input's group
// channels (copied to x_group), then their updates. Returns the first row past the group.
int32_t train_depthwise_rows(const StepProgram& p, const StepLayer& dw, const cpu::Int8ConvShape& one,
                             int32_t c0, int32_t j, const float* g_out, int8_t* x_group,
                             std::byte* const* buffers) {
  const int32_t n = one.c_out, kk = one.kernel * one.kernel;
  const int64_t in_plane = int64_t{one.h} * one.w;
  const int8_t* x = at<int8_t>(buffers, dw.value_in);
  for (int64_t px = 0; px < in_plane; ++px)
    for (int32_t g = 0; g < n; ++g) x_group[px * n + g] = x[px * dw.conv.c_in + c0 + g];
  float* grad = at<float>(buffers, dw.weight_grad);
  int32_t local[kLocalRows];
  const int32_t j0 = j;
  while (j < dw.channel_count && dw.channels[j] < c0 + n) {
    const int32_t m = rows_in_group(dw, j, c0 + n, c0, kLocalRows, local);
    cpu::depthwise_weight_grad_channels(one, x_group, dw.in_zero_point, dw.in_scale, g_out, local, m,
                                        grad + (j - j0) * kk);
    j += m;
  }
  update_weight_rows(p, dw, j0, j - j0, grad, buffers);
  return j;
}

// A fused block's expansion: the gradients of its trained rows j, ... among the group's n channels from
// c0, from the group's gradient g_in of its output, and their updates, kGradientChannelsAtOnce at a
// time. Returns the first row past the group.
int32_t train_expansion_rows(const StepProgram& p, const StepLayer& e, int32_t c0, int32_t n, int32_t j,
                             const float* g_in, std::byte* const* buffers) {
  cpu::Int8ConvShape se = e.conv;  // the expansion's output channels in the group
  se.c_out = n;
  const int8_t* x = at<int8_t>(buffers, e.value_in);
  float* grad = at<float>(buffers, e.weight_grad);
  int32_t local[kGradientChannelsAtOnce];
  while (j < e.channel_count && e.channels[j] < c0 + n) {
    const int32_t m = rows_in_group(e, j, c0 + n, c0, kGradientChannelsAtOnce, local);
    cpu::conv2d_weight_grad_channels(se, x, e.in_zero_point, e.in_scale, g_in, local, m, grad);
    update_weight_rows(p, e, j, m, grad, buffers);
    j += m;
  }
  return j;
}

// The backward of a fused inverted-residual block (update_plan.h's FusedBlock), run by the op of its
// projection (layer i): a group of hidden channels at a time, the projection's input gradient for those
// channels, through the depthwise conv's mask and backward and the expansion's mask, then the
// expansion's share of the block's input gradient, added group after group. The depthwise conv's and the
// expansion's parameters are per hidden channel, so each group yields and applies their gradients
// there; the projection's come from dy as usual. Every value is computed by the same kernels with the
// same terms in the same order as layer by layer, so both give the same floats.
void fused_backward(const StepProgram& p, int i, std::byte* const* buffers, StepState& state) {
  const StepLayer& proj = p.layers[i];
  const StepLayer& dw = p.layers[i - 1];
  const StepLayer* expand = proj.fused_first == i - 2 ? &p.layers[i - 2] : nullptr;
  const int32_t first = proj.fused_first;
  const bool wants_dx = first > p.first_trained;
  const bool wants_hidden_in = expand != nullptr || wants_dx;  // the depthwise conv's input gradient
  const float* dy = at<float>(buffers, proj.grad_out);
  const cpu::Int8ConvShape& sd = dw.conv;
  const int32_t hidden = sd.c_out, group = proj.hidden_group_channels, kk = sd.kernel * sd.kernel;
  const int64_t in_plane = int64_t{sd.h} * sd.w, out_plane = int64_t{sd.out_h()} * sd.out_w();
  // The group buffer (update_plan.h's hidden_group_bytes): the group's gradients of the depthwise conv's
  // output [out_plane, group] and input [in_plane, group]; when the expansion trains, the slot table of
  // its group rows; when the depthwise weight trains, the group's channels of its saved input; and the
  // expansion's trained rows of the group, rounded from an f32 master copy.
  const bool expand_trains = expand != nullptr && expand->channel_count > 0;
  const int64_t e_cols = expand != nullptr ? expand->weight_elems / expand->out_channels : 0;
  float* g_out = at<float>(buffers, proj.hidden_group);
  float* g_in = g_out + out_plane * group;
  int32_t* e_slots = reinterpret_cast<int32_t*>(g_in + in_plane * group);
  int8_t* x_group = reinterpret_cast<int8_t*>(e_slots + (expand_trains ? group : 0));
  int8_t* e_rows = x_group + (dw.channel_count > 0 ? in_plane * group : 0);
  float* dx = wants_dx ? at<float>(buffers, p.layers[first].grad_in) : nullptr;
  const int64_t n_dx = p.layers[first].in_elems;
  if (expand != nullptr && dx != nullptr)
    for (int64_t e = 0; e < n_dx; ++e) dx[e] = 0.0f;

  const int64_t proj_pixels = int64_t{proj.conv.out_h()} * proj.conv.out_w();
  if (proj.train_bias) cpu::bias_grad(dy, proj_pixels, proj.out_channels, at<float>(buffers, proj.bias_grad));
  // The weights the input gradients read, from before this step's updates.
  const WeightView w_proj = weight_view(p, proj, buffers, proj.weight_working_backward);
  const int8_t* w_dw = wants_hidden_in ? weight_for_op(p, dw, buffers, dw.weight_working_backward) : nullptr;

  int32_t jd = 0,
          je = 0;  // the next trained rows of the depthwise conv and the expansion (channels increase)
  for (int32_t c0 = 0; c0 < hidden; c0 += group) {
    const int32_t n = hidden - c0 < group ? hidden - c0 : group;
    cpu::Int8ConvShape one = sd;  // the depthwise conv on the group's channels
    one.c_in = one.c_out = n;
    w_proj.apply([&](const auto& w) {
      cpu::pointwise_input_grad_columns(proj.conv, dy, w, proj.weight_scale, c0, n, g_out);
    });
    if (const uint8_t* bits = at<uint8_t>(buffers, dw.mask))
      cpu::apply_mask_bits_columns(bits, out_plane, hidden, c0, n, g_out);
    if (dw.train_bias) cpu::bias_grad(g_out, out_plane, n, at<float>(buffers, dw.bias_grad) + c0);
    if (jd < dw.channel_count && dw.channels[jd] < c0 + n)
      jd = train_depthwise_rows(p, dw, one, c0, jd, g_out, x_group, buffers);
    if (!wants_hidden_in) continue;
    cpu::depthwise_input_grad(one, g_out, w_dw + c0 * kk, dw.weight_scale + c0, g_in);
    if (expand == nullptr) {  // the depthwise conv's input gradient is the block's
      for (int64_t px = 0; px < in_plane; ++px)
        for (int32_t j = 0; j < n; ++j) dx[px * hidden + c0 + j] = g_in[px * n + j];
      continue;
    }
    if (const uint8_t* bits = at<uint8_t>(buffers, expand->mask))
      cpu::apply_mask_bits_columns(bits, in_plane, hidden, c0, n, g_in);
    if (expand->train_bias) cpu::bias_grad(g_in, in_plane, n, at<float>(buffers, expand->bias_grad) + c0);
    // The expansion's share of the block's input gradient, from its rows of the group as they are
    // before the group's update (rounded from an f32 master copy, or a fixed-point one's int8 plane).
    if (wants_dx && expand_trains) {
      const bool f32 = p.master_format == MasterFormat::f32;
      for (int32_t g = 0; g < n; ++g) {
        const int32_t j = expand->channel_slot[c0 + g];
        e_slots[g] = j < 0 ? -1 : j - je;
        if (j >= 0 && f32) trained_rows_int8(p, *expand, buffers, j, 1, e_rows + (j - je) * e_cols);
      }
      const int8_t* rows = f32 ? e_rows : at<int8_t>(buffers, expand->weight_master) + je * e_cols;
      const cpu::Int8SplitWeight e_group{expand->weight + c0 * e_cols, rows, e_slots, e_cols};
      cpu::pointwise_input_grad_add(expand->conv, g_in, e_group, expand->weight_scale + c0, 0, n, dx);
    } else if (wants_dx) {
      cpu::pointwise_input_grad_add(expand->conv, g_in, expand->weight, expand->weight_scale, c0, n, dx);
    }
    if (je < expand->channel_count && expand->channels[je] < c0 + n)
      je = train_expansion_rows(p, *expand, c0, n, je, g_in, buffers);
  }
  if (wants_dx) {
    // The residual's share last: the sum is the same either way round.
    if (proj.residual_from == first)
      for (int64_t e = 0; e < n_dx; ++e) dx[e] += dy[e];
    state.grad_written[first] = 1;
  }
  if (proj.train_bias) update_bias(p, proj, buffers);
  update_weight_by_channels(p, proj, at<int8_t>(buffers, proj.value_in), dy, buffers);
  if (dw.train_bias) update_bias(p, dw, buffers);
  if (expand != nullptr && expand->train_bias) update_bias(p, *expand, buffers);
}

// Where layer i's input gradient goes: straight into its buffer, or into the scratch when a residual
// already wrote a share of it there, then added by finish(). dx is null when backward stops at layer i.
struct InputGradient {
  float* dx = nullptr;
  float* target = nullptr;
  int64_t n = 0;
  uint8_t* written = nullptr;  // the layer's grad_written flag

  void finish() const {
    if (dx == nullptr) return;
    if (dx != target) {
      for (int64_t e = 0; e < n; ++e) target[e] += dx[e];
    } else {
      *written = 1;
    }
  }
};

InputGradient input_gradient(const StepProgram& p, int i, std::byte* const* buffers, StepState& state) {
  const StepLayer& l = p.layers[i];
  if (i <= p.first_trained) return {};
  float* target = at<float>(buffers, l.grad_in);
  float* dx = state.grad_written[i] != 0 ? at<float>(buffers, l.backward_scratch) : target;
  return InputGradient{dx, target, l.in_elems, &state.grad_written[i]};
}

// The backward of a 1x1 conv (layer i) with a global average pool's backward folded in (update_plan.h's
// folded_pools): its output gradient is the pool's output gradient / pixels where its ReLU passed and 0
// elsewhere, built a pixel's row at a time for the bias and input gradients and kGradientChannelsAtOnce
// channels' columns at a time for the weight gradients. Each value has the terms, in the same order,
// that the pool's backward and then the conv's give it: the same floats.
void pooled_backward(const StepProgram& p, int i, std::byte* const* buffers, StepState& state) {
  const StepLayer& l = p.layers[i];
  const float* g = at<float>(buffers, p.layers[i + 1].grad_out);
  const cpu::Int8ConvShape& s = l.conv;
  const int32_t c = s.c_out;
  const int64_t pixels = int64_t{s.out_h()} * s.out_w();
  const float n_pixels = static_cast<float>(p.layers[i + 1].in_pixels);
  const uint8_t* bits = at<uint8_t>(buffers, l.mask);
  auto passes = [&](int64_t e) { return bits == nullptr || ((bits[e >> 3] >> (e & 7)) & 1u) != 0; };
  float* row = at<float>(buffers, l.pooled_grad);
  float* columns = row + c;

  const InputGradient input = input_gradient(p, i, buffers, state);
  float* dx = input.dx;
  const bool wants_dx = dx != nullptr;
  float* db = l.train_bias ? at<float>(buffers, l.bias_grad) : nullptr;
  if (db != nullptr)
    for (int32_t ch = 0; ch < c; ++ch) db[ch] = 0.0f;
  cpu::Int8ConvShape one = s;  // a pixel's row
  one.h = one.w = 1;
  const WeightView w = wants_dx ? weight_view(p, l, buffers, l.weight_working_backward) : WeightView{};
  for (int64_t px = 0; px < pixels; ++px) {
    for (int32_t ch = 0; ch < c; ++ch) row[ch] = g[ch] / n_pixels;
    if (bits != nullptr) cpu::apply_mask_bits_columns(bits, 1, c, px * c, c, row);
    if (db != nullptr)
      for (int32_t ch = 0; ch < c; ++ch) db[ch] += row[ch];
    if (wants_dx)
      w.apply([&](const auto& weights) {
        cpu::conv2d_input_grad(one, row, weights, l.weight_scale, dx + px * s.c_in);
      });
  }
  if (l.train_bias) update_bias(p, l, buffers);
  const int8_t* x = at<int8_t>(buffers, l.value_in);
  float* dw = at<float>(buffers, l.weight_grad);
  for (int32_t j0 = 0; j0 < l.channel_count; j0 += kGradientChannelsAtOnce) {
    const int32_t n =
        l.channel_count - j0 < kGradientChannelsAtOnce ? l.channel_count - j0 : kGradientChannelsAtOnce;
    int32_t local[kGradientChannelsAtOnce];
    for (int32_t q = 0; q < n; ++q) {
      local[q] = q;
      const int32_t ch = l.channels[j0 + q];
      for (int64_t px = 0; px < pixels; ++px)
        columns[px * n + q] = passes(px * c + ch) ? g[ch] / n_pixels : 0.0f;
    }
    cpu::Int8ConvShape cols = s;  // the n channels' columns
    cols.c_out = n;
    cpu::conv2d_weight_grad_channels(cols, x, l.in_zero_point, l.in_scale, columns, local, n, dw);
    update_weight_rows(p, l, j0, n, dw, buffers);
  }
  input.finish();
}

void backward(const StepProgram& p, int i, std::byte* const* buffers, StepState& state) {
  const StepLayer& l = p.layers[i];
  if (l.fused_into >= 0) return;  // done by its block's op, or the conv its pool is folded into
  if (l.fused_first >= 0) {
    fused_backward(p, i, buffers, state);
    return;
  }
  if (l.pooled_grad >= 0) {
    pooled_backward(p, i, buffers, state);
    return;
  }
  uint8_t* written = state.grad_written;
  float* dy = at<float>(buffers, l.grad_out);
  const int64_t n_out = l.out_elems, n_in = l.in_elems;

  // The residual's share of the gradient, before the mask of the fused activation.
  if (l.residual_from >= 0) {
    const int r = l.residual_from;
    if (float* g = at<float>(buffers, p.layers[r].grad_in)) {
      if (written[r]) {
        for (int64_t e = 0; e < n_out; ++e) g[e] += dy[e];
      } else {
        std::memcpy(g, dy, static_cast<size_t>(n_out) * sizeof(float));
        written[r] = 1;
      }
    }
  }
  if (const uint8_t* bits = at<uint8_t>(buffers, l.mask)) cpu::apply_mask_bits(bits, n_out, dy);

  const InputGradient input = input_gradient(p, i, buffers, state);
  float* dx = input.dx;
  const bool wants_dx = dx != nullptr;

  if (has_weights(l)) {
    const cpu::Int8ConvShape& s = l.conv;
    const int64_t pixels = is(l, StepOpKind::linear) ? 1 : int64_t{s.out_h()} * s.out_w();
    const int8_t* x = at<int8_t>(buffers, l.value_in);
    const bool depthwise = is(l, StepOpKind::depthwise_conv2d);
    float* dw = at<float>(buffers, l.weight_grad);
    if (l.train_bias) cpu::bias_grad(dy, pixels, l.out_channels, at<float>(buffers, l.bias_grad));
    // A depthwise layer's weight gradient comes first: its input gradient may overwrite dy.
    if (depthwise && l.channel_count > 0)
      cpu::depthwise_weight_grad_channels(s, x, l.in_zero_point, l.in_scale, dy, l.channels, l.channel_count, dw);
    if (wants_dx && !depthwise) {
      with_weight(p, l, buffers, l.weight_working_backward, [&](const auto& w) {
        if (is(l, StepOpKind::conv2d))
          cpu::conv2d_input_grad(s, dy, w, l.weight_scale, dx);
        else
          cpu::linear_input_grad(dy, w, l.weight_scale, s.c_in, s.c_out, dx);
      });
    } else if (wants_dx) {
      const int8_t* weights = weight_for_op(p, l, buffers, l.weight_working_backward);
      if (l.grad_in != l.grad_out) {
        cpu::depthwise_input_grad(s, dy, weights, l.weight_scale, dx);
      } else {
        // dx over dy, one channel at a time: channel c's elements sit at p * c_in + c in both, so
        // writing channel c's dx touches only channel c's dy (already copied) or bytes past dy.
        float* plane_dy = at<float>(buffers, l.backward_scratch);
        const int64_t in_pixels = int64_t{s.h} * s.w, out_pixels = int64_t{s.out_h()} * s.out_w();
        float* plane_dx = plane_dy + out_pixels;
        cpu::Int8ConvShape one = s;
        one.c_in = one.c_out = 1;
        const int kk = s.kernel * s.kernel;
        for (int32_t c = 0; c < s.c_in; ++c) {
          for (int64_t px = 0; px < out_pixels; ++px) plane_dy[px] = dy[px * s.c_in + c];
          cpu::depthwise_input_grad(one, plane_dy, weights + c * kk, l.weight_scale + c, plane_dx);
          for (int64_t px = 0; px < in_pixels; ++px) dx[px * s.c_in + c] = plane_dx[px];
        }
      }
    }
    // The updates, after the input gradient has read the weights they change.
    if (l.train_bias) update_bias(p, l, buffers);
    if (depthwise) {
      if (l.channel_count > 0) update_weight_rows(p, l, 0, l.channel_count, dw, buffers);
    } else {
      update_weight_by_channels(p, l, x, dy, buffers);
    }
  } else if (wants_dx) {
    for (int64_t e = 0; e < n_in; ++e) dx[e] = 0.0f;
    if (is(l, StepOpKind::max_pool)) {
      const cpu::Int8PoolShape& s = l.pool;
      const uint8_t* arg = at<uint8_t>(buffers, l.argmax);
      for (int32_t oh = 0; oh < s.out_h(); ++oh)
        for (int32_t ow = 0; ow < s.out_w(); ++ow)
          for (int32_t c = 0; c < s.c; ++c) {
            const int64_t o = (int64_t{oh} * s.out_w() + ow) * s.c + c;
            const int32_t ih = oh * s.stride - s.pad + arg[o] / s.kernel;
            const int32_t iw = ow * s.stride - s.pad + arg[o] % s.kernel;
            dx[(int64_t{ih} * s.w + iw) * s.c + c] += dy[o];
          }
    } else {  // global average pool: dy [c] spread evenly over the pixels
      for (int64_t px = 0; px < l.in_pixels; ++px)
        for (int32_t c = 0; c < l.in_c; ++c) dx[px * l.in_c + c] = dy[c] / static_cast<float>(l.in_pixels);
    }
  }
  input.finish();
}

}  // namespace

void run_step_op(const StepProgram& program, int k, std::byte* const* buffers, int label,
                 StepState& state) noexcept {
  const int L = program.layer_count;
  if (k < L) {
    forward(program, k, buffers);
  } else if (k == L) {
    loss(program, label, buffers, state);
  } else if (k <= 2 * L - program.first_trained) {
    backward(program, 2 * L - k, buffers, state);
  }
}

void init_trained_state(const StepProgram& program, std::byte* const* buffers) noexcept {
  for (int i = program.first_trained; i < program.layer_count; ++i) {
    const StepLayer& l = program.layers[i];
    if (l.channel_count > 0) {
      const int64_t cols = l.weight_elems / l.out_channels, n = l.channel_count * cols;
      std::byte* master = buffers[l.weight_master];
      for (int32_t j = 0; j < l.channel_count; ++j) {
        const int8_t* row = l.weight + l.channels[j] * cols;
        if (program.master_format == MasterFormat::f32)
          for (int64_t e = 0; e < cols; ++e)
            reinterpret_cast<float*>(master)[j * cols + e] = static_cast<float>(row[e]);
        else
          std::memcpy(master + j * cols, row, static_cast<size_t>(cols));
      }
      if (program.master_format == MasterFormat::int16) std::memset(master + n, 128, static_cast<size_t>(n));
      if (float* v = at<float>(buffers, l.weight_state))
        for (int64_t e = 0; e < l.channel_count * cols; ++e) v[e] = 0.0f;
    }
    if (l.train_bias) {
      float* master = at<float>(buffers, l.bias_master);
      for (int32_t c = 0; c < l.out_channels; ++c) master[c] = static_cast<float>(l.bias[c]);
      if (float* v = at<float>(buffers, l.bias_state))
        for (int32_t c = 0; c < l.out_channels; ++c) v[c] = 0.0f;
    }
  }
}

}  // namespace tern::ondevice
