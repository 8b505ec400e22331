"""One optimisation step of ``train_sodec.py``: the stage's forward and backward pass, the optimisers' steps and,
in the adversarial stage, the discriminator's; the per-image quantisation steps and rate weights; the losses
logged per step."""

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .losses import discriminator_loss, generator_adversarial_loss
from .stages import Stage


#: The values of a step's output that are logged (``train/<name>``, the mean over processes), where present.
LOGGED_LOSSES = (
    "loss",
    "bpp",
    "mse",
    "align",
    "lpips",
    "dists",
    "colour",
    "texture",
    "chroma",
    "grain",
    "kl",
    "latent",
    "aux_loss",
    "g_adv",
    "d_loss",
)


@dataclass
class TrainingState:
    """What the training loop steps: the model (``SODECTrainingModel``), its optimisers and learning-rate
    scheduler (all as ``accelerator.prepare`` returns them), the parameters of the main optimizer and their
    names, and the optional discriminator (with its optimizer) and EMA of the main parameters."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    aux_optimizer: torch.optim.Optimizer
    main_parameters: List[nn.Parameter]
    main_names: List[str]
    discriminator: Optional[nn.Module] = None
    disc_optimizer: Optional[torch.optim.Optimizer] = None
    ema: Optional[Any] = None  # diffusers.training_utils.EMAModel
    lr_scheduler: Optional[Any] = None

    @property
    def networks(self) -> List[nn.Module]:
        """The networks that train (the model, and the discriminator when there is one)."""
        return [self.model] + ([self.discriminator] if self.discriminator is not None else [])

    def prepare(self, accelerator, train_dataloader):
        """``accelerator.prepare`` of the networks, optimisers, scheduler and ``train_dataloader`` (returned)."""
        prepared = accelerator.prepare(
            self.model, self.optimizer, self.aux_optimizer, train_dataloader, self.lr_scheduler
        )
        self.model, self.optimizer, self.aux_optimizer, train_dataloader, self.lr_scheduler = prepared
        if self.discriminator is not None:
            self.discriminator, self.disc_optimizer = accelerator.prepare(self.discriminator, self.disc_optimizer)
        return train_dataloader


def image_rate_weights(rate_weight: float, quantization_step, exponent: float):
    """λ for every image, or λ·Δᵢ^γ per image (a (B,) tensor) when the images have their own Δᵢ and γ ≠ 0."""
    if quantization_step is None or exponent == 0:
        return rate_weight
    return rate_weight * quantization_step**exponent


def draw_quantization_steps(step_range, batch_size: int, generator: torch.Generator, device) -> Optional[torch.Tensor]:
    """``--quantization_step_range LOW HIGH``: one Δ per image, log-uniform in [LOW, HIGH] from ``generator`` (its
    own stream per process); ``None`` without a range (Δ = 1)."""
    if step_range is None:
        return None
    low, high = (math.log(v) for v in step_range)
    draws = torch.rand(batch_size, generator=generator)
    return torch.exp(low + (high - low) * draws).to(device)


def draw_realism(full_fraction: float, batch_size: int, generator: torch.Generator, device) -> torch.Tensor:
    """``--realism_control``: one realism β per image from ``generator``, 1 with probability ``full_fraction`` and
    uniform in [0, 1] otherwise."""
    uniform, full = torch.rand(2, batch_size, generator=generator)
    return torch.where(full < full_fraction, torch.ones_like(uniform), uniform).to(device)


def train_step(
    accelerator, args, state: TrainingState, batch, stage: Stage, rate_weight: float, quantization_step, realism=None
):
    """One forward and backward pass of ``stage`` on ``batch`` under gradient accumulation, then the main and aux
    optimisers' steps and, in :attr:`Stage.ADVERSARIAL`, the generator loss β·GAN and the discriminator's step.
    ``realism``: a realism per image (``--realism_control``), which weighs the perceptual and GAN losses.
    Returns the model's output dict (its losses, ``g_adv`` and ``d_loss`` added in the adversarial stage)."""
    with accelerator.accumulate(*state.networks):
        out = state.model(
            batch["pixel_values"],
            stage=stage,
            rate_weight=image_rate_weights(rate_weight, quantization_step, args.lambda_step_exponent),
            alignment_weight=args.alignment_weight,
            kl_weight=args.kl_weight,
            latent_weight=args.latent_weight,
            quantization_step=quantization_step,
            realism=realism,
        )
        if stage == Stage.ADVERSARIAL:
            out["g_adv"] = generator_adversarial_loss(frozen_discriminator_logits(accelerator, state, out), realism)
            out["loss"] = out["loss"] + args.adversarial_weight * out["g_adv"]
        total = out["loss"] + out["aux_loss"] if out["aux_loss"] is not None else out["loss"]
        accelerator.backward(total)
        if accelerator.sync_gradients and args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(state.main_parameters, args.max_grad_norm)
        state.optimizer.step()
        state.lr_scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
        if out["aux_loss"] is not None:
            state.aux_optimizer.step()
        state.aux_optimizer.zero_grad(set_to_none=True)
        if stage == Stage.ADVERSARIAL:
            out["d_loss"] = discriminator_step(accelerator, state, batch["pixel_values"], out)
    return out


def frozen_discriminator_logits(accelerator, state: TrainingState, out) -> torch.Tensor:
    """D's logits of the stage's output with D's weights detached: the generator loss moves the codec, not D."""
    disc = accelerator.unwrap_model(state.discriminator)
    params = {name: p.detach() for name, p in disc.named_parameters()}
    return torch.func.functional_call(disc, params, (out["x_hat"], out["y_hat"]))


def discriminator_step(accelerator, state: TrainingState, x: torch.Tensor, out) -> torch.Tensor:
    """One step of D on the real images ``x`` and the (detached) output, both conditioned on ŷ; its loss."""
    y_hat = out["y_hat"].detach()
    logits = state.discriminator(torch.cat([x, out["x_hat"].detach()]), torch.cat([y_hat, y_hat]))
    real_logits, fake_logits = logits.chunk(2)
    loss = discriminator_loss(real_logits, fake_logits)
    accelerator.backward(loss)
    state.disc_optimizer.step()
    state.disc_optimizer.zero_grad(set_to_none=True)
    return loss


def accumulate_losses(accumulated: Dict[str, float], accelerator, out, accumulation_steps: int) -> None:
    """Adds this micro-batch's share of each logged loss (the mean over processes: one gather per step for all of
    them) to ``accumulated``."""
    keys = [k for k in LOGGED_LOSSES if out.get(k) is not None]
    values = torch.stack([out[k].detach().float() for k in keys])
    values = accelerator.gather(values[None]).mean(0).tolist()
    for key, value in zip(keys, values):
        accumulated[key] = accumulated.get(key, 0.0) + value / accumulation_steps
