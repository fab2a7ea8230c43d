#include "optim/factory.h"

#include "optim/adam.h"
#include "optim/sgd.h"

namespace tern {

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, std::vector<Param*> params, float lr,
                                          float momentum, float weight_decay, bool nesterov) {
  if (name == "sgd") {
    SgdOptions o;
    o.lr = lr;
    o.momentum = momentum;
    o.weight_decay = weight_decay;
    o.nesterov = nesterov;
    return std::make_unique<Sgd>(std::move(params), o);
  }
  if (name == "adam" || name == "adamw") {
    TERN_CHECK(!nesterov, "optimizer '", name, "': nesterov applies only to 'sgd'");
    AdamOptions o;
    o.lr = lr;
    o.weight_decay = weight_decay;
    if (name == "adamw") return std::make_unique<AdamW>(std::move(params), o);
    return std::make_unique<Adam>(std::move(params), o);
  }
  throw Error("unknown optimizer '" + name + "'; choices: sgd, adam, adamw");
}

}  // namespace tern
