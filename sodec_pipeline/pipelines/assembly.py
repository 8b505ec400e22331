"""Assembling a SODEC pipeline from published parts: :class:`FromPretrainedPartsMixin`, which gives
``SODECPipeline`` its ``from_pretrained_parts`` (the way diffusers' ``FromSingleFileMixin`` gives its
pipelines ``from_single_file``).

Nobody trains SODEC from scratch. ``SODECPipeline.from_pretrained_parts`` takes

- ``sd_model``: a Stable Diffusion model (local folder or Hub id such as
  ``stabilityai/stable-diffusion-2-1-base``) whose ``unet`` and ``vae`` subfolders it loads, and whose
  ``scheduler`` config (when present) gives the β schedule and the prediction type;
- ``image_encoder``: a transformers ViT image tower (e.g. the ``models/image_encoder`` folder of
  ``h94/IP-Adapter``, or ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, whose vision half is taken);
- ``codec`` (optional): a folder or Hub id with ``compression_vae/`` (and optionally ``fidelity_guidance/``)
  subfolders, such as the output of ``training/convert_hific_checkpoint.py`` or a saved SODEC pipeline;

loads each with its own library's ``from_pretrained``, and builds everything else from a hub config
(``sodec-sd21-base`` by default, or a folder such as ``hub_configs/sodec-tiny``). What must match the parts
is sized from the parts: F_p's input width from the ViT's ``hidden_size`` and its output width from the
UNet's ``cross_attention_dim``, the ViT input size and normalisation from the ViT, T_s's output channels
from the UNet's ``in_channels``; the VAE keeps its own ``scaling_factor``. Parts that cannot fit together
raise a ``ValueError`` naming both sides.
"""

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ..hub_configs import resolve_hub_config
from ..hub_download_options import HUB_KWARGS
from ..models.compression_vae import LATENT_STRIDE, CompressionVAE
from ..models.fidelity_guidance_encoder import FidelityGuidanceEncoder
from ..schedulers.scheduling_sodec import SODECScheduler
from .components import build_component, import_component_class, split_model_index


logger = logging.getLogger(__name__)

PathOrId = Union[str, os.PathLike]
# Keys of a Stable Diffusion scheduler config that SODEC's one-step scheduler takes over.
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
CONVERSION_REPORT = "conversion_report.json"


def _read_json(
    path_or_id: PathOrId, filename: str, subfolder: Optional[str], hub_kwargs: Dict[str, Any]
) -> Optional[dict]:
    """A JSON file of a local folder or a Hub repo, or None when there is none."""
    local = Path(path_or_id)
    if local.is_dir():
        path = local / (subfolder or "") / filename
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(str(path_or_id), filename, subfolder=subfolder or None, **hub_kwargs)
    except Exception:  # noqa: BLE001 - the file is optional: missing file, offline, no such repo
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_part(what: str, cls, path_or_id: PathOrId, subfolder: Optional[str], hint: str, **kwargs):
    where = f"{str(path_or_id)!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    local = Path(path_or_id)
    if local.is_dir() and not (local / (subfolder or "") / "config.json").is_file():
        # diffusers would fall back to a config.json at the root of the folder: refuse before that
        raise OSError(
            f"cannot load the {what} ({cls.__name__}) from {where}: {local / (subfolder or '')} has no config.json. {hint}"
        )
    try:
        if subfolder:
            kwargs["subfolder"] = subfolder
        return cls.from_pretrained(path_or_id, **kwargs)
    except (OSError, ValueError, EnvironmentError) as error:
        raise OSError(f"cannot load the {what} ({cls.__name__}) from {where}: {error}. {hint}") from error


def _single_cross_attention_dim(unet, sd_model: PathOrId) -> int:
    dim = unet.config.cross_attention_dim
    if isinstance(dim, (list, tuple)):
        if len(set(dim)) != 1:
            raise ValueError(
                f"the UNet of {str(sd_model)!r} has per-block cross_attention_dim {list(dim)}: SODEC's guidance c_g has "
                "one width, so every block must use the same"
            )
        dim = dim[0]
    if dim is None:
        raise ValueError(f"the UNet of {str(sd_model)!r} has no cross-attention (cross_attention_dim is None)")
    return int(dim)


