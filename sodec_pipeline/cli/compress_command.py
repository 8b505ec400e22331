"""``sodec compress IMAGE... [--model MODEL] [-o OUT]``: images → ``.sodec`` files, one per image.

Every image's header and every output folder are checked before the model is loaded; a bad image is
reported and skipped, the others are still compressed (:mod:`.batch`).
"""

from pathlib import Path

from .batch import Batch
from .files import (
    STREAM_SUFFIX,
    format_size,
    load_image,
    output_paths,
    prepare_output_file,
    prepare_output_folder,
    read_image_size,
    write_bytes,
)
from .model_loading import add_model_argument, load_pipeline, resolve_model
from .processes import Processes
from .progress import COMPRESS_STEPS, Progress


def add_arguments(p) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    add_model_argument(p)
    p.add_argument(
        "-o", "--output", metavar="OUT", help="output folder (default: next to each image), or OUT.sodec for one image"
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda[:N] or mps (default cpu; under accelerate launch, each process's own device)",
    )


def run(args) -> int:
    model = resolve_model(args.model)  # a wrong --model is reported before anything is read
    outputs = output_paths(args.images, args.output, STREAM_SUFFIX, STREAM_SUFFIX, "image")
    if args.output and not args.output.lower().endswith(STREAM_SUFFIX):
        prepare_output_folder(Path(args.output), args.output)
    progress = Progress(args.show_progress, "compress")
    processes = Processes()  # several under accelerate launch: each takes its share of the images
    batch = Batch("compress", len(args.images), "image", "compressed", progress, debug=args.debug, processes=processes)

    todo, folders = [], set()
    for path, out in processes.share(list(zip(args.images, outputs))):
        with batch.item(path, final=False):
            size = read_image_size(path)
            prepare_output_file(out, folders)
            todo.append((path, out, size))
    if not todo:
        return batch.finish()

    with progress.activity(f"loading the model {model}"):
        pipe = load_pipeline(model, processes.device(args.device), debug=args.debug)
    for path, out, (width, height) in progress.files(todo, unit="image"):
        with batch.item(path), progress.steps(f"{path} ({format_size(width, height)})", COMPRESS_STEPS, pipe) as steps:
            image = load_image(path)
            (stream,) = pipe.compress(image)
            steps.start("writing the stream")
            write_bytes(out, stream)
            bpp = 8.0 * len(stream) / (width * height)
            progress.echo(f"{out}\t{len(stream)} bytes\t{format_size(width, height)}\t{bpp:.4f} bpp")
    return batch.finish()
