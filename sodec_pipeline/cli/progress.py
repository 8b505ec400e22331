"""Progress on stderr (tqdm): a bar over the files of a batch and, for the file at hand, which long step
runs now with a live clock. Off when stderr is not a terminal or with ``--quiet``.

The steps inside the pipeline are seen through forward pre-hooks on its public components
(``pipe.unet``, ``pipe.vae.decoder``, ...): the CLI observes the decode and does not drive it, so it
stays the pipeline's own ``compress``/``decompress``. A component that a pipeline lacks is skipped.
"""

import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Tuple


#: (step shown, the pipeline module whose forward starts it, as a dotted attribute path; None: the CLI
#: starts the step itself). A step runs until the next one starts.
COMPRESS_STEPS: Tuple[Tuple[str, Optional[str]], ...] = (
    ("reading the image", None),
    ("analysis transform E", "compression_vae.analysis_transform"),
    ("hyperprior and entropy coding", "compression_vae.hyper_analysis"),
    ("writing the stream", None),
)
DECOMPRESS_STEPS = {
    "diffusion": (
        ("entropy decoding", None),
        ("latent synthesis H_s, T_s", "compression_vae.latent_synthesis"),
        ("fidelity decoder D_a", "fidelity_guidance.fidelity_decoder"),
        ("image encoder", "image_encoder"),
        ("UNet step", "unet"),
        ("VAE decoder", "vae.decoder"),
        ("writing the PNG", None),
    ),
    "fidelity": (
        ("entropy decoding", None),
        ("fidelity decoder D_a", "fidelity_guidance.fidelity_decoder"),
        ("writing the PNG", None),
    ),
}
#: Seconds between redraws of the clock while one step runs.
REFRESH_SECONDS = 0.5


def progress_enabled(quiet: bool, stream=None) -> bool:
    """Bars only for a person watching: stderr is a terminal and ``--quiet`` was not given."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not quiet and bool(isatty and isatty())


class Progress:
    """The bars of one command run; all output of the run goes through :meth:`echo` so that lines and
    bars don't overwrite each other."""

    def __init__(self, enabled: bool, command: str):
        self.enabled = enabled
        self.command = command
        self._files_bar = None

    def echo(self, line: str, err: bool = False) -> None:
        """Prints a line (stdout, or stderr with ``err``) above the bars."""
        stream = sys.stderr if err else sys.stdout
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def files(self, items: Sequence, unit: str = "file") -> Iterator:
        """Iterates over ``items`` with a bar when there are several."""
        if not self.enabled or len(items) < 2:
            yield from items
            return
        from tqdm import tqdm

        with tqdm(total=len(items), desc=f"sodec {self.command}", unit=unit, file=sys.stderr, position=0, leave=False,
                  dynamic_ncols=True) as bar:  # fmt: skip
            self._files_bar = bar
            try:
                for item in items:
                    yield item
                    bar.update(1)
            finally:
                self._files_bar = None

    @contextmanager
    def steps(self, label: str, steps: Sequence[Tuple[str, Optional[str]]], pipe=None, counter: bool = True):
        """A bar for one file's steps; yields a :class:`StepBar` (``.start(name)`` for the CLI's own steps)."""
        if not self.enabled:
            yield StepBar(None, steps, label)
            return
        from tqdm import tqdm

        bar_format = "{desc} [{n_fmt}/{total_fmt}] {elapsed}" if counter else "{desc} … {elapsed}"
        bar = tqdm(total=len(steps), file=sys.stderr, position=1 if self._files_bar is not None else 0, leave=False,
                   dynamic_ncols=True, bar_format=bar_format)  # fmt: skip
        step_bar = StepBar(bar, steps, label)
        hooks = step_bar.watch(pipe) if pipe is not None else []
        ticker = _Ticker(bar)
        try:
            step_bar.start(steps[0][0])
            ticker.start()
            yield step_bar
        finally:
            ticker.stop()
            for hook in hooks:
                hook.remove()
            bar.close()

    @contextmanager
    def activity(self, label: str):
        """A one-line status with a live clock for one long call (loading a model)."""
        with self.steps("", ((label, None),), counter=False):
            yield


class StepBar:
    """Moves one file's bar forward to a named step (never back: a tiled network fires once per tile)."""

    def __init__(self, bar, steps: Sequence[Tuple[str, Optional[str]]], label: str):
        self.bar = bar
        self.names = [name for name, _ in steps]
        self.steps = steps
        self.label = label

    def start(self, name: str) -> None:
        if self.bar is None:
            return
        index = self.names.index(name)
        if index < self.bar.n:
            return
        self.bar.n = index
        self.bar.set_description_str(f"{self.label}: {name}" if self.label else name, refresh=False)
        self.bar.refresh()

    def watch(self, pipe) -> list:
        """Forward pre-hooks on the pipeline modules that start steps; returns their handles."""
        handles = []
        for name, path in self.steps:
            module = _attribute_path(pipe, path) if path else None
            if module is not None and hasattr(module, "register_forward_pre_hook"):
                handles.append(module.register_forward_pre_hook(lambda *_, step=name: self.start(step)))
        return handles


def _attribute_path(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class _Ticker:
    """Redraws a bar every REFRESH_SECONDS from a daemon thread, so that its clock runs during a long
    network call (torch releases the GIL while it computes)."""

    def __init__(self, bar):
        self.bar = bar
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sodec-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            self.bar.refresh()
