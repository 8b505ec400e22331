"""The CLI's input and output files, checked before any model is loaded or any pixel is decoded.

- Inputs: an image's size is read from its header and checked against the format's limits before its
  pixels are decoded (Pillow's decompression-bomb guard never gets to fire: our limit is lower); a
  stream's header and checksum are verified before the model is loaded.
- Outputs: names never collide (two inputs, one output) and never overwrite an input; an existing file is
  replaced only with ``--overwrite``; folders are created and proven writable up front. Every file is written
  through a temporary file in its folder that replaces it once complete (``os.replace``), so an interrupted
  run never leaves a truncated file.
- ``-``: as an input, the image or stream on standard input; as ``-o``, standard output (binary, nothing
  else is printed there).
- Sizes are written W×H, the way Pillow reports them; an image's size is the photo's as seen, with its EXIF
  orientation applied (:mod:`sodec_pipeline.orientation`).
"""

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import CLIError


#: What a decoded stream is written as, by decoder: ``photo.sodec`` → ``photo.diffusion.png``.
#: (The same names as ``sodec eval``'s decoded images; never the name of the photo that was compressed.)
DECODED_SUFFIXES = {"diffusion": ".diffusion.png", "fidelity": ".fidelity.png"}
STREAM_SUFFIX = ".sodec"
#: As an input, standard input; as ``-o``, standard output.
STDIO = "-"


class _StandardOutput:
    """What ``-o -`` names: standard output (never a file called ``-``; ``-o ./-`` is one)."""

    def __str__(self) -> str:
        return STDIO


STANDARD_OUTPUT = _StandardOutput()
Output = Union[Path, _StandardOutput]


def format_size(width: int, height: int) -> str:
    """``768×512``: width first, as Pillow's ``Image.size``."""
    return f"{width}×{height}"


def input_name(path: str) -> str:
    """An input as messages name it: ``standard input`` for ``-``."""
    return "standard input" if path == STDIO else path


def read_standard_input(what: str, example: str) -> bytes:
    """All of standard input's bytes, for ``-`` as an input (``what``, e.g. ``an image``, that ``example``
    could hold). Raises :class:`CLIError` when it is a terminal (nothing was piped in) or empty."""
    if sys.stdin is None or sys.stdin.isatty():
        raise CLIError(f"-: standard input is a terminal; pipe {what} in (e.g. < {example})")
    try:
        data = sys.stdin.buffer.read()
    except OSError as e:
        raise CLIError(f"standard input: cannot read it ({e.strerror or e})") from None
    if not data:
        raise CLIError(f"standard input: empty, {what} was expected")
    return data


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
    """Pillow's bomb guard at SODEC's own limit while a header is read: Pillow refuses a header of more than twice
    MAX_IMAGE_PIXELS (16384², the format's limit) and only warns between once and twice it (the warning is silenced:
    the caller checks SODEC's limit itself and names the size, which Pillow's error does not). Some plugins decode
    or allocate while opening: GIF allocates a frame's disposal area there, so a 157-byte GIF announcing a frame of
    56174×57600 took 3.1 GB without the guard (found by tests/fuzz/fuzz_image.py)."""
    import PIL.Image

    from ..codec.bitstream import MAX_IMAGE_PIXELS

    saved = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            yield
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = saved


def open_image(path: str, data: Optional[bytes] = None):
    """Opens an image file (or ``data``, the bytes of standard input for ``-``) and checks its size from the
    header; no pixel is decoded yet. The caller closes it (or uses it as a context manager)."""
    import PIL.Image

    from ..codec.bitstream import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, check_image_size
    from ..image_files import PILLOW_READ_ERRORS, UnreadableImageError, is_read_error

    name = input_name(path)
    if data is None:
        check_input_file(path, "an image file", "*.png")
    try:
        with _size_from_the_header_first():
            image = PIL.Image.open(path if data is None else io.BytesIO(data))
    except PIL.Image.DecompressionBombError as e:  # more than twice the format's pixels: Pillow counts them
        announced = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(announced.group(1)):,} pixels" if announced else "too many pixels"
        raise CLIError(
            f"{name}: image of {size} is beyond the limits of the format (sides ≤ {MAX_IMAGE_SIDE}, at most "
            f"{MAX_IMAGE_PIXELS} pixels); crop or downscale it first"
        ) from None
    except PILLOW_READ_ERRORS as e:
        if not is_read_error(e):
            raise
        raise CLIError(str(UnreadableImageError(name, e))) from None
    width, height = image.size
    try:
        check_image_size(height, width)
    except ValueError as e:
        image.close()
        raise CLIError(f"{name}: {e}; crop or downscale it first") from None
    return image


def read_image_size(path: str, data: Optional[bytes] = None) -> Tuple[int, int]:
    """(width, height) of an image file (or of ``data``, as :func:`open_image`) from its header, the right way
    up, checked against the format's limits; the file's structure is verified where Pillow can do so without
    decoding pixels (PNG chunk checksums, so a truncated PNG is caught before the model loads)."""
    from ..image_files import PILLOW_READ_ERRORS, UnreadableImageError, is_read_error
    from ..orientation import upright_size

    with open_image(path, data) as image:
        try:
            size = upright_size(image)
            image.verify()
        except PILLOW_READ_ERRORS as e:
            if not is_read_error(e):
                raise
            raise CLIError(str(UnreadableImageError(input_name(path), e))) from None
    return size


def load_image(path: str, data: Optional[bytes] = None):
    """An image file's pixels (a PIL image) the right way up (:func:`sodec_pipeline.image_files.read_image`),
    after the header checks of :func:`open_image`."""
    from ..image_files import UnreadableImageError, read_image

    with open_image(path, data) as image:
        try:
            return read_image(image, input_name(path))
        except UnreadableImageError as e:
            raise CLIError(str(e)) from None


