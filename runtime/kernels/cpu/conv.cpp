#include "runtime/kernels/cpu/conv.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <oneapi/dnnl/dnnl.hpp>
#include <sstream>
#include <utility>
#include <vector>

#include "runtime/error.h"

namespace tern {

double Conv2dShape::flops() const {
  return 2.0 * static_cast<double>(y_numel()) * static_cast<double>((c_in / groups) * kh * kw);
}

std::string Conv2dShape::str() const {
  std::ostringstream out;
  out << "n=" << n << " c_in=" << c_in << " " << h << "x" << w << " -> c_out=" << c_out << " k=" << kh << "x"
      << kw << " s=" << stride_h << "x" << stride_w << " p=" << pad_h << "x" << pad_w << " g=" << groups;
  return out.str();
}

namespace cpu {
namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto f32 = memory::data_type::f32;

// One CPU engine for the whole process. Creating one is not free, it is never modified after
// construction, and oneDNN allows creating primitives on it from any thread, so a function-local
// static is safe; each plan still owns its own stream.
const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Execution failures cannot come from the caller: every argument was fixed and checked when the
// plan was built. A failure here is a broken invariant, and kernels do not throw, so stop loudly.
void check_exec(dnnl_status_t status, const char* what) {
  if (status == dnnl_success) return;
  std::fprintf(stderr, "tern: oneDNN %s failed with status %d\n", what, static_cast<int>(status));
  std::abort();
}

// Which primitives run in oneDNN's blocked layouts. Blocked 3x3 kernels run 1.5-4x faster than
// the plain (im2col + GEMM) ones on every shape measured (bench/conv_layouts.cpp, one thread),
// conversions included, with two exceptions:
// - backward data with few input channels per group: oneDNN pads the gradient's channels up to
//   its 16-wide block and runs up to 7x slower than plain (1->32 channels at batch 64: 4.4 ms vs
//   0.6 ms). Depthwise convolutions have a dedicated blocked kernel that stays fast.
// - pointwise (1x1) convolutions over many pixels: a plain 1x1 convolution is one GEMM, and the
//   conversions cost as much as the arithmetic saved (96->24 channels on 32x32: 3.9 ms plain vs
//   8.2 ms blocked forward). Their weight gradient still gains from blocking while a channel
//   count is small (GEMMs with a dimension under 32 run poorly).
struct LayoutChoice {
  bool forward, backward_data, backward_weights;
};

LayoutChoice choose_layouts(const Conv2dShape& s, Conv2dLayout layout) {
  if (layout == Conv2dLayout::blocked) return {true, true, true};
  if (layout == Conv2dLayout::plain) return {false, false, false};
  const bool depthwise = s.groups > 1 && s.groups == s.c_in;
  const bool pointwise = s.kh == 1 && s.kw == 1 && s.groups == 1 && s.out_h() * s.out_w() >= 64;
  const bool narrow = std::min(s.c_in, s.c_out) < 32;
  return {!pointwise, !pointwise && (depthwise || s.c_in / s.groups >= 8), !pointwise || narrow};
}

// A primitive (convolution or reorder) with its argument list, built once so that a call neither
// builds a map nor allocates.
struct Step {
  dnnl::primitive prim;
  std::vector<dnnl_exec_arg_t> args;
};

}  // namespace

struct Conv2dPlan::Impl {
  Conv2dShape shape;
  dnnl::stream stream;
  dnnl::primitive_attr attr;  // user-managed scratchpad: the plan owns it, no per-call allocation

  // The caller's tensors in plain layout; their data handles are set at each call.
  memory x, w, b, y, dy, dx, dw, db;
  // Staging buffers in the primitives' layouts, shared by role (activation in, weights,
  // activation out) and layout. Within one primitive each role occurs once, and the calls run
  // their steps in sequence, so sharing by role never overwrites a value still needed.
  struct Staged {
    int role;
    memory mem;
  };
  std::vector<Staged> staging;
  memory scratchpad;  // one buffer, sized for the hungriest primitive
  std::vector<memory> scratchpad_views;
  std::vector<float> zero_bias, unused_dbias;

  std::vector<Step> fwd_steps, bwd_data_steps, bwd_weights_steps, backward_steps;
  bool fwd_blocked = false, bwd_data_blocked = false, bwd_weights_blocked = false;

  memory staged(int role, const memory::desc& md) {
    for (const Staged& s : staging)
      if (s.role == role && s.mem.get_desc() == md) return s.mem;
    staging.push_back({role, memory(md, cpu_engine())});
    return staging.back().mem;
  }