def _image_encoder_dims(image_encoder, name: str) -> Tuple[int, int]:
    config = image_encoder.config
    hidden, size = getattr(config, "hidden_size", None), getattr(config, "image_size", None)
    if hidden is None or size is None:
        raise ValueError(
            f"the image encoder {name} ({type(image_encoder).__name__}) has no hidden_size/image_size in its config: "
            "pass a ViT image tower such as CLIPVisionModel"
        )
    return int(hidden), int(size)


def _normalisation(preprocessor: Optional[dict], fallback: dict) -> Tuple[Sequence[float], Sequence[float]]:
    mean, std = fallback["image_encoder_mean"], fallback["image_encoder_std"]
    if preprocessor:
        m, s = preprocessor.get("image_mean"), preprocessor.get("image_std")
        if isinstance(m, (list, tuple)) and isinstance(s, (list, tuple)) and len(m) == 3 and len(s) == 3:
            mean, std = [float(v) for v in m], [float(v) for v in s]
    return list(mean), list(std)


def _refit(model, overrides: Dict[str, Any], reinitialise: Sequence[str] = (), seed: int = 0):
    """``model``'s class rebuilt from its config with ``overrides``; every weight is kept except those under
    the ``reinitialise`` prefixes, which get a fresh (seeded) initialisation."""
    config = dict(model.config)
    config.update(overrides)
    torch.manual_seed(seed)
    new = type(model).from_config(config)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(reinitialise))}
    result = new.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(tuple(reinitialise))]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"cannot refit {type(model).__name__}: missing {missing}, unexpected {result.unexpected_keys}"
        )
    return new.to(model.device)


