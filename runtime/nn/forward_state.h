// ForwardState: one module's forward cache moved out of the module, so that several forwards
// can wait for their backward at once (pipeline micro-batches, runtime/train/pipeline.h).
#pragma once

#include <any>
#include <cstddef>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/error.h"
#include "runtime/tensor/tensor.h"

namespace tern {

// Opaque to everyone but the module that fills it (see Module::swap_forward_state). A module
// swaps the members its forward() saved for backward() with the state's; the first swap
// creates default-constructed ones (undefined tensors, empty shapes, false, 0, null).
class ForwardState {
 public:
  template <typename... Fields>
  void swap(Fields&... fields) {
    using Tuple = std::tuple<std::decay_t<Fields>...>;
    if (!value_.has_value()) {
      value_.emplace<Tuple>();
      visit_ = &visit_tuple<Tuple>;
    }
    Tuple* held = std::any_cast<Tuple>(&value_);
    TERN_CHECK(held != nullptr, "ForwardState: a module swapped fields of other types than before");
    swap_each(*held, std::index_sequence_for<Fields...>{}, fields...);
  }

  // What Module's default swap_forward_state() does: the module has not said what it caches, so
  // keeping several of its forwards in flight would give wrong gradients.
  void mark_unsupported() { unsupported_ = true; }
  bool supported() const { return !unsupported_; }

  // Calls f on every tensor held (for memory accounting), and returns the bytes of the other
  // containers held (std::vector payloads; small fields are not counted).
  size_t visit_tensors(const std::function<void(const Tensor&)>& f) const {
    return visit_ ? visit_(value_, f) : 0;
  }

 private:
  template <typename Tuple, size_t... I, typename... Fields>
  static void swap_each(Tuple& held, std::index_sequence<I...>, Fields&... fields) {
    using std::swap;
    (swap(std::get<I>(held), fields), ...);
  }

  template <typename T>
  static size_t visit_one(const T& v, const std::function<void(const Tensor&)>& f) {
    if constexpr (std::is_same_v<T, Tensor>) {
      f(v);
    } else if constexpr (requires {
                           typename T::value_type;
                           v.size();
                           v.data();
                         }) {
      if constexpr (!std::is_same_v<T, Shape>) return v.size() * sizeof(typename T::value_type);
    }
    return 0;
  }

  template <typename Tuple>
  static size_t visit_tuple(const std::any& value, const std::function<void(const Tensor&)>& f) {
    const Tuple& t = std::any_cast<const Tuple&>(value);
    return std::apply([&f](const auto&... v) { return (size_t{0} + ... + visit_one(v, f)); }, t);
  }

  std::any value_;
  size_t (*visit_)(const std::any&, const std::function<void(const Tensor&)>&) = nullptr;
  bool unsupported_ = false;
};

}  // namespace tern
