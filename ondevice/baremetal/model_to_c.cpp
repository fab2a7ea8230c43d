// tern-model-to-c: the host half of the bare-metal demo. Turns an int8 model file (tern-finetune
// --output) and a few Fashion-MNIST images of the fine-tuning classes into one C++ source that
// the Cortex-M build links in: the model image as a 16-byte aligned const array (flash), train /
// test images already quantised to the model's input (int8 NHWC) with labels 0..B-A, and the
// planned training step of an update scheme (ondevice/step_executor.h's records, the arena the
// plan's peak sizes, each buffer's place in it) that the device runs with the host's own code.
// It also replays that training on the host (the same executor, images and order) and embeds the
// host's test accuracy before and after, which the device must reproduce.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "ondevice/finetune.h"
#include "ondevice/model_format.h"
#include "ondevice/model_image.h"
#include "optim/lr_schedule.h"
#include "runtime/data/dataset.h"
#include "runtime/error.h"

namespace {

using tern::ondevice::QuantizedModel;

struct Options {
  std::string model, out, data_dir = tern::kDefaultFashionMnistDir, update = "bias", lr_schedule = "constant";
  int lo = 5, hi = 9, train = 200, test = 200, epochs = 3;
  float lr = 0.05f;
  bool qas = true;
  std::string master = "f32";
};

const char* kUsage =
    "usage: tern-model-to-c --model FILE --out FILE.cpp [--data-dir DIR] [--classes A-B] [--train N] "
    "[--test N] [--update SCHEME] [--lr X] [--lr-schedule S] [--epochs N] [--qas on|off] [--master F]\n"
    "  --update: tern-finetune's update schemes (default bias; the last layer always trains), run on the\n"
    "  device with SGD at --lr (default 0.05) for --epochs passes (default 3) over the --train images;\n"
    "  --lr-schedule: tern-finetune's schedules (default constant), written out as one rate per step;\n"
    "  --master: how trained weights are kept, f32 (default), int16 or int8 (tern-finetune --master)\n";

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    TERN_CHECK(i + 1 < argc, "tern-model-to-c: ", a, " needs a value\n", kUsage);
    const std::string v = argv[++i];
    if (a == "--model") o.model = v;
    else if (a == "--out") o.out = v;
    else if (a == "--data-dir") o.data_dir = v;
    else if (a == "--classes") TERN_CHECK(std::sscanf(v.c_str(), "%d-%d", &o.lo, &o.hi) == 2 && o.lo <= o.hi,
                                          "--classes '", v, "': expected A-B");
    else if (a == "--train") o.train = std::stoi(v);
    else if (a == "--test") o.test = std::stoi(v);
    else if (a == "--update") o.update = v;
    else if (a == "--lr") o.lr = std::stof(v);
    else if (a == "--lr-schedule") o.lr_schedule = v;
    else if (a == "--epochs") o.epochs = std::stoi(v);
    else if (a == "--master") o.master = v;
    else if (a == "--qas") {
      TERN_CHECK(v == "on" || v == "off", "--qas '", v, "': expected on or off");
      o.qas = v == "on";
    }
    else TERN_CHECK(false, "tern-model-to-c: unknown option ", a, "\n", kUsage);
  }
  TERN_CHECK(!o.model.empty() && !o.out.empty(), "tern-model-to-c: --model and --out are required\n", kUsage);
  TERN_CHECK(o.train > 0 && o.test > 0 && o.epochs > 0, "--train, --test and --epochs must be positive");
  TERN_CHECK(o.lr >= 0, "--lr must be >= 0");
  TERN_CHECK(o.master == "f32" || o.master == "int16" || o.master == "int8", "--master '", o.master,
             "': expected f32, int16 or int8");
  return o;
}

// The first n images of classes lo..hi, quantised; labels relabelled to 0..hi-lo as tern-finetune does.
void pick(const tern::Dataset& d, const QuantizedModel& m, const Options& o, int n, std::vector<int8_t>& images,
          std::vector<uint8_t>& labels) {
  const int64_t per = d.images.numel() / d.size();
  for (int64_t i = 0; i < d.size() && static_cast<int>(labels.size()) < n; ++i) {
    const int label = d.labels[static_cast<size_t>(i)];
    if (label < o.lo || label > o.hi) continue;
    const std::vector<int8_t> q = m.quantize_input(d.images.f32() + i * per);
    images.insert(images.end(), q.begin(), q.end());
    labels.push_back(static_cast<uint8_t>(label - o.lo));
  }
  TERN_CHECK(static_cast<int>(labels.size()) == n, "only ", labels.size(), " images of classes ", o.lo, "-", o.hi);
}