class FromPretrainedPartsMixin:
    """Gives a pipeline class :meth:`from_pretrained_parts`."""

    @classmethod
    def from_pretrained_parts(
        cls,
        sd_model: PathOrId,
        image_encoder: Union[PathOrId, torch.nn.Module],
        codec: Optional[PathOrId] = None,
        config: PathOrId = "sodec-sd21-base",
        *,
        torch_dtype: Optional[torch.dtype] = None,
        image_encoder_subfolder: Optional[str] = None,
        unet_subfolder: str = "unet",
        vae_subfolder: str = "vae",
        scheduler_subfolder: str = "scheduler",
        variant: Optional[str] = None,
        seed: int = 0,
        **kwargs,
    ):
        """A pipeline of this class (``SODECPipeline``) from published parts; see the module docstring.

        Args:
            sd_model (`str` or `os.PathLike`):
                Stable Diffusion folder or Hub id with ``unet``/``vae`` subfolders
                (``stabilityai/stable-diffusion-2-1-base``).
            image_encoder (`str`, `os.PathLike` or `torch.nn.Module`):
                transformers ViT folder or Hub id, or an already loaded model, e.g. ``h94/IP-Adapter`` with
                ``image_encoder_subfolder="models/image_encoder"``.
            codec (`str` or `os.PathLike`, *optional*):
                Folder or Hub id with ``compression_vae/`` and optionally ``fidelity_guidance/`` (a converted HiFiC
                codec or a trained SODEC pipeline). Without it the codec is randomly initialised from ``config``.
            config (`str` or `os.PathLike`, *optional*, defaults to `"sodec-sd21-base"`):
                Hub config name (``sodec-sd21-base``, ``sodec-small``, ``sodec-tiny``) or folder, for everything
                not loaded.
            torch_dtype (`torch.dtype`, *optional*):
                dtype of the UNet, VAE, ViT and fidelity guidance (the codec always stays float32).
            image_encoder_subfolder, unet_subfolder, vae_subfolder, scheduler_subfolder (`str`, *optional*):
                Subfolders of the parts.
            variant (`str`, *optional*):
                Weights variant of the SD parts (e.g. ``"fp16"``).
            seed (`int`, *optional*, defaults to 0):
                Seed of the randomly initialised components.
            kwargs:
                Hub options (``cache_dir``, ``revision``, ``token``, ``local_files_only``, ``proxies``,
                ``force_download``), passed to every ``from_pretrained``.

        Returns:
            `SODECPipeline`: in eval mode; untrained parts (F_p, H_s, T_s, and the codec without ``codec``) are
            random and need training (``training/train_sodec.py``).

        Examples:
            ```py
            >>> from sodec_pipeline import SODECPipeline

            >>> pipe = SODECPipeline.from_pretrained_parts(
            ...     "stabilityai/stable-diffusion-2-1-base",
            ...     "h94/IP-Adapter",
            ...     image_encoder_subfolder="models/image_encoder",
            ...     codec="converted/hific-low",  # written by training/convert_hific_checkpoint.py
            ... )
            >>> pipe.save_pretrained("sodec-init")  # the start of a training run
            ```
        """
        unknown = sorted(set(kwargs) - set(HUB_KWARGS))
        if unknown:
            raise TypeError(
                f"from_pretrained_parts got unexpected keyword arguments {unknown}; Hub options are {list(HUB_KWARGS)}"
            )
        hub = {k: v for k, v in kwargs.items() if v is not None}
        folder = resolve_hub_config(config)
        index, options = split_model_index(json.loads((folder / "model_index.json").read_text(encoding="utf-8")))

        # 1. the published parts: UNet and VAE of the SD model, the ViT
        diffusers_kwargs = dict(hub, torch_dtype=torch_dtype) if torch_dtype is not None else dict(hub)
        if variant is not None:
            diffusers_kwargs["variant"] = variant
        unet = _load_part(
            "UNet", import_component_class(*index["unet"]), sd_model, unet_subfolder, SD_HINT, **diffusers_kwargs
        )
        vae = _load_part(
            "VAE", import_component_class(*index["vae"]), sd_model, vae_subfolder, SD_HINT, **diffusers_kwargs
        )
        vit, vit_name, preprocessor = _load_image_encoder(
            image_encoder, import_component_class(*index["image_encoder"]), image_encoder_subfolder, torch_dtype, hub
        )

        # 2. what the parts fix: channels, scale factor, cross-attention width, the ViT's input
        cross_attention_dim = _single_cross_attention_dim(unet, sd_model)
        _check_unet_and_vae_fit(unet, vae, sd_model)
        guidance_fit = _guidance_fit(folder, preprocessor, vit, vit_name, cross_attention_dim, sd_model)

        # 3. the codec: loaded, or randomly initialised from the config
        unet_in = int(unet.config.in_channels)
        if codec is None:
            compression_vae, fidelity_guidance = _random_codec(folder, guidance_fit, unet_in, seed)
        else:
            compression_vae, fidelity_guidance = _load_codec(
                codec, folder, guidance_fit, unet_in, sd_model, vit_name, seed, hub
            )
        if torch_dtype is not None:
            fidelity_guidance = fidelity_guidance.to(torch_dtype)

        # 4. the scheduler: the config's single step on the SD model's β schedule
        scheduler = _one_step_scheduler(folder, sd_model, scheduler_subfolder, hub)

        pipe = cls(
            compression_vae=compression_vae,
            fidelity_guidance=fidelity_guidance,
            image_encoder=vit,
            unet=unet,
            vae=vae,
            scheduler=scheduler,
            **options,
        )
        for module in (compression_vae, fidelity_guidance, vit, unet, vae):
            module.eval()
        return pipe


SD_HINT = (
    "sd_model must be a Stable Diffusion model folder or Hub id with unet/ and vae/ subfolders, "
    "e.g. stabilityai/stable-diffusion-2-1-base"
)


def _load_image_encoder(image_encoder, image_encoder_cls, subfolder, torch_dtype, hub):
    """The ViT (loaded, or the module given), a name for messages, and its preprocessor config (or ``None``)."""
    if isinstance(image_encoder, torch.nn.Module):
        vit = image_encoder.to(torch_dtype) if torch_dtype is not None else image_encoder
        return vit, type(image_encoder).__name__, None
    vit_name = repr(str(image_encoder)) + (f" (subfolder {subfolder!r})" if subfolder else "")
    vit_kwargs = dict(hub, dtype=torch_dtype) if torch_dtype is not None else dict(hub)
    vit = _load_part(
        "image encoder",
        image_encoder_cls,
        image_encoder,
        subfolder,
        "image_encoder must be a transformers ViT image tower (e.g. the models/image_encoder folder of h94/IP-Adapter, "
        "or laion/CLIP-ViT-H-14-laion2B-s32B-b79K)",
        **vit_kwargs,
    )
    return vit, vit_name, _read_json(image_encoder, "preprocessor_config.json", subfolder, hub)


