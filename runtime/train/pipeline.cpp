#include "runtime/train/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <tuple>

#include "runtime/nn/dropout.h"

namespace tern {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Messages on a link channel: micro-batch i's tensor under tag i, the handshake under its own tag
// (within MPI's smallest guaranteed tag range, 32767).
constexpr int kHandshakeTag = 32767;
constexpr int kMaxMicroBatches = 32000;

// The handshake: who sends, what both sides must agree on, and the shape of what follows.
constexpr int64_t kMagic = 0x7465726e70697065;  // "ternpipe"
constexpr int kMaxDims = 8;
enum HeaderField {
  kMagicField,
  kFromStage,
  kStages,
  kMicroBatches,
  kSchedule,
  kDirection,
  kDType,
  kNdim,
  kDims
};
constexpr int64_t kHeaderSize = kDims + kMaxDims;

const char* direction_name(int64_t d) { return d == 0 ? "activations" : "gradients"; }

Tensor make_header(int from, int stages, int micro_batches, ScheduleKind schedule, int direction,
                   const Tensor& t) {
  TERN_CHECK(t.ndim() <= kMaxDims, "pipeline stage ", from, ": cannot send ", t.str(), " (more than ",
             kMaxDims, " dims)");
  Tensor h = Tensor::zeros({kHeaderSize}, DType::i64);
  int64_t* p = h.data<int64_t>();
  p[kMagicField] = kMagic;
  p[kFromStage] = from;
  p[kStages] = stages;
  p[kMicroBatches] = micro_batches;
  p[kSchedule] = static_cast<int64_t>(schedule);
  p[kDirection] = direction;
  p[kDType] = static_cast<int64_t>(t.dtype());
  p[kNdim] = t.ndim();
  for (int d = 0; d < t.ndim(); ++d) p[kDims + d] = t.dim(d);
  return h;
}

// Checks a received handshake against this stage's view; returns the announced shape and dtype.
std::pair<Shape, DType> check_header(const Tensor& h, int me, int from, int stages, int micro_batches,
                                     ScheduleKind schedule, int direction) {
  const int64_t* p = h.data<int64_t>();
  const char* what = direction_name(direction);
  TERN_CHECK(p[kMagicField] == kMagic, "pipeline stage ", me, ": the first message of stage ", from,
             " is not a pipeline handshake (do all ranks run the same program with the same flags?)");
  TERN_CHECK(p[kFromStage] == from && p[kDirection] == direction, "pipeline stage ", me, ": expected the ",
             what, " handshake of stage ", from, ", got the ", direction_name(p[kDirection]), " of stage ",
             p[kFromStage]);
  const auto their_schedule = static_cast<ScheduleKind>(p[kSchedule]);
  TERN_CHECK(p[kStages] == stages && p[kMicroBatches] == micro_batches && their_schedule == schedule,
             "pipeline stages ", me, " and ", from, " disagree: stage ", me, " runs ", stages, " stages, ",
             micro_batches, " micro-batches, schedule ", schedule_name(schedule), "; stage ", from, " runs ",
             p[kStages], " stages, ", p[kMicroBatches], " micro-batches, schedule ",
             p[kSchedule] >= 0 && p[kSchedule] <= 2 ? schedule_name(their_schedule) : "?");
  TERN_CHECK(p[kNdim] >= 1 && p[kNdim] <= kMaxDims, "pipeline stage ", me, ": stage ", from, " announces ",
             what, " with ", p[kNdim], " dims");
  Shape shape(p + kDims, p + kDims + p[kNdim]);
  for (int64_t d : shape)
    TERN_CHECK(d >= 0, "pipeline stage ", me, ": stage ", from, " announces ", what, " of shape ",
               shape_str(shape));
  return {shape, static_cast<DType>(p[kDType])};
}

// Bytes of the tensors in `states` (views of one storage counted once, at their largest) plus
// the other containers they hold.
size_t held_bytes(const std::vector<ForwardState>& states, const Tensor& extra) {
  std::vector<Tensor> distinct;
  size_t other = 0;
  auto add = [&distinct](const Tensor& t) {
    if (!t.defined()) return;
    for (Tensor& d : distinct) {
      if (d.shares_storage(t)) {
        if (t.nbytes() > d.nbytes()) d = t;
        return;
      }
    }
    distinct.push_back(t);
  };
  for (const ForwardState& s : states) other += s.visit_tensors(add);
  add(extra);
  size_t bytes = other;
  for (const Tensor& t : distinct) bytes += t.nbytes();
  return bytes;
}

}  // namespace

