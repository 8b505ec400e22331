"""The trainable SODEC: the pipeline to train (loaded or assembled, with what trains set up), one ``nn.Module``
whose ``forward`` runs a stage of docs/design.md §4 and returns its losses, so that accelerate/DDP wrap a single
module; the UNet LoRA; saving and loading what is trained."""

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import diffusers
import torch
from diffusers.training_utils import cast_training_params
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME, convert_state_dict_to_diffusers, convert_unet_state_dict_to_peft
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from sodec_pipeline import SODECPipeline
from sodec_pipeline.pipelines import DecodeOptions
from sodec_pipeline.pipelines.pipeline_sodec import check_colour_correction_block_size

from .discriminator import ConditionalPatchDiscriminator
from .losses import DistortionLoss
from .stages import Stage


UNET_TRAINING_MODES = ("lora", "full")
#: ``--entropy_model``: the entropy models a codec can code with (CompressionVAE ``entropy_model_type``).
ENTROPY_MODEL_CHOICES = ("hyperprior", "checkerboard")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
CONV_IN_WEIGHT_NAME = "unet_conv_in.safetensors"
DISCRIMINATOR_WEIGHT_NAME = "discriminator.safetensors"


# ---------------------------------------------------------------------------------------------- the pipeline to train
def load_vae(path):
    """A VAE from a saved pipeline (its ``vae/`` subfolder) or a VAE folder, of the class its config names."""
    folder = Path(path) / "vae" if (Path(path) / "vae" / "config.json").is_file() else Path(path)
    config = diffusers.AutoencoderKL.load_config(folder)
    vae_class = getattr(diffusers, config.get("_class_name", "AutoencoderKL"))
    return vae_class.from_pretrained(folder)


def load_base_pipeline(args) -> SODECPipeline:
    """The pipeline to train, in float32: a saved SODEC pipeline, or one assembled from published parts;
    its VAE replaced by ``--pretrained_vae_model_name_or_path`` when given, its codec's quality levels set by
    ``--quantization_steps``/``--default_quality``, its entropy model converted by ``--entropy_model`` and its
    scheduler given ``realism_control`` by ``--realism_control``."""
    if args.pretrained_model_name_or_path is not None:
        pipe = SODECPipeline.from_pretrained(
            args.pretrained_model_name_or_path, revision=args.revision, variant=args.variant, cache_dir=args.cache_dir
        )
        if args.pretrained_vae_model_name_or_path is not None:
            pipe.register_modules(vae=load_vae(args.pretrained_vae_model_name_or_path).float())
    else:
        pipe = assemble_base_pipeline(args)
    if args.colour_correction_block_size is not None:
        check_colour_correction_block_size(args.colour_correction_block_size)
        pipe.register_to_config(colour_correction_block_size=args.colour_correction_block_size)
    if args.quantization_steps is not None or args.default_quality is not None:
        pipe.register_modules(
            compression_vae=pipe.compression_vae.with_quality_levels(args.quantization_steps, args.default_quality)
        )
    if getattr(args, "realism_control", False) and not pipe.scheduler.config.get("realism_control", False):
        # the UNet learns a realism through its timestep: the scheduler that gives it one is released with it
        # (without diffusers' keys: "_use_default_values" of a config saved before the option would reset it)
        scheduler_config = {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}
        scheduler_config["realism_control"] = True
        pipe.register_modules(scheduler=type(pipe.scheduler).from_config(scheduler_config))
    entropy_model = getattr(args, "entropy_model", None)
    if entropy_model is not None and entropy_model != pipe.compression_vae.config.entropy_model_type:
        codec = pipe.compression_vae.with_entropy_model(
            entropy_model, args.context_channels, args.entropy_parameters_channels
        )
        pipe.register_modules(compression_vae=codec)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assemble_base_pipeline(args) -> SODECPipeline:
    """The pipeline assembled from published parts (``--sd_model``, ``--image_encoder``, ``--codec_init``)."""
    hub_kwargs = {k: v for k, v in (("revision", args.revision), ("cache_dir", args.cache_dir)) if v is not None}
    return SODECPipeline.from_pretrained_parts(
        args.sd_model,
        args.image_encoder,
        codec=args.codec_init,
        config=args.assembly_config,
        image_encoder_subfolder=args.image_encoder_subfolder,
        variant=args.variant,
        seed=args.seed if args.seed is not None else 0,
        **hub_kwargs,
    )


