"""Fuzzing the image input path: how ``sodec compress`` reads a file (sodec_pipeline/cli/files.py: the header
and its size checked against the format's limits before any pixel is decoded, then the pixels, the right way up,
through sodec_pipeline/image_files.py, then the pipeline's conversion to RGB) and how the demo reads an upload
(sodec_pipeline/demo/comparison.py: its pixel budget checked from the header, then the pixels).

An input is an image file. The rules:

- ``sodec compress``: a ``CLIError`` in one line, or a header size within the format's limits (16384 per side),
  then (for a size within :data:`DECODE_LIMIT`, the pixels this harness decodes) a ``CLIError`` in one line or
  an image of exactly the header's size (or, for a PNG whose eXIf chunk follows its pixels, that size turned a
  quarter: Pillow reads such a chunk only with the pixels), whose RGB array has that size;
- the demo: a ``DemoInputError`` or ``UnreadableImageError`` in one line, or an RGB array within the demo's
  budget (here :data:`DECODE_LIMIT`): what the page's memory is bounded by.

Pillow's own Python code (its format plugins) is instrumented too, so that coverage guides the fuzzer through the
formats; their C decoders are not.

    python tests/fuzz/fuzz_image.py -max_total_time=3600 corpus/image              # a campaign
"""

import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import REGRESSIONS, SEEDS, check_message, ensure_repository_on_path, fuzz, rule  # noqa: E402


NAME = "image"
#: The most pixels this harness decodes (512 × 512) and the demo's budget here: larger headers are checked, not
#: decoded, so that every input takes milliseconds.
DECODE_LIMIT = 1 << 18
OPTIONS = {"rss_limit_mb": "2048"}


def corpus():
    return [SEEDS / "images", REGRESSIONS / NAME]


def load():
    """Imports the image path (and Pillow's plugins) and returns ``check(data) -> outcome``."""
    import numpy as np
    import PIL.Image

    from sodec_pipeline.cli.errors import CLIError
    from sodec_pipeline.cli.files import load_image, read_image_size
    from sodec_pipeline.codec.bitstream import MAX_IMAGE_SIDE
    from sodec_pipeline.demo.comparison import DemoInputError, read_photo
    from sodec_pipeline.image_files import UnreadableImageError
    from sodec_pipeline.image_processing import pil_to_rgb_array

    PIL.Image.init()  # every format plugin, imported here so that it is instrumented
    upload = Path(tempfile.mkdtemp(prefix="sodec-fuzz-image-")) / "upload"

    def compress_reads(data: bytes) -> str:
        try:
            width, height = read_image_size("-", data)
        except CLIError as e:
            check_message(e)
            return "refused"
        rule(1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE, f"a {width}×{height} header accepted")
        if width * height > DECODE_LIMIT:
            return "header accepted"
        try:
            image = load_image("-", data)
        except CLIError as e:
            check_message(e)
            return "refused"
        turned = data.startswith(b"\x89PNG") and image.size == (height, width)  # an eXIf chunk after the pixels
        rule(image.size == (width, height) or turned, f"the header said {width}×{height}, the pixels are {image.size}")
        array = pil_to_rgb_array(image)
        rule(array.shape == (image.height, image.width, 3) and array.dtype == np.uint8, f"RGB of {array.shape}")
        return "read"

    def demo_reads(data: bytes) -> str:
        upload.write_bytes(data)
        try:
            array = read_photo(upload, DECODE_LIMIT)
        except (DemoInputError, UnreadableImageError) as e:
            check_message(e)
            return "refused"
        rule(array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8, f"an RGB array of {array.shape}")
        rule(array.shape[0] * array.shape[1] <= DECODE_LIMIT, f"the demo decoded {array.shape[1]}×{array.shape[0]}")
        return "read"

    def check(data: bytes) -> str:
        cli, demo = compress_reads(data), demo_reads(data)
        return cli if cli == demo else f"{cli} (cli), {demo} (demo)"

    return check


if __name__ == "__main__":
    ensure_repository_on_path()
    fuzz(sys.argv, load, corpus(), OPTIONS, instrument=("sodec_pipeline", "PIL"))
