// Pipeline partitioning: which consecutive children of a Sequential model each pipeline stage
// runs, and cutting one stage out of the model so a rank holds only its own stage's modules.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "runtime/nn/sequential.h"

namespace tern {

// Stage s runs children [bounds[s], bounds[s + 1]); bounds has stages + 1 entries, starts at 0,
// ends at the number of children and strictly increases (no empty stage).
using StageBounds = std::vector<size_t>;

// Contiguous split of the children with the given costs into `stages` non-empty groups that
// minimises the largest group's cost (exact, by dynamic programming; ties go to the split whose
// stages end earliest). Throws when there are fewer children than stages.
StageBounds partition_by_cost(const std::vector<double>& costs, int stages);

// Balanced by parameter count. A child without params costs a little (1e-6 of the model's
// average per child), so parameter-free layers spread over stages instead of piling up.
StageBounds partition_by_params(Sequential& model, int stages);

// Forward + backward seconds of each child, measured on `input` (a batch the model takes): one
// warm-up pass, then the median of `repeats` timed passes. Backward starts from a gradient of
// ones. The model's grads are zeroed afterwards.
std::vector<double> measure_child_seconds(Sequential& model, const Tensor& input, int repeats = 5);

// Balanced by measured time. Timings differ between ranks, so with a communicator rank 0
// measures and broadcasts its timings (collective): every rank gets the same bounds.
StageBounds partition_by_time(Sequential& model, const Tensor& input, int stages,
                              Communicator* comm = nullptr, int repeats = 5);

// An explicit list of children per stage, "4:3:3:2", which must add up to `children`.
StageBounds parse_stage_sizes(const std::string& spec, size_t children, int stages);

// Checks bounds against the model: stages + 1 increasing entries from 0 to model.size().
void check_stage_bounds(const StageBounds& bounds, size_t children);

// "--stages" as a user gives it: "params" (default), "time", or an explicit list. `input` is
// used by "time" only.
StageBounds partition_model(const std::string& how, Sequential& model, int stages, const Tensor& input,
                            Communicator* comm = nullptr);

// Moves stage `stage`'s children out of `model` into a new Sequential whose children keep their
// positions in the full model as names ("4", "5", ...), so param names match the unsplit model's.
// The rest of the model can then be freed. Stage 0 is told that nobody needs its input gradient.
std::unique_ptr<Sequential> take_stage(Sequential& model, const StageBounds& bounds, int stage);

// One line per stage: "stage 0: children 0-3 (Flatten, Linear(784->512), ...), 401920 params".
std::string describe_stages(Sequential& model, const StageBounds& bounds);

}  // namespace tern
