// Gradient clipping by global L2 norm, applied between backward and Optimizer::step to keep
// one bad batch from throwing the weights far away.
#pragma once

#include <vector>

#include "runtime/nn/module.h"

namespace tern {

// Returns the L2 norm of all trainable params' gradients taken together (accumulated in
// double), measured before clipping. When it exceeds max_norm every such gradient is scaled by
// max_norm / (norm + 1e-6), PyTorch's clip_grad_norm_ rule; otherwise nothing changes.
// Params with trainable == false are neither counted nor scaled, as the optimizers skip them.
// Throws tern::Error when max_norm is not > 0, and when the norm is NaN or infinite (naming the
// first param whose gradient is not finite) rather than scaling every gradient to NaN.
float clip_grad_norm(const std::vector<Param*>& params, float max_norm);

}  // namespace tern
