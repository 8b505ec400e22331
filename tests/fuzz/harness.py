"""What the fuzzing harnesses in this folder share (tests/fuzz/README.md): the rules an input is held to, the
corpus folders a run starts from, and libFuzzer's options.

A harness module has ``load()``, which imports what it exercises and returns ``check(data) -> outcome``, and
runs as a script through :func:`fuzz`. ``check`` returns the outcome's name (``"decoded"``, ``"refused"``…)
for an input that keeps the rules and raises for one that breaks them: any exception but the package's own
refusals, :class:`RuleBroken` for a refusal without a clear one-line message or a result that contradicts what
the input announced. libFuzzer (through atheris) records a raising input as a crash, an input that takes more
than ``-timeout`` seconds as a hang, and a process above ``-rss_limit_mb`` as running out of memory.
"""

import hashlib
import os
import random
import struct
import sys
import tempfile
import traceback
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence


FUZZ_DIR = Path(__file__).resolve().parent
REPO_ROOT = FUZZ_DIR.parents[1]
ASSETS = REPO_ROOT / "tests" / "assets"
TINY_CONFIG = REPO_ROOT / "hub_configs" / "sodec-tiny"
#: The tiny layout with the checkerboard context model, whose streams are version 4.
TINY_CHECKERBOARD_CONFIG = REPO_ROOT / "hub_configs" / "sodec-tiny-checkerboard"
#: Seed inputs made from tests/assets by seeds.py: ``streams/`` (the tiny pipeline's), ``images/``.
SEEDS = FUZZ_DIR / "seeds"
#: Inputs that once broke a rule, one folder per harness: every run starts from them, and the tests replay them.
REGRESSIONS = ASSETS / "fuzz-regressions"
#: The longest refusal message that still reads as one line.
MAX_MESSAGE_LENGTH = 600
#: libFuzzer's options unless the command line sets them: a hang is an input over 5 s.
DEFAULT_OPTIONS = {"timeout": "5", "print_final_stats": "1"}
#: The exit status of a run that found an input breaking a rule (libFuzzer's ``-error_exitcode``); a hang ends
#: with ``-timeout_exitcode`` (70), running out of memory with a status of its own and an ``oom-`` file.
CRASH_EXIT_STATUS = 77


class RuleBroken(AssertionError):
    """An input that broke one of a harness's rules (not one of the package's refusals)."""


def check_message(error: BaseException) -> None:
    """Raises :class:`RuleBroken` unless ``error`` says what is wrong in one line."""
    message = str(error)
    if not message.strip() or "\n" in message or len(message) > MAX_MESSAGE_LENGTH:
        raise RuleBroken(f"{type(error).__name__} is not a clear one-line message: {message[:2000]!r}")


def rule(condition: bool, what: str) -> None:
    """Raises :class:`RuleBroken` saying ``what`` when ``condition`` is false."""
    if not condition:
        raise RuleBroken(what)


def fix_checksum(data: bytes) -> bytes:
    """``data`` with its last 4 bytes replaced by the CRC-32 of the rest, as a SODEC stream ends, so that mutated
    streams reach the parser's later checks and the decoder instead of stopping at the checksum."""
    if len(data) < 8:
        return data
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


# ---------------------------------------------------------------------- structure-aware mutation of streams
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def split_stream(data: bytes) -> Optional[dict]:
    """The fields of a stream of format version 2, 3 or 4 as its bytes lay them out (nothing checked but that they
    are there), or ``None``."""
    if len(data) < 16 or data[:2] != b"S\xdc" or data[2] not in (2, 3, 4):
        return None
    fields = {"version": data[2], "fingerprint": data[3:7], "check": data[7:9], "quality": None}
    pos = 9
    if data[2] >= 3:
        fields["quality"], pos = data[9], 10
    values = []
    for _ in range(3):
        value = shift = 0
        while True:
            if pos >= len(data) - 4 or shift > 28:
                return None
            byte = data[pos]
            value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
            if not byte & 0x80:
                break
        values.append(value)
    fields["height"], fields["width"], z_length = values
    fields["z"], fields["y"] = data[pos : pos + z_length], data[pos + z_length : len(data) - 4]
    fields["z_length"] = None
    return fields


def join_stream(fields: dict) -> bytes:
    """Inverse of :func:`split_stream`, with a right CRC (and ``fields["z_length"]``, when set, as the z length)."""
    z_length = len(fields["z"]) if fields["z_length"] is None else fields["z_length"]
    body = b"".join(
        [b"S\xdc", bytes([fields["version"]]), fields["fingerprint"], fields["check"],
         b"" if fields["quality"] is None else bytes([fields["quality"]]),
         _varint(fields["height"]), _varint(fields["width"]), _varint(z_length), fields["z"], fields["y"]]
    )  # fmt: skip
    return body + struct.pack("<I", zlib.crc32(body))


