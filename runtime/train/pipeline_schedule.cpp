#include "runtime/train/pipeline_schedule.h"

#include <algorithm>
#include <deque>
#include <map>
#include <numeric>
#include <sstream>
#include <utility>

#include "runtime/error.h"

namespace tern {

ScheduleKind parse_schedule(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::gpipe;
  if (name == "1f1b") return ScheduleKind::one_f_one_b;
  if (name == "forward") return ScheduleKind::forward_only;
  throw Error("unknown pipeline schedule '" + name + "' (known: gpipe, 1f1b)");
}

const char* schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::gpipe:
      return "gpipe";
    case ScheduleKind::one_f_one_b:
      return "1f1b";
    case ScheduleKind::forward_only:
      return "forward";
  }
  return "?";
}

std::string action_str(const Action& a) {
  const char* k = "?";
  switch (a.kind) {
    case ActionKind::recv_activation:
      k = "RA";
      break;
    case ActionKind::forward:
      k = "F";
      break;
    case ActionKind::send_activation:
      k = "SA";
      break;
    case ActionKind::recv_grad:
      k = "RG";
      break;
    case ActionKind::backward:
      k = "B";
      break;
    case ActionKind::send_grad:
      k = "SG";
      break;
  }
  std::string out(k);
  out += std::to_string(a.micro_batch);
  return out;
}

std::string actions_str(const std::vector<Action>& actions) {
  std::string out;
  for (const Action& a : actions) {
    if (!out.empty()) out += ' ';
    out += action_str(a);
  }
  return out;
}

namespace {

// One micro-batch's forward with the communication around it, then the same for its backward.
void add_forward(std::vector<Action>& out, int stages, int stage, int i) {
  if (stage > 0) out.push_back({ActionKind::recv_activation, i});
  out.push_back({ActionKind::forward, i});
  if (stage < stages - 1) out.push_back({ActionKind::send_activation, i});
}

void add_backward(std::vector<Action>& out, int stages, int stage, int i) {
  if (stage < stages - 1) out.push_back({ActionKind::recv_grad, i});
  out.push_back({ActionKind::backward, i});
  if (stage > 0) out.push_back({ActionKind::send_grad, i});
}

}  // namespace

std::vector<Action> make_schedule(ScheduleKind kind, int stages, int stage, int micro_batches) {
  TERN_CHECK(stages >= 1 && stage >= 0 && stage < stages, "make_schedule: stage ", stage, " of ", stages,
             " stages");
  TERN_CHECK(micro_batches >= 1, "make_schedule: micro_batches must be at least 1, got ", micro_batches);
  std::vector<Action> out;
  const int M = micro_batches;
  switch (kind) {
    case ScheduleKind::forward_only:
      for (int i = 0; i < M; ++i) add_forward(out, stages, stage, i);
      break;
    case ScheduleKind::gpipe:
      for (int i = 0; i < M; ++i) add_forward(out, stages, stage, i);
      for (int i = 0; i < M; ++i) add_backward(out, stages, stage, i);
      break;
    case ScheduleKind::one_f_one_b: {
      // Stage s's first backward needs the gradient of micro-batch 0, which comes back after the
      // P - s - 1 stages after it ran their forwards: until then it runs forwards (warm-up).
      const int warmup = std::min(stages - stage - 1, M);
      for (int i = 0; i < warmup; ++i) add_forward(out, stages, stage, i);
      for (int j = 0; j < M - warmup; ++j) {
        add_forward(out, stages, stage, warmup + j);
        add_backward(out, stages, stage, j);
      }
      for (int j = M - warmup; j < M; ++j) add_backward(out, stages, stage, j);
      break;
    }
  }
  return out;
}

std::vector<std::vector<Action>> make_all_schedules(ScheduleKind kind, int stages, int micro_batches) {
  std::vector<std::vector<Action>> all;
  for (int s = 0; s < stages; ++s) all.push_back(make_schedule(kind, stages, s, micro_batches));
  return all;
}

int peak_in_flight(const std::vector<Action>& actions) {
  int now = 0, peak = 0;
  for (const Action& a : actions) {
    if (a.kind == ActionKind::forward) peak = std::max(peak, ++now);
    if (a.kind == ActionKind::backward) --now;
  }
  return peak;
}

double ideal_bubble(int stages, int micro_batches) {
  return static_cast<double>(stages - 1) / static_cast<double>(micro_batches + stages - 1);
}

double ScheduleSimulation::bubble() const {
  if (busy.empty() || makespan <= 0) return 0;
  double sum = 0;
  for (double b : busy) sum += 1 - b / makespan;
  return sum / static_cast<double>(busy.size());
}

namespace {

// A channel carries one kind of message over one link in one direction: activations from stage
// s to s + 1, or gradients from s + 1 to s. Key: (is_grad, lower stage of the link).
using Channel = std::pair<bool, int>;

struct Message {
  int micro_batch;
  double at;  // when it was sent
};

struct StageState {
  size_t pc = 0;
  double time = 0;
  std::vector<char> forwarded, backwarded, received_act, received_grad, sent_act, sent_grad;
};

}  // namespace