  // The memory a primitive should read for `user` in layout `md`; appends the conversion to
  // `steps` when the layouts differ.
  memory input(const memory& user, const memory::desc& md, int role, std::vector<Step>& steps,
               bool* converted) {
    if (md == user.get_desc()) return user;
    memory inner = staged(role, md);
    steps.push_back(reorder_step(user, inner));
    *converted = true;
    return inner;
  }

  // The memory a primitive should write for `user`; the conversion back goes to `after`.
  memory output(const memory& user, const memory::desc& md, int role, std::vector<Step>& after,
                bool* converted) {
    if (md == user.get_desc()) return user;
    memory inner = staged(role, md);
    after.push_back(reorder_step(inner, user));
    *converted = true;
    return inner;
  }

  Step reorder_step(const memory& from, const memory& to) {
    dnnl::reorder::primitive_desc pd(from, to, attr);
    Step step{dnnl::reorder(pd), {{DNNL_ARG_FROM, from.get()}, {DNNL_ARG_TO, to.get()}}};
    add_scratchpad(pd.scratchpad_desc(), step);
    return step;
  }

  void add_scratchpad(const memory::desc& md, Step& step) {
    if (md.get_size() == 0) return;
    scratchpad_views.push_back(memory(md, cpu_engine(), DNNL_MEMORY_NONE));  // set in finish()
    step.args.push_back({DNNL_ARG_SCRATCHPAD, scratchpad_views.back().get()});
  }

  // Allocates the shared scratchpad and points every primitive's view of it there.
  void finish() {
    size_t bytes = 0;
    for (const memory& v : scratchpad_views) bytes = std::max(bytes, v.get_desc().get_size());
    if (bytes == 0) return;
    scratchpad =
        memory(memory::desc({static_cast<memory::dim>(bytes)}, memory::data_type::u8, Tag::x), cpu_engine());
    for (memory& v : scratchpad_views) v.set_data_handle(scratchpad.get_data_handle());
  }

  void run(const std::vector<Step>& steps, const char* what) {
    for (const Step& s : steps)
      check_exec(
          dnnl_primitive_execute(s.prim.get(), stream.get(), static_cast<int>(s.args.size()), s.args.data()),
          what);
    check_exec(dnnl_stream_wait(stream.get()), what);
  }

  static void bind(const memory& m, const void* data) {
    // oneDNN takes non-const handles for every argument; inputs are only read.
    check_exec(dnnl_memory_set_data_handle_v2(m.get(), const_cast<void*>(data), nullptr), "set_data_handle");
  }

  explicit Impl(const Conv2dShape& s, Conv2dLayout layout);
};

namespace {
enum Role { kActivationIn = 0, kWeights = 1, kActivationOut = 2 };
}  // namespace

Conv2dPlan::Impl::Impl(const Conv2dShape& s, Conv2dLayout layout) : shape(s), stream(cpu_engine()) {
  const auto& eng = cpu_engine();
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  zero_bias.assign(static_cast<size_t>(s.c_out), 0.0f);
  unused_dbias.assign(static_cast<size_t>(s.c_out), 0.0f);

  const memory::dims x_dims{s.n, s.c_in, s.h, s.w}, y_dims{s.n, s.c_out, s.out_h(), s.out_w()};
  // Grouped weights are the same memory seen as 5-D [groups, c_out/g, c_in/g, kh, kw].
  const memory::dims w_dims = s.groups == 1
                                  ? memory::dims{s.c_out, s.c_in, s.kh, s.kw}
                                  : memory::dims{s.groups, s.c_out / s.groups, s.c_in / s.groups, s.kh, s.kw};
  const memory::desc x_md(x_dims, f32, Tag::nchw), y_md(y_dims, f32, Tag::nchw),
      w_md(w_dims, f32, s.groups == 1 ? Tag::oihw : Tag::goihw), b_md({s.c_out}, f32, Tag::x);
  const memory::desc x_any(x_dims, f32, Tag::any), y_any(y_dims, f32, Tag::any), w_any(w_dims, f32, Tag::any);
  for (memory* m : {&x, &dx}) *m = memory(x_md, eng, DNNL_MEMORY_NONE);
  for (memory* m : {&y, &dy}) *m = memory(y_md, eng, DNNL_MEMORY_NONE);
  for (memory* m : {&w, &dw}) *m = memory(w_md, eng, DNNL_MEMORY_NONE);
  for (memory* m : {&b, &db}) *m = memory(b_md, eng, DNNL_MEMORY_NONE);

  const memory::dims strides{s.stride_h, s.stride_w}, pad{s.pad_h, s.pad_w};
  const auto algo = dnnl::algorithm::convolution_direct;
  // Symmetric padding on both sides is right: oneDNN sizes the output with the same floor
  // division, so padding rows beyond the last window are simply never read.
  auto fwd_pd = [&](bool blocked) {
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, algo, blocked ? x_any : x_md,
                                      blocked ? w_any : w_md, b_md, blocked ? y_any : y_md, strides, pad,
                                      pad);
    return dnnl::convolution_forward::primitive_desc(d, attr, eng);
  };
  const LayoutChoice blocked = choose_layouts(s, layout);
  const auto fpd = fwd_pd(blocked.forward);
  // The backward primitives take a forward primitive descriptor of their own layout as a hint.
  auto hint = [&](bool b) { return b == blocked.forward ? fpd : fwd_pd(b); };

