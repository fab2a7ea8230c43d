// make_optimizer: builds an optimizer from the names and numbers a command line gives, so the
// examples and launchers need not know each optimizer's options struct.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace tern {

// name is "sgd", "adam" or "adamw". For sgd, momentum, weight_decay and nesterov map to
// SgdOptions (dampening 0). For adam/adamw, momentum is ignored (betas keep their defaults 0.9,
// 0.999, eps 1e-8) and nesterov must be false. Throws tern::Error for an unknown name (listing
// the choices) and for invalid options.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, std::vector<Param*> params, float lr,
                                          float momentum, float weight_decay, bool nesterov = false);

}  // namespace tern