def mutate_stream(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's custom mutator for the harnesses that decode streams: most of the time one field of a parsed
    stream is changed (the z or y string by libFuzzer's own mutations, in whole 32-bit words nine times out of
    ten; the entropy check; the quality level; the size; the z length) and the stream packed again with a right
    CRC, so that most inputs reach the entropy decoder; otherwise, or when ``data`` is no stream, libFuzzer's
    byte mutations."""
    import atheris

    rng = random.Random(seed)
    fields = split_stream(data)
    if fields is None or rng.random() < 0.1:
        return atheris.Mutate(data, max_size)
    field = rng.choice(["z", "y", "y", "y", "check", "quality", "size", "z_length"])
    if field in ("z", "y"):
        string = atheris.Mutate(fields[field], max(8, 2 * len(fields[field])))
        if rng.random() < 0.9:
            string = string[: len(string) // 4 * 4] or bytes(4)
        fields[field] = string
    elif field == "check":
        fields["check"] = rng.randbytes(2)
    elif field == "quality":
        fields["quality"] = rng.choice([0, 1, 2, 3, 4, 255, rng.randrange(256)])
    elif field == "size":
        side = rng.choice(["height", "width"])
        fields[side] = rng.choice([1, 63, 64, 65, 128, rng.randint(1, 300), rng.randint(1, 1 << 16)])
    else:
        fields["z_length"] = max(0, len(fields["z"]) + rng.choice([-8, -4, -1, 1, 4, 8]))
    return join_stream(fields)[:max_size]


def regression_inputs(name: str) -> List[Path]:
    """The regression inputs of harness ``name`` (tests/assets/fuzz-regressions/<name>/)."""
    folder = REGRESSIONS / name
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != "README.md") if folder.is_dir() else []


def build_tiny_pipeline(config: Path = TINY_CONFIG):
    """The tests' tiny pipeline (hub_configs/sodec-tiny, seed 0, as tests/conftest.py builds it; ``config``: another
    layout, e.g. :data:`TINY_CHECKERBOARD_CONFIG`), on one thread."""
    import torch

    from sodec_pipeline.pipelines import build_pipeline_from_config

    torch.set_num_threads(1)
    pipe = build_pipeline_from_config(config, seed=0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def libfuzzer_arguments(argv: Sequence[str], corpus: Sequence[Path], options: Dict[str, str]) -> List[str]:
    """The command line handed to libFuzzer: ``options`` (then :data:`DEFAULT_OPTIONS`) where ``argv`` does not
    set them and, when ``argv`` names corpus folders (or none at all), the seed folders ``corpus`` after them.
    libFuzzer writes new inputs to the first folder, so a run without one gets a temporary folder first; a run
    given files (``crash-…``) runs those files alone."""
    program, rest = argv[0], list(argv[1:])
    flags = [a for a in rest if a.startswith("-")]
    paths = [a for a in rest if not a.startswith("-")]
    for key, value in {**DEFAULT_OPTIONS, **options}.items():
        if not any(f.startswith(f"-{key}=") for f in flags):
            flags.append(f"-{key}={value}")
    if paths and not all(os.path.isdir(p) for p in paths):
        return [program] + flags + paths
    if not paths:
        paths = [tempfile.mkdtemp(prefix="sodec-fuzz-corpus-")]
    return [program] + flags + paths + [str(c) for c in corpus if Path(c).is_dir()]


def fuzz(
    argv: Sequence[str],
    load: Callable[[], Callable[[bytes], str]],
    corpus: Sequence[Path],
    options: Dict[str, str],
    mutator: Optional[Callable[[bytes, int, int], bytes]] = None,
    instrument: Sequence[str] = ("sodec_pipeline",),
) -> None:
    """Runs a harness under libFuzzer: ``load()`` with the modules named in ``instrument`` compiled for coverage,
    then every input through the ``check`` it returns (``mutator``: libFuzzer's custom mutator). Prints the
    count of each outcome (``outcomes: {...}``) at every power of two of inputs from 1024 on. Does not return
    (libFuzzer exits)."""
    import atheris

    with atheris.instrument_imports(include=list(instrument)):
        check = load()
    counts: Dict[str, int] = {}
    arguments = libfuzzer_arguments(argv, corpus, options)
    prefix = next((a.split("=", 1)[1] for a in arguments if a.startswith("-artifact_prefix=")), "./")

    def test_one_input(data: bytes) -> None:
        try:
            outcome = check(data)
        except Exception:  # noqa: BLE001 - a broken rule or an exception the package let through: a crash
            report_crash(data, prefix)
        counts[outcome] = counts.get(outcome, 0) + 1
        total = sum(counts.values())
        if total >= 1024 and total & (total - 1) == 0:
            print(f"#{total}\toutcomes: {dict(sorted(counts.items()))}", file=sys.stderr, flush=True)

    extra = {} if mutator is None else {"custom_mutator": mutator}
    atheris.Setup(arguments, test_one_input, **extra)
    atheris.Fuzz()


def report_crash(data: bytes, prefix: str) -> None:
    """Prints the exception being handled, writes the input to ``<prefix>crash-<sha1>`` as libFuzzer does, and
    ends the process with libFuzzer's crash status, :data:`CRASH_EXIT_STATUS`. (atheris's own handling calls
    ``exit()``, whose exit handlers can hang in torch's or the image codecs' threads until libFuzzer's alarm kills
    the process before the input is written.)"""
    traceback.print_exc()
    path = f"{prefix}crash-{hashlib.sha1(data).hexdigest()}"
    Path(path).write_bytes(data)
    print(f"==ERROR: uncaught Python exception; test unit written to {path}", file=sys.stderr, flush=True)
    os._exit(CRASH_EXIT_STATUS)


def ensure_repository_on_path() -> None:
    """Imports this checkout's sodec_pipeline when a harness runs as a script (tests/fuzz/fuzz_*.py)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
