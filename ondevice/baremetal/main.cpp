// tern-demo: on-device fine-tuning on a Cortex-M under QEMU (issue 7). The int8 model image lies
// in flash as tern-model-to-c wrote it; the program checks its CRC, runs the int8 forward on the
// embedded test images, trains the last layer (the classifier head: weights and biases) with SGD
// at batch 1 on the embedded training images, and measures the test accuracy again. Every buffer
// is carved from static arrays (no heap); output and the exit status go through semihosting.
// Exit status: 0 when the trained head beats the untrained one, 1 when it does not, 2 for a model
// image that fails its checks, 4 when the buffers do not fit the arena.
#include <math.h>
#include <stdint.h>

#include "ondevice/baremetal/semihost.h"
#include "ondevice/model_image.h"
#include "runtime/kernels/cpu/int8_backward.h"
#include "runtime/kernels/cpu/int8_conv.h"
#include "runtime/kernels/cpu/int8_elementwise.h"
#include "runtime/kernels/cpu/requantize.h"
#include "runtime/kernels/cpu/sparse_update.h"

// Written by tern-model-to-c.
extern const uint32_t tern_model_size, tern_image_bytes, tern_train_count, tern_test_count, tern_host_test_correct;
extern const uint8_t tern_model_image[], tern_train_labels[], tern_test_labels[];
extern const int8_t tern_train_images[], tern_test_images[];

