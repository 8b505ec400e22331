"""SODECScheduler: the single denoising step of SODEC at a fixed timestep."""

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput


@dataclass
class SODECSchedulerOutput(BaseOutput):
    """Output of ``SODECScheduler.step``.

    Args:
        prev_sample: the denoised sample x0 (one step goes all the way).
        pred_original_sample: the same x0, under the name other diffusers schedulers use.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def _betas_for(beta_schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int) -> torch.Tensor:
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    raise ValueError(f"beta_schedule {beta_schedule!r} is not supported; use 'scaled_linear' or 'linear'")


class SODECScheduler(SchedulerMixin, ConfigMixin):
    r"""One-step scheduler of SODEC (and OSEDiff): the UNet sees ŷ_t at one fixed timestep ``timestep``
    (999 by default) and one step returns the clean latent

    - epsilon: x0 = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t
    - v_prediction: x0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v
    - sample: x0 = the model output

    on Stable Diffusion's ``scaled_linear`` β schedule. At one step this equals ``DDPMScheduler`` and
    ``DDIMScheduler`` with ``timestep_spacing="trailing"`` (DDIM with ``set_alpha_to_one=True``).

    Args:
        num_train_timesteps (`int`, *optional*, defaults to 1000):
            Length of the β schedule.
        beta_start (`float`, *optional*, defaults to 0.00085):
            β of the first timestep.
        beta_end (`float`, *optional*, defaults to 0.012):
            β of the last timestep.
        beta_schedule (`str`, *optional*, defaults to `"scaled_linear"`):
            `"scaled_linear"` (Stable Diffusion's: linear in √β) or `"linear"`.
        prediction_type (`str`, *optional*, defaults to `"epsilon"`):
            What the UNet predicts: `"epsilon"`, `"v_prediction"` or `"sample"` (the clean latent itself).
        timestep (`int`, *optional*, defaults to 999):
            The one timestep t the UNet is called at, in [0, `num_train_timesteps`).
        realism_control (`bool`, *optional*, defaults to `False`):
            Whether the UNet was trained with a realism control (``train_sodec.py --realism_control``): the realism
            β in [0, 1] of a decode is given to it as its timestep, t = round(β · ``timestep``)
            (:meth:`realism_timesteps`), so that β = 1 is the decode at ``timestep``. Without it the UNet knows one
            timestep only, and β = 1 is the only diffusion decode.
    """

    _compatibles: List[str] = []
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        prediction_type: str = "epsilon",
        timestep: int = 999,
        realism_control: bool = False,
    ):
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type {prediction_type!r} must be 'epsilon', 'v_prediction' or 'sample'")
        if not 0 <= timestep < num_train_timesteps:
            raise ValueError(f"timestep {timestep} is outside [0, {num_train_timesteps})")
        self.betas = _betas_for(beta_schedule, beta_start, beta_end, num_train_timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps = 1
        self.timesteps = torch.tensor([timestep], dtype=torch.long)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    def set_timesteps(self, num_inference_steps: int = 1, device: Union[str, torch.device, None] = None):
        """SODEC decodes in exactly one step: ``timesteps`` becomes ``[timestep]``."""
        if num_inference_steps != 1:
            raise ValueError(
                f"SODECScheduler is a one-step scheduler; got num_inference_steps={num_inference_steps}. "
                "Use DDIMScheduler for a multi-step baseline."
            )
        self.num_inference_steps = 1
        self.timesteps = torch.tensor([self.config.timestep], dtype=torch.long, device=device)

    def realism_timesteps(
        self, realism: Union[float, torch.Tensor], device: Union[str, torch.device, None] = None
    ) -> torch.Tensor:
        """The UNet's timestep for a realism β in [0, 1] (a number, or one per image): round(β · ``timestep``) as a
        long tensor (1,) or (B,). Raises ``ValueError`` for β outside [0, 1] and, unless the scheduler's config has
        ``realism_control``, for any β but 1 (the UNet was trained at ``timestep`` alone)."""
        beta = torch.as_tensor(realism, dtype=torch.float64).flatten().cpu()
        if beta.numel() == 0 or not bool(((beta >= 0) & (beta <= 1)).all()):
            raise ValueError(f"realism must be in [0, 1]; got {realism!r}")
        if not self.config.realism_control and not bool((beta == 1).all()):
            raise ValueError(
                "this model was trained without a realism control: its diffusion decode has realism 1 only "
                "(realism 0 is the fidelity decode)"
            )
        return torch.round(beta * self.config.timestep).long().to(device)

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        """Identity, as for DDPM/DDIM."""
        return sample

    def _alpha_prod(self, timestep, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t shaped to broadcast over ``like``. An int timestep is checked in Python, so that a
        ``torch.compile(fullgraph=True)`` graph holding the step has no data-dependent branch."""
        num_timesteps = len(self.alphas_cumprod)
        if isinstance(timestep, torch.Tensor):
            t = timestep.to(self.alphas_cumprod.device).long().flatten()
            if not torch.compiler.is_compiling() and ((t < 0) | (t >= num_timesteps)).any():
                raise ValueError(f"timestep {timestep} is outside [0, {num_timesteps})")
        else:
            if not 0 <= int(timestep) < num_timesteps:
                raise ValueError(f"timestep {timestep} is outside [0, {num_timesteps})")
            t = torch.tensor([int(timestep)])
        a = self.alphas_cumprod[t].to(like.device)
        return a.view(-1, *([1] * (like.ndim - 1)))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Union[int, torch.Tensor],
        sample: torch.Tensor,
        return_dict: bool = True,
        **kwargs,
    ) -> Union[SODECSchedulerOutput, Tuple[torch.Tensor, torch.Tensor]]:
        """Predicts x0 from the model output at ``timestep``; ``prev_sample`` is x0."""
        alpha_prod = self._alpha_prod(timestep, sample)
        x_t = sample.float()
        out = model_output.float()
        kind = self.config.prediction_type
        if kind == "epsilon":
            x0 = (x_t - (1 - alpha_prod) ** 0.5 * out) / alpha_prod**0.5
        elif kind == "v_prediction":
            x0 = alpha_prod**0.5 * x_t - (1 - alpha_prod) ** 0.5 * out
        else:
            x0 = out
        x0 = x0.to(sample.dtype)
        if not return_dict:
            return (x0, x0)
        return SODECSchedulerOutput(prev_sample=x0, pred_original_sample=x0)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (for training targets)."""
        alpha_prod = self._alpha_prod(timesteps, original_samples).to(original_samples.dtype)
        return alpha_prod**0.5 * original_samples + (1 - alpha_prod) ** 0.5 * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t·ε − √(1−ᾱ_t)·x0."""
        alpha_prod = self._alpha_prod(timesteps, sample).to(sample.dtype)
        return alpha_prod**0.5 * noise - (1 - alpha_prod) ** 0.5 * sample