PipelineLayout make_pipeline_layout(Communicator& world, int stages) {
  TERN_CHECK(stages >= 1, "--pipeline-stages must be at least 1, got ", stages);
  TERN_CHECK(world.size() % stages == 0, "--pipeline-stages ", stages, " does not divide the world of ",
             world.size(), " ranks (world size = stages x data-parallel replicas)");
  PipelineLayout l;
  l.stages = stages;
  l.replicas = world.size() / stages;
  l.stage = world.rank() % stages;
  l.replica = world.rank() / stages;
  l.pipeline = world.split(l.replica, l.stage);
  l.data_parallel = world.split(l.stage, l.replica);
  return l;
}

PipelineLoss classification_loss(const std::vector<int32_t>& labels, int micro_batches) {
  TERN_CHECK(micro_batches >= 1 && labels.size() % static_cast<size_t>(micro_batches) == 0,
             "classification_loss: ", labels.size(), " labels do not split into ", micro_batches,
             " micro-batches");
  return [&labels, micro_batches](const Tensor& output, int i, Tensor* doutput) {
    const auto n = static_cast<int64_t>(labels.size()) / micro_batches;
    TERN_CHECK(output.ndim() == 2 && output.dim(0) == n, "classification_loss: micro-batch ", i, " output ",
               output.str(), " for ", n, " labels per micro-batch");
    const std::vector<int32_t> mine(labels.begin() + i * n, labels.begin() + (i + 1) * n);
    return softmax_cross_entropy(output, mine, doutput);
  };
}

Pipeline::Pipeline(Module& stage, Communicator& comm, PipelineOptions options, GradSync* grad_sync)
    : stage_module_(stage),
      comm_(comm),
      options_(options),
      grad_sync_(grad_sync),
      stage_(comm.rank()),
      stages_(comm.size()) {
  const int M = options_.micro_batches;
  TERN_CHECK(M >= 1 && M <= kMaxMicroBatches, "pipeline: micro-batches must be in [1, ", kMaxMicroBatches,
             "], got ", M);
  TERN_CHECK(options_.schedule != ScheduleKind::forward_only,
             "pipeline: the training schedule must be gpipe or 1f1b (forward_step runs forward-only)");
  train_actions_ = make_schedule(options_.schedule, stages_, stage_, M);
  forward_actions_ = make_schedule(ScheduleKind::forward_only, stages_, stage_, M);
  stage_module_.visit([this](Module& m) { modules_.push_back(&m); });

  if (options_.recompute) {
    for (Module* m : modules_) {
      const auto* d = dynamic_cast<const Dropout*>(m);
      TERN_CHECK(d == nullptr || d->p() == 0.0f, "pipeline stage ", stage_, ": recomputation would draw a new mask in ",
                 d->describe(), "'s second forward; train without recompute");
    }
  } else if (peak_in_flight(train_actions_) > 1) {
    // Several forwards wait for their backward: every module must hand over its cache.
    for (Module* m : modules_) {
      ForwardState probe;
      m->swap_forward_state(probe);
      m->swap_forward_state(probe);  // back as it was
      TERN_CHECK(probe.supported(), "pipeline stage ", stage_, ": ", m->describe(),
                 " does not implement Module::swap_forward_state, so ", schedule_name(options_.schedule),
                 " with ", M,
                 " micro-batches cannot keep several of its forwards in flight; implement it (module.h) "
                 "or use recomputation");
    }
    stash_ = true;
  }
  if (grad_sync_) stage_module_.set_grad_ready_hook({});

  // Links: the stages s and s + 1 of link s get two communicators of two ranks (the lower stage
  // is rank 0), one per direction. Every stage takes part in every split, in the same order.
  for (int link = 0; link + 1 < stages_; ++link) {
    const bool on_link = stage_ == link || stage_ == link + 1;
    for (int direction = 0; direction < 2; ++direction) {
      auto c = comm_.split(on_link ? 0 : -1, stage_);
      if (!on_link) continue;
      if (direction == 0) (stage_ == link ? act_to_next_ : act_from_prev_) = std::move(c);
      if (direction == 1) (stage_ == link ? grad_from_next_ : grad_to_prev_) = std::move(c);
    }
  }
}

Pipeline::~Pipeline() {
  if (grad_sync_) stage_module_.set_grad_ready_hook({});
}

PipelineStepStats Pipeline::train_step(const Tensor& input, const PipelineLoss& loss) {
  return run(train_actions_, /*training=*/true, input, loss);
}