def lora_target_modules(args) -> List[str]:
    """The UNet module names of ``--lora_target_modules`` (comma-separated)."""
    return [m.strip() for m in args.lora_target_modules.split(",") if m.strip()]


def set_up_training(pipe, args, device, weight_dtype) -> None:
    """Makes trainable what ``args`` trains (``--unet_training``: a LoRA and conv_in, or the whole UNet;
    :attr:`Stage.AUTOENCODER`: the whole VAE, which sets ``args.train_vae_decoder``; ``--train_vae_decoder``;
    ``--train_image_encoder``), turns on ``--gradient_checkpointing``, and moves the VAE, ViT and UNet to
    ``device`` in ``weight_dtype`` (what trains of them stays float32)."""
    if args.unet_training == "lora":
        add_unet_lora(pipe.unet, args.lora_rank, args.lora_alpha, lora_target_modules(args))
    else:
        pipe.unet.requires_grad_(True)
    if Stage.AUTOENCODER in args.stages:  # the latent autoencoder alone: encoder and decoder train, the VAE is saved
        if not hasattr(pipe.vae, "quant_conv"):
            raise ValueError(
                f"--stage 0 trains an AutoencoderKL-style VAE; this pipeline's is {type(pipe.vae).__name__}"
            )
        args.train_vae_decoder = True
        pipe.vae.requires_grad_(True)
    else:
        pipe.vae.requires_grad_(False)
        pipe.vae.decoder.requires_grad_(args.train_vae_decoder)
        pipe.vae.post_quant_conv.requires_grad_(args.train_vae_decoder)
    pipe.image_encoder.requires_grad_(args.train_image_encoder)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(pipe)
    for module in (pipe.vae, pipe.image_encoder, pipe.unet):
        module.to(device, dtype=weight_dtype)
        cast_training_params(module, dtype=torch.float32)  # whatever trains (LoRA, conv_in, ...) stays fp32


# ---------------------------------------------------------------------------------------------- LoRA
def add_unet_lora(unet, rank: int, alpha: Optional[float], target_modules: Sequence[str]) -> LoraConfig:
    """Freezes the UNet, attaches a peft LoRA adapter (Gaussian init of A, zero B, so the UNet starts
    unchanged) on ``target_modules`` and makes ``conv_in`` fully trainable (ŷ_t is not an SD latent)."""
    unet.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        init_lora_weights="gaussian",
        target_modules=list(target_modules),
    )
    unet.add_adapter(config)
    unet.conv_in.requires_grad_(True)
    return config


def unet_lora_state_dict(unet) -> Dict[str, torch.Tensor]:
    """The adapter's weights in diffusers' LoRA format (what ``save_lora_weights`` writes)."""
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def save_unet_lora(unet, directory) -> None:
    """``pytorch_lora_weights.safetensors`` (loadable with ``load_lora_weights``) and ``conv_in``."""
    from diffusers import StableDiffusionPipeline

    lora = {k: v.detach().float().contiguous() for k, v in unet_lora_state_dict(unet).items()}
    StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=lora, safe_serialization=True)
    conv_in = {k: v.detach().float().contiguous() for k, v in unet.conv_in.state_dict().items()}
    save_file(conv_in, os.path.join(directory, CONV_IN_WEIGHT_NAME))


def load_unet_lora(unet, directory) -> None:
    """Loads what :func:`save_unet_lora` wrote into a UNet that already has the same adapter."""
    from diffusers import StableDiffusionPipeline

    state_dict, _ = StableDiffusionPipeline.lora_state_dict(str(directory), weight_name=LORA_WEIGHT_NAME)
    state_dict = {k[len("unet.") :]: v for k, v in state_dict.items() if k.startswith("unet.")}
    result = set_peft_model_state_dict(unet, convert_unet_state_dict_to_peft(state_dict), adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"LoRA weights in {directory} do not match the UNet's adapter: {unexpected[:3]}")
    conv_in = load_file(os.path.join(directory, CONV_IN_WEIGHT_NAME))
    with torch.no_grad():
        for name, tensor in unet.conv_in.named_parameters():
            tensor.copy_(conv_in[name].to(tensor.dtype))


def fuse_unet_lora(unet) -> None:
    """Merges the adapter into the base weights and removes the peft layers (a plain UNet to save)."""
    unet.fuse_lora()
    unet.unload_lora()


