#include "models/registry.h"

#include <map>
#include <mutex>
#include <sstream>

namespace tern {

namespace {
struct Entry {
  std::string summary;
  ModelFactory factory;
};

// The one registry: filled at first use, read-only afterwards in practice.
std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  static std::once_flag once;
  std::call_once(once, [] {
    r["mlp"] = {"MLP 784-512-256-10 with ReLU", make_mlp};
    r["cnn"] = {"conv3x3(32)-BN-ReLU-pool, conv3x3(64)-BN-ReLU-pool, fc128-ReLU, fc", make_cnn};
    r["resnet20"] = {"ResNet-20 (CIFAR-style: 3 stages x 3 basic blocks, 16/32/64 channels)", make_resnet20};
    r["mobilenetv2"] = {"MobileNetV2 (inverted residuals, ReLU6), --width-mult scales channels", make_mobilenetv2};
    r["mcunet"] = {"MCUNet-style inverted residuals (expand 1-6, depthwise 3/5/7, ReLU6) sized for 256KB on-device "
                   "fine-tuning at 28x28",
                   make_mcunet};
    r["gpt-tiny"] = {"decoder-only transformer on token ids (GPT-2 style, pre-norm)", make_gpt_tiny};
  });
  return r;
}
}  // namespace

void register_model(const std::string& name, const std::string& summary, ModelFactory factory) {
  registry()[name] = {summary, std::move(factory)};
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& [name, e] : registry()) names.push_back(name);
  return names;
}

std::string model_summary(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? "" : it->second.summary;
}

bool model_takes_tokens(const std::string& name) { return name.starts_with("gpt"); }

std::unique_ptr<Sequential> make_model(const std::string& name, const ModelConfig& config) {
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::ostringstream known;
    for (const auto& n : model_names()) known << " " << n;
    throw Error("unknown model '" + name + "' (known:" + known.str() + ")");
  }
  TERN_CHECK(config.in_channels > 0 && config.height > 0 && config.width > 0 && config.num_classes > 0,
             "model '", name, "': input shape and class count must be positive");
  return it->second.factory(config);
}

}  // namespace tern
