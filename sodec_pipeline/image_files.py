"""Image files: which names are images, and a file's pixels the right way up, or one line that says why not.

Every place where a file becomes an image (the CLI, ``sodec eval``, the demo, the benchmark, the training data)
finds files by :data:`IMAGE_EXTENSIONS` and reads them with :func:`read_image`, which applies the EXIF
orientation (:func:`~sodec_pipeline.orientation.upright`). No torch here: the CLI reads images before it
imports it.
"""

import os
from typing import Optional, Union

import PIL.Image

from .messages import first_line
from .orientation import upright


#: The file name extensions (lower case) of the images a folder is searched for.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: What Pillow raises for a file it cannot read as an image: its plugins raise many kinds for a damaged file
#: (``OSError``, ``ValueError``, ``SyntaxError``; the AVIF decoder a ``RuntimeError``, found by tests/fuzz/fuzz_image.py:
#: tests/assets/fuzz-regressions/image/), and Pillow's own fuzzers accept any, so any ``Exception`` but
#: ``MemoryError`` (:func:`is_read_error`).
PILLOW_READ_ERRORS = (Exception,)


def is_read_error(error: BaseException) -> bool:
    """Whether ``error``, raised by Pillow while it opened or decoded a file, means that the file is no readable
    image (:data:`PILLOW_READ_ERRORS`); running out of memory is not."""
    return isinstance(error, PILLOW_READ_ERRORS) and not isinstance(error, MemoryError)


class UnreadableImageError(ValueError):
    """An image file that Pillow cannot read: ``<name>: not a readable image (<Pillow's reason>)``."""

    def __init__(self, name: str, error: BaseException):
        super().__init__(f"{name}: not a readable image ({first_line(error)})")


def read_image(file: Union[str, os.PathLike, PIL.Image.Image], name: Optional[str] = None) -> PIL.Image.Image:
    """An image file's pixels (a new PIL image, in the file's mode) the right way up.

    ``file``: a path, or an image opened from its header (``PIL.Image.open``; the caller closes it), for a
    caller that checks the header first. ``name``: the file as the message names it (default: ``file``).
    Raises :class:`UnreadableImageError`."""
    try:
        if isinstance(file, PIL.Image.Image):
            return upright(file)
        with PIL.Image.open(file) as image:
            return upright(image)
    except PILLOW_READ_ERRORS as e:
        if not is_read_error(e):
            raise
        raise UnreadableImageError(name or str(file), e) from e