# ---------------------------------------------------------------------------------------------- memory
def enable_gradient_checkpointing(pipe) -> None:
    """Gradient checkpointing in every network that gradients pass through in training: the codec (E, H_a,
    P, H_s, T_s), the fidelity/guidance encoder (D_a, F_p), the frozen ViT (x̂_f's gradient flows through
    it), the UNet and the VAE decoder. Activations are recomputed in the backward pass instead of stored.

    transformers checkpoints a model only in training mode: :meth:`SODECTrainingModel.set_train_mode` keeps
    the frozen ViT in training mode when it checkpoints (CLIP's vision tower has no active dropout at its
    default ``attention_dropout=0``, so its output is the same).
    """
    pipe.compression_vae.enable_gradient_checkpointing()
    pipe.fidelity_guidance.enable_gradient_checkpointing()
    pipe.unet.enable_gradient_checkpointing()
    pipe.vae.enable_gradient_checkpointing()
    vit = pipe.image_encoder
    if hasattr(vit, "activation_checkpointing_enable"):  # transformers ≥ 5.x; the older name is deprecated
        vit.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        vit.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_checkpointing(module) -> bool:
    """Whether a transformers model has activation (gradient) checkpointing on, under either name."""
    flag = (
        "is_activation_checkpointing"
        if hasattr(type(module), "is_activation_checkpointing")
        else "is_gradient_checkpointing"
    )
    return bool(getattr(module, flag, False))


