"""Image files the right way up: a photo's EXIF orientation applied, as every viewer does.

A camera stores the pixels as its sensor saw them and an EXIF ``Orientation`` tag that says how to turn them;
a portrait photo from a phone is often landscape pixels with ``Orientation = 6``. Every place where a *file*
becomes an image (the CLI, ``sodec eval``, the demo, the training data) goes through :func:`upright`, as
``diffusers.utils.load_image`` does, so that the codec sees, and decodes, the photo its owner sees. Images
handed to the pipeline as objects are taken as they are.

No torch here: the CLI reads sizes from headers before it imports it.
"""

from typing import Tuple

import PIL.Image
import PIL.ImageOps
from PIL.ExifTags import Base as ExifTag
from PIL.PngImagePlugin import PngImageFile


#: EXIF orientations that turn the stored pixels a quarter turn (5 to 8): width and height swap.
QUARTER_TURNS = frozenset({5, 6, 7, 8})


def upright(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` the way it is meant to be seen: its EXIF orientation applied and the tag removed
    (``PIL.ImageOps.exif_transpose``). Decodes the pixels; returns a new image, also when nothing turns."""
    return PIL.ImageOps.exif_transpose(image)


def upright_size(image: PIL.Image.Image) -> Tuple[int, int]:
    """(width, height) of ``upright(image)``, from an opened file's header: no pixel is decoded. A PNG's
    orientation counts when its header holds it (an eXIf chunk before the pixels, where the PNG specification
    puts it): Pillow reads a later one only with the pixels."""
    width, height = image.size
    if isinstance(image, PngImageFile) and "exif" not in image.info:
        return width, height  # PngImageFile.getexif would decode the pixels to look further
    orientation = image.getexif().get(ExifTag.Orientation, 1)
    return (height, width) if orientation in QUARTER_TURNS else (width, height)
