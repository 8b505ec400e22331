"""Turning user images into codec inputs and decoded tensors back into user images.

Accepted inputs (see :func:`to_image_tensors`):

- a ``PIL.Image.Image`` of any mode; it is converted to RGB: ``L``/``LA``/``P``/``CMYK``/``YCbCr``/``1``
  through Pillow, ``RGBA``/``LA``/``PA`` by dropping alpha, 16-bit modes (``I;16*``, ``I``) by scaling
  0…65535 to 0…255, ``F`` by clipping to 0…255;
- a numpy array ``(H, W, 3)`` or ``(B, H, W, 3)``, uint8, or float in [0, 1]; ``(H, W)`` is grey;
- a torch tensor ``(B, 3, H, W)`` or ``(3, H, W)``, float in [0, 1];
- a list of any of these (images of different sizes are fine).

Images are never resized: the pipeline pads them (edge replication) to a multiple of 64 and crops the
decoded image back to the original size.
"""

import math
from typing import List, Sequence, Union

import numpy as np
import PIL.Image
import torch
from torch.nn import functional as F


ImageInput = Union[PIL.Image.Image, np.ndarray, torch.Tensor, Sequence]
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def pil_to_rgb_array(image: PIL.Image.Image) -> np.ndarray:
    """Any PIL image → (H, W, 3) uint8, by the rules in this module's docstring."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":
        grey = np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _array_to_tensors(array: np.ndarray) -> List[torch.Tensor]:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"numpy images must be (H, W, 3) or (B, H, W, 3); got shape {array.shape}")
    if array.dtype == np.uint8:
        data = torch.tensor(array, dtype=torch.float32).div_(255.0)  # in place: one float copy of the image
    elif np.issubdtype(array.dtype, np.floating):
        data = torch.tensor(array, dtype=torch.float32)
    else:
        raise ValueError(f"numpy images must be uint8 or float in [0, 1]; got dtype {array.dtype}")
    return [_checked(img.permute(2, 0, 1)) for img in data]


def _tensor_to_tensors(tensor: torch.Tensor) -> List[torch.Tensor]:
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"tensor images must be (B, 3, H, W) or (3, H, W) in [0, 1]; got shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"tensor images must be floating point in [0, 1]; got dtype {tensor.dtype}")
    return [_checked(img.detach().float().cpu()) for img in tensor]


def _checked(image: torch.Tensor) -> torch.Tensor:
    if image.shape[-1] < 1 or image.shape[-2] < 1:
        raise ValueError(f"image of size {image.shape[-1]}×{image.shape[-2]} (W×H) is empty")
    low, high = (float(v) for v in torch.aminmax(image))  # one pass, no image-sized temporaries; NaN propagates
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("image contains NaN or infinite values")
    if low < 0 or high > 1:
        raise ValueError(f"float images must lie in [0, 1]; got values in [{low:.3g}, {high:.3g}]")
    return image


def to_image_tensors(images: ImageInput) -> List[torch.Tensor]:
    """Normalises any accepted input to a list of float (3, H, W) tensors in [0, 1] on the CPU."""
    if isinstance(images, PIL.Image.Image):
        return _array_to_tensors(pil_to_rgb_array(images))
    if isinstance(images, np.ndarray):
        return _array_to_tensors(images)
    if isinstance(images, torch.Tensor):
        return _tensor_to_tensors(images)
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("no images given")
        out: List[torch.Tensor] = []
        for item in images:
            if isinstance(item, (list, tuple)):
                raise ValueError("nested lists of images are not supported")
            out.extend(to_image_tensors(item))
        return out
    raise TypeError(
        f"unsupported image type {type(images).__name__}: pass a PIL image, a numpy array, a torch tensor or a list of them"
    )


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """(B, C, H, W) → edge-replicated to the next multiples of ``multiple`` (bottom and right)."""
    h, w = image.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return image
    return F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")


def postprocess(images: List[torch.Tensor], output_type: str):
    """Decoded (3, H, W) tensors, already clamped to [0, 1] (``decompress`` clamps them on their device) →
    ``pil`` (list of PIL images), ``np`` ((B, H, W, 3) float array, or a list of (H, W, 3) arrays when sizes
    differ) or ``pt`` ((B, 3, H, W), or a list).

    Copies no more than it must (a single image is returned as a view, 8-bit images are made band by band),
    so that a 16384² decode does not hold its image twice."""
    images = [img.detach().float().cpu() for img in images]
    if output_type == "pt":
        if len(images) == 1:
            return images[0].unsqueeze(0)
        return torch.stack(images) if _same_size(images) else images
    arrays = [img.permute(1, 2, 0).numpy() for img in images]
    if output_type == "np":
        if len(arrays) == 1:
            return arrays[0][None]
        return np.stack(arrays) if _same_size(images) else arrays
    if output_type == "pil":
        return [PIL.Image.fromarray(_to_uint8(a)) for a in arrays]
    raise ValueError(f"output_type must be 'pil', 'np' or 'pt'; got {output_type!r}")


def _to_uint8(array: np.ndarray, band_rows: int = 256) -> np.ndarray:
    """(H, W, 3) float in [0, 1] → uint8, round(255·x), converted ``band_rows`` rows at a time."""
    out = np.empty(array.shape, dtype=np.uint8)
    for top in range(0, array.shape[0], band_rows):
        out[top : top + band_rows] = np.round(array[top : top + band_rows] * 255.0)
    return out


def _same_size(images: List[torch.Tensor]) -> bool:
    return len({tuple(img.shape) for img in images}) <= 1