# ---------------------------------------------------------------------------------------------- the model
class SODECTrainingModel(nn.Module):
    """The pipeline's networks plus the loss, for one training step of any stage.

    ``forward(pixel_values, stage, rate_weight, alignment_weight, kl_weight, latent_weight)`` returns a dict
    with ``loss`` (the objective of the stage), ``aux_loss`` (the entropy bottleneck's quantile loss, or
    ``None`` when the codec is frozen), ``bpp`` (the likelihood estimate, mean over the batch), ``mse`` of
    the output image, ``x_hat`` (the stage's output image: the VAE's reconstruction in stage 0, x̂_f in
    stage 1, x̂ otherwise), ``y_hat`` and, in stages ≥ 2, ``align`` = ‖x − x̂_f‖² (MSE) and, with
    ``latent_weight`` > 0, ``latent`` = ‖ŷ_t − scaling_factor · VAE-encoder mean(x)‖² (MSE). With ``realism`` (a β
    per image, stages ≥ 2) the UNet runs at each image's β and the distortion weighs its perceptual terms by β
    (``DistortionLoss``). Stage 0 trains
    the latent autoencoder (VAE encoder and decoder) alone: distortion + ``kl_weight`` · KL. What is frozen in a stage runs under ``no_grad`` rather than by
    toggling ``requires_grad``, so that the same DDP-wrapped module serves every stage.

    The decode is the pipeline's own (``SODECPipeline.decode_fidelity`` in stage 1, ``decode_latents``
    after): the networks trained here run exactly as users decode, tiles included.
    """

    def __init__(
        self,
        pipe,
        distortion: DistortionLoss,
        unet_training: str = "lora",
        train_vae_decoder: bool = False,
        train_image_encoder: bool = False,
        freeze_fidelity_decoder: bool = False,
        freeze_codec: bool = False,
    ):
        super().__init__()
        if unet_training not in UNET_TRAINING_MODES:
            raise ValueError(f"unet_training must be one of {UNET_TRAINING_MODES}; got {unet_training!r}")
        self.compression_vae = pipe.compression_vae
        self.fidelity_guidance = pipe.fidelity_guidance
        self.unet = pipe.unet
        self.image_encoder = pipe.image_encoder
        self.vae = pipe.vae
        self.distortion = distortion
        self.unet_training = unet_training
        self.train_vae_decoder = train_vae_decoder
        self.train_image_encoder = train_image_encoder
        self.freeze_fidelity_decoder = freeze_fidelity_decoder
        self.freeze_codec = freeze_codec
        self.pipe = pipe  # not a module: its `decode_fidelity` and `decode_latents` are the decode trained

    def trainable_modules(self) -> List[nn.Module]:
        modules = [self.compression_vae, self.fidelity_guidance, self.unet]
        if self.train_vae_decoder:
            modules.append(self.vae)
        if self.train_image_encoder:
            modules.append(self.image_encoder)
        return modules

    def set_train_mode(self) -> "SODECTrainingModel":
        """Trainable networks in train mode (the entropy models add noise), frozen ones in eval mode."""
        self.train()
        for module in (self.image_encoder, self.vae, self.distortion):
            if not any(module is m for m in self.trainable_modules()):
                module.eval()
        if is_checkpointing(self.image_encoder):
            self.image_encoder.train()  # transformers only checkpoints in training mode
        return self

    def main_parameters(self) -> List[nn.Parameter]:
        """Everything trained by the main optimizer (all stages), i.e. all but the entropy bottleneck's quantiles."""
        return [p for name, p in self.named_parameters() if p.requires_grad and not name.endswith("quantiles")]

    def aux_parameters(self) -> List[nn.Parameter]:
        return [p for name, p in self.compression_vae.named_parameters() if name.endswith("quantiles")]

    def autoencode(self, x: torch.Tensor):
        """Stage 0: the latent autoencoder alone, x → VAE encoder → a sample of its posterior → D_m → x̂ (the
        way SD's VAE is trained before SD). Returns x̂ on the [0, 1] scale and the posterior's KL divergence
        from N(0, I) per latent element."""
        posterior = self.vae.encode(x * 2.0 - 1.0).latent_dist
        x_hat = (self.vae.decode(posterior.sample()).sample.float() + 1.0) / 2.0
        return x_hat, posterior.kl().mean() / posterior.mean[0].numel()

    def target_latents(self, x: torch.Tensor) -> torch.Tensor:
        """The VAE's latent of x on the UNet's scale (posterior mean × scaling factor): what ŷ_t regresses
        with ``latent_weight`` > 0 (no gradient)."""
        with torch.no_grad():
            posterior = self.vae.encode((x * 2.0 - 1.0).to(self.vae.dtype)).latent_dist
            return posterior.mean.float() * self.vae.config.scaling_factor

    def forward(
        self,
        pixel_values: torch.Tensor,
        stage: Stage,
        rate_weight: float = 0.0,
        alignment_weight: float = 0.0,
        kl_weight: float = 0.0,
        latent_weight: float = 0.0,
        quantization_step=None,
        realism: Optional[torch.Tensor] = None,
    ):
        x = pixel_values.float()
        if stage == Stage.AUTOENCODER:
            x_hat, kl = self.autoencode(x)
            d = self.distortion(x_hat, x)
            out = {"bpp": None, "y_hat": None, "aux_loss": None, "kl": kl}
            out.update(d, x_hat=x_hat, loss=d["distortion"] + kl_weight * kl)
            return out
        codec_trained = stage != Stage.DECODER and not self.freeze_codec
        with torch.set_grad_enabled(codec_trained and torch.is_grad_enabled()):
            coded = self.compression_vae(x, quantization_step=quantization_step)
        bpp = coded.bpp.mean()
        rate = (rate_weight * coded.bpp).mean()  # rate_weight: λ, or one λ per image (B,)
        out = {"bpp": bpp, "y_hat": coded.y_hat}
        out["aux_loss"] = self.compression_vae.aux_loss() if codec_trained else None

        batch_size = x.shape[0]  # tiles per network call: one tile position of every image
        if stage == Stage.CODEC:
            x_f = self.pipe.decode_fidelity(coded.y_hat, batch_size)
            d = self.distortion(x_f, x)
            out.update(d, x_hat=x_f, loss=d["distortion"] + rate)
            return out

        # ŷ_t: the codec's own when it trains; in stage 2 (codec under no_grad) the decode runs H_s and T_s
        # again, with gradients: they train while the rest of the codec is frozen
        noisy_latents = coded.latents if codec_trained else None
        if noisy_latents is None and latent_weight > 0:
            noisy_latents = self.pipe.synthesize_latents(coded.y_hat, coded.z_hat)
        x_f = None
        if self.freeze_fidelity_decoder:  # D_a keeps its stage-1 weights: no gradient reaches it
            with torch.no_grad():
                x_f = self.pipe.decode_fidelity(coded.y_hat, batch_size)
        x_hat, x_f = self.pipe.decode_latents(
            coded.y_hat,
            coded.z_hat,
            batch_size=batch_size,
            options=DecodeOptions(noisy_latents=noisy_latents, fidelity_image=x_f, realism=realism),
        )
        d = self.distortion(x_hat, x, realism)
        align = F.mse_loss(x_f, x)
        loss = d["distortion"]
        if stage != Stage.DECODER:
            loss = loss + rate + alignment_weight * align
        if latent_weight > 0:
            out["latent"] = F.mse_loss(noisy_latents.float(), self.target_latents(x))
            loss = loss + latent_weight * out["latent"]
        out.update(d, x_hat=x_hat, align=align, loss=loss)
        return out


