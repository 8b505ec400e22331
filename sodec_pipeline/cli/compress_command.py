"""``sodec compress IMAGE... [--model MODEL] [-o OUT] [--quality Q | --max-bytes N | --target-bpp B] [--overwrite]``:
images → ``.sodec`` files, one per image; ``sodec compress - -o -`` reads an image from standard input and writes
its stream to standard output (the result line goes to stderr then).

Every image's header, every output folder and file (an existing one is refused without ``--overwrite``) and the
quality level (against the model's config) are checked before the model is loaded; a bad image, or one that does
not fit the size budget, is reported and skipped, the others are still compressed (:mod:`.batch`).
"""

from ..codec.bitstream import decode_bitstream
from ..codec.errors import SizeBudgetError
from .batch import Batch
from .errors import CLIError
from .files import (
    STANDARD_OUTPUT,
    STDIO,
    STREAM_SUFFIX,
    add_overwrite_argument,
    format_size,
    input_name,
    load_image,
    output_folder,
    output_paths,
    prepare_output_file,
    prepare_output_folder,
    read_image_size,
    read_standard_input,
    write_bytes,
)
from .model_loading import (
    add_model_argument,
    check_quality_level,
    load_coding_pipeline,
    quality_levels_of,
    resolve_model,
)
from .processes import Processes
from .progress import COMPRESS_STEPS, Progress


def add_arguments(p) -> None:
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads); - reads one from stdin"
    )
    add_model_argument(p)
    p.add_argument(
        "-o", "--output", metavar="OUT",
        help="output folder (default: next to each image), or OUT.sodec for one image, or - for stdout",
    )  # fmt: skip
    add_overwrite_argument(p)
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quality",
        type=int,
        metavar="Q",
        help="quality level, 1 (smallest files) to the model's highest (sodec-small: 1-9); default: the model's "
        "default level (sodec-small: 5, about 0.05 bpp on Kodak)",
    )
    size.add_argument(
        "--max-bytes",
        type=int,
        metavar="N",
        help="size budget: each image at the highest level whose file is at most N bytes",
    )
    size.add_argument(
        "--target-bpp",
        type=float,
        metavar="B",
        help="size budget in bits per pixel: N = B·H·W/8 bytes for an H×W image (as --max-bytes)",
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda[:N] or mps (default cpu; under accelerate launch, each process's own device)",
    )


def run(args) -> int:
    model = resolve_model(args.model)  # a wrong --model is reported before anything is read
    check_size_arguments(args, quality_levels_of(model))
    outputs = output_paths(args.images, args.output, STREAM_SUFFIX, STREAM_SUFFIX, "image")
    folder = output_folder(args.output, STREAM_SUFFIX)
    if folder is not None:
        prepare_output_folder(folder, args.output)
    progress = Progress(args.show_progress, "compress")
    processes = Processes()  # several under accelerate launch: each takes its share of the images
    batch = Batch("compress", len(args.images), "image", "compressed", progress, debug=args.debug, processes=processes)

    todo, folders = [], set()
    for path, out in processes.share(list(zip(args.images, outputs))):
        with batch.item(input_name(path), final=False):
            data = read_standard_input("an image", "photo.png") if path == STDIO else None
            size = read_image_size(path, data)
            prepare_output_file(out, folders, args.overwrite)
            todo.append((path, out, size, data))
    if not todo:
        return batch.finish()

    with progress.activity(f"loading the model {model}"):
        pipe = load_coding_pipeline(model, processes.device(args.device), debug=args.debug)
    check_size_arguments(args, (pipe.compression_vae.num_qualities, pipe.compression_vae.default_quality))
    for path, out, (width, height), data in progress.files(todo, unit="image"):
        name = input_name(path)
        with batch.item(name), progress.steps(f"{name} ({format_size(width, height)})", COMPRESS_STEPS, pipe) as steps:
            image = load_image(path, data)
            # the size as read: a PNG whose eXIf chunk follows its pixels is turned only now (its header's size turned
            # a quarter, within the same limits; tests/assets/fuzz-regressions/image/)
            width, height = image.size
            try:
                (stream,) = pipe.compress(
                    image, quality=args.quality, max_bytes=args.max_bytes, target_bpp=args.target_bpp
                )
            except SizeBudgetError as e:
                raise CLIError(f"{name}: {e}") from None
            steps.start("writing the stream")
            write_bytes(out, stream, args.overwrite)
            bpp = 8.0 * len(stream) / (width * height)
            quality = decode_bitstream(stream).quality
            progress.echo(
                f"{out}\t{len(stream)} bytes\t{format_size(width, height)}\t{bpp:.4f} bpp\tquality {quality}",
                err=out is STANDARD_OUTPUT,  # standard output holds the stream alone
            )
    return batch.finish()


def check_size_arguments(args, levels) -> None:
    """:class:`CLIError` for a --quality outside the model's levels (``levels``: (count, default), or ``None``
    when the model's config is not on this machine yet), or a budget that is not a positive number."""
    if args.max_bytes is not None and args.max_bytes < 1:
        raise CLIError(f"--max-bytes must be a positive number of bytes, got {args.max_bytes}")
    if args.target_bpp is not None and not args.target_bpp > 0:
        raise CLIError(f"--target-bpp must be a positive number of bits per pixel, got {args.target_bpp}")
    if args.quality is not None:
        check_quality_level(args.quality, levels)
