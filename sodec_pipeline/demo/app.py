"""The Gradio page of ``sodec demo`` and of the repository's ``app.py`` (a Hugging Face Space).

Two tabs:

- **Compress**: a photo and a quality level in; the ``.sodec`` file, both SODEC decodes and JPEG, WebP and AVIF at ≤ the same bytes
  out, with their figures (:mod:`.comparison`) and a before/after slider.
- **Decode**: a ``.sodec`` file in; both decodes and the header facts (size, fingerprint, level, bytes) out.

The pipeline is loaded once by the caller and shared by every request; requests queue one at a time, and at most
:data:`DEMO_MAX_QUEUE` wait: the next one is turned away at once (the page says "This application is currently
busy. Please try again.", ``gradio_client`` raises ``QueueError``). A bad upload raises :class:`gradio.Error`, which
the page shows as a message; the server keeps serving (tests/test_demo.py loads it with 20 clients at once).
"""

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import gradio as gr
import numpy as np
import PIL.Image

from ..codec.errors import BitstreamError
from ..image_files import UnreadableImageError
from ..messages import first_line
from ..pipelines.coding import DECODERS, check_realism
from .comparison import DEMO_MAX_PIXELS, Comparison, DemoInputError, compare, read_photo, sodec_decode_name


logger = logging.getLogger(__name__)

#: The model card of a shipped model name, on the Hub.
MODEL_CARD_URL = "https://huggingface.co/{}"
INTRO = (
    "**SODEC** compresses a photo to a few kilobytes and decodes it with one diffusion step, steered by a "
    "fidelity decoder ([Chen et al., AAAI 2026](https://arxiv.org/abs/2508.04979))."
)
METRIC_LABELS = {"psnr": "PSNR (dB) ↑", "lpips": "LPIPS-alex ↓", "dists": "DISTS ↓"}
#: The most requests that wait for their turn: a photo takes seconds on a CPU Space (sodec-small, with the
#: baselines), so the last of 32 would wait minutes; one more is told that the page is busy instead of waiting.
DEMO_MAX_QUEUE = 32


def _user_error(error: BaseException) -> gr.Error:
    """The one-line message the page shows for a request that failed."""
    if isinstance(error, (DemoInputError, UnreadableImageError, BitstreamError)):
        return gr.Error(str(error), print_exception=False)
    logger.exception("demo request failed")
    return gr.Error(f"something went wrong: {type(error).__name__}: {first_line(error)}")


def _uploaded_path(upload) -> str:
    if upload is None:
        raise DemoInputError("no file uploaded")
    return upload if isinstance(upload, str) else upload.name


def _request_folder() -> Path:
    """A folder of one request's files, which no other request writes."""
    return Path(tempfile.mkdtemp(prefix="sodec-demo-"))


def _stream_file(stream: bytes, photo_path: str, folder: Path) -> str:
    path = folder / f"{Path(photo_path).stem or 'photo'}.sodec"
    path.write_bytes(stream)
    return str(path)