PipelineStepStats Pipeline::forward_step(const Tensor& input, const PipelineLoss& loss) {
  return run(forward_actions_, /*training=*/false, input, loss);
}

PipelineStepStats Pipeline::run(const std::vector<Action>& actions, bool training, const Tensor& input,
                                const PipelineLoss& loss) {
  const auto t_step = Clock::now();
  const int M = options_.micro_batches;
  const auto Mz = static_cast<size_t>(M);
  PipelineStepStats st;
  int64_t rows_per_mb = 0;
  if (first_stage()) {
    TERN_CHECK(input.defined() && input.ndim() >= 1 && input.dim(0) > 0 && input.dim(0) % M == 0,
               "pipeline stage 0: the batch must have a positive number of rows divisible by the ", M,
               " micro-batches, got ", input.defined() ? input.str() : std::string("no tensor"));
    rows_per_mb = input.dim(0) / M;
  }
  TERN_CHECK(!last_stage() || loss, "pipeline stage ", stage_, ": the last stage needs a loss function");
  // Only the last micro-batch's backward announces finished gradients (see the constructor).
  if (training && grad_sync_) stage_module_.set_grad_ready_hook({});

  std::vector<Tensor> in(Mz), out(Mz), dy(Mz), dx(Mz);
  std::vector<std::vector<ForwardState>> states(Mz);
  std::vector<size_t> held(Mz, 0);
  size_t held_now = 0;
  int in_flight = 0;
  Shape out_shape, act_shape;
  DType act_dtype = DType::f32;
  bool act_header_sent = false, grad_header_sent = false, grad_header_checked = false;
  size_t last_backward = actions.size();
  for (size_t k = 0; k < actions.size(); ++k)
    if (actions[k].kind == ActionKind::backward) last_backward = k;

  // Compute errors name the stage and micro-batch; communication errors already name the peer.
  auto compute = [this](int i, const char* what, const auto& f) {
    try {
      f();
    } catch (const CommError&) {
      throw;
    } catch (const Error& e) {
      throw Error(detail::concat("pipeline stage ", stage_, ", micro-batch ", i, " ", what, ": ", e.what()));
    }
  };
  auto swap_all = [this](std::vector<ForwardState>& s) {
    s.resize(modules_.size());
    for (size_t m = 0; m < modules_.size(); ++m) modules_[m]->swap_forward_state(s[m]);
  };
  auto receive = [&st](Communicator& c, Tensor& t, int tag) {
    const auto t0 = Clock::now();
    c.recv(t, 1 - c.rank(), tag);
    st.wait_seconds += since(t0);
  };

  for (size_t k = 0; k < actions.size(); ++k) {
    const Action a = actions[k];
    const int i = a.micro_batch;
    const auto iz = static_cast<size_t>(i);
    switch (a.kind) {
      case ActionKind::recv_activation: {
        if (act_shape.empty()) {
          Tensor h = Tensor::empty({kHeaderSize}, DType::i64);
          receive(*act_from_prev_, h, kHandshakeTag);
          std::tie(act_shape, act_dtype) =
              check_header(h, stage_, stage_ - 1, stages_, M, options_.schedule, 0);
        }
        in[iz] = Tensor::empty(act_shape, act_dtype);
        receive(*act_from_prev_, in[iz], i);
        break;
      }
      case ActionKind::forward: {
        const auto t0 = Clock::now();
        const Tensor x = first_stage() ? input.slice(i * rows_per_mb, (i + 1) * rows_per_mb) : in[iz];
        Tensor y;
        compute(i, "forward", [&] { y = stage_module_.forward(x); });
        if (out_shape.empty()) out_shape = y.shape();
        TERN_CHECK(y.shape() == out_shape, "pipeline stage ", stage_, ": micro-batch ", i, "'s output ",
                   y.str(), " differs from micro-batch 0's ", shape_str(out_shape));
        if (last_stage()) {
          Tensor d;
          LossResult r{};
          compute(i, "loss", [&] { r = loss(y, i, training ? &d : nullptr); });
          st.loss += static_cast<double>(r.loss) / M;
          st.correct += r.correct;
          if (training) {
            TERN_CHECK(d.defined() && d.dtype() == DType::f32 && d.shape() == y.shape(), "pipeline stage ",
                       stage_, ": the loss gradient of micro-batch ", i, " is ",
                       d.defined() ? d.str() : std::string("missing"), ", expected f32",
                       shape_str(y.shape()));
            float* p = d.f32();
            const float scale = 1.0f / static_cast<float>(M);
            for (int64_t e = 0; e < d.numel(); ++e) p[e] *= scale;
            dy[iz] = d;
          }
        } else {
          out[iz] = y;
        }
        if (training) {
          if (options_.recompute) {
            // Held: the inputs, and the modules' caches of the latest forward until the next one
            // replaces them (beyond its input).
            in[iz] = x;
            std::vector<ForwardState> none, latest;
            held[iz] = held_bytes(none, x) + (dy[iz].defined() ? dy[iz].nbytes() : 0);
            swap_all(latest);
            const size_t cache = held_bytes(latest, x) - held_bytes(none, x);
            swap_all(latest);
            st.peak_held_bytes = std::max(st.peak_held_bytes, held_now + held[iz] + cache);
          } else {
            swap_all(states[iz]);  // the module caches leave the modules
            held[iz] = held_bytes(states[iz], dy[iz]);
            if (!stash_) swap_all(states[iz]);  // one in flight: they may stay where they are
          }
          held_now += held[iz];
          st.peak_held_bytes = std::max(st.peak_held_bytes, held_now);
          st.peak_in_flight = std::max(st.peak_in_flight, ++in_flight);
        }
        if (!(training && options_.recompute)) in[iz] = Tensor();
        st.compute_seconds += since(t0);
        break;
      }
      case ActionKind::send_activation: {
        if (!act_header_sent) {
          act_to_next_->send(make_header(stage_, stages_, M, options_.schedule, 0, out[iz]), 1,
                             kHandshakeTag);
          act_header_sent = true;
        }
        act_to_next_->send(out[iz], 1, i);
        out[iz] = Tensor();
        break;
      }
      case ActionKind::recv_grad: {
        if (!grad_header_checked) {
          Tensor h = Tensor::empty({kHeaderSize}, DType::i64);
          receive(*grad_from_next_, h, kHandshakeTag);
          const auto [shape, dtype] = check_header(h, stage_, stage_ + 1, stages_, M, options_.schedule, 1);
          TERN_CHECK(shape == out_shape && dtype == DType::f32, "pipeline stage ", stage_, ": stage ",
                     stage_ + 1, " sends gradients ", std::string(dtype_name(dtype)), shape_str(shape),
                     " for this stage's output f32", shape_str(out_shape),
                     ": the stages' layers do not fit together");
          grad_header_checked = true;
        }
        dy[iz] = Tensor::empty(out_shape);
        receive(*grad_from_next_, dy[iz], i);
        break;
      }
      case ActionKind::backward: {
        const auto t0 = Clock::now();
        if (options_.recompute) {
          // The second forward must leave the running statistics as the first one left them.
          std::vector<Tensor> saved;
          for (Buffer* b : stage_module_.buffers()) saved.push_back(b->value.clone());
          compute(i, "recomputed forward", [&] { stage_module_.forward(in[iz]); });
          size_t b = 0;
          for (Buffer* buf : stage_module_.buffers()) buf->value.copy_from(saved[b++]);
          in[iz] = Tensor();
        } else if (stash_) {
          swap_all(states[iz]);  // micro-batch i's caches back into the modules
        }
        const bool sync_now = grad_sync_ != nullptr && k == last_backward;
        if (sync_now) {
          GradSync* gs = grad_sync_;
          stage_module_.set_grad_ready_hook([gs](Param& p) { gs->mark_ready(p); });
        }
        Tensor g;
        compute(i, "backward", [&] { g = stage_module_.run_backward(dy[iz]); });
        if (sync_now) stage_module_.set_grad_ready_hook({});
        if (stash_) {
          swap_all(states[iz]);  // and out again, to be freed with the state
          states[iz].clear();
        }
        dy[iz] = Tensor();
        held_now -= held[iz];
        --in_flight;
        if (!first_stage()) {
          TERN_CHECK(g.defined(), "pipeline stage ", stage_, ": the backward of micro-batch ", i,
                     " returned no input gradient");
          dx[iz] = g;
        }
        st.compute_seconds += since(t0);
        break;
      }
      case ActionKind::send_grad: {
        if (!grad_header_sent) {
          grad_to_prev_->send(make_header(stage_, stages_, M, options_.schedule, 1, dx[iz]), 0,
                              kHandshakeTag);
          grad_header_sent = true;
        }
        grad_to_prev_->send(dx[iz], 0, i);
        dx[iz] = Tensor();
        break;
      }
    }
  }
  if (training && grad_sync_) grad_sync_->wait();
  st.samples = first_stage() ? input.dim(0) : (act_shape.empty() ? 0 : act_shape[0] * M);
  st.seconds = since(t_step);
  return st;
}

}  // namespace tern
