"""Validation of ``train_sodec.py``: real compression of the ``--validation_images`` to bytes, both decodes,
and their metrics and images in every tracker."""

import contextlib
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from accelerate.logging import get_logger

from sodec_pipeline.codec.bitstream import bits_per_pixel
from sodec_pipeline.metrics import batch_ms_ssim, batch_psnr, batch_texture_statistics, finite_mean
from sodec_pipeline.metrics.texture import added_chroma_energy

from .data import list_images


logger = get_logger(__name__, log_level="INFO")


def load_validation_images(paths):
    """``(file name, RGB image)`` of every image file given or found under the given folders."""
    files = list_images(paths)
    if not files:
        raise ValueError(f"no validation images found in {paths}")
    return [(f.name, PIL.Image.open(f).convert("RGB")) for f in files]


@torch.no_grad()
def evaluate(pipe, images, accelerator, autocast: bool = True) -> tuple:
    """Real compression of each image to bytes and both decodings. Returns (metrics, decoded images).

    bpp is 8·len(stream)/(H·W); PSNR and MS-SSIM (sodec_pipeline.metrics: fewer scales below
    161 px) compare the decoded image with the original. ``autocast`` (needed while the frozen networks
    are in fp16/bf16) wraps the decoder networks; the codec's entropy coding always runs in float32.
    The released float32 pipeline is evaluated without it."""
    streams = []
    names = ("bpp", "psnr", "ms_ssim", "fidelity_psnr", "flat_excess", "texture_recall", "chroma_excess")
    results = {name: [] for name in names}
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
            decoded_8bit = (decoded * 255).round() / 255  # as the file holds it
            excess, recall = batch_texture_statistics(decoded_8bit, reference)
            results["flat_excess"].append(excess.item())
            results["texture_recall"].append(recall.item())
            results["chroma_excess"].append(added_chroma_energy(decoded_8bit, reference).item())
            decoded_images.append(decoded[0].permute(1, 2, 0).numpy())
    metrics = {f"validation/{k}": finite_mean(v) for k, v in results.items()}
    return metrics, decoded_images


def log_validation(pipe, images, accelerator, step):
    """Evaluates on the main process and logs metrics and images to every tracker."""
    metrics, decoded = evaluate(pipe, images, accelerator)
    logger.info(
        f"validation at step {step}: bpp {metrics['validation/bpp']:.4f}, PSNR {metrics['validation/psnr']:.2f} dB, "
        f"MS-SSIM {metrics['validation/ms_ssim']:.4f}, fidelity PSNR {metrics['validation/fidelity_psnr']:.2f} dB, "
        f"flat-window excess {metrics['validation/flat_excess']:.2f}, texture recall {metrics['validation/texture_recall']:.2f}, "
        f"chroma excess {metrics['validation/chroma_excess']:.2f}"
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


def validate(model, images, accelerator, step) -> dict:
    """Validation during training (main process): the trained networks of ``model`` (the unwrapped
    ``SODECTrainingModel``) in eval mode with fresh entropy tables, through its pipeline; then back to training."""
    model.eval()
    model.compression_vae.update(force=True)
    metrics = log_validation(model.pipe, images, accelerator, step)
    model.set_train_mode()
    return metrics
