from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class SODECPipelineOutput(BaseOutput):
    """Output of ``SODECPipeline.__call__`` and ``SODECPipeline.decompress``.

    Args:
        images: the decoded images at their original sizes (``pil``: list of PIL images; ``np``: a
            (B, H, W, 3) float array in [0, 1], or a list of arrays when sizes differ; ``pt``: a
            (B, 3, H, W) tensor in [0, 1], or a list).
        bitstreams: the streams that were decoded, one ``bytes`` per image.
        bpp: bits per pixel of each stream, 8·len(stream) / (H·W) of the original image.
    """

    images: Union[List[PIL.Image.Image], np.ndarray, torch.Tensor, list]
    bitstreams: Optional[List[bytes]] = None
    bpp: Optional[List[float]] = None