def _png_file(image, folder: Path, index: int, name: str) -> str:
    """An image the page shows (an array or a PIL image), written as a PNG file of this request's folder.

    Handed an array, Gradio would re-encode it as lossy WebP (its galleries' and sliders' default format), so that
    the page would not show the decode's pixels, and write it in place under a name made from its content, so that
    a client downloading the same picture for an earlier request could read it half-written; a file it copies under
    a temporary name and renames (tests/test_demo.py's load test caught the torn download)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "image"
    path = folder / f"{index}-{slug}.png"
    PIL.Image.fromarray(np.asarray(image)).save(path)
    return str(path)


def _caption(decode) -> str:
    return f"{decode.name}: {decode.num_bytes} bytes, {decode.bpp:.4f} bpp, {decode.metrics['psnr']:.2f} dB"


def _figures_table(comparison: Comparison) -> Dict:
    headers = ["decode", "bytes", "bpp"] + [METRIC_LABELS.get(m, m) for m in comparison.metric_names()]
    return {"headers": headers, "data": comparison.table()}


def _slider(original: str, images: Dict[str, str], name: Optional[str]):
    if not images:
        return None
    return (original, images[name if name in images else next(iter(images))])


class DemoHandlers:
    """The functions behind the page's buttons, around one loaded pipeline."""

    def __init__(self, pipe, perceptual: Optional[Dict] = None, max_pixels: int = DEMO_MAX_PIXELS):
        self.pipe = pipe
        self.perceptual = perceptual or {}
        self.max_pixels = max_pixels

    @property
    def realism_control(self) -> bool:
        """Whether the model's diffusion decode takes a realism between 0 and 1 (its scheduler's realism_control)."""
        return bool(getattr(self.pipe.scheduler.config, "realism_control", False))

    def _realism(self, realism) -> Optional[float]:
        """The slider's realism for a model with the control; ``None`` (the model's default) otherwise."""
        if realism is None or not self.realism_control:
            return None
        try:
            return check_realism(float(realism))
        except (TypeError, ValueError) as e:
            raise DemoInputError(str(e)) from None

    def compress(self, upload, quality=None, realism=None, progress=gr.Progress()):
        """Photo, quality level (``None``: the model's default) and realism (a model with the control; ``None``: its
        default) → (gallery, figures, slider, .sodec file, decode names, state, notes)."""
        try:
            path = _uploaded_path(upload)
            if quality is not None:
                try:
                    quality = self.pipe.compression_vae.check_quality(int(quality))
                except ValueError as e:
                    raise DemoInputError(str(e)) from None
            reference = read_photo(path, self.max_pixels)
            comparison = compare(
                self.pipe,
                reference,
                self.perceptual,
                progress=lambda fraction, what: progress(fraction, desc=what),
                max_pixels=self.max_pixels,
                quality=quality,
                realism=self._realism(realism),
            )
        except Exception as e:  # noqa: BLE001 - every failure becomes a message in the page
            raise _user_error(e) from e
        folder = _request_folder()
        original = _png_file(reference, folder, 0, "original")
        images = {d.name: _png_file(d.image, folder, i, d.name) for i, d in enumerate(comparison.decodes, 1)}
        gallery = [(images[d.name], _caption(d)) for d in comparison.decodes]
        first = comparison.decodes[0].name
        notes = "\n".join(f"- {n}" for n in comparison.notes)
        return (
            gallery,
            _figures_table(comparison),
            _slider(original, images, first),
            _stream_file(comparison.stream, path, folder),
            gr.Dropdown(choices=list(images), value=first),
            {"original": original, "images": images},
            notes,
        )

    @staticmethod
    def choose(name: str, state: Optional[Dict]):
        if not state:
            return None
        return _slider(state["original"], state["images"], name)

    def decode(self, upload, realism=None, progress=gr.Progress()):
        """.sodec file and realism (as for :meth:`compress`) → (gallery, header facts in Markdown)."""
        try:
            path = _uploaded_path(upload)
            realism = self._realism(realism)
            data = Path(path).read_bytes()
            (stream,) = self.pipe.parse_bitstreams(data, max_pixels=self.max_pixels)
            gallery, folder = [], _request_folder()
            for i, decoder in enumerate(DECODERS):
                progress(0.5 * i, desc=f"{decoder} decode")
                decoder_realism = realism if decoder == "diffusion" else None
                image = self.pipe.decompress(
                    data, decoder=decoder, max_pixels=self.max_pixels, realism=decoder_realism
                ).images[0]
                name = sodec_decode_name(decoder, decoder_realism)
                gallery.append((_png_file(image, folder, i, name), name))
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e
        bpp = 8.0 * len(data) / (stream.width * stream.height)
        facts = (
            f"| size | model fingerprint | quality level | bytes | bpp |\n| --- | --- | ---: | ---: | ---: |\n"
            f"| {stream.width}×{stream.height} | `{stream.fingerprint.hex()}` | {stream.quality} | {len(data)} "
            f"| {bpp:.4f} |"
        )
        return gallery, facts