template <typename T>
void write_array(std::ofstream& f, const char* type, const char* name, const T* data, size_t n) {
  f << "alignas(16) extern const " << type << " " << name << "[" << n << "] = {";
  for (size_t i = 0; i < n; ++i) f << (i % 24 ? " " : "\n  ") << static_cast<int>(data[i]) << ",";
  f << "\n};\n";
}

// A float exactly, as a C++ hexadecimal literal.
std::string exact(float v) {
  char text[64];
  std::snprintf(text, sizeof(text), "%a", static_cast<double>(v));
  return std::string(text) + "f";
}

// An address inside the model image, or nullptr for an array the op does not have.
std::string image_address(const char* type, uint32_t offset) {
  if (offset == 0) return "nullptr";
  return std::string("reinterpret_cast<const ") + type + "*>(tern_model_image + " + std::to_string(offset) + ")";
}

// The step's records: parameters point into the image in flash (constant-initialised: no start-up
// code runs on the device), channel lists are arrays of their own, nothing points at host memory.
void write_step(std::ofstream& f, const tern::ondevice::Finetuner& ft, const std::vector<uint8_t>& image) {
  using tern::ondevice::StepLayer;
  const tern::ondevice::StepProgram& p = ft.program();
  const tern::ondevice::OpRecord* ops = tern::ondevice::image_ops(image.data());
  for (int i = 0; i < p.layer_count; ++i) {
    const StepLayer& l = p.layers[i];
    if (l.channel_count == 0) continue;
    f << "extern const int32_t tern_channels_" << i << "[" << l.channel_count << "] = {";
    for (int j = 0; j < l.channel_count; ++j) f << (j ? ", " : "") << l.channels[j];
    f << "};\n";
    f << "extern const int32_t tern_channel_slot_" << i << "[" << l.out_channels << "] = {";
    for (int c = 0; c < l.out_channels; ++c) f << (c ? ", " : "") << l.channel_slot[c];
    f << "};\n";
  }
  f << "extern const tern::ondevice::StepLayer tern_step_layers[" << p.layer_count << "] = {\n";
  for (int i = 0; i < p.layer_count; ++i) {
    const StepLayer& l = p.layers[i];
    const tern::ondevice::OpRecord& op = ops[l.op];
    auto shape = [](const tern::cpu::Int8ConvShape& c) {
      return "{" + std::to_string(c.h) + ", " + std::to_string(c.w) + ", " + std::to_string(c.c_in) + ", " +
             std::to_string(c.c_out) + ", " + std::to_string(c.kernel) + ", " + std::to_string(c.stride) + ", " +
             std::to_string(c.pad) + "}";
    };
    f << "  {.kind = static_cast<tern::ondevice::StepOpKind>(" << static_cast<uint32_t>(l.kind) << "), .op = " << l.op
      << ", .conv = " << shape(l.conv) << ", .pool = {" << l.pool.h << ", " << l.pool.w << ", " << l.pool.c << ", "
      << l.pool.kernel << ", " << l.pool.stride << ", " << l.pool.pad << "}, .in_pixels = " << l.in_pixels
      << ", .in_c = " << l.in_c << ", .in_elems = " << l.in_elems << ", .out_elems = " << l.out_elems
      << ",\n   .in_zero_point = " << l.in_zero_point << ", .out_zero_point = " << l.out_zero_point
      << ", .in_scale = " << exact(l.in_scale) << ", .act_min = " << l.act_min << ", .act_max = " << l.act_max;
    if (l.weight != nullptr) {
      f << ",\n   .weight = " << image_address("int8_t", op.weight_offset)
        << ", .bias = " << image_address("int32_t", op.bias_offset)
        << ", .weight_scale = " << image_address("float", op.weight_scale_offset)
        << ",\n   .multiplier = " << image_address("int32_t", op.multiplier_offset)
        << ", .shift = " << image_address("int32_t", op.shift_offset) << ", .out_channels = " << l.out_channels
        << ", .weight_elems = " << l.weight_elems;
    }
    f << ",\n   .residual_from = " << l.residual_from
      << ", .add_main_first = " << (l.add_main_first ? "true" : "false") << ", .add = {" << l.add.a_zero_point
      << ", " << l.add.b_zero_point << ", " << l.add.y_zero_point << ", " << exact(l.add.a_mult) << ", "
      << exact(l.add.b_mult) << ", " << l.add.act_min << ", " << l.add.act_max << "}"
      << ",\n   .train_bias = " << (l.train_bias ? "true" : "false")
      << ", .channels = " << (l.channel_count ? "tern_channels_" + std::to_string(i) : std::string("nullptr"))
      << ", .channel_slot = "
      << (l.channel_count ? "tern_channel_slot_" + std::to_string(i) : std::string("nullptr"))
      << ", .channel_count = " << l.channel_count << ",\n   .value_in = " << l.value_in
      << ", .value_out = " << l.value_out << ", .grad_in = " << l.grad_in << ", .grad_out = " << l.grad_out
      << ", .mask = " << l.mask << ", .argmax = " << l.argmax << ", .forward_scratch = " << l.forward_scratch
      << ", .backward_scratch = " << l.backward_scratch << ",\n   .weight_master = " << l.weight_master
      << ", .weight_grad = " << l.weight_grad << ", .weight_state = " << l.weight_state
      << ", .weight_working = " << l.weight_working
      << ", .weight_working_backward = " << l.weight_working_backward
      << ",\n   .bias_master = " << l.bias_master << ", .bias_grad = " << l.bias_grad
      << ", .bias_state = " << l.bias_state << ", .bias_working = " << l.bias_working
      << ",\n   .fused_first = " << l.fused_first << ", .hidden_group_channels = " << l.hidden_group_channels
      << ", .hidden_group = " << l.hidden_group << ", .fused_into = " << l.fused_into
      << ", .pooled_grad = " << l.pooled_grad << "},\n";
  }
  f << "};\n";
  f << "extern const tern::ondevice::StepProgram tern_step_program = {.layers = tern_step_layers"
    << ", .layer_count = " << p.layer_count << ", .first_trained = " << p.first_trained
    << ", .num_ops = " << p.num_ops << ", .num_classes = " << p.num_classes
    << ", .logits_f32 = " << (p.logits_f32 ? "true" : "false")
    << ", .output_zero_point = " << p.output_zero_point << ", .output_scale = " << exact(p.output_scale)
    << ", .lr = " << exact(p.lr) << ", .momentum = " << exact(p.momentum)
    << ", .qas = " << (p.qas ? "true" : "false")
    << ", .master_format = tern::ondevice::MasterFormat::" << master_format_name(p.master_format) << "};\n";
  // The arena, sized by the plan's peak, and every buffer at its planned offset in it.
  const tern::ondevice::MemoryPlan& plan = ft.plan();
  f << "extern const uint32_t tern_arena_bytes = " << plan.peak << ";\n";
  f << "alignas(16) uint8_t tern_arena[" << std::max<size_t>(plan.peak, 1) << "];\n";
  f << "extern const uint32_t tern_buffer_count = " << plan.buffers.size() << ";\n";
  f << "extern std::byte* const tern_step_buffers[" << std::max<size_t>(plan.buffers.size(), 1) << "] = {";
  for (size_t b = 0; b < plan.buffers.size(); ++b)
    f << (b % 6 ? " " : "\n  ") << "reinterpret_cast<std::byte*>(tern_arena + " << plan.offsets[b] << "),";
  f << "\n};\n";
}

