// PipelineSchedule: what one pipeline stage does in one training step, as a pure list of actions
// (forward micro-batch i, send its activation, receive a gradient, ...). The pipeline runtime
// executes the list; tests and the benchmark inspect and simulate it without a model.
#pragma once

#include <string>
#include <vector>

namespace tern {

enum class ScheduleKind {
  gpipe,         // fill-drain: every forward, then every backward (GPipe)
  one_f_one_b,   // "1f1b": one forward, one backward (PipeDream-flush, Megatron's schedule)
  forward_only,  // evaluation: every forward, no backward
};

// "gpipe", "1f1b" (and "forward" for forward_only); anything else is an Error listing them.
ScheduleKind parse_schedule(const std::string& name);
const char* schedule_name(ScheduleKind kind);

enum class ActionKind {
  recv_activation,  // from stage - 1: the input of micro-batch i
  forward,          // the last stage also computes the loss and its gradient here
  send_activation,  // to stage + 1: the output of micro-batch i
  recv_grad,        // from stage + 1: d loss / d output of micro-batch i
  backward,
  send_grad,  // to stage - 1: d loss / d input of micro-batch i
};

struct Action {
  ActionKind kind;
  int micro_batch;
  bool operator==(const Action&) const = default;
};

// "F3", "B3", "RA3" (recv activation), "SA3", "RG3", "SG3".
std::string action_str(const Action& a);
std::string actions_str(const std::vector<Action>& actions);  // space separated

// The actions of `stage` (0-based) of `stages` for one step of `micro_batches`:
//  gpipe: for each i: [RA i] F i [SA i]; then for each i: [RG i] B i [SG i];
//  1f1b:  w = min(stages - stage - 1, M) warm-up forwards, then M - w pairs of (forward w + j,
//         backward j), then the last w backwards. At most stages - stage micro-batches wait for
//         their backward at any time (GPipe: all M).
// The first stage has no RA/SG, the last no SA/RG. Every send has exactly one matching receive
// on the neighbour, and both sides list each kind of message in micro-batch order, so the
// runtime can carry each (direction, link) on its own channel: with sends that never block the
// caller, the lists cannot deadlock (simulate_schedule proves it for given sizes).
std::vector<Action> make_schedule(ScheduleKind kind, int stages, int stage, int micro_batches);

// The most micro-batches whose forward has run and whose backward has not, at any point.
int peak_in_flight(const std::vector<Action>& actions);

// Executes every stage's list as a discrete-event simulation: a forward costs forward_cost, a
// backward backward_cost, a send is instantaneous and never blocks (its message is available to
// the receiver from then on), a receive waits for its message. It checks that every action is
// legal where it stands (a stage's forward of i after receiving i, backward after forward and
// after receiving its gradient, sends after what they send was computed, no action twice, every
// micro-batch both forward and backward unless forward_only), and that every message is received
// exactly once by the neighbour it was sent to.
struct ScheduleSimulation {
  bool ok = false;
  std::string error;                // what went wrong, naming the stage and action, when !ok
  double makespan = 0;              // when the last stage finished its last action
  std::vector<double> busy;         // per stage, time spent in forward and backward
  std::vector<double> finish;       // per stage, when its last action ended
  std::vector<int> peak_in_flight;  // per stage
  // 1 - (time a stage computes) / makespan, averaged over stages: the pipeline bubble. With
  // equal stages it is (P - 1) / (M + P - 1) for both schedules.
  double bubble() const;
};
ScheduleSimulation simulate_schedule(const std::vector<std::vector<Action>>& per_stage,
                                     double forward_cost = 1, double backward_cost = 2);
// The lists of every stage, for simulate_schedule.
std::vector<std::vector<Action>> make_all_schedules(ScheduleKind kind, int stages, int micro_batches);

// The bubble fraction of an ideal pipeline of equal stages: (P - 1) / (M + P - 1).
double ideal_bubble(int stages, int micro_batches);

}  // namespace tern