def _realism_slider(handlers: DemoHandlers, elem_id: str) -> gr.Slider:
    """The realism of the SODEC diffusion decode, 0 (the fidelity decode) to 1, at the model's default; shown only
    for a model trained with a realism control."""
    return gr.Slider(
        0, 1, value=handlers.pipe.config.get("default_realism", 1.0), step=0.05, elem_id=elem_id,
        label="Realism of the SODEC decode (0: the fidelity decode's look, 1: the full diffusion decode)",
        visible=handlers.realism_control,
    )  # fmt: skip


def _model_card_block(model_name: str, card: Optional[str]) -> None:
    if "/" in model_name and not os.path.exists(model_name):
        gr.Markdown(f"Model: [{model_name}]({MODEL_CARD_URL.format(model_name)}) (model card).")
    elif card:
        with gr.Accordion(f"Model card: {Path(model_name).name}", open=False):
            gr.Markdown(card)
    else:
        gr.Markdown(f"Model: `{model_name}`.")


def build_demo(
    pipe,
    model_name: str,
    perceptual: Optional[Dict] = None,
    card: Optional[str] = None,
    notes: List[str] = (),
    max_pixels: int = DEMO_MAX_PIXELS,
    max_queue: int = DEMO_MAX_QUEUE,
) -> gr.Blocks:
    """The page around a loaded pipeline. ``card`` is the model card's Markdown (shown when the model is not a
    Hub id); ``notes`` are shown under the intro (e.g. a metric left out); ``max_queue``: the most requests that
    wait."""
    handlers = DemoHandlers(pipe, perceptual, max_pixels)
    with gr.Blocks(title="SODEC demo") as demo:
        gr.Markdown(f"# SODEC\n{INTRO}")
        _model_card_block(model_name, card)
        if notes:
            gr.Markdown("\n".join(f"- {n}" for n in notes))
        with gr.Tab("Compress"):
            gr.Markdown(
                f"Upload a photo (up to {max_pixels / 1e6:.1f} megapixels). SODEC writes a `.sodec` file; JPEG, WebP "
                "and AVIF are shown at their best setting at or under the same number of bytes."
            )
            with gr.Row():
                photo = gr.File(label="Photo", elem_id="photo")
                stream_file = gr.File(label=".sodec file", elem_id="stream-file", interactive=False)
            codec = pipe.compression_vae
            quality = gr.Slider(
                1, codec.num_qualities, value=codec.default_quality, step=1, elem_id="quality",
                label=f"Quality level (1: smallest file; default {codec.default_quality})",
                visible=codec.num_qualities > 1,
            )  # fmt: skip
            realism = _realism_slider(handlers, "realism")
            compress_button = gr.Button("Compress", variant="primary", elem_id="compress")
            gallery = gr.Gallery(
                label="Decodes at the same bytes", columns=5, height=260, elem_id="decodes", format="png"
            )
            figures = gr.Dataframe(label="Figures", interactive=False, elem_id="figures")
            codec_notes = gr.Markdown(elem_id="codec-notes")
            choice = gr.Dropdown(label="Compare the original with", choices=[], elem_id="choice")
            slider = gr.ImageSlider(label="Original | decode", elem_id="slider", format="png")
            state = gr.State()
            compress_button.click(
                handlers.compress,
                inputs=[photo, quality, realism],
                outputs=[gallery, figures, slider, stream_file, choice, state, codec_notes],
                api_name="compress",
            )
            choice.change(handlers.choose, inputs=[choice, state], outputs=slider, api_name=False)
        with gr.Tab("Decode"):
            gr.Markdown("Upload a `.sodec` file written by this model: both decodes and the stream's header.")
            upload = gr.File(label=".sodec file", elem_id="upload-stream")
            decode_realism = _realism_slider(handlers, "decode-realism")
            decode_button = gr.Button("Decode", variant="primary", elem_id="decode")
            header = gr.Markdown(elem_id="header")
            decoded = gr.Gallery(label="Decodes", columns=2, height=420, elem_id="decoded", format="png")
            decode_button.click(
                handlers.decode, inputs=[upload, decode_realism], outputs=[decoded, header], api_name="decode"
            )
    demo.queue(default_concurrency_limit=1, max_size=max_queue)
    return demo
