// A weight split as on-device training keeps a partly trained layer (cpu::Int8SplitWeight): the
// model's rows, new rows for some channels in a random order, and the same weight assembled into
// one array, so a kernel's split form can be checked against its plain form on the assembled one.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/cpu/int8_conv.h"
#include "runtime/rng.h"

namespace tern::testing {

struct SplitWeight {
  std::vector<int8_t> frozen, trained, assembled;
  std::vector<int32_t> slot;
  int64_t row_elems = 0;

  // `frozen` is [c_out, row_elems]; about a third of the channels (at least one) get trained rows.
  SplitWeight(Rng& rng, std::vector<int8_t> model, int32_t c_out) : frozen(std::move(model)) {
    row_elems = static_cast<int64_t>(frozen.size()) / c_out;
    std::vector<int32_t> channels(static_cast<size_t>(c_out));
    for (int32_t c = 0; c < c_out; ++c) channels[static_cast<size_t>(c)] = c;
    rng.shuffle(channels);
    channels.resize(static_cast<size_t>(c_out / 3 + 1));
    slot.assign(static_cast<size_t>(c_out), -1);
    assembled = frozen;
    for (size_t j = 0; j < channels.size(); ++j) {
      slot[static_cast<size_t>(channels[j])] = static_cast<int32_t>(j);
      for (int64_t e = 0; e < row_elems; ++e) {
        const auto v = static_cast<int8_t>(static_cast<int>(rng.below(255)) - 127);
        trained.push_back(v);
        assembled[static_cast<size_t>(channels[j] * row_elems + e)] = v;
      }
    }
  }

  cpu::Int8SplitWeight split() const { return {frozen.data(), trained.data(), slot.data(), row_elems}; }
};

}  // namespace tern::testing