# ---------------------------------------------------------------------- streams
def read_stream(path: str, max_pixels: Optional[int] = None):
    """A ``.sodec`` file's bytes (standard input's for ``-``) and parsed header (checksum, version, size limits
    and the decode budget ``max_pixels`` verified; the model's fingerprint is checked when decoding)."""
    from ..codec.bitstream import decode_bitstream
    from ..codec.errors import BitstreamError

    if path == STDIO:
        data = read_standard_input("a .sodec stream", "photo.sodec")
    else:
        file = check_input_file(path, "a .sodec file", "*.sodec")
        try:
            data = file.read_bytes()
        except OSError as e:
            raise CLIError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return data, decode_bitstream(data, max_pixels=max_pixels)
    except BitstreamError as e:
        raise CLIError(f"{input_name(path)}: {e}") from None


# ---------------------------------------------------------------------- outputs
def add_overwrite_argument(parser) -> None:
    """``--overwrite``: without it, an output file that exists is refused before any compute."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that exist (default: refuse, before any compute)",
    )


def output_folder(output: Optional[str], file_suffix: str) -> Optional[Path]:
    """The folder ``-o`` names; ``None`` when it names one file (``OUT<file_suffix>``, or ``-``: standard
    output) or is not given."""
    if not output or output == STDIO or (output.lower().endswith(file_suffix) and not Path(output).is_dir()):
        return None
    return Path(output)


def output_paths(
    inputs: Sequence[str], output: Optional[str], suffix: str, file_suffix: str, what: str
) -> List[Output]:
    """Where each input's result goes.

    ``output`` is a folder (created if needed), one file when it ends with ``file_suffix`` and one input is
    given, or ``-`` (:data:`STANDARD_OUTPUT`) for one input; without it, results go next to their inputs as
    ``<stem><suffix>``. ``-`` as an input (standard input) comes alone, with a file or ``-`` as ``-o``.
    Raises :class:`CLIError` when two inputs would be written to one file, or a result would replace an input.
    """
    if STDIO in inputs and len(inputs) > 1:
        raise CLIError(f"- (standard input) holds one {what}: give it alone, not with {len(inputs) - 1} more")
    folder = output_folder(output, file_suffix)
    if output and folder is None:
        if len(inputs) > 1:
            named = "standard output, for one result" if output == STDIO else "one file"
            raise CLIError(f"-o {output} names {named}, but {len(inputs)} {what}s were given: pass a folder instead")
        if output == STDIO:
            return [STANDARD_OUTPUT]
        paths = [Path(output)]
    elif STDIO in inputs:
        raise CLIError(f"- (standard input) has no name for its result: pass -o OUT{file_suffix}, or -o - (stdout)")
    else:
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


def prepare_output_file(path: Output, checked_folders: Optional[set] = None, overwrite: bool = False) -> None:
    """:func:`prepare_output_folder` for the file's folder (once per folder), the file's name is free of
    folders, and of files unless ``overwrite``; for standard output, that it is not a terminal."""
    if path is STANDARD_OUTPUT:
        if sys.stdout is None or sys.stdout.isatty():
            raise CLIError("-o -: standard output is a terminal; redirect it to a file (> OUT) or a pipe (| ...)")
        return
    folder = path.parent
    if checked_folders is None or folder not in checked_folders:
        prepare_output_folder(folder)
        if checked_folders is not None:
            checked_folders.add(folder)
    if path.is_dir():
        raise CLIError(f"cannot write {path}: a folder of that name exists")
    refuse_to_replace(path, overwrite)


def refuse_to_replace(path: Path, overwrite: bool) -> None:
    """Raises :class:`CLIError` when ``path`` exists (a link too) and ``overwrite`` is false."""
    if not overwrite and os.path.lexists(path):
        raise CLIError(f"{path} exists; pass --overwrite to replace it")


def write_bytes(path: Output, data: bytes, overwrite: bool = False) -> None:
    """Writes ``data`` to ``path`` by :func:`write_output`."""
    write_output(path, lambda file: file.write(data), overwrite)


def save_image(path: Output, image, overwrite: bool = False) -> None:
    """Writes ``image`` as a PNG to ``path`` by :func:`write_output`."""
    write_output(path, lambda file: image.save(file, format="PNG"), overwrite)


def write_output(path: Output, write: Callable[[BinaryIO], object], overwrite: bool) -> None:
    """Calls ``write(file)`` on standard output's bytes (:data:`STANDARD_OUTPUT`), or on a temporary file in
    ``path``'s folder that replaces ``path`` once complete and on disk: a failed or interrupted write leaves
    no partial file, and an earlier ``path`` as it was. ``path`` is checked again (it may have appeared
    since :func:`prepare_output_file`). Raises :class:`CLIError`."""
    if path is STANDARD_OUTPUT:
        _write_standard_output(write)
        return
    refuse_to_replace(path, overwrite)
    try:
        _write_through_temporary_file(path, write)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None


def _write_standard_output(write: Callable[[BinaryIO], object]) -> None:
    sys.stdout.flush()  # text printed before stays before the bytes
    write(sys.stdout.buffer)
    sys.stdout.buffer.flush()


def _write_through_temporary_file(path: Path, write: Callable[[BinaryIO], object]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _new_file_mode())  # mkstemp's file is private (0600); a result is not
        os.replace(temporary, path)
    except BaseException:  # Ctrl-C too: the temporary file goes, the error goes on
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
