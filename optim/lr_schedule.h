// Learning-rate schedules: the training loop asks lr_at(step) before each optimizer step and
// passes it to Optimizer::set_lr. Built from a command-line spec by make_lr_schedule.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace tern {

// A learning rate as a pure function of the step index (0 for the first optimizer step), so a
// resumed run gets the same rates from the step count alone.
class LrSchedule {
 public:
  virtual ~LrSchedule() = default;
  // Throws tern::Error for a negative step.
  virtual float lr_at(int64_t step) const = 0;
  // E.g. "warmup(500, from 0) then cosine(0.1 -> 0.0001 over 9500 steps)", for logs.
  virtual std::string describe() const = 0;
};

class ConstantLr : public LrSchedule {
 public:
  explicit ConstantLr(float lr);
  float lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  float lr_;
};

// base_lr * gamma^floor(step / step_size): multiplied by gamma every step_size steps.
class StepDecayLr : public LrSchedule {
 public:
  StepDecayLr(float base_lr, int64_t step_size, float gamma);
  float lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  float base_lr_;
  int64_t step_size_;
  float gamma_;
};

// min_lr + (base_lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2, and min_lr from
// total_steps on (PyTorch's CosineAnnealingLR would climb back up; we hold the minimum).
class CosineLr : public LrSchedule {
 public:
  CosineLr(float base_lr, float min_lr, int64_t total_steps);
  float lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  float base_lr_, min_lr_;
  int64_t total_steps_;
};

// Linear warm-up in front of another schedule: over warmup_steps the rate rises linearly from
// start_factor * target to target, where target = then->lr_at(0); afterwards step s gets
// then->lr_at(s - warmup_steps), so the wrapped schedule runs its full course after warm-up.
class WarmupLr : public LrSchedule {
 public:
  WarmupLr(std::unique_ptr<LrSchedule> then, int64_t warmup_steps, float start_factor = 0);
  float lr_at(int64_t step) const override;
  std::string describe() const override;

 private:
  std::unique_ptr<LrSchedule> then_;
  int64_t warmup_steps_;
  float start_factor_;
  float target_;
};

// Parses a schedule spec "kind[:key=value,...]":
//   constant
//   step:size=N[,gamma=G]          (gamma defaults to 0.1)
//   cosine[:min_lr=X]              (over total_steps, min_lr defaults to 0)
// and any kind also accepts warmup=N[,start_factor=F] (F defaults to 0), e.g.
// "cosine:warmup=500,min_lr=1e-4": 500 warm-up steps, then cosine over total_steps - 500.
// Throws tern::Error naming the problem and listing what is accepted.
std::unique_ptr<LrSchedule> make_lr_schedule(const std::string& spec, float base_lr, int64_t total_steps);

}  // namespace tern