  // Forward: convert x and w in, y out.
  {
    std::vector<Step> after;
    memory xi = input(x, fpd.src_desc(), kActivationIn, fwd_steps, &fwd_blocked);
    memory wi = input(w, fpd.weights_desc(), kWeights, fwd_steps, &fwd_blocked);
    memory yi = output(y, fpd.dst_desc(), kActivationOut, after, &fwd_blocked);
    Step conv{dnnl::convolution_forward(fpd),
              {{DNNL_ARG_SRC, xi.get()},
               {DNNL_ARG_WEIGHTS, wi.get()},
               {DNNL_ARG_BIAS, b.get()},
               {DNNL_ARG_DST, yi.get()}}};
    add_scratchpad(fpd.scratchpad_desc(), conv);
    fwd_steps.push_back(std::move(conv));
    for (Step& st : after) fwd_steps.push_back(std::move(st));
  }

  // Backward data: convert dy and w in, dx out.
  memory dy_for_data;
  {
    const bool b = blocked.backward_data;
    dnnl::convolution_backward_data::desc d(algo, b ? x_any : x_md, b ? w_any : w_md, b ? y_any : y_md,
                                            strides, pad, pad);
    dnnl::convolution_backward_data::primitive_desc pd(d, attr, eng, hint(b));
    std::vector<Step> after;
    dy_for_data = input(dy, pd.diff_dst_desc(), kActivationOut, bwd_data_steps, &bwd_data_blocked);
    memory wi = input(w, pd.weights_desc(), kWeights, bwd_data_steps, &bwd_data_blocked);
    memory dxi = output(dx, pd.diff_src_desc(), kActivationIn, after, &bwd_data_blocked);
    Step conv{dnnl::convolution_backward_data(pd),
              {{DNNL_ARG_DIFF_DST, dy_for_data.get()},
               {DNNL_ARG_WEIGHTS, wi.get()},
               {DNNL_ARG_DIFF_SRC, dxi.get()}}};
    add_scratchpad(pd.scratchpad_desc(), conv);
    bwd_data_steps.push_back(std::move(conv));
    for (Step& st : after) bwd_data_steps.push_back(std::move(st));
  }

  // Backward weights: convert x and dy in, dw out; the bias gradient stays plain.
  memory dy_for_weights;
  size_t dy_conversions = 0;
  {
    const bool b = blocked.backward_weights;
    dnnl::convolution_backward_weights::desc d(algo, b ? x_any : x_md, b ? w_any : w_md, b_md,
                                               b ? y_any : y_md, strides, pad, pad);
    dnnl::convolution_backward_weights::primitive_desc pd(d, attr, eng, hint(b));
    std::vector<Step> after;
    memory xi = input(x, pd.src_desc(), kActivationIn, bwd_weights_steps, &bwd_weights_blocked);
    const size_t before_dy = bwd_weights_steps.size();
    dy_for_weights = input(dy, pd.diff_dst_desc(), kActivationOut, bwd_weights_steps, &bwd_weights_blocked);
    dy_conversions = bwd_weights_steps.size() - before_dy;
    memory dwi = output(dw, pd.diff_weights_desc(), kWeights, after, &bwd_weights_blocked);
    Step conv{dnnl::convolution_backward_weights(pd),
              {{DNNL_ARG_SRC, xi.get()},
               {DNNL_ARG_DIFF_DST, dy_for_weights.get()},
               {DNNL_ARG_DIFF_WEIGHTS, dwi.get()},
               {DNNL_ARG_DIFF_BIAS, db.get()}}};
    add_scratchpad(pd.scratchpad_desc(), conv);
    bwd_weights_steps.push_back(std::move(conv));
    for (Step& st : after) bwd_weights_steps.push_back(std::move(st));
  }