ScheduleSimulation simulate_schedule(const std::vector<std::vector<Action>>& per_stage, double forward_cost,
                                     double backward_cost) {
  ScheduleSimulation sim;
  const int P = static_cast<int>(per_stage.size());
  auto fail = [&sim](int stage, const std::string& what) {
    sim.ok = false;
    sim.error = "stage " + std::to_string(stage) + ": " + what;
    return sim;
  };
  if (P == 0) return fail(0, "no stages");

  // M is the number of forwards of stage 0; every stage must forward exactly 0..M-1.
  int M = 0;
  for (const Action& a : per_stage[0]) M += a.kind == ActionKind::forward;
  if (M == 0) return fail(0, "runs no forward");
  bool any_backward = false;
  for (const auto& list : per_stage)
    for (const Action& a : list) any_backward |= a.kind == ActionKind::backward;

  std::vector<StageState> st(static_cast<size_t>(P));
  for (auto& s : st) {
    for (auto* v :
         {&s.forwarded, &s.backwarded, &s.received_act, &s.received_grad, &s.sent_act, &s.sent_grad})
      v->assign(static_cast<size_t>(M), 0);
  }
  std::map<Channel, std::deque<Message>> channels;
  sim.busy.assign(static_cast<size_t>(P), 0);
  sim.finish.assign(static_cast<size_t>(P), 0);
  sim.peak_in_flight.resize(static_cast<size_t>(P));
  for (int s = 0; s < P; ++s)
    sim.peak_in_flight[static_cast<size_t>(s)] = peak_in_flight(per_stage[static_cast<size_t>(s)]);

  bool progressed = true;
  while (progressed) {
    progressed = false;
    for (int s = 0; s < P; ++s) {
      StageState& me = st[static_cast<size_t>(s)];
      const auto& list = per_stage[static_cast<size_t>(s)];
      // Run this stage until it blocks on a message not sent yet.
      bool waiting = false;
      while (me.pc < list.size() && !waiting) {
        const Action a = list[me.pc];
        const std::string where = action_str(a) + " (action " + std::to_string(me.pc) + ")";
        if (a.micro_batch < 0 || a.micro_batch >= M)
          return fail(s, where + ": micro-batch outside [0, " + std::to_string(M) + ")");
        const auto i = static_cast<size_t>(a.micro_batch);
        switch (a.kind) {
          case ActionKind::recv_activation:
          case ActionKind::recv_grad: {
            const bool grad = a.kind == ActionKind::recv_grad;
            if (grad ? s == P - 1 : s == 0)
              return fail(s, where + ": receives from a stage that does not exist");
            std::vector<char>& got = grad ? me.received_grad : me.received_act;
            if (got[i]) return fail(s, where + ": received twice");
            auto& q = channels[{grad, grad ? s : s - 1}];
            if (q.empty()) {
              waiting = true;  // for a message not sent yet
              break;
            }
            if (q.front().micro_batch != a.micro_batch)
              return fail(s, where + ": the neighbour sent micro-batch " +
                                 std::to_string(q.front().micro_batch) +
                                 " first on this channel (messages must be received in the order sent)");
            me.time = std::max(me.time, q.front().at);
            q.pop_front();
            got[i] = 1;
            break;
          }
          case ActionKind::forward:
            if (me.forwarded[i]) return fail(s, where + ": forward twice");
            if (s > 0 && !me.received_act[i])
              return fail(s, where + ": forward before its input was received");
            me.forwarded[i] = 1;
            me.time += forward_cost;
            sim.busy[static_cast<size_t>(s)] += forward_cost;
            break;
          case ActionKind::backward:
            if (me.backwarded[i]) return fail(s, where + ": backward twice");
            if (!me.forwarded[i]) return fail(s, where + ": backward before forward");
            if (s < P - 1 && !me.received_grad[i])
              return fail(s, where + ": backward before its gradient arrived");
            me.backwarded[i] = 1;
            me.time += backward_cost;
            sim.busy[static_cast<size_t>(s)] += backward_cost;
            break;
          case ActionKind::send_activation:
          case ActionKind::send_grad: {
            const bool grad = a.kind == ActionKind::send_grad;
            if (grad ? s == 0 : s == P - 1) return fail(s, where + ": sends to a stage that does not exist");
            std::vector<char>& sent = grad ? me.sent_grad : me.sent_act;
            if (sent[i]) return fail(s, where + ": sent twice");
            if (grad ? !me.backwarded[i] : !me.forwarded[i])
              return fail(s, where + ": sent before it was computed");
            sent[i] = 1;
            channels[{grad, grad ? s - 1 : s}].push_back({a.micro_batch, me.time});
            break;
          }
        }
        if (waiting) break;
        ++me.pc;
        progressed = true;
      }
      sim.finish[static_cast<size_t>(s)] = me.time;
    }
  }
  for (int s = 0; s < P; ++s) {
    const StageState& me = st[static_cast<size_t>(s)];
    const auto& list = per_stage[static_cast<size_t>(s)];
    if (me.pc < list.size())
      return fail(s, "deadlock: waits forever at " + action_str(list[me.pc]) + " (action " +
                         std::to_string(me.pc) + "), where every stage is blocked on a receive");
    for (int i = 0; i < M; ++i) {
      const auto k = static_cast<size_t>(i);
      if (!me.forwarded[k]) return fail(s, "never runs the forward of micro-batch " + std::to_string(i));
      if (any_backward && !me.backwarded[k])
        return fail(s, "never runs the backward of micro-batch " + std::to_string(i));
      if (s > 0 && !me.received_act[k])
        return fail(s, "never receives the activation of micro-batch " + std::to_string(i));
      if (s < P - 1 && !me.sent_act[k])
        return fail(s, "never sends the activation of micro-batch " + std::to_string(i));
      if (any_backward && s < P - 1 && !me.received_grad[k])
        return fail(s, "never receives the gradient of micro-batch " + std::to_string(i));
      if (any_backward && s > 0 && !me.sent_grad[k])
        return fail(s, "never sends the gradient of micro-batch " + std::to_string(i));
    }
  }
  for (const auto& [channel, q] : channels)
    if (!q.empty())
      return fail(channel.first ? channel.second + 1 : channel.second,
                  std::to_string(q.size()) + " message(s) sent and never received");
  sim.makespan = *std::max_element(sim.finish.begin(), sim.finish.end());
  sim.ok = true;
  return sim;
}

}  // namespace tern
