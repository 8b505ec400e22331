"""Images the right way up: wherever a file becomes an image (the CLI, `sodec eval`'s loader, the demo, the
training data), a photo's EXIF orientation is applied (sodec_pipeline.orientation), as diffusers.utils.load_image
does. Each test stores a real photograph turned, with the EXIF tag that turns it back."""

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from PIL.ExifTags import Base as ExifTag

from sodec_pipeline.cli import main
from sodec_pipeline.orientation import upright, upright_size


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))

#: EXIF orientation → how to store an upright image so that the tag turns it back (the inverse of what
#: PIL.ImageOps.exif_transpose does for that orientation).
STORED_AS = {
    3: PIL.Image.Transpose.ROTATE_180,
    5: PIL.Image.Transpose.TRANSPOSE,
    6: PIL.Image.Transpose.ROTATE_90,
    8: PIL.Image.Transpose.ROTATE_270,
}


def _stored_turned(image: PIL.Image.Image, orientation: int, path: Path, **save) -> Path:
    """``image`` saved at ``path`` as a camera stores it: pixels turned, and the EXIF tag that turns them back."""
    exif = PIL.Image.Exif()
    exif[ExifTag.Orientation] = orientation
    image.transpose(STORED_AS[orientation]).save(path, exif=exif, **save)
    return path


def _turned_size(size, orientation):
    return size[::-1] if orientation in (5, 6, 7, 8) else size


# ---------------------------------------------------------------------- the helpers
@pytest.mark.parametrize("orientation", sorted(STORED_AS))
def test_upright_turns_the_stored_pixels_back(orientation, small_photo, tmp_path):
    path = _stored_turned(small_photo, orientation, tmp_path / "photo.png")  # lossless: pixels compared exactly
    with PIL.Image.open(path) as image:
        assert image.size == _turned_size((96, 64), orientation)
        assert upright_size(image) == (96, 64)
        turned = upright(image)
    assert turned.size == (96, 64) and np.array_equal(np.asarray(turned), np.asarray(small_photo))
    assert ExifTag.Orientation not in turned.getexif()  # applied once, never twice


def test_an_image_without_orientation_is_left_as_it_is(small_photo, tmp_path):
    small_photo.save(tmp_path / "plain.png")
    with PIL.Image.open(tmp_path / "plain.png") as image:
        assert upright_size(image) == (96, 64)
        assert np.array_equal(np.asarray(upright(image)), np.asarray(small_photo))


def test_upright_size_reads_the_header_only(small_photo, tmp_path):
    """A turned JPEG cut after its header, and a PNG without EXIF whose pixel data is too short: the size comes
    back, the pixels would not decode."""
    data = _stored_turned(small_photo, 6, tmp_path / "photo.jpg", quality=95).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: data.index(b"\xff\xda") + 16])  # up to the start of the scan
    with PIL.Image.open(cut) as image:
        assert upright_size(image) == (96, 64)
        with pytest.raises(OSError):
            image.load()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = tmp_path / "short.png"
    header = struct.pack(">IIBBBBB", 96, 64, 8, 2, 0, 0, 0)
    png.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    with PIL.Image.open(png) as image:
        assert upright_size(image) == (96, 64)
        with pytest.raises(OSError):
            image.load()


# ---------------------------------------------------------------------- every place a file becomes an image
def test_the_cli_compresses_and_decodes_a_turned_photo_upright(tiny_pipeline_dir, small_photo, capsys, tmp_path):
    photo = _stored_turned(small_photo, 6, tmp_path / "portrait.jpg", quality=95)
    assert PIL.Image.open(photo).size == (64, 96)
    model = str(tiny_pipeline_dir)
    assert main(["compress", str(photo), "--model", model, "-o", str(tmp_path / "streams")]) == 0
    assert "\t96×64\t" in capsys.readouterr().out  # the size the photo is seen at
    stream = tmp_path / "streams" / "portrait.sodec"
    assert main(["decompress", str(stream), "--model", model, "-o", str(tmp_path / "decoded")]) == 0
    with PIL.Image.open(tmp_path / "decoded" / "portrait.diffusion.png") as decoded:
        assert decoded.size == (96, 64)


@pytest.mark.parametrize("orientation", [6, 8])
def test_sodec_eval_loads_photos_upright(orientation, small_photo, tmp_path):
    from sodec_pipeline.evaluation.evaluate import load_image

    path = _stored_turned(small_photo, orientation, tmp_path / "photo.png")
    assert np.array_equal(load_image(path), np.asarray(small_photo))


def test_the_demo_checks_the_size_the_photo_is_seen_at(small_photo, tmp_path):
    from sodec_pipeline.demo.comparison import DemoInputError, check_photo_size_from_header

    path = _stored_turned(small_photo, 8, tmp_path / "photo.jpg", quality=95)
    with pytest.raises(DemoInputError, match="the photo is 96×64"):
        check_photo_size_from_header(str(path), max_pixels=1000)
    check_photo_size_from_header(str(path), max_pixels=96 * 64)  # within the budget


def test_training_crops_come_from_the_upright_photo(photos, tmp_path):
    from sodec_training.data import ImageFolderCrops

    photo = photos["bsds_481x321.jpg"].crop((0, 0, 192, 128))
    folder = tmp_path / "train"
    folder.mkdir()
    _stored_turned(photo, 6, folder / "portrait.png")
    crop = ImageFolderCrops(folder, 64, random_flip=False, center_crop=True)[0]["pixel_values"]
    expected = np.asarray(photo.crop((64, 32, 128, 96)), dtype=np.float32) / 255.0  # the centre of 192×128
    assert np.array_equal(crop.permute(1, 2, 0).numpy(), expected)
