"""The training plan: which stage of docs/design.md §4 runs at each optimisation step, and the rate
penalty λ of that step (the paper's rate annealing).

Stages (docs/design.md §4):

0. the latent autoencoder (the VAE's encoder and decoder) alone, on the distortion of its reconstruction
   plus a small KL term, before any diffusion training (SD's VAE is trained before SD); λ = 0;
1. codec (E, H_a, P, entropy models) and D_a at high rate: λ = ``lambda_rate_start``, distortion on x̂_f;
2. codec frozen; H_s, T_s, D_a, F_p, UNet LoRA and conv_in trained on the distortion of x̂ only (λ = 0);
3. everything jointly; λ annealed from ``lambda_rate_start`` to ``lambda_rate_end`` (below), plus the
   alignment loss α·‖x − x̂_f‖²;
4. (optional) adversarial fine-tuning: stage 3's losses at λ = ``lambda_rate_end`` plus β·GAN.

λ schedule inside stage 3, with p = step_in_stage / (anneal_fraction · stage_steps) clipped to [0, 1]:

- ``step`` (default, "raised step by step"): ``num_levels`` plateaus of equal length, geometrically
  spaced from start to end: λ = start · (end/start)^(k/(num_levels−1)), k = ⌊p · num_levels⌋ (k ≤ levels−1);
- ``geometric``: λ = start · (end/start)^p (log-linear, continuous);
- ``linear``: λ = start + (end − start) · p;
- ``cosine``: λ = start + (end − start) · (1 − cos(π p)) / 2;
- ``constant``: λ = end throughout.

After the annealing part (p = 1) λ stays at ``lambda_rate_end``.
"""

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple


LAMBDA_SCHEDULES = ("step", "geometric", "linear", "cosine", "constant")
STAGES = (0, 1, 2, 3, 4)


def annealed_lambda(progress: float, start: float, end: float, schedule: str = "step", num_levels: int = 4) -> float:
    """λ at ``progress`` ∈ [0, 1] of the annealing (see the module docstring)."""
    p = min(max(float(progress), 0.0), 1.0)
    if schedule == "constant":
        return end
    if schedule == "linear":
        return start + (end - start) * p
    if schedule == "cosine":
        return start + (end - start) * (1.0 - math.cos(math.pi * p)) / 2.0
    if schedule in ("geometric", "step"):
        if start <= 0 or end <= 0:
            raise ValueError(f"the {schedule!r} λ schedule needs positive start and end; got {start}, {end}")
        if schedule == "step":
            if num_levels < 2:
                return end
            level = min(int(p * num_levels), num_levels - 1)
            p = level / (num_levels - 1)
        return start * (end / start) ** p
    raise ValueError(f"unknown λ schedule {schedule!r}; choose from {LAMBDA_SCHEDULES}")


@dataclass
class TrainingPlan:
    """The sequence of (stage, number of steps) and the λ rule. Steps are optimisation steps."""

    stages: List[Tuple[int, int]]
    lambda_rate_start: float
    lambda_rate_end: float
    lambda_schedule: str = "step"
    lambda_num_levels: int = 4
    lambda_anneal_fraction: float = 0.8

    def __post_init__(self):
        for stage, steps in self.stages:
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage}; stages are {STAGES}")
            if steps < 0:
                raise ValueError(f"stage {stage} has a negative number of steps ({steps})")
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise ValueError(f"unknown λ schedule {self.lambda_schedule!r}; choose from {LAMBDA_SCHEDULES}")
        if not 0 < self.lambda_anneal_fraction <= 1:
            raise ValueError(f"lambda_anneal_fraction must be in (0, 1]; got {self.lambda_anneal_fraction}")
        if self.lambda_rate_start < 0 or self.lambda_rate_end < 0:
            raise ValueError("λ must be non-negative")

    @property
    def total_steps(self) -> int:
        return sum(steps for _, steps in self.stages)

    @property
    def stage_numbers(self) -> List[int]:
        return [stage for stage, steps in self.stages if steps > 0]

    def stage_at(self, step: int) -> Tuple[int, int, int]:
        """(stage, step within the stage, steps of the stage) of the 0-based optimisation ``step``."""
        begin = 0
        for stage, steps in self.stages:
            if step < begin + steps:
                return stage, step - begin, steps
            begin += steps
        stage, steps = self.stages[-1]
        return stage, steps, steps

    def rate_weight(self, step: int) -> float:
        """λ of the 0-based optimisation ``step``."""
        stage, in_stage, steps = self.stage_at(step)
        if stage == 1:
            return self.lambda_rate_start
        if stage in (0, 2):
            return 0.0
        if stage == 4:
            return self.lambda_rate_end
        anneal_steps = max(1, round(self.lambda_anneal_fraction * steps))
        return annealed_lambda(
            in_stage / anneal_steps,
            self.lambda_rate_start,
            self.lambda_rate_end,
            self.lambda_schedule,
            self.lambda_num_levels,
        )


def parse_stage_steps(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"--stage_steps must be comma-separated integers such as 2000,2000,6000; got {text!r}"
        ) from None
    if not 3 <= len(values) <= 4:
        raise ValueError(f"--stage_steps needs 3 values (stages 1-3) or 4 (with the adversarial stage); got {text!r}")
    return values


def build_plan(stage: str, max_train_steps: int, stage_steps: Sequence[int], **lambda_kwargs) -> TrainingPlan:
    """``stage`` "0".."4" runs that stage for ``max_train_steps``; "all" runs stages 1, 2, 3 (and 4 when a
    fourth count is given) for ``stage_steps``."""
    if stage == "all":
        stages = [(i + 1, n) for i, n in enumerate(stage_steps)]
    else:
        stages = [(int(stage), max_train_steps)]
    return TrainingPlan(stages=stages, **lambda_kwargs)