namespace {

using namespace tern::ondevice;
namespace cpu = tern::cpu;
using tern::baremetal::write;

// Op kinds and activations as model_format.h stores them (QuantOpKind's values).
enum : uint32_t { kConv = 1, kDepthwise = 2, kLinear = 3, kAdd = 4, kAvgPool = 5, kMaxPool = 6 };

constexpr uint32_t kArenaBytes = 160 * 1024;  // activations and the head's training state
constexpr uint32_t kMaxTensors = 64;
constexpr float kLearningRate = 0.01f;
constexpr int kEpochs = 3;

alignas(16) uint8_t g_arena[kArenaBytes];
uint32_t g_arena_used = 0;
int8_t* g_values[kMaxTensors];

void* arena_take(uint32_t bytes) {
  const uint32_t at = (g_arena_used + 15u) & ~15u;
  if (at + bytes > kArenaBytes) return nullptr;
  g_arena_used = at + bytes;
  return g_arena + at;
}

// --- Printing without printf (no heap, no locale) ---

void write_int(int64_t v) {
  char buf[24];
  int n = 0;
  const bool neg = v < 0;
  uint64_t u = neg ? static_cast<uint64_t>(-v) : static_cast<uint64_t>(v);
  do {
    buf[n++] = static_cast<char>('0' + u % 10);
    u /= 10;
  } while (u);
  char out[26];
  int k = 0;
  if (neg) out[k++] = '-';
  while (n) out[k++] = buf[--n];
  out[k] = '\0';
  write(out);
}

void write_line(const char* a, int64_t v, const char* b = "\n") {
  write(a);
  write_int(v);
  write(b);
}

// "c/n (pp.p%)"
void write_accuracy(const char* label, uint32_t correct, uint32_t n) {
  write(label);
  write_int(correct);
  write("/");
  write_int(n);
  const uint32_t permille = (correct * 1000u + n / 2) / n;
  write(" (");
  write_int(permille / 10);
  write(".");
  write_int(permille % 10);
  write("%)\n");
}

// --- The model, read in place from flash ---

struct Model {
  const uint8_t* image;
  const TensorRecord* tensors;
  const OpRecord* ops;
  uint32_t tensor_count, op_count, output;
  const OpRecord* head;  // the last op, a linear layer writing the logits
};

// The trained head lives in RAM: int8 weights, int32 bias and per-channel scales re-quantised
// after every step from f32 master copies, as the host Finetuner does for a trained layer.
struct Head {
  int32_t in = 0, out = 0;
  float x_scale = 1.0f;
  int32_t x_zero_point = 0;
  int8_t* weight;    // [out, in]
  int32_t* bias;     // [out], units of x_scale * weight_scale[c]
  float* weight_scale;
  float* master_w;   // [out, in]
  float* master_b;   // [out]
  float* grad_w;     // [out, in]
  float* logits;     // [out]
  float* dlogits;    // [out]
  int32_t* acc;      // [out]
  int32_t* channels; // 0..out-1
};

void requantize_head(Head& h) {
  for (int32_t c = 0; c < h.out; ++c) {
    const float* w = h.master_w + int64_t{c} * h.in;
    float m = 0.0f;
    for (int32_t i = 0; i < h.in; ++i) m = w[i] > m ? w[i] : (-w[i] > m ? -w[i] : m);
    const float s = m > 0.0f ? m / 127.0f : 1.0f;
    h.weight_scale[c] = s;
    for (int32_t i = 0; i < h.in; ++i) {
      const float q = w[i] / s;
      h.weight[int64_t{c} * h.in + i] = static_cast<int8_t>(q >= 0.0f ? q + 0.5f : q - 0.5f);
    }
    const float b = h.master_b[c] / (h.x_scale * s);
    h.bias[c] = static_cast<int32_t>(b >= 0.0f ? b + 0.5f : b - 0.5f);
  }
}

bool init_head(const Model& m, Head& h) {
  const OpRecord& op = *m.head;
  const TensorRecord& x = m.tensors[op.input];
  h.in = x.h * x.w * x.c;
  h.out = static_cast<int32_t>(op.out_channels);
  h.x_scale = x.scale;
  h.x_zero_point = x.zero_point;
  const uint32_t n = static_cast<uint32_t>(h.in * h.out), c = static_cast<uint32_t>(h.out);
  h.weight = static_cast<int8_t*>(arena_take(n));
  h.bias = static_cast<int32_t*>(arena_take(4 * c));
  h.weight_scale = static_cast<float*>(arena_take(4 * c));
  h.master_w = static_cast<float*>(arena_take(4 * n));
  h.master_b = static_cast<float*>(arena_take(4 * c));
  h.grad_w = static_cast<float*>(arena_take(4 * n));
  h.logits = static_cast<float*>(arena_take(4 * c));
  h.dlogits = static_cast<float*>(arena_take(4 * c));
  h.acc = static_cast<int32_t*>(arena_take(4 * c));
  h.channels = static_cast<int32_t*>(arena_take(4 * c));
  if (!h.channels) return false;
  const int8_t* w = image_array<int8_t>(tern_model_image, op.weight_offset);
  const int32_t* b = image_array<int32_t>(tern_model_image, op.bias_offset);
  const float* s = image_array<float>(tern_model_image, op.weight_scale_offset);
  for (uint32_t k = 0; k < c; ++k) {
    h.channels[k] = static_cast<int32_t>(k);
    h.master_b[k] = b ? static_cast<float>(b[k]) * h.x_scale * s[k] : 0.0f;
    for (int32_t i = 0; i < h.in; ++i) h.master_w[k * h.in + i] = s[k] * static_cast<float>(w[k * h.in + i]);
  }
  requantize_head(h);
  return true;
}

bool init_buffers(const Model& m) {
  if (m.tensor_count > kMaxTensors) return false;
  for (uint32_t t = 0; t < m.tensor_count; ++t) {
    const TensorRecord& r = m.tensors[t];
    uint32_t bytes = static_cast<uint32_t>(r.h * r.w * r.c);
    // A depthwise output is computed in place in a copy of its input: it needs the larger size.
    for (uint32_t i = 0; i < m.op_count; ++i)
      if (m.ops[i].kind == kDepthwise && static_cast<uint32_t>(m.ops[i].output) == t) {
        const TensorRecord& in = m.tensors[m.ops[i].input];
        const uint32_t in_bytes = static_cast<uint32_t>(in.h * in.w * in.c);
        bytes = in_bytes > bytes ? in_bytes : bytes;
      }
    g_values[t] = static_cast<int8_t*>(arena_take(bytes));
    if (!g_values[t]) return false;
  }
  return true;
}

int32_t numel(const TensorRecord& t) { return t.h * t.w * t.c; }

// Every op but the head, then the head's int32 accumulators as f32 logits (as QuantizedModel::logits).
void forward(const Model& m, Head& h, const int8_t* image, int8_t* scratch) {
  const int32_t n0 = numel(m.tensors[0]);
  for (int32_t i = 0; i < n0; ++i) g_values[0][i] = image[i];
  for (uint32_t i = 0; i + 1 < m.op_count; ++i) {
    const OpRecord& op = m.ops[i];
    const TensorRecord& in = m.tensors[op.input];
    const TensorRecord& out = m.tensors[op.output];
    const int8_t* x = g_values[op.input];
    int8_t* y = g_values[op.output];
    const cpu::Requant rq{image_array<int32_t>(tern_model_image, op.multiplier_offset),
                          image_array<int32_t>(tern_model_image, op.shift_offset), out.zero_point, op.act_min,
                          op.act_max};
    const int8_t* w = image_array<int8_t>(tern_model_image, op.weight_offset);
    const int32_t* b = image_array<int32_t>(tern_model_image, op.bias_offset);
    const int32_t c_out = static_cast<int32_t>(op.out_channels);
    switch (op.kind) {
      case kConv:
        cpu::int8_conv2d({in.h, in.w, in.c, c_out, op.kernel, op.stride, op.pad}, x, in.zero_point, w, b, rq, y);
        break;
      case kDepthwise:
        for (int32_t k = 0; k < numel(in); ++k) y[k] = x[k];
        cpu::int8_depthwise_conv2d_inplace({in.h, in.w, in.c, c_out, op.kernel, op.stride, op.pad}, y,
                                           in.zero_point, w, b, rq, scratch);
        break;
      case kLinear:
        cpu::int8_linear(x, in.zero_point, w, b, numel(in), c_out, rq, y);
        break;
      case kAdd: {
        const TensorRecord& in2 = m.tensors[op.input2];
        const cpu::Int8AddParams p{in.zero_point, in2.zero_point, out.zero_point, op.add_a_mult, op.add_b_mult,
                                   op.act_min, op.act_max};
        cpu::int8_add(x, g_values[op.input2], numel(out), p, y);
        break;
      }
      case kAvgPool:
        cpu::int8_global_avg_pool(x, in.h * in.w, in.c, in.zero_point, y);
        break;
      case kMaxPool:
        cpu::int8_max_pool2d({in.h, in.w, in.c, op.kernel, op.stride, op.pad}, x, y);
        break;
    }
  }
  cpu::int8_linear_accumulate(g_values[m.head->input], h.x_zero_point, h.weight, h.bias, h.in, h.out, h.acc);
  for (int32_t c = 0; c < h.out; ++c) h.logits[c] = h.x_scale * h.weight_scale[c] * static_cast<float>(h.acc[c]);
}

int32_t argmax(const float* v, int32_t n) {
  int32_t best = 0;
  for (int32_t i = 1; i < n; ++i) best = v[i] > v[best] ? i : best;
  return best;
}

uint32_t evaluate(const Model& m, Head& h, int8_t* scratch) {
  uint32_t correct = 0;
  for (uint32_t i = 0; i < tern_test_count; ++i) {
    forward(m, h, tern_test_images + i * tern_image_bytes, scratch);
    correct += argmax(h.logits, h.out) == static_cast<int32_t>(tern_test_labels[i]);
  }
  return correct;
}

// One SGD step at batch 1 on the head: softmax cross-entropy, dW = dy x^T and db = dy through the
// shared backward kernels, the update in place on the f32 masters, then re-quantisation.
void train_step(const Model& m, Head& h, const int8_t* image, int32_t label, int8_t* scratch) {
  forward(m, h, image, scratch);
  const float top = h.logits[argmax(h.logits, h.out)];
  float sum = 0.0f;
  for (int32_t c = 0; c < h.out; ++c) sum += (h.dlogits[c] = expf(h.logits[c] - top));
  for (int32_t c = 0; c < h.out; ++c) h.dlogits[c] = h.dlogits[c] / sum - (c == label ? 1.0f : 0.0f);
  cpu::linear_weight_grad_channels(g_values[m.head->input], h.x_zero_point, h.x_scale, h.in, h.dlogits,
                                   h.channels, h.out, h.grad_w);
  cpu::sparse_rows_sgd(h.master_w, h.in, h.channels, h.out, h.grad_w, kLearningRate, 0.0f);
  float* db = h.logits;  // the logits are spent: reuse them for the bias gradient
  cpu::bias_grad(h.dlogits, 1, h.out, db);
  for (int32_t c = 0; c < h.out; ++c) h.master_b[c] -= kLearningRate * db[c];
  requantize_head(h);
}

}  // namespace