def _check_unet_and_vae_fit(unet, vae, sd_model) -> None:
    """``ValueError`` unless the UNet predicts what it takes, the VAE decodes it, and the VAE's stride is 8."""
    unet_in, unet_out = int(unet.config.in_channels), int(unet.config.out_channels)
    vae_latent = int(vae.config.latent_channels)
    if unet_in != unet_out:
        raise ValueError(
            f"the UNet of {str(sd_model)!r} takes {unet_in} input channels (unet in_channels) but predicts {unet_out} "
            "(unet out_channels): SODEC's single step computes x0 from ŷ_t and the UNet's prediction, which need the "
            "same channels (inpainting or depth UNets do not fit)"
        )
    if unet_out != vae_latent:
        raise ValueError(
            f"the UNet of {str(sd_model)!r} predicts {unet_out} channels (unet out_channels) but the VAE decodes "
            f"{vae_latent} (vae latent_channels): SODEC decodes the UNet's x0 with the VAE"
        )
    if getattr(vae.config, "scaling_factor", None) is None:
        raise ValueError(f"the VAE of {str(sd_model)!r} has no scaling_factor in its config")
    vae_blocks = getattr(vae.config, "block_out_channels", None)
    if vae_blocks is not None and 2 ** (len(vae_blocks) - 1) != LATENT_STRIDE:
        raise ValueError(
            f"the VAE of {str(sd_model)!r} upsamples its latents ×{2 ** (len(vae_blocks) - 1)} ({len(vae_blocks)} blocks in "
            f"vae block_out_channels) but SODEC's latents ŷ_t are at stride {LATENT_STRIDE} (T_s): decoded images would "
            f"not have the stream's size; use a VAE with a scale factor of {LATENT_STRIDE} (4 blocks, like Stable Diffusion's)"
        )


def _guidance_fit(folder, preprocessor, vit, vit_name, cross_attention_dim, sd_model) -> dict:
    """The ``FidelityGuidanceEncoder`` config values that the ViT and the UNet fix."""
    vit_hidden, vit_size = _image_encoder_dims(vit, vit_name)
    fg_defaults = dict(FidelityGuidanceEncoder.load_config(folder / "fidelity_guidance"))
    mean, std = _normalisation(preprocessor, fg_defaults)
    heads = int(fg_defaults["projection_num_attention_heads"])
    if cross_attention_dim % heads:
        raise ValueError(
            f"F_p cannot produce the UNet's guidance: the hub config {folder / 'fidelity_guidance'} has "
            f"projection_num_attention_heads={heads}, which does not divide the UNet's cross_attention_dim="
            f"{cross_attention_dim} ({str(sd_model)!r})"
        )
    return {
        "image_encoder_hidden_size": vit_hidden,
        "image_encoder_size": vit_size,
        "image_encoder_mean": mean,
        "image_encoder_std": std,
        "cross_attention_dim": cross_attention_dim,
    }


def _one_step_scheduler(folder, sd_model, scheduler_subfolder, hub) -> SODECScheduler:
    """``SODECScheduler`` from the config folder, with the SD model's β schedule where it has one."""
    scheduler_config = dict(SODECScheduler.load_config(folder / "scheduler"))
    sd_scheduler = _read_json(sd_model, "scheduler_config.json", scheduler_subfolder, hub)
    if sd_scheduler:
        if sd_scheduler.get("trained_betas"):
            raise ValueError(
                f"the scheduler of {str(sd_model)!r} uses trained_betas, which SODECScheduler does not support"
            )
        scheduler_config.update({k: sd_scheduler[k] for k in SCHEDULER_KEYS if k in sd_scheduler})
        scheduler_config["timestep"] = min(
            int(scheduler_config["timestep"]), int(scheduler_config["num_train_timesteps"]) - 1
        )
    return SODECScheduler.from_config(scheduler_config)