def build_training_model(pipe, args, device, weight_dtype) -> SODECTrainingModel:
    """The :class:`SODECTrainingModel` of ``train_sodec.py``'s arguments (the distortion loss that ``parse_args``
    loaded; ``--unet_training`` and the options of the same names) on ``pipe``, its networks set up by
    :func:`set_up_training`, on ``device`` in training mode."""
    set_up_training(pipe, args, device, weight_dtype)
    options = ("train_vae_decoder", "train_image_encoder", "freeze_fidelity_decoder", "freeze_codec")
    model = SODECTrainingModel(
        pipe, args.distortion_loss, args.unet_training, **{name: getattr(args, name) for name in options}
    )
    return model.to(device).set_train_mode()


# ---------------------------------------------------------------------------------------------- checkpoints
def _save_weights(module: nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous() for k, v in module.state_dict().items()}, str(path))


def save_trainable_state(model: SODECTrainingModel, directory) -> None:
    """What a checkpoint needs of the networks: the whole codec (with its entropy tables), the fidelity/
    guidance encoder, the UNet (its LoRA and conv_in, or all of it with ``unet_training="full"``) and the
    VAE / image encoder when they are trained, and the scheduler's config (a run with ``--realism_control`` gives it
    ``realism_control``, which ``export_pipeline.py`` carries over). What is frozen comes from the base model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.pipe.scheduler.save_pretrained(directory / "scheduler")
    model.compression_vae.save_pretrained(directory / "compression_vae")
    model.fidelity_guidance.save_pretrained(directory / "fidelity_guidance")
    if model.unet_training == "lora":
        save_unet_lora(model.unet, directory)
    else:
        _save_weights(model.unet, directory / "unet" / SAFETENSORS_WEIGHTS_NAME)
    if model.train_vae_decoder:
        _save_weights(model.vae, directory / "vae" / SAFETENSORS_WEIGHTS_NAME)
    if model.train_image_encoder:
        _save_weights(model.image_encoder, directory / "image_encoder" / SAFETENSORS_WEIGHTS_NAME)


def trainable_state_files(
    unet_training: str = "lora", train_vae_decoder: bool = False, train_image_encoder: bool = False
) -> List[str]:
    """The files (relative paths) that :func:`save_trainable_state` writes and :func:`load_trainable_state`
    reads for these options: a checkpoint lacking one of them cannot be resumed."""
    files = [f"compression_vae/{SAFETENSORS_WEIGHTS_NAME}", f"fidelity_guidance/{SAFETENSORS_WEIGHTS_NAME}"]
    files += (
        [LORA_WEIGHT_NAME, CONV_IN_WEIGHT_NAME] if unet_training == "lora" else [f"unet/{SAFETENSORS_WEIGHTS_NAME}"]
    )
    if train_vae_decoder:
        files.append(f"vae/{SAFETENSORS_WEIGHTS_NAME}")
    if train_image_encoder:
        files.append(f"image_encoder/{SAFETENSORS_WEIGHTS_NAME}")
    return files


def load_trainable_state(model: SODECTrainingModel, directory) -> None:
    """Inverse of :func:`save_trainable_state`, in place (the optimizers keep their parameters)."""
    directory = Path(directory)
    model.compression_vae.load_state_dict(load_file(directory / "compression_vae" / SAFETENSORS_WEIGHTS_NAME))
    model.fidelity_guidance.load_state_dict(load_file(directory / "fidelity_guidance" / SAFETENSORS_WEIGHTS_NAME))
    if model.unet_training == "lora":
        load_unet_lora(model.unet, directory)
    else:
        model.unet.load_state_dict(load_file(directory / "unet" / SAFETENSORS_WEIGHTS_NAME))
    if model.train_vae_decoder:
        model.vae.load_state_dict(load_file(directory / "vae" / SAFETENSORS_WEIGHTS_NAME))
    if model.train_image_encoder:
        model.image_encoder.load_state_dict(load_file(directory / "image_encoder" / SAFETENSORS_WEIGHTS_NAME))


def save_discriminator(discriminator: ConditionalPatchDiscriminator, directory) -> None:
    state = {k: v.detach().contiguous() for k, v in discriminator.state_dict().items()}
    save_file(state, os.path.join(directory, DISCRIMINATOR_WEIGHT_NAME))


def load_discriminator(discriminator: ConditionalPatchDiscriminator, directory) -> None:
    discriminator.load_state_dict(load_file(os.path.join(directory, DISCRIMINATOR_WEIGHT_NAME)))
