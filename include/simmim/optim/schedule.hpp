// simmim/optim/schedule.hpp: the official learning-rate schedule, stepped every iteration.
//
// SimMIM builds timm's CosineLRScheduler(t_initial = total_steps, lr_min = min_lr,
// warmup_lr_init = warmup_lr, warmup_t = warmup_steps, t_in_epochs = False), so:
//   step <  warmup: lr = warmup_lr + step * (base_lr - warmup_lr) / warmup_steps
//   step >= warmup: lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + cos(pi * step / total_steps))
//   step >= total:  lr = min_lr
// (the cosine runs over the whole run, warmup included, as timm does without warmup_prefix).
// Learning rates are given per batch 512 and scaled linearly: lr = lr_512 * batch / 512.
#pragma once

#include <cmath>
#include <cstdint>

namespace simmim {

struct CosineSchedule {
    double base_lr = 0, min_lr = 0, warmup_lr = 0;
    std::int64_t warmup_steps = 0, total_steps = 1;

    /// Scale per-512 values to the actual batch size (the official linear scaling rule).
    static CosineSchedule scaled(double base_lr_512, double min_lr_512, double warmup_lr_512, int batch,
                                 std::int64_t warmup_steps, std::int64_t total_steps) {
        const double s = double(batch) / 512.0;
        return {base_lr_512 * s, min_lr_512 * s, warmup_lr_512 * s, warmup_steps, total_steps};
    }
    double operator()(std::int64_t step) const {
        if (step < warmup_steps) return warmup_lr + double(step) * (base_lr - warmup_lr) / double(warmup_steps);
        if (step >= total_steps) return min_lr;
        constexpr double pi = 3.14159265358979323846;
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(pi * double(step) / double(total_steps)));
    }
};

}  // namespace simmim