int main() {
  write("tern-demo: on-device fine-tuning on a Cortex-M (QEMU)\n");
  const FormatStatus status = check_model_image(tern_model_image, tern_model_size);
  write("model image: ");
  write_int(tern_model_size);
  write(" bytes in flash, check: ");
  write(format_status_name(status));
  write("\n");
  if (status != FormatStatus::ok) return 2;
  // The reader must refuse a short image too (a flash write that stopped early).
  const uint32_t file_bytes = static_cast<uint32_t>(image_header(tern_model_image).file_bytes);
  const FormatStatus cut = check_model_image(tern_model_image, file_bytes - 1);
  write("same image cut by one byte: ");
  write(format_status_name(cut));
  write("\n");
  if (cut != FormatStatus::truncated) return 2;

  Model m{};
  m.image = tern_model_image;
  m.tensors = image_tensors(tern_model_image);
  m.ops = image_ops(tern_model_image);
  m.tensor_count = image_header(tern_model_image).tensor_count;
  m.op_count = image_header(tern_model_image).op_count;
  m.output = image_header(tern_model_image).output_tensor;
  m.head = m.op_count ? &m.ops[m.op_count - 1] : nullptr;
  if (!m.head || m.head->kind != kLinear || static_cast<uint32_t>(m.head->output) != m.output) {
    write("the model does not end in a linear classifier head\n");
    return 2;
  }
  write_line("ops: ", m.op_count, "");
  write_line(", tensors: ", m.tensor_count, "");
  write(", head: ");
  write(m.head->name);
  write("\n");

  Head h{};
  int32_t max_plane = 1;
  for (uint32_t t = 0; t < m.tensor_count; ++t)
    max_plane = m.tensors[t].h * m.tensors[t].w > max_plane ? m.tensors[t].h * m.tensors[t].w : max_plane;
  int8_t* scratch = static_cast<int8_t*>(arena_take(static_cast<uint32_t>(max_plane)));
  if (!scratch || !init_buffers(m) || !init_head(m, h)) {
    write_line("the buffers do not fit the arena of ", kArenaBytes, " bytes\n");
    return 4;
  }
  write_line("arena: ", g_arena_used, "");
  write_line(" of ", kArenaBytes, " bytes (static, no heap)\n");

  const uint32_t before = evaluate(m, h, scratch);
  write_accuracy("test accuracy before: ", before, tern_test_count);
  write_line("host int8 accuracy on the same images: ", tern_host_test_correct);
  for (int epoch = 0; epoch < kEpochs; ++epoch) {
    for (uint32_t i = 0; i < tern_train_count; ++i)
      train_step(m, h, tern_train_images + i * tern_image_bytes, tern_train_labels[i], scratch);
    write_line("epoch ", epoch + 1, "");
    write_line(": ", tern_train_count, " SGD steps (head weights and biases, batch 1)\n");
  }
  const uint32_t after = evaluate(m, h, scratch);
  write_accuracy("test accuracy after: ", after, tern_test_count);
  write(after > before ? "tern-demo: ok\n" : "tern-demo: training did not improve the accuracy\n");
  return after > before ? 0 : 1;
}