  // Combined backward: data then weights. When both primitives read dy from the same staging
  // buffer (same layout), backward data has already converted it; nothing in between writes it.
  backward_steps = bwd_data_steps;
  const bool dy_shared = dy_conversions == 1 && dy_for_data.get() == dy_for_weights.get();
  for (const Step& st : bwd_weights_steps) {
    const bool is_dy_conversion =
        st.args.size() >= 2 && st.args[0].arg == DNNL_ARG_FROM && st.args[0].memory == dy.get();
    if (dy_shared && is_dy_conversion) continue;
    backward_steps.push_back(st);
  }

  finish();
}

Conv2dPlan::Conv2dPlan(const Conv2dShape& s, Conv2dLayout layout) {
  TERN_CHECK(s.n > 0 && s.c_in > 0 && s.h > 0 && s.w > 0 && s.c_out > 0 && s.kh > 0 && s.kw > 0 &&
                 s.stride_h > 0 && s.stride_w > 0 && s.pad_h >= 0 && s.pad_w >= 0 && s.groups > 0,
             "conv2d: sizes, kernel, stride and groups must be positive and padding non-negative, "
             "got ",
             s.str());
  TERN_CHECK(s.c_in % s.groups == 0 && s.c_out % s.groups == 0, "conv2d: groups=", s.groups,
             " must divide c_in=", s.c_in, " and c_out=", s.c_out);
  TERN_CHECK(s.h + 2 * s.pad_h >= s.kh && s.w + 2 * s.pad_w >= s.kw, "conv2d: the ", s.kh, "x", s.kw,
             " kernel does not fit the padded ", s.h, "x", s.w, " input (", s.str(), ")");
  try {
    impl_ = std::make_unique<Impl>(s, layout);
  } catch (const dnnl::error& e) {
    throw Error(
        detail::concat("conv2d: oneDNN could not build the primitives for ", s.str(), ": ", e.what()));
  }
}

Conv2dPlan::~Conv2dPlan() = default;
Conv2dPlan::Conv2dPlan(Conv2dPlan&&) noexcept = default;
Conv2dPlan& Conv2dPlan::operator=(Conv2dPlan&&) noexcept = default;

const Conv2dShape& Conv2dPlan::shape() const { return impl_->shape; }
bool Conv2dPlan::forward_blocked() const { return impl_->fwd_blocked; }
bool Conv2dPlan::backward_data_blocked() const { return impl_->bwd_data_blocked; }
bool Conv2dPlan::backward_weights_blocked() const { return impl_->bwd_weights_blocked; }

void Conv2dPlan::forward(const float* x, const float* w, const float* bias, float* y) noexcept {
  Impl& p = *impl_;
  Impl::bind(p.x, x);
  Impl::bind(p.w, w);
  Impl::bind(p.b, bias != nullptr ? bias : p.zero_bias.data());
  Impl::bind(p.y, y);
  p.run(p.fwd_steps, "convolution forward");
}

void Conv2dPlan::backward_data(const float* dy, const float* w, float* dx) noexcept {
  Impl& p = *impl_;
  Impl::bind(p.dy, dy);
  Impl::bind(p.w, w);
  Impl::bind(p.dx, dx);
  p.run(p.bwd_data_steps, "convolution backward data");
}

void Conv2dPlan::backward_weights(const float* x, const float* dy, float* dw, float* dbias) noexcept {
  Impl& p = *impl_;
  Impl::bind(p.x, x);
  Impl::bind(p.dy, dy);
  Impl::bind(p.dw, dw);
  Impl::bind(p.db, dbias != nullptr ? dbias : p.unused_dbias.data());
  p.run(p.bwd_weights_steps, "convolution backward weights");
}

void Conv2dPlan::backward(const float* x, const float* dy, const float* w, float* dx, float* dw,
                          float* dbias) noexcept {
  Impl& p = *impl_;
  Impl::bind(p.x, x);
  Impl::bind(p.dy, dy);
  Impl::bind(p.w, w);
  Impl::bind(p.dx, dx);
  Impl::bind(p.dw, dw);
  Impl::bind(p.db, dbias != nullptr ? dbias : p.unused_dbias.data());
  p.run(p.backward_steps, "convolution backward");
}

}  // namespace cpu
}  // namespace tern
