// tern-demo: on-device fine-tuning on a Cortex-M under QEMU (issue 7). The int8 model image lies
// in flash as tern-model-to-c wrote it, together with the planned training step the host built for
// an update scheme (ondevice/step_executor.h: the very code tern-finetune runs). The program checks
// the image's CRC and that the step matches it, measures the test accuracy with the step's forward
// pass, trains with the planned step (int8 forward, f32 backward down to the first trained layer,
// QAS, in-place SGD) at batch 1 on the embedded training images, and measures again. Every buffer
// sits at its planned offset in one static arena the size of the plan's peak (no heap); output and
// the exit status go through semihosting.
// Exit status: 0 when training improved the accuracy, 1 when it did not, 2 for a model image that
// fails its checks or a step that does not match it.
#include <stdint.h>

#include "ondevice/baremetal/semihost.h"
#include "ondevice/model_image.h"
#include "ondevice/step_executor.h"

// Written by tern-model-to-c.
extern const uint32_t tern_model_size, tern_image_bytes, tern_train_count, tern_test_count, tern_host_test_correct,
    tern_host_trained_correct, tern_epochs, tern_arena_bytes, tern_buffer_count;
extern const uint8_t tern_model_image[], tern_train_labels[], tern_test_labels[];
extern const int8_t tern_train_images[], tern_test_images[];
extern const tern::ondevice::StepProgram tern_step_program;
extern const float tern_step_lr[];  // the learning rate of every training step, in order
extern std::byte* const tern_step_buffers[];

namespace {

using namespace tern::ondevice;
using tern::baremetal::write;

constexpr int kMaxLayers = 255;
uint8_t g_grad_written[kMaxLayers + 1];  // the executor's per-step record of residual gradients

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

// The step's records must describe this image: every layer's op exists, has the layer's kind, and
// its parameter addresses are the image's arrays of that op.
bool step_matches_image(const StepProgram& p) {
  const ModelFileHeader& h = image_header(tern_model_image);
  const OpRecord* ops = image_ops(tern_model_image);
  if (p.layer_count < 1 || p.layer_count > kMaxLayers) return false;
  for (int i = 0; i < p.layer_count; ++i) {
    const StepLayer& l = p.layers[i];
    if (l.op < 0 || static_cast<uint32_t>(l.op) >= h.op_count) return false;
    const OpRecord& op = ops[l.op];
    if (op.kind != static_cast<uint32_t>(l.kind)) return false;
    if (l.weight != nullptr && (l.weight != image_array<int8_t>(tern_model_image, op.weight_offset) ||
                                l.weight_scale != image_array<float>(tern_model_image, op.weight_scale_offset)))
      return false;
  }
  return true;
}

// Ops 0..last of the step on one embedded image at learning rate lr, training step t (the stochastic
// rounding's key, as the host's Finetuner counts its steps); returns the predicted class (the loss op's
// argmax).
int run_ops(const int8_t* image, int label, int last, float lr, uint32_t t) {
  StepProgram p = tern_step_program;
  p.lr = lr;
  p.rounding_key = t;
  for (int i = 0; i <= p.layer_count; ++i) g_grad_written[i] = 0;
  int8_t* input = reinterpret_cast<int8_t*>(tern_step_buffers[p.layers[0].value_in]);
  for (uint32_t i = 0; i < tern_image_bytes; ++i) input[i] = image[i];
  StepState state{g_grad_written, {}};
  for (int k = 0; k <= last; ++k) run_step_op(p, k, tern_step_buffers, label, state);
  return state.result.predicted;
}

uint32_t evaluate() {
  uint32_t correct = 0;
  for (uint32_t i = 0; i < tern_test_count; ++i)
    correct += run_ops(tern_test_images + i * tern_image_bytes, tern_test_labels[i],
                       tern_step_program.layer_count, 0.0f, 0) == static_cast<int>(tern_test_labels[i]);
  return correct;
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

  const StepProgram& p = tern_step_program;
  if (!step_matches_image(p)) {
    write("the training step does not match the model image\n");
    return 2;
  }
  write_line("layers: ", p.layer_count, "");
  write_line(", training from layer ", p.first_trained, "");
  write_line(", ", p.num_ops, " ops per step\n");
  write_line("arena: ", tern_arena_bytes, "");
  write_line(" bytes, the plan's peak, for ", tern_buffer_count, " buffers (static, no heap)\n");
  init_trained_state(p, tern_step_buffers);

  const uint32_t before = evaluate();
  write_accuracy("test accuracy before: ", before, tern_test_count);
  write_line("host int8 accuracy on the same images: ", tern_host_test_correct);
  const int last_op = p.num_ops - 1;
  for (uint32_t epoch = 0, t = 0; epoch < tern_epochs; ++epoch) {
    for (uint32_t i = 0; i < tern_train_count; ++i, ++t)
      run_ops(tern_train_images + i * tern_image_bytes, tern_train_labels[i], last_op, tern_step_lr[t], t);
    write_line("epoch ", epoch + 1, "");
    write_line(": ", tern_train_count, " planned SGD steps (batch 1)\n");
  }
  const uint32_t after = evaluate();
  write_accuracy("test accuracy after: ", after, tern_test_count);
  write_line("host accuracy after the same training: ", tern_host_trained_correct);
  write(after > before ? "tern-demo: ok\n" : "tern-demo: training did not improve the accuracy\n");
  return after > before ? 0 : 1;
}
