"""Conversion of HiFiC checkpoints into SODEC's codec and fidelity decoder.

Source: checkpoints of HiFiC's PyTorch port (github.com/Justin-Tan/high-fidelity-generative-compression,
Mentzer et al. 2020), as its ``save_model`` writes them: a ``torch.save`` dict with ``model_state_dict``
(the state of its ``Model``: ``Encoder.*``, ``Hyperprior.*``, ``Generator.*`` and, for GAN models,
``Discriminator.*``), the optimizer states, ``epoch``, ``steps`` and the training ``args``.

Target: SODEC's :class:`~sodec_pipeline.CompressionVAE` (E, H_a, P, the factorized prior of z) and the
fidelity decoder D_a of :class:`~sodec_pipeline.FidelityGuidanceEncoder`:

=====================================================  =============================================
HiFiC (port)                                           SODEC
=====================================================  =============================================
``Encoder.*``                                          ``compression_vae.analysis_transform.*``
``Hyperprior.analysis_net.conv{1,2,3}.*``              ``compression_vae.hyper_analysis.conv{1,2,3}.*``
``Hyperprior.synthesis_mu.conv{1,2,3}.*``              ``compression_vae.hyper_synthesis_mean.*``
``Hyperprior.synthesis_std.conv{1,2,3}.*``             ``compression_vae.hyper_synthesis_scale.*``
``Hyperprior.hyperlatent_likelihood.{H,a,b}_k``        ``compression_vae.entropy_bottleneck.{matrices,factors,biases}.k``
``Generator.*``                                        ``fidelity_guidance.fidelity_decoder.*``
=====================================================  =============================================

Everything else SODEC has (H_s, T_s, F_p) is new and keeps its initialisation.

Transforms applied on the way (each one is listed per key in the report):

- **Hyper-latent density.** HiFiC's ``HyperpriorDensity`` and SODEC's ``EntropyBottleneck`` (compressai's layer,
  ``codec/entropy_layers.py``) use the same parameterisation (``softplus`` of the matrices,
  ``tanh(factor)·tanh(logits)``, additive biases),
  but HiFiC puts a ``tanh`` factor on *every* layer and the bottleneck on every layer *but the last*. The
  converter represents HiFiC's K layers exactly with the bottleneck's K+1: layer K−1 repeats HiFiC's last
  layer ``n`` times (``n = entropy_bottleneck_filters[-1]``) and layer K averages the ``n`` identical
  values (matrix ``log(expm1(1/n))`` so that ``softplus`` gives ``1/n``, bias 0). HiFiC's default
  filters (3, 3, 3) therefore need ``entropy_bottleneck_filters = (3, 3, 3, n)``; SODEC's configs use
  (3, 3, 3, 3). The bottleneck's ``quantiles`` (tails and median of each channel's density) are solved by
  bisection on the converted density.
- **Channel norm.** SODEC's ``ChannelNorm2d`` is HiFiC's ``ChannelNorm2D`` (moments over channels, the
  unbiased variance, ε = 1e-3, ``gamma``/``beta`` of shape (1, C, 1, 1)): copied unchanged.
- **Image range.** Models trained with ``--normalize_input_image`` (``-norm``, used for HiFiC-low and
  HiFiC-high) take images in [-1, 1] and end with ``tanh``. SODEC's encoder takes [0, 1]: the map
  ``x ↦ 2x − 1`` is folded exactly into the first encoder convolution, and the fidelity decoder is built
  with ``decoder_output_activation="tanh"``, i.e. it returns ``(tanh(G(ŷ)) + 1) / 2`` — HiFiC's output on
  SODEC's [0, 1] scale, exactly. (With ``convert_hific_state_dict`` on a decoder without that activation,
  ``o ↦ (o + 1)/2`` is folded into the last convolution instead and the report notes the missing tanh.)

Behaviour that differs without any weight involved (also in the report's notes): the hyper-analysis pads
by replication rather than reflection (same weights; see ``HyperAnalysisTransform``), SODEC (as compressai)
quantises z around the medians of its density where HiFiC rounds to integers, and a ``logistic``
latent likelihood (HiFiC-med) is coded with the Gaussian conditional.
"""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch

