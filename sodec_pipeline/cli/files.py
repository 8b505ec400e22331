"""The CLI's input and output files, checked before any model is loaded or any pixel is decoded.

- Inputs: an image's size is read from its header and checked against the format's limits before its
  pixels are decoded (Pillow's decompression-bomb guard never gets to fire: our limit is lower); a
  stream's header and checksum are verified before the model is loaded.
- Outputs: names never collide (two inputs, one output) and never overwrite an input; folders are
  created and proven writable up front.
- Sizes are written W×H, the way Pillow reports them.
"""

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import CLIError


#: What a decoded stream is written as, by decoder: ``photo.sodec`` → ``photo.diffusion.png``.
#: (The same names as ``sodec eval``'s decoded images; never the name of the photo that was compressed.)
DECODED_SUFFIXES = {"diffusion": ".diffusion.png", "fidelity": ".fidelity.png"}
STREAM_SUFFIX = ".sodec"


def format_size(width: int, height: int) -> str:
    """``768×512``: width first, as Pillow's ``Image.size``."""
    return f"{width}×{height}"


def check_input_file(path: str, what: str, example_pattern: str) -> Path:
    """Raises :class:`CLIError` unless ``path`` is an existing regular file."""
    file = Path(path)
    if file.is_dir():
        raise CLIError(
            f"{path}: a folder, not {what} (pass the files in it, e.g. {os.path.join(path, example_pattern)})"
        )
    if not file.exists():
        raise CLIError(f"{path}: no such file")
    if not file.is_file():
        raise CLIError(f"{path}: not a regular file")
    return file


# ---------------------------------------------------------------------- images
@contextmanager
def _size_from_the_header_first():
    """Pillow's own bomb guard off while a header is read: the caller checks SODEC's limit (16384 per side)
    itself, and can then name the size (Pillow's error only counts pixels, and refuses 16384² images)."""
    import PIL.Image

    saved = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = saved


def open_image(path: str):
    """Opens an image file and checks its size from the header; no pixel is decoded yet. The caller
    closes it (or uses it as a context manager)."""
    import PIL.Image

    from ..bitstream import check_image_size

    check_input_file(path, "an image file", "*.png")
    try:
        with _size_from_the_header_first():
            image = PIL.Image.open(path)
    except PIL.Image.DecompressionBombError as e:  # only if a plugin checks on its own; same one line
        raise CLIError(f"{path}: image too large for SODEC ({e}); crop or downscale it first") from None
    except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise CLIError(f"{path}: not a readable image ({_reason(e)})") from None
    width, height = image.size
    try:
        check_image_size(height, width)
    except ValueError as e:
        image.close()
        raise CLIError(f"{path}: {e}; crop or downscale it first") from None
    return image


def read_image_size(path: str) -> Tuple[int, int]:
    """(width, height) of an image file from its header, checked against the format's limits; the file's
    structure is verified where Pillow can do so without decoding pixels (PNG chunk checksums, so a
    truncated PNG is caught before the model loads)."""
    with open_image(path) as image:
        size = image.size
        try:
            image.verify()
        except Exception as e:  # noqa: BLE001 - Pillow's plugins raise many kinds for a damaged file
            raise CLIError(f"{path}: not a readable image ({_reason(e)})") from None
    return size


def load_image(path: str):
    """An image file's pixels (a PIL image), after the header checks of :func:`open_image`."""
    import PIL.Image

    with open_image(path) as image:
        try:
            image.load()
            return image.copy()
        except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
            raise CLIError(f"{path}: not a readable image ({_reason(e)})") from None


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ---------------------------------------------------------------------- streams
def read_stream(path: str, max_pixels: Optional[int] = None):
    """A ``.sodec`` file's bytes and parsed header (checksum, version, size limits and the decode budget
    ``max_pixels`` verified; the model's fingerprint is checked when decoding)."""
    from ..bitstream import BitstreamError, decode_bitstream

    file = check_input_file(path, "a .sodec file", "*.sodec")
    try:
        data = file.read_bytes()
    except OSError as e:
        raise CLIError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return data, decode_bitstream(data, max_pixels=max_pixels)
    except BitstreamError as e:
        raise CLIError(f"{path}: {e}") from None


# ---------------------------------------------------------------------- outputs
def output_paths(inputs: Sequence[str], output: Optional[str], suffix: str, file_suffix: str, what: str) -> List[Path]:
    """Where each input's result goes.

    ``output`` is a folder (created if needed), or one file when it ends with ``file_suffix`` and one
    input is given; without it, results go next to their inputs as ``<stem><suffix>``. Raises
    :class:`CLIError` when two inputs would be written to one file, or a result would replace an input.
    """
    if output and output.lower().endswith(file_suffix) and not Path(output).is_dir():
        if len(inputs) > 1:
            raise CLIError(f"-o {output} names one file, but {len(inputs)} {what}s were given: pass a folder instead")
        paths = [Path(output)]
    else:
        folder = Path(output) if output else None
        paths = [(folder if folder is not None else Path(path).parent) / (Path(path).stem + suffix) for path in inputs]
    sources: Dict[Path, str] = {}
    for path, out in zip(inputs, paths):
        key = Path(os.path.abspath(out))
        if key == Path(os.path.abspath(path)):
            raise CLIError(f"{path}: the result would replace the input itself; pass another -o")
        other = sources.setdefault(key, path)
        if Path(os.path.abspath(other)) != Path(os.path.abspath(path)):
            raise CLIError(
                f"{other} and {path} would both be written to {out}: give them different names or folders (-o)"
            )
    return paths


def prepare_output_folder(folder: Path, shown: Optional[str] = None) -> None:
    """Creates ``folder`` if needed and proves it writable (a file is created and removed), so that a
    result is never computed and then lost. Raises :class:`CLIError`."""
    shown = shown or str(folder)
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"cannot write to {shown}: it is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create the output folder {shown}: {e.strerror or e}") from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sodec-write-test-"):
            pass
    except OSError as e:
        raise CLIError(f"cannot write in the output folder {shown}: {e.strerror or e}") from None


def prepare_output_file(path: Path, checked_folders: Optional[set] = None) -> None:
    """:func:`prepare_output_folder` for the file's folder (once per folder), and the file's name is free
    of folders."""
    folder = path.parent
    if checked_folders is None or folder not in checked_folders:
        prepare_output_folder(folder)
        if checked_folders is not None:
            checked_folders.add(folder)
    if path.is_dir():
        raise CLIError(f"cannot write {path}: a folder of that name exists")


def write_bytes(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None


def save_image(path: Path, image) -> None:
    try:
        image.save(path, format="PNG")
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None
