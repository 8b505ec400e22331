"""``sodec decompress FILE.sodec... [--model MODEL] [-o OUT] [--fidelity | --realism R] [--overwrite]``: streams →
PNGs of the original sizes, ``<stem>.diffusion.png`` (or ``<stem>.fidelity.png`` with ``--fidelity`` or
``--realism 0``, ``<stem>.realism-R.png`` with another ``--realism``); ``sodec decompress -
-o -`` reads a stream from standard input and writes the PNG to standard output (the result line goes to stderr
then).

Every stream's header, checksum and size (against the decode budget ``--max-pixels``) and every output
folder and file (an existing one is refused without ``--overwrite``) are checked before the model is loaded;
a bad stream is reported and skipped, the others are still decoded (:mod:`.batch`).
"""

import argparse

from .batch import Batch
from .errors import CLIError
from .files import (
    DECODED_SUFFIXES,
    STANDARD_OUTPUT,
    add_overwrite_argument,
    format_size,
    input_name,
    output_folder,
    output_paths,
    prepare_output_file,
    prepare_output_folder,
    read_stream,
    save_image,
)
from .model_loading import (
    add_device_arguments,
    add_model_argument,
    load_coding_pipeline,
    load_pipeline,
    realism_control_of,
    resolve_model,
)
from .processes import Processes
from .progress import DECOMPRESS_STEPS, Progress


def add_arguments(p) -> None:
    p.add_argument("streams", nargs="+", metavar="FILE.sodec", help=".sodec files; - reads one from stdin")
    add_model_argument(p)
    p.add_argument(
        "-o", "--output", metavar="OUT",
        help="output folder (default: next to each stream), or OUT.png for one stream, or - for stdout; files "
        "are named <stem>.diffusion.png, or <stem>.fidelity.png with --fidelity",
    )  # fmt: skip
    add_overwrite_argument(p)
    decode = p.add_mutually_exclusive_group()
    decode.add_argument(
        "--fidelity", action="store_true", help="write the fidelity decoder's image x̂_f (fast, no diffusion step)"
    )
    decode.add_argument(
        "--realism", type=realism_value, metavar="R",
        help="realism of the decode, 0 to 1: 0 is the fidelity decode (as --fidelity), 1 the full diffusion decode, "
        "and a value between needs a model trained with a realism control (its model card says); default: the "
        "model's (1 for sodec-small); files are named <stem>.realism-R.png",
    )  # fmt: skip
    add_device_arguments(p)
    p.add_argument(
        "--max-pixels", type=int, default=None,
        help="decode budget: refuse streams announcing more pixels (default 16777216 = 4096×4096; "
        "sodec_pipeline.codec.bitstream.DEFAULT_MAX_PIXELS)",
    )  # fmt: skip


def realism_value(text: str) -> float:
    """``--realism``'s value: a number in [0, 1] (argparse reports anything else in one line)."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def run(args) -> int:
    realism = args.realism
    decoder = "fidelity" if args.fidelity or realism == 0 else "diffusion"
    decode_name = decoder if realism in (None, 0) else f"realism {realism:g}"
    suffix = DECODED_SUFFIXES[decoder] if realism in (None, 0) else f".realism-{realism:g}.png"
    model = resolve_model(args.model)  # a wrong --model is reported before anything is read
    if realism not in (None, 0, 1) and realism_control_of(model) is False:  # a Hub id's is known once loaded
        raise CLIError(f"--realism {realism:g}: {args.model or model} was {WITHOUT_REALISM_CONTROL}")
    outputs = output_paths(args.streams, args.output, suffix, ".png", "stream")
    folder = output_folder(args.output, ".png")
    if folder is not None:
        prepare_output_folder(folder, args.output)
    progress = Progress(args.show_progress, "decompress")
    processes = Processes()  # several under accelerate launch: each takes its share of the streams
    batch = Batch(
        "decompress", len(args.streams), "stream", "decoded", progress, debug=args.debug, processes=processes
    )

    todo, folders = [], set()
    for path, out in processes.share(list(zip(args.streams, outputs))):
        with batch.item(input_name(path), final=False):
            data, header = read_stream(path, max_pixels=args.max_pixels)
            prepare_output_file(out, folders, args.overwrite)
            todo.append((path, out, data, header))
    if not todo:
        return batch.finish()

    with progress.activity(f"loading the model {model}"):
        if decoder == "fidelity":  # the codec and D_a only: no diffusers
            pipe = load_coding_pipeline(model, processes.device(args.device), args.dtype, True, debug=args.debug)
        else:
            pipe = load_pipeline(model, processes.device(args.device), args.dtype, debug=args.debug)
            if realism is not None:
                check_model_realism(pipe, realism, model)
    for path, out, data, header in progress.files(todo, unit="stream"):
        label = f"{input_name(path)} ({format_size(header.width, header.height)})"
        with batch.item(input_name(path)), progress.steps(label, DECOMPRESS_STEPS[decoder], pipe) as steps:
            output = pipe.decompress(
                data, output_type="pil", decoder=decoder, max_pixels=args.max_pixels, realism=realism
            )
            steps.start("writing the PNG")
            image = output.images[0]
            save_image(out, image, args.overwrite)
            progress.echo(
                f"{out}\t{format_size(image.width, image.height)}\t{output.bpp[0]:.4f} bpp\t{decode_name}",
                err=out is STANDARD_OUTPUT,  # standard output holds the PNG alone
            )
    return batch.finish()


#: What a model trained without a realism control takes (the scheduler says the same once the model is loaded).
WITHOUT_REALISM_CONTROL = "trained without a realism control: --realism takes 0 (the fidelity decode) or 1"


def check_model_realism(pipe, realism: float, model: str) -> None:
    """:class:`CLIError` when the loaded model does not decode at ``realism`` (one trained without a realism
    control takes 0 and 1 only), before any stream is decoded."""
    try:
        pipe.realism_steps(realism)
    except ValueError as e:
        raise CLIError(f"--realism {realism:g}: {model}: {e}") from None