from ..hub_configs import resolve_hub_config
from ..models.compression_vae import CompressionVAE
from ..models.fidelity_guidance_encoder import FidelityGuidanceEncoder


HIFIC_REPOSITORY = "Justin-Tan/high-fidelity-generative-compression"
REPORT_NAME = "conversion_report.json"

# HiFiC prefix → (SODEC component, SODEC prefix). Below these prefixes the key names are identical.
MODULE_MAP: Tuple[Tuple[str, str, str], ...] = (
    ("Encoder.", "compression_vae", "analysis_transform."),
    ("Hyperprior.analysis_net.", "compression_vae", "hyper_analysis."),
    ("Hyperprior.synthesis_mu.", "compression_vae", "hyper_synthesis_mean."),
    ("Hyperprior.synthesis_std.", "compression_vae", "hyper_synthesis_scale."),
    ("Generator.", "fidelity_guidance", "fidelity_decoder."),
)
DENSITY_PREFIX = "Hyperprior.hyperlatent_likelihood."
# In evaluation mode the port also registers the same density inside its entropy model.
DENSITY_ALIAS_PREFIX = "Hyperprior.hyperprior_entropy_model.distribution."
IGNORED_PREFIXES: Tuple[Tuple[str, str], ...] = (
    ("Discriminator.", "HiFiC's GAN discriminator: not part of SODEC's codec"),
    (
        "Hyperprior.hyperprior_entropy_model.",
        "HiFiC's rANS tables for z: the EntropyBottleneck builds its own at update()",
    ),
    (
        "Hyperprior.prior_entropy_model.",
        "HiFiC's rANS tables for y: the GaussianConditional builds its own at update()",
    ),
    ("Hyperprior.prior_density.", "HiFiC's Gaussian-conditional helper: no weights SODEC needs"),
)
# The SODEC parameters a HiFiC checkpoint must provide, per component.
COVERED_PREFIXES: Dict[str, Tuple[str, ...]] = {
    "compression_vae": (
        "analysis_transform.",
        "hyper_analysis.",
        "hyper_synthesis_mean.",
        "hyper_synthesis_scale.",
        "entropy_bottleneck.matrices.",
        "entropy_bottleneck.biases.",
        "entropy_bottleneck.factors.",
    ),
    "fidelity_guidance": ("fidelity_decoder.",),
}
NEW_MODULES = (
    "compression_vae.latent_synthesis",
    "compression_vae.latent_transform",
    "fidelity_guidance.guidance_projection",
)
FIRST_ENCODER_CONV = "analysis_transform.conv_block1.1"
LAST_GENERATOR_CONV = "fidelity_decoder.conv_block_out.1"


class HiFiCCheckpointError(ValueError):
    """The input is not a HiFiC checkpoint, or it does not fit the SODEC config it is converted into."""


