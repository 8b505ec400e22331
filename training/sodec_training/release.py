"""The release of ``train_sodec.py``: the trained weights (the EMA's with ``--use_ema``) in a float32 copy of the
base pipeline, evaluated on the validation images, saved with its model card to ``--output_dir`` and, with
``--push_to_hub``, uploaded."""

from pathlib import Path

from accelerate.logging import get_logger
from huggingface_hub import upload_folder

from .entropy_tables import refresh_entropy_tables
from .model_card import save_training_model_card
from .modeling import (
    add_unet_lora,
    fuse_unet_lora,
    load_base_pipeline,
    load_unet_lora,
    lora_target_modules,
    save_unet_lora,
)
from .validation import evaluate


logger = get_logger(__name__, log_level="INFO")


def release_pipeline(accelerator, args, state, plan, validation_images, step: int, repo_id, metrics) -> dict:
    """Writes the released pipeline (main process, after training): the trained networks of ``state`` (a
    :class:`~sodec_training.training_step.TrainingState`) in the float32 base pipeline, whatever
    ``--mixed_precision`` was; with ``--use_ema`` the EMA's weights, the raw ones restored afterwards. Returns the
    validation metrics of the released pipeline (``metrics``, the last ones of training, without validation
    images)."""
    if state.ema is not None:
        state.ema.store(state.main_parameters)
        state.ema.copy_to(state.main_parameters)
    release = trained_pipeline(accelerator.unwrap_model(state.model), args)
    if validation_images:
        metrics, _ = evaluate(release, validation_images, accelerator, autocast=False)
        logger.info(f"final validation (released pipeline): {metrics}")
        accelerator.log({f"final_{k}": v for k, v in metrics.items()}, step=step)
    release.save_pretrained(args.output_dir)
    name = repo_id or Path(args.output_dir).name
    save_training_model_card(args, name, args.output_dir, metrics, plan, release.compression_vae)
    if args.push_to_hub:
        upload_folder(
            repo_id=repo_id,
            folder_path=args.output_dir,
            commit_message="End of training",
            token=args.hub_token,
            ignore_patterns=["step_*", "epoch_*", "checkpoint-*", ".checkpoint-*", f"{args.logging_dir}/*"],
        )
    if state.ema is not None:
        state.ema.restore(state.main_parameters)
    return metrics


def trained_pipeline(trained, args):
    """A fresh float32 base pipeline holding the weights of ``trained`` (a ``SODECTrainingModel``): the codec and
    D_a/F_p, the UNet (its LoRA saved to ``--output_dir`` and fused, or all its weights), and the VAE and ViT when
    they trained; in eval mode, with the base's entropy tables where its entropy models did not train, else fresh
    ones (``entropy_tables.py``)."""
    release = load_base_pipeline(args)
    base_codec_state = {k: v.clone() for k, v in release.compression_vae.state_dict().items()}
    release.compression_vae.load_state_dict(trained.compression_vae.state_dict())
    release.fidelity_guidance.load_state_dict(trained.fidelity_guidance.state_dict())
    if args.unet_training == "lora":
        save_unet_lora(trained.unet, args.output_dir)
        add_unet_lora(release.unet, args.lora_rank, args.lora_alpha, lora_target_modules(args))
        load_unet_lora(release.unet, args.output_dir)
        fuse_unet_lora(release.unet)
    else:
        release.unet.load_state_dict({k: v.float() for k, v in trained.unet.state_dict().items()})
    if args.train_vae_decoder:
        release.vae.load_state_dict({k: v.float() for k, v in trained.vae.state_dict().items()})
    if args.train_image_encoder:
        release.image_encoder.load_state_dict({k: v.float() for k, v in trained.image_encoder.state_dict().items()})
    for module in (
        release.compression_vae,
        release.fidelity_guidance,
        release.unet,
        release.vae,
        release.image_encoder,
    ):
        module.requires_grad_(False)
        module.eval()
    refresh_entropy_tables(release.compression_vae, base_codec_state)
    return release
