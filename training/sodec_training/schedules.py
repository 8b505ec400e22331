"""The training plan: which stage of docs/design.md §4 runs at each optimisation step, and the rate
penalty λ of that step (the paper's rate annealing).

λ of each stage (:class:`~sodec_training.stages.Stage`, docs/design.md §4):

0. the latent autoencoder alone (distortion of its reconstruction plus a small KL term): λ = 0;
1. codec and D_a at high rate: λ = ``lambda_rate_start``, distortion on x̂_f;
2. the decoder side, codec frozen, on the distortion of x̂ only: λ = 0;
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

import torch
from diffusers.optimization import get_scheduler

from .stages import Stage


LAMBDA_SCHEDULES = ("step", "geometric", "linear", "cosine", "constant")


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

    stages: List[Tuple[Stage, int]]
    lambda_rate_start: float
    lambda_rate_end: float
    lambda_schedule: str = "step"
    lambda_num_levels: int = 4
    lambda_anneal_fraction: float = 0.8

    def __post_init__(self):
        known = tuple(int(stage) for stage in Stage)
        for stage, steps in self.stages:
            if stage not in known:
                raise ValueError(f"unknown stage {stage}; stages are {known}")
            if steps < 0:
                raise ValueError(f"stage {stage} has a negative number of steps ({steps})")
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise ValueError(f"unknown λ schedule {self.lambda_schedule!r}; choose from {LAMBDA_SCHEDULES}")
        if not 0 < self.lambda_anneal_fraction <= 1:
            raise ValueError(f"lambda_anneal_fraction must be in (0, 1]; got {self.lambda_anneal_fraction}")
        if self.lambda_rate_start < 0 or self.lambda_rate_end < 0:
            raise ValueError("λ must be non-negative")
        self.stages = [(Stage(stage), steps) for stage, steps in self.stages]

    def stage_at(self, step: int) -> Tuple[Stage, int, int]:
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
        if stage == Stage.CODEC:
            return self.lambda_rate_start
        if stage in (Stage.AUTOENCODER, Stage.DECODER):
            return 0.0
        if stage == Stage.ADVERSARIAL:
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


def build_plan(stages: Sequence[Stage], stage_steps: Sequence[int], **lambda_kwargs) -> TrainingPlan:
    """The plan that runs ``stages`` in order, ``stage_steps`` optimisation steps each (``--stage all``: the
    counts of ``--stage_steps``; one stage: ``[max_train_steps]``)."""
    if len(stages) != len(stage_steps):
        raise ValueError(f"{len(stages)} stage(s) and {len(stage_steps)} step count(s)")
    return TrainingPlan(stages=list(zip(stages, stage_steps)), **lambda_kwargs)


def build_lr_scheduler(args, optimizer, num_processes: int, clock):
    """diffusers' ``get_scheduler``; with ``--max_train_minutes`` and a linear or cosine decay, a LambdaLR whose
    progress is the larger of the fraction of steps and the fraction of minutes done (``clock()`` returns the
    minutes elapsed), after a linear warm-up of ``--lr_warmup_steps``."""
    decaying = args.lr_scheduler in ("linear", "cosine")
    if args.max_train_minutes is None or not decaying:
        return get_scheduler(
            args.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=args.lr_warmup_steps * num_processes,
            num_training_steps=args.max_train_steps * num_processes,
        )
    warmup, total, minutes = (
        args.lr_warmup_steps * num_processes,
        args.max_train_steps * num_processes,
        args.max_train_minutes,
    )

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, max((step - warmup) / max(1, total - warmup), clock() / minutes))
        return 1.0 - progress if args.lr_scheduler == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