@dataclass
class HiFiCConversionReport:
    """What a conversion did, key by key.

    Attributes:
        mapped: SODEC key (``component.parameter``) → the HiFiC key its value came from (or a
            description for the values the density conversion derives).
        transformed: SODEC key → the transform applied to the HiFiC value.
        unmapped: HiFiC key → why SODEC does not use it.
        initialised: SODEC parameters that are not in a HiFiC checkpoint and keep their initialisation.
        notes: differences in behaviour that no weight transform removes.
        hific_args: the training arguments recorded in the checkpoint that matter for the conversion.
        source, config: the checkpoint and the SODEC hub config.
    """

    mapped: Dict[str, str] = field(default_factory=dict)
    transformed: Dict[str, str] = field(default_factory=dict)
    unmapped: Dict[str, str] = field(default_factory=dict)
    initialised: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    hific_args: Dict[str, Any] = field(default_factory=dict)
    source: Optional[str] = None
    config: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": "sodec-hific-conversion",
            "source_repository": HIFIC_REPOSITORY,
            "source": self.source,
            "config": self.config,
            "hific_args": self.hific_args,
            "mapped": dict(sorted(self.mapped.items())),
            "transformed": dict(sorted(self.transformed.items())),
            "unmapped": dict(sorted(self.unmapped.items())),
            "initialised": sorted(self.initialised),
            "notes": list(self.notes),
        }

    def summary(self, list_keys: bool = False) -> str:
        lines = [
            f"mapped {len(self.mapped)} SODEC parameters from the HiFiC checkpoint "
            f"({len(self.transformed)} of them transformed)",
            f"unmapped {len(self.unmapped)} HiFiC keys",
            f"kept the initialisation of {len(self.initialised)} SODEC parameters (modules new in SODEC: "
            + ", ".join(NEW_MODULES)
            + ")",
        ]
        if list_keys:
            lines.append("mapped:")
            lines += [f"  {dst} <- {src}" for dst, src in sorted(self.mapped.items())]
            lines.append("transformed:")
            lines += [f"  {dst}: {how}" for dst, how in sorted(self.transformed.items())]
            lines.append("unmapped:")
            lines += [f"  {src}: {why}" for src, why in sorted(self.unmapped.items())]
            lines.append("initialised:")
            lines += [f"  {key}" for key in sorted(self.initialised)]
        else:
            reasons: Dict[str, int] = {}
            for why in self.unmapped.values():
                reasons[why] = reasons.get(why, 0) + 1
            lines += [f"  {count} × {why}" for why, count in sorted(reasons.items())]
        lines.append("notes:")
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class HiFiCConversion:
    """The converted components and the report. ``save_pretrained(dir)`` writes ``dir/compression_vae``,
    ``dir/fidelity_guidance`` (diffusers layouts) and ``dir/conversion_report.json``: the ``codec``
    folder that ``SODECPipeline.from_pretrained_parts`` takes."""

    compression_vae: CompressionVAE
    fidelity_guidance: FidelityGuidanceEncoder
    report: HiFiCConversionReport

    def save_pretrained(self, output_dir: Union[str, os.PathLike]) -> Path:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.compression_vae.save_pretrained(output_dir / "compression_vae")
        self.fidelity_guidance.save_pretrained(output_dir / "fidelity_guidance")
        with open(output_dir / REPORT_NAME, "w", encoding="utf-8") as f:
            json.dump(self.report.to_dict(), f, indent=2)
            f.write("\n")
        return output_dir


# ---------------------------------------------------------------------------------------------- loading
def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(repr(k) for k in keys[:8]) + (", …" if len(keys) > 8 else "")
        return f"a dict with keys {shown}" if keys else "an empty dict"
    return f"a {type(obj).__name__}"


