// The model zoo: every model is a Sequential built from runtime/nn, made by name so programs
// take `--model NAME`. A later pipeline stage splits the same Sequential by position.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runtime/nn/sequential.h"

namespace tern {

struct ModelConfig {
  int64_t in_channels = 1;
  int64_t height = 28;
  int64_t width = 28;
  int64_t num_classes = 10;
  float width_mult = 1.0f;  // channel multiplier (MobileNetV2, ResNet; MCUNet's 7x7 and 4x4 stages)
  uint64_t seed = 0;        // parameter initialisation
  // Decoder-only transformers (gpt-tiny), which take token ids [B, T] instead of images.
  int64_t vocab = 256;   // token ids in [0, vocab); a character corpus sets its own
  int64_t seq_len = 64;  // longest sequence (learned positions)
  int64_t d_model = 128;
  int64_t n_layer = 4;
  int64_t n_head = 4;
};

using ModelFactory = std::function<std::unique_ptr<Sequential>(const ModelConfig&)>;

// Builds a registered model; an unknown name is an error that lists the known ones.
std::unique_ptr<Sequential> make_model(const std::string& name, const ModelConfig& config);
std::vector<std::string> model_names();
// Registers a factory (the zoo's own models are registered on first use).
void register_model(const std::string& name, const std::string& summary, ModelFactory factory);
std::string model_summary(const std::string& name);

// The zoo's builders, also callable directly.
std::unique_ptr<Sequential> make_mlp(const ModelConfig& c);          // 784-512-256-10 style
std::unique_ptr<Sequential> make_cnn(const ModelConfig& c);          // two conv blocks + classifier
std::unique_ptr<Sequential> make_resnet20(const ModelConfig& c);     // CIFAR-style, BN
std::unique_ptr<Sequential> make_mobilenetv2(const ModelConfig& c);  // inverted residuals, width_mult
std::unique_ptr<Sequential> make_mcunet(const ModelConfig& c);       // MCUNet-style, sized for 256 KB fine-tuning
// [Embedding, TransformerBlock x n_layer, LmHead]: i32 ids [B, T] -> logits [B, T, vocab].
std::unique_ptr<Sequential> make_gpt_tiny(const ModelConfig& c);
// Whether a registered model takes token ids (gpt-tiny) rather than [C, H, W] images.
bool model_takes_tokens(const std::string& name);

}  // namespace tern