def _random_codec(folder, guidance_fit, unet_in, seed):
    """The codec and the fidelity/guidance encoder of the config ``folder``, randomly initialised (``seed``) to fit
    the UNet's input (``unet_in`` channels) and the ViT (``guidance_fit``)."""
    torch.manual_seed(seed)
    compression_vae = build_component(CompressionVAE, folder / "compression_vae", {"out_latent_channels": unet_in})
    fidelity_guidance = build_component(
        FidelityGuidanceEncoder,
        folder / "fidelity_guidance",
        dict(guidance_fit, latent_channels=compression_vae.config.latent_channels),
    )
    compression_vae.update(force=True)
    return compression_vae, fidelity_guidance


def _load_codec(codec, folder, guidance_fit, unet_in, sd_model, vit_name, seed, hub):
    hint = (
        "codec must be a folder or Hub id with a compression_vae/ subfolder (and optionally fidelity_guidance/), "
        "e.g. the output of training/convert_hific_checkpoint.py or a saved SODEC pipeline"
    )
    compression_vae = _load_part("codec", CompressionVAE, codec, "compression_vae", hint, **hub)
    report = _read_json(codec, CONVERSION_REPORT, None, hub)
    untrained = set(report.get("initialised", [])) if isinstance(report, dict) else set()

    def is_untrained(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in untrained)

    out = int(compression_vae.config.out_latent_channels)
    if out != unet_in:
        if not is_untrained("compression_vae.latent_transform."):
            raise ValueError(
                f"the codec's T_s outputs {out} channels ({str(codec)!r}/compression_vae out_latent_channels) but the "
                f"UNet takes {unet_in} ({str(sd_model)!r}/unet in_channels)"
            )
        logger.info("re-initialising T_s's output layer for a UNet with %d input channels", unet_in)
        compression_vae = _refit(
            compression_vae, {"out_latent_channels": unet_in}, ("latent_transform.conv_out.",), seed
        )
        compression_vae.update(force=True)
    if not compression_vae.is_updated:
        compression_vae.update(force=True)

    latent = int(compression_vae.config.latent_channels)
    has_guidance = _read_json(codec, "config.json", "fidelity_guidance", hub) is not None
    if not has_guidance:
        logger.info("the codec has no fidelity_guidance: D_a and F_p are initialised from %s", folder)
        torch.manual_seed(seed)
        fidelity_guidance = build_component(
            FidelityGuidanceEncoder, folder / "fidelity_guidance", dict(guidance_fit, latent_channels=latent)
        )
        return compression_vae, fidelity_guidance

    fidelity_guidance = _load_part(
        "fidelity guidance", FidelityGuidanceEncoder, codec, "fidelity_guidance", hint, **hub
    )
    cfg = fidelity_guidance.config
    if int(cfg.latent_channels) != latent:
        raise ValueError(
            f"the codec's fidelity decoder D_a takes {cfg.latent_channels} latent channels ({str(codec)!r}/fidelity_guidance) "
            f"but its compression_vae produces {latent} ({str(codec)!r}/compression_vae latent_channels)"
        )
    have = (int(cfg.image_encoder_hidden_size), int(cfg.cross_attention_dim))
    need = (guidance_fit["image_encoder_hidden_size"], guidance_fit["cross_attention_dim"])
    reinitialise: Tuple[str, ...] = ()
    if have != need:
        if not is_untrained("fidelity_guidance.guidance_projection."):
            raise ValueError(
                f"the codec's F_p maps ViT tokens of width {have[0]} to guidance of width {have[1]} "
                f"({str(codec)!r}/fidelity_guidance), but the image encoder {vit_name} has hidden_size {need[0]} and the "
                f"UNet of {str(sd_model)!r} has cross_attention_dim {need[1]}"
            )
        logger.info("re-initialising F_p (untrained in the converted codec) for widths %s → %s", need[0], need[1])
        reinitialise = ("guidance_projection.",)
    fidelity_guidance = _refit(fidelity_guidance, guidance_fit, reinitialise, seed)
    return compression_vae, fidelity_guidance