int run(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const QuantizedModel model = tern::ondevice::load_model(o.model);
  std::ifstream in(o.model, std::ios::binary);
  const std::vector<uint8_t> image((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  TERN_CHECK(model.num_classes() == o.hi - o.lo + 1, o.model, " has ", model.num_classes(), " outputs, --classes ",
             o.lo, "-", o.hi, " needs ", o.hi - o.lo + 1);

  std::vector<int8_t> train_x, test_x;
  std::vector<uint8_t> train_y, test_y;
  pick(tern::load_dataset("fashion-mnist", o.data_dir, tern::Split::train), model, o, o.train, train_x, train_y);
  pick(tern::load_dataset("fashion-mnist", o.data_dir, tern::Split::test), model, o, o.test, test_x, test_y);

  // The host's int8 predictions on the same quantised test images.
  const int64_t per = model.tensors[0].numel();
  int correct = 0;
  for (int i = 0; i < o.test; ++i) {
    std::vector<std::vector<int8_t>> values(model.tensors.size());
    values[0].assign(test_x.begin() + i * per, test_x.begin() + (i + 1) * per);
    model.run(values);
    const std::vector<float> l = model.logits(values);
    int best = 0;
    for (int c = 1; c < static_cast<int>(l.size()); ++c) best = l[static_cast<size_t>(c)] > l[static_cast<size_t>(best)] ? c : best;
    correct += best == test_y[static_cast<size_t>(i)];
  }

  // The step the device will run, and the host's run of it on the same images in the same order.
  using namespace tern::ondevice;
  const std::vector<LayerSpec> layers = layer_specs(model);
  const UpdateScheme scheme = with_last_layer_trained(parse_update_scheme(o.update, layers), layers);
  FinetuneOptions options;
  options.lr = o.lr;
  options.qas = o.qas;
  set_master_format(options, parse_master_format(o.master));
  Finetuner ft(model, scheme, options);
  // The schedule as one rate per step, so the device needs no libm to agree with the host bit for bit.
  const int64_t steps = int64_t{o.epochs} * o.train;
  const std::unique_ptr<tern::LrSchedule> schedule = tern::make_lr_schedule(o.lr_schedule, o.lr, steps);
  std::vector<float> rates(static_cast<size_t>(steps));
  for (int64_t t = 0; t < steps; ++t) rates[static_cast<size_t>(t)] = schedule->lr_at(t);
  auto count_correct = [&] {
    int n = 0;
    for (int i = 0; i < o.test; ++i) n += ft.predict_quantized(test_x.data() + i * per) == test_y[static_cast<size_t>(i)];
    return n;
  };
  const int before = count_correct();
  TERN_CHECK(before == correct, "the step's forward pass predicts ", before, " of ", o.test,
             " test images right, the model's own ", correct, ": the two paths disagree");
  for (int epoch = 0, t = 0; epoch < o.epochs; ++epoch)
    for (int i = 0; i < o.train; ++i, ++t) {
      ft.set_lr(rates[static_cast<size_t>(t)]);
      ft.step(train_x.data() + i * per, train_y[static_cast<size_t>(i)]);
    }
  const int after = count_correct();

  std::ofstream f(o.out);
  TERN_CHECK(f.good(), "cannot write ", o.out);
  f << "// Generated by tern-model-to-c from " << o.model << ": do not edit.\n#include <stdint.h>\n\n"
    << "#include \"ondevice/step_executor.h\"\n\n";
  f << "// update " << describe(scheme, layers) << ", QAS " << (o.qas ? "on" : "off") << ", " << o.master
    << " master copies, lr " << schedule->describe() << ", " << o.epochs << " epochs\n";
  f << "extern const uint32_t tern_epochs = " << o.epochs << ";\n";
  f << "extern const uint32_t tern_host_trained_correct = " << after << ";\n";
  f << "extern const uint32_t tern_model_size = " << image.size() << ";\n";
  write_array(f, "uint8_t", "tern_model_image", image.data(), image.size());
  f << "extern const uint32_t tern_image_bytes = " << per << ";\n";
  f << "extern const uint32_t tern_train_count = " << o.train << ";\n";
  f << "extern const uint32_t tern_test_count = " << o.test << ";\n";
  f << "extern const uint32_t tern_host_test_correct = " << correct << ";\n";
  write_array(f, "int8_t", "tern_train_images", train_x.data(), train_x.size());
  write_array(f, "uint8_t", "tern_train_labels", train_y.data(), train_y.size());
  write_array(f, "int8_t", "tern_test_images", test_x.data(), test_x.size());
  write_array(f, "uint8_t", "tern_test_labels", test_y.data(), test_y.size());
  write_step(f, ft, image);
  f << "extern const float tern_step_lr[" << rates.size() << "] = {";
  for (size_t t = 0; t < rates.size(); ++t) f << (t % 8 ? " " : "\n  ") << exact(rates[t]) << ",";
  f << "\n};\n";
  TERN_CHECK(f.good(), "error writing ", o.out);
  std::printf("tern-model-to-c: %s (%zu bytes of model, %d train + %d test images); host int8 accuracy %d/%d\n",
              o.out.c_str(), image.size(), o.train, o.test, correct, o.test);
  std::printf("tern-model-to-c: step %s, arena %zu bytes; on the host, %d epochs at lr %s: %d/%d\n",
              describe(scheme, layers).c_str(), ft.plan().peak, o.epochs, schedule->describe().c_str(), after, o.test);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern-model-to-c: %s\n", e.what());
    return 1;
  }
}