def load_hific_checkpoint(
    checkpoint: Union[str, os.PathLike, Mapping[str, Any]], trust_pickle: bool = False
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Reads a HiFiC checkpoint: a path to the ``.pt`` file ``save_model`` writes, that dict, or a bare
    ``Model.state_dict()``. Returns ``(state_dict, args)``.

    Files are read with ``torch.load(weights_only=True)``; ``trust_pickle=True`` allows arbitrary pickled
    objects (only for files from a source you trust). Anything that is not a HiFiC checkpoint raises
    :class:`HiFiCCheckpointError`.
    """
    name = "the checkpoint"
    if isinstance(checkpoint, (str, os.PathLike)):
        name = str(checkpoint)
        if not os.path.isfile(checkpoint):
            raise HiFiCCheckpointError(f"{name}: no such file")
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=not trust_pickle)
        except Exception as error:  # noqa: BLE001 - every failure becomes one clear message
            hint = (
                ""
                if trust_pickle
                else " (if it is a trusted file holding other pickled objects, pass trust_pickle=True / --trust-pickle)"
            )
            raise HiFiCCheckpointError(f"{name} cannot be read as a torch checkpoint: {error}{hint}") from error

    if not isinstance(checkpoint, Mapping):
        raise HiFiCCheckpointError(
            f"{name} is not a HiFiC checkpoint of {HIFIC_REPOSITORY}: expected a dict with 'model_state_dict', "
            f"got {_describe(checkpoint)}"
        )
    if "model_state_dict" in checkpoint:
        state_dict, args = checkpoint["model_state_dict"], checkpoint.get("args") or {}
    elif any(str(k).startswith(("Encoder.", "module.Encoder.")) for k in checkpoint):
        state_dict, args = checkpoint, {}
    else:
        raise HiFiCCheckpointError(
            f"{name} is not a HiFiC checkpoint of {HIFIC_REPOSITORY}: expected a dict with 'model_state_dict' "
            f"holding 'Encoder.*', 'Hyperprior.*' and 'Generator.*' keys, got {_describe(checkpoint)}"
        )
    if not isinstance(state_dict, Mapping):
        raise HiFiCCheckpointError(f"{name}: 'model_state_dict' is {_describe(state_dict)}, not a state dict")
    if not isinstance(args, Mapping):
        args = dict(vars(args)) if hasattr(args, "__dict__") else {}
    state_dict = dict(state_dict)
    if state_dict and all(str(k).startswith("module.") for k in state_dict):  # saved from DataParallel
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}

    missing = [
        p for p in ("Encoder.", "Hyperprior.", "Generator.") if not any(str(k).startswith(p) for k in state_dict)
    ]
    if missing:
        shown = ", ".join(repr(k) for k in list(state_dict)[:6]) + (", …" if len(state_dict) > 6 else "")
        raise HiFiCCheckpointError(
            f"{name} is not a HiFiC checkpoint of {HIFIC_REPOSITORY}: its model state has no "
            f"{', '.join(p + '*' for p in missing)} keys (keys: {shown or 'none'})"
        )
    if args.get("use_latent_mixture_model") or any(
        str(k).startswith("Hyperprior.synthesis_DLMM_params.") for k in state_dict
    ):
        raise HiFiCCheckpointError(
            f"{name} uses HiFiC's discretized logistic mixture latent model (--use_latent_mixture_model): "
            "SODEC's CompressionVAE has a mean-scale Gaussian conditional (synthesis_mu / synthesis_std) and "
            "cannot represent it"
        )
    if args.get("sample_noise"):
        raise HiFiCCheckpointError(
            f"{name} was trained with --sample_noise: its generator concatenates {args.get('noise_dim')} noise "
            "channels before the residual blocks, which SODEC's fidelity decoder does not have"
        )
    return state_dict, dict(args)


# ---------------------------------------------------------------------------------------------- density
def _density_keys(state_dict: Mapping[str, torch.Tensor]) -> Tuple[str, Dict[str, torch.Tensor]]:
    for prefix in (DENSITY_PREFIX, DENSITY_ALIAS_PREFIX):
        found = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if found:
            return prefix, found
    return DENSITY_PREFIX, {}


def _convert_density(
    prefix: str, density: Dict[str, torch.Tensor], entropy_bottleneck, errors: List[str]
) -> Tuple[Dict[str, torch.Tensor], Dict[str, str], Dict[str, str]]:
    """HiFiC ``HyperpriorDensity`` (H_k, a_k, b_k, tanh factor on every layer) → the
    ``EntropyBottleneck`` (matrices.k, biases.k, factors.k, no factor on the last layer), exactly."""
    values: Dict[str, torch.Tensor] = {}
    mapped: Dict[str, str] = {}
    transformed: Dict[str, str] = {}
    num_layers = 0
    while f"H_{num_layers}" in density:
        num_layers += 1
    if num_layers == 0:
        errors.append(f"the checkpoint has no hyper-latent density ({prefix}H_0, a_0, b_0, …)")
        return values, mapped, transformed
    for k in range(num_layers):
        for name in ("H", "a", "b"):
            if f"{name}_{k}" not in density:
                errors.append(f"{prefix}{name}_{k} is missing (the density has H_0 … H_{num_layers - 1})")
    if errors:
        return values, mapped, transformed
    channels = entropy_bottleneck.channels
    hific_filters = tuple(int(density[f"H_{k}"].shape[1]) for k in range(num_layers - 1))
    sodec_filters = tuple(entropy_bottleneck.filters)
    last = density[f"H_{num_layers - 1}"]
    if len(sodec_filters) != num_layers or sodec_filters[:-1] != hific_filters or int(last.shape[1]) != 1:
        errors.append(
            f"the checkpoint's hyper-latent density has filters {hific_filters} ({num_layers} layers, a tanh "
            f"factor on each): the EntropyBottleneck represents it with filters {hific_filters + ('n',)} "
            f"(any n ≥ 1), but the SODEC config has entropy_bottleneck_filters={sodec_filters}"
        )
        return values, mapped, transformed
    for k in range(num_layers):
        for name in ("H", "a", "b"):
            t = density[f"{name}_{k}"]
            if t.ndim != 3 or int(t.shape[0]) != channels:
                errors.append(
                    f"{prefix}{name}_{k} {tuple(t.shape)}: expected ({channels}, …) — one density per hyper-latent "
                    f"channel of SODEC's entropy_bottleneck ({channels} channels)"
                )
    if errors:
        return values, mapped, transformed

    n = sodec_filters[-1]
    rename = {"H": "matrices", "a": "factors", "b": "biases"}
    for k in range(num_layers):
        for name, target in rename.items():
            src = density[f"{name}_{k}"].detach().float()
            key = f"entropy_bottleneck.{target}.{k}"
            if k == num_layers - 1 and n != 1:
                src = src.repeat(1, n, 1)
                transformed[key] = f"HiFiC's last density layer repeated {n}× along the filter axis"
            values[key] = src.clone()
            mapped[key] = f"{prefix}{name}_{k}"
    final = num_layers
    values[f"entropy_bottleneck.matrices.{final}"] = torch.full((channels, 1, n), math.log(math.expm1(1.0 / n)))
    values[f"entropy_bottleneck.biases.{final}"] = torch.zeros(channels, 1, 1)
    for key, what in (
        (f"entropy_bottleneck.matrices.{final}", f"log(expm1(1/{n})): softplus gives the mean of the {n} copies"),
        (f"entropy_bottleneck.biases.{final}", "0"),
    ):
        mapped[key] = f"(derived from {prefix}H_{num_layers - 1})"
        transformed[key] = (
            f"set to {what}: the extra EntropyBottleneck layer that makes HiFiC's factored last layer exact"
        )
    return values, mapped, transformed


@torch.no_grad()
def fit_entropy_bottleneck_quantiles(entropy_bottleneck, iterations: int = 80, max_radius: float = 1e6) -> None:
    """Sets the bottleneck's ``quantiles`` (lower tail, median, upper tail of each channel's density at its
    ``tail_mass``) by bisection on ``logits_cumulative``, which is increasing in its input."""
    target = math.log(2.0 / entropy_bottleneck.tail_mass - 1.0)
    shape = (entropy_bottleneck.channels, 1, 1)
    device = entropy_bottleneck.quantiles.device

    def logits(x):
        return entropy_bottleneck.logits_cumulative(x, stop_gradient=True)

    for i, goal in enumerate((-target, 0.0, target)):
        low = torch.full(shape, -1.0, device=device)
        high = torch.full(shape, 1.0, device=device)
        while True:
            too_high = logits(low) > goal
            too_low = logits(high) < goal
            if not (too_high.any() or too_low.any()):
                break
            if low.abs().max() > max_radius or high.abs().max() > max_radius:
                raise HiFiCCheckpointError(
                    f"the converted hyper-latent density does not reach logit {goal:g} within ±{max_radius:g}: "
                    "the checkpoint's density parameters are not a valid cumulative"
                )
            low = torch.where(too_high, low * 2, low)
            high = torch.where(too_low, high * 2, high)
        for _ in range(iterations):
            mid = (low + high) / 2
            below = logits(mid) < goal
            low = torch.where(below, mid, low)
            high = torch.where(below, high, mid)
        entropy_bottleneck.quantiles.data[:, 0, i] = ((low + high) / 2).view(-1).to(entropy_bottleneck.quantiles.dtype)


# ---------------------------------------------------------------------------------------------- conversion
def _architecture_hint(state_dict: Mapping[str, torch.Tensor]) -> str:
    parts = []
    w = state_dict.get("Encoder.conv_block_out.1.weight")
    if torch.is_tensor(w):
        parts.append(f"latent_channels={w.shape[0]}")
    enc = [state_dict.get(f"Encoder.conv_block{i}.1.weight") for i in range(1, 6)]
    if all(torch.is_tensor(t) for t in enc):
        parts.append(f"block_out_channels={[int(t.shape[0]) for t in enc]}")
    w = state_dict.get("Hyperprior.analysis_net.conv1.weight")
    if torch.is_tensor(w):
        parts.append(f"hyper_channels={w.shape[0]}")
    blocks = {k.split(".")[1] for k in state_dict if k.startswith("Generator.resblock_")}
    if blocks:
        parts.append(f"decoder_num_residual_blocks={len(blocks)}")
    parts.append(f"channel_norm={'Encoder.conv_block1.2.gamma' in state_dict}")
    return "the checkpoint has " + ", ".join(parts)


def convert_hific_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    compression_vae: CompressionVAE,
    fidelity_guidance: FidelityGuidanceEncoder,
    hific_args: Optional[Mapping[str, Any]] = None,
    normalize_input_image: Optional[bool] = None,
) -> HiFiCConversionReport:
    """Loads a HiFiC model state into ``compression_vae`` and ``fidelity_guidance`` (in place) and builds
    the codec's CDF tables. Refuses, listing every problem with the key and both shapes, anything that
    does not fit; nothing is modified then.

    ``normalize_input_image`` (HiFiC's ``-norm``: images in [-1, 1], ``tanh`` output) defaults to the
    value recorded in ``hific_args``.
    """
    args = dict(hific_args or {})
    if normalize_input_image is None:
        normalize_input_image = bool(args.get("normalize_input_image", False))
    components = {"compression_vae": compression_vae, "fidelity_guidance": fidelity_guidance}
    states = {name: module.state_dict() for name, module in components.items()}
    report = HiFiCConversionReport(
        hific_args={
            k: args[k]
            for k in (
                "name",
                "model_type",
                "regime",
                "latent_channels",
                "n_residual_blocks",
                "use_channel_norm",
                "likelihood_type",
                "normalize_input_image",
                "sample_noise",
                "use_latent_mixture_model",
                "steps",
            )
            if k in args
        }
    )
    report.hific_args["normalize_input_image"] = normalize_input_image
    errors: List[str] = []

    # 1. every tensor of the checkpoint to its SODEC parameter, or to the report's unmapped list
    values = _map_tensors(state_dict, states, report, errors)
    # 2. the hyper-latent density, converted into the EntropyBottleneck
    density_prefix, density = _density_keys(state_dict)
    density_values, density_mapped, density_transformed = _convert_density(
        density_prefix, density, compression_vae.entropy_bottleneck, errors
    )
    for key, value in density_values.items():
        if key in states["compression_vae"] and tuple(value.shape) != tuple(states["compression_vae"][key].shape):
            errors.append(
                f"{density_mapped[key]} → compression_vae.{key}: converted shape {tuple(value.shape)}, SODEC has "
                f"{tuple(states['compression_vae'][key].shape)}"
            )
        values["compression_vae"][key] = value
    report.mapped.update({f"compression_vae.{k}": v for k, v in density_mapped.items()})
    report.transformed.update({f"compression_vae.{k}": v for k, v in density_transformed.items()})
    # 3. nothing SODEC takes from HiFiC may be missing; any problem refuses the whole checkpoint
    for component, module in components.items():
        for name, param in module.named_parameters():
            if name.startswith(COVERED_PREFIXES[component]) and name not in values[component]:
                errors.append(f"{component}.{name} {tuple(param.shape)} has no counterpart in the checkpoint")
    if errors:
        raise HiFiCCheckpointError(
            f"the HiFiC checkpoint does not fit the SODEC config ({len(errors)} problem(s); "
            f"{_architecture_hint(state_dict)}):\n  - " + "\n  - ".join(errors)
        )
    # 4. HiFiC's [-1, 1] image scale folded into the first and last convolutions
    tanh_output = fidelity_guidance.config.get("decoder_output_activation") == "tanh"
    if normalize_input_image:
        _fold_input_normalisation(values, report, fold_output=not tanh_output)
    # 5. load, fit the bottleneck's quantiles, build the CDF tables
    for component, module in components.items():
        state = dict(states[component])
        state.update(values[component])
        module.load_state_dict(state, strict=True)
        for name, _ in module.named_parameters():
            if f"{component}.{name}" not in report.mapped:
                report.initialised.append(f"{component}.{name}")
    fit_entropy_bottleneck_quantiles(compression_vae.entropy_bottleneck)
    report.transformed["compression_vae.entropy_bottleneck.quantiles"] = (
        "solved by bisection on the converted density (tails at the bottleneck's tail_mass, and the median)"
    )
    compression_vae.update(force=True)
    compression_vae.eval()
    fidelity_guidance.eval()
    report.notes.extend(_conversion_notes(args, compression_vae, normalize_input_image, tanh_output))
    return report


def _map_tensors(
    state_dict, states, report: HiFiCConversionReport, errors: List[str]
) -> Dict[str, Dict[str, torch.Tensor]]:
    """The checkpoint's tensors that ``MODULE_MAP`` maps, per component (float32 copies); the rest go to
    ``report.unmapped`` with the reason, and what does not fit to ``errors``. The density is left to
    :func:`_convert_density`."""
    values: Dict[str, Dict[str, torch.Tensor]] = {name: {} for name in states}
    density_prefix, _ = _density_keys(state_dict)
    for key, value in state_dict.items():
        key = str(key)
        rule = next((r for r in MODULE_MAP if key.startswith(r[0])), None)
        if rule is not None:
            prefix, component, target_prefix = rule
            target = target_prefix + key[len(prefix) :]
            if not torch.is_tensor(value):
                errors.append(f"{key} is a {type(value).__name__}, not a tensor")
            elif target not in states[component]:
                errors.append(f"{key} {tuple(value.shape)} → {component}.{target}: SODEC has no such parameter")
            elif tuple(value.shape) != tuple(states[component][target].shape):
                errors.append(
                    f"{key} {tuple(value.shape)} → {component}.{target} {tuple(states[component][target].shape)}: shapes differ"
                )
            else:
                values[component][target] = value.detach().float().clone()
                report.mapped[f"{component}.{target}"] = key
            continue
        if key.startswith(density_prefix):
            continue  # converted by _convert_density
        if key.startswith(DENSITY_ALIAS_PREFIX):
            report.unmapped[key] = (
                f"the same tensor as {DENSITY_PREFIX}{key[len(DENSITY_ALIAS_PREFIX) :]} (shared module)"
            )
            continue
        reason = next((why for prefix, why in IGNORED_PREFIXES if key.startswith(prefix)), None)
        report.unmapped[key] = reason or "not used by SODEC (unknown to this converter)"
    return values


def _fold_input_normalisation(values, report: HiFiCConversionReport, fold_output: bool) -> None:
    """HiFiC's ``-norm`` models see 2x − 1: folded into E's first convolution; with ``fold_output`` (a D_a without
    tanh) D_a's [-1, 1] output mapped to [0, 1] by its last convolution."""
    w_key, b_key = FIRST_ENCODER_CONV + ".weight", FIRST_ENCODER_CONV + ".bias"
    w, b = values["compression_vae"][w_key], values["compression_vae"][b_key]
    values["compression_vae"][w_key] = 2 * w
    values["compression_vae"][b_key] = b - w.sum(dim=(1, 2, 3))
    for key, how in ((w_key, "× 2"), (b_key, "− Σ weight")):
        report.transformed[f"compression_vae.{key}"] = f"{how}: folds HiFiC's input map x ↦ 2x − 1 ([0,1] → [-1,1])"
    if fold_output:
        w_key, b_key = LAST_GENERATOR_CONV + ".weight", LAST_GENERATOR_CONV + ".bias"
        values["fidelity_guidance"][w_key] = values["fidelity_guidance"][w_key] / 2
        values["fidelity_guidance"][b_key] = (values["fidelity_guidance"][b_key] + 1) / 2
        for key, how in ((w_key, "÷ 2"), (b_key, "(b + 1) / 2")):
            report.transformed[f"fidelity_guidance.{key}"] = (
                f"{how}: maps HiFiC's [-1,1] output to SODEC's [0,1] scale"
            )


def _conversion_notes(
    args, compression_vae: CompressionVAE, normalize_input_image: bool, tanh_output: bool
) -> List[str]:
    """What the conversion changes or cannot carry over, for the report."""
    notes = [
        "hyper-analysis H_a: HiFiC pads conv2/conv3 by reflection, SODEC by replication (same weights; "
        "z differs only near the borders, and 64×64 inputs work)",
        "z is quantised around the medians of the converted density (the EntropyBottleneck); HiFiC rounds "
        "z to integers",
        "the hyper-latent density is converted exactly: HiFiC's factored last layer becomes EntropyBottleneck layers "
        f"{len(compression_vae.entropy_bottleneck.filters) - 1} (repeated) and {len(compression_vae.entropy_bottleneck.filters)} (mean)",
    ]
    if normalize_input_image and tanh_output:
        notes.append(
            "the checkpoint was trained with --normalize_input_image: the [-1,1] input map is folded into the first "
            "encoder convolution and D_a ends with (tanh + 1) / 2 (decoder_output_activation='tanh'): exact"
        )
    elif normalize_input_image:
        notes.append(
            "the checkpoint was trained with --normalize_input_image but the config's fidelity decoder has no tanh "
            "output: D_a starts as (G(y)+1)/2 instead of (tanh(G(y))+1)/2 (equal where |G| is small); set "
            "decoder_output_activation='tanh' in the config for an exact conversion"
        )
    if str(args.get("likelihood_type", "gaussian")) == "logistic":
        notes.append(
            "the checkpoint models y with a logistic likelihood; SODEC codes y with the Gaussian "
            "conditional using the same mean and scale networks (decodable, slightly more bits until fine-tuned)"
        )
    notes.append("initialised, not in HiFiC: " + ", ".join(NEW_MODULES))
    return notes


def convert_hific_checkpoint(
    checkpoint: Union[str, os.PathLike, Mapping[str, Any]],
    config: Union[str, os.PathLike] = "sodec-sd21-base",
    output_dir: Optional[Union[str, os.PathLike]] = None,
    normalize_input_image: Optional[bool] = None,
    trust_pickle: bool = False,
    seed: int = 0,
) -> HiFiCConversion:
    """Converts a HiFiC checkpoint (path, loaded dict or bare state dict) into a ``CompressionVAE`` and a
    ``FidelityGuidanceEncoder`` of the hub config ``config`` (a name such as ``sodec-sd21-base`` or a
    folder). Modules new in SODEC are initialised with ``seed``. With ``output_dir`` the result is saved
    there (see :meth:`HiFiCConversion.save_pretrained`).
    """
    source = str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else None
    state_dict, args = load_hific_checkpoint(checkpoint, trust_pickle=trust_pickle)
    if normalize_input_image is None:
        normalize_input_image = bool(args.get("normalize_input_image", False))
    folder = resolve_hub_config(config)
    torch.manual_seed(seed)
    compression_vae = CompressionVAE.from_config(CompressionVAE.load_config(folder / "compression_vae"))
    guidance_config = dict(FidelityGuidanceEncoder.load_config(folder / "fidelity_guidance"))
    if normalize_input_image:
        # HiFiC's -norm models end with tanh on [-1, 1]: (tanh + 1) / 2 on SODEC's [0, 1] scale is exact.
        guidance_config["decoder_output_activation"] = "tanh"
    fidelity_guidance = FidelityGuidanceEncoder.from_config(guidance_config)
    if compression_vae.config.latent_channels != fidelity_guidance.config.latent_channels:
        raise HiFiCCheckpointError(
            f"config {folder}: compression_vae has latent_channels={compression_vae.config.latent_channels} but "
            f"fidelity_guidance has latent_channels={fidelity_guidance.config.latent_channels}"
        )
    report = convert_hific_state_dict(state_dict, compression_vae, fidelity_guidance, args, normalize_input_image)
    report.source = source
    report.config = str(folder)
    result = HiFiCConversion(compression_vae, fidelity_guidance, report)
    if output_dir is not None:
        result.save_pretrained(output_dir)
    return result
