"""Fuzzing SODEC's decoder: mutated streams, each decoded in a child process under a time and memory limit.

A crafted stream may only ever give a ``BitstreamError`` or an image of the size its header announces: never
a signal (segmentation fault), a hang, running out of memory, or another exception. The mutations recompute
the CRC (most of the time) so that the parser and the entropy decoder, not only the checksum, are reached.

    python tests/fuzz_decoder.py --streams 100000 --seed 1 --out fuzz-report.json     # the long run
    (tests/test_fuzz_decoder.py runs a few thousand streams in the test suite)

Each worker process loads a tiny random-init pipeline (hub_configs/sodec-tiny, seed 0) once and decodes the
streams it is sent one by one; the parent waits at most ``--time-limit`` seconds per stream, and the worker's
address space is limited to what it holds after loading plus ``--memory-limit-mib``. A worker that dies or
hangs is recorded with the stream that did it and replaced.
"""

import argparse
import json
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple


REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"
WORKER_MAX_PIXELS = 1 << 20
OUTCOMES_ALLOWED = ("image", "bitstream_error")


# ---------------------------------------------------------------------- streams and their mutations
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 35:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            break
    return value, pos


def split_stream(stream: bytes) -> Dict[str, object]:
    """The fields of a well-formed version-3 stream (see docs/bitstream.md)."""
    fixed = stream[:7]  # magic, version, fingerprint
    check = stream[7:9]
    quality = stream[9]
    height, pos = _read_varint(stream, 10)
    width, pos = _read_varint(stream, pos)
    z_length, pos = _read_varint(stream, pos)
    body_end = len(stream) - 4
    return {
        "fixed": fixed,
        "check": check,
        "quality": quality,
        "height": height,
        "width": width,
        "z": stream[pos : pos + z_length],
        "y": stream[pos + z_length : body_end],
    }


def join_stream(fields: Dict[str, object], z_length: Optional[int] = None) -> bytes:
    z, y = fields["z"], fields["y"]
    body = b"".join(
        [
            fields["fixed"],
            fields["check"],
            bytes([fields["quality"]]),
            _varint(fields["height"]),
            _varint(fields["width"]),
            _varint(len(z) if z_length is None else z_length),
            z,
            y,
        ]
    )
    return body + struct.pack("<I", zlib.crc32(body))


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _random_words(rng: random.Random, max_words: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(4 * rng.randint(0, max_words)))


def _random_side(rng: random.Random) -> int:
    return rng.choice(
        [
            1,
            2,
            63,
            64,
            65,
            rng.randint(1, 300),
            rng.randint(1, 2000),
            rng.randint(1, 16384),
            548,
            16384,
            16385,
            0,
            1 << 30,
        ]
    )


def mutate(base: List[bytes], rng: random.Random) -> bytes:
    """One mutated stream from the well-formed ``base`` streams."""
    stream = rng.choice(base)
    fields = split_stream(stream)
    kind = rng.randrange(12)
    if kind == 0:  # bit flips anywhere before the checksum, CRC recomputed
        body = bytearray(stream[:-4])
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        return _with_crc(bytes(body))
    if kind == 1:  # random bytes in the y or z string
        key = rng.choice(["y", "z"])
        data = bytearray(fields[key])
        if data:
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
        fields[key] = bytes(data)
        return join_stream(fields)
    if kind == 2:  # header sizes edited
        if rng.random() < 0.7:
            fields["height"] = _random_side(rng)
        if rng.random() < 0.7:
            fields["width"] = _random_side(rng)
        return join_stream(fields)
    if kind == 3:  # z_length edited
        return join_stream(
            fields, z_length=rng.choice([0, 1, 3, 4, len(fields["z"]) + rng.randint(-8, 8), rng.getrandbits(20)])
        )
    if kind == 4:  # entropy check, version, fingerprint or quality level edited
        which = rng.randrange(4)
        if which == 3:
            fields["quality"] = rng.choice([0, 255, rng.getrandbits(8), fields["quality"] % 3 + 1])
        elif which == 0:
            fields["check"] = bytes([rng.getrandbits(8), rng.getrandbits(8)])
        elif which == 1:
            fields["fixed"] = fields["fixed"][:2] + bytes([rng.choice([0, 1, 3, 255])]) + fields["fixed"][3:]
        else:
            fields["fixed"] = fields["fixed"][:3] + bytes(rng.getrandbits(8) for _ in range(4))
        return join_stream(fields)
    if kind == 5:  # truncation, CRC recomputed or not
        cut = rng.randrange(len(stream))
        return _with_crc(stream[:cut]) if rng.random() < 0.7 else stream[:cut]
    if kind == 6:  # insertion of random bytes, CRC recomputed
        pos = rng.randrange(len(stream) - 4)
        body = stream[:pos] + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 12))) + stream[pos:-4]
        return _with_crc(body)
    if kind == 7:  # y or z string replaced by random words (most often a whole number of words)
        key = rng.choice(["y", "z"])
        fields[key] = _random_words(rng, 64) + (b"" if rng.random() < 0.8 else b"\x01")
        return join_stream(fields)
    if kind == 8:  # strings of another stream under this header (the entropy check usually catches it)
        other = split_stream(rng.choice(base))
        fields[rng.choice(["y", "z"])] = other[rng.choice(["y", "z"])]
        return join_stream(fields)
    if kind == 9:  # a big image announced with short strings (the decompression bomb), check left as is
        fields["height"], fields["width"] = rng.choice(
            [(16384, 548), (1024, 1024), (4096, 64), (rng.randint(1, 1100), rng.randint(1, 950))]
        )
        fields["y"] = fields["y"][: 4 * rng.randint(0, 8)]
        return join_stream(fields)
    if kind == 10:  # words appended to or removed from the y string
        if rng.random() < 0.5:
            fields["y"] = fields["y"] + _random_words(rng, 4)
        else:
            fields["y"] = fields["y"][: max(0, len(fields["y"]) - 4 * rng.randint(1, 4))]
        return join_stream(fields)
    body = bytearray(stream)  # kind 11: raw corruption without recomputing the CRC
    body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    return bytes(body)


# ---------------------------------------------------------------------- the worker (child process)
def _address_space_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def worker_main(model_dir: str, max_pixels: int, memory_limit_mib: int) -> None:
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from sodec_pipeline import BitstreamError, SODECPipeline

    pipe = SODECPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    limit = _address_space_bytes() + memory_limit_mib * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(5)
        if len(header) < 5:
            return
        length, decoder_flag = struct.unpack("<IB", header)
        stream = stdin.read(length)
        decoder = "diffusion" if decoder_flag else "fidelity"
        try:
            image = pipe.decompress(stream, output_type="np", decoder=decoder, max_pixels=max_pixels).images
            parsed = pipe.parse_bitstreams(stream, max_pixels=max_pixels)[0]
            if image.shape != (1, parsed.height, parsed.width, 3) or not np.isfinite(image).all():
                result = {"outcome": "bad_image", "detail": f"shape {image.shape} for {parsed.width}x{parsed.height}"}
            else:
                result = {"outcome": "image", "detail": f"{parsed.width}x{parsed.height}"}
        except BitstreamError as e:
            result = {"outcome": "bitstream_error", "detail": str(e)[:200]}
        except BaseException as e:  # noqa: BLE001 - any other exception is a finding
            result = {"outcome": "exception", "detail": f"{type(e).__name__}: {str(e)[:300]}"}
        out.write(json.dumps(result) + "\n")
        out.flush()


# ---------------------------------------------------------------------- the parent
class _Worker:
    def __init__(self, model_dir: str, max_pixels: int, memory_limit_mib: int, start_timeout: float):
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.setdefault("OMP_NUM_THREADS", "1")
        self.process = subprocess.Popen(
            [sys.executable, "-W", "ignore", __file__, "--worker", model_dir, str(max_pixels), str(memory_limit_mib)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        line = self._read_line(start_timeout)
        if line != "ready":
            self.kill()
            raise RuntimeError(f"fuzz worker did not start (got {line!r})")

    def _read_line(self, timeout: float) -> Optional[str]:
        deadline = time.monotonic() + timeout
        buffer = b""
        fd = self.process.stdout.fileno()
        while not buffer.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 1)
            if not chunk:
                return ""
            buffer += chunk
        return buffer.decode().strip()

    def decode(self, stream: bytes, diffusion: bool, time_limit: float) -> Dict[str, str]:
        try:
            self.process.stdin.write(struct.pack("<IB", len(stream), int(diffusion)) + stream)
            self.process.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._read_line(time_limit)
        if line is None:
            self.kill()
            return {"outcome": "hang", "detail": f"no answer within {time_limit} s"}
        if line == "":
            code = self.process.wait()
            return {
                "outcome": "crash",
                "detail": f"worker exited with status {code}" + (f" (signal {-code})" if code < 0 else ""),
            }
        return json.loads(line)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


def make_model_and_streams(folder: Path) -> List[bytes]:
    """Saves the tiny pipeline (seed 0) to ``folder`` and returns well-formed streams of a few test photos."""
    import PIL.Image

    from sodec_pipeline.pipelines import build_pipeline_from_config

    pipe = build_pipeline_from_config(REPO_ROOT / "hub_configs" / "sodec-tiny", seed=0)
    pipe.save_pretrained(folder)
    photos = sorted(ASSETS.glob("bsds_*"))[:3]
    images = [PIL.Image.open(p).convert("RGB") for p in photos]
    images.append(images[0].crop((0, 0, 1, 1)))
    levels = range(1, pipe.compression_vae.num_qualities + 1)
    return [
        stream for i, image in enumerate(images) for stream in pipe.compress(image, quality=levels[i % len(levels)])
    ]


def fuzz(
    num_streams: int,
    seed: int = 0,
    time_limit: float = 60.0,
    memory_limit_mib: int = 2048,
    max_pixels: int = WORKER_MAX_PIXELS,
    diffusion_every: int = 10,
    progress: bool = False,
    model_dir: Optional[str] = None,
    base_streams: Optional[List[bytes]] = None,
) -> Dict[str, object]:
    """Decodes ``num_streams`` mutated streams; returns the counts of outcomes and every failure.

    ``model_dir`` and ``base_streams``: a saved pipeline and well-formed streams it wrote (made here from the
    tiny layout and the test photos when not given)."""
    started = time.monotonic()
    rng = random.Random(seed)
    outcomes: Counter = Counter()
    errors: Counter = Counter()
    failures: List[Dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="sodec-fuzz-") as tmp:
        if model_dir is None:
            model_dir = str(Path(tmp) / "pipeline")
            base = make_model_and_streams(Path(model_dir))
        else:
            model_dir, base = str(model_dir), list(base_streams)
        worker = _Worker(model_dir, max_pixels, memory_limit_mib, start_timeout=600)
        try:
            for i in range(num_streams):
                stream = mutate(base, rng)
                if not worker.alive:
                    worker = _Worker(model_dir, max_pixels, memory_limit_mib, start_timeout=600)
                result = worker.decode(
                    stream, diffusion=diffusion_every > 0 and i % diffusion_every == 0, time_limit=time_limit
                )
                outcomes[result["outcome"]] += 1
                if result["outcome"] == "bitstream_error":
                    errors[_error_class(result["detail"])] += 1
                elif result["outcome"] not in OUTCOMES_ALLOWED:
                    failures.append({"index": i, "stream": stream.hex(), **result})
                if progress and (i + 1) % 1000 == 0:
                    print(
                        f"{i + 1} streams, {dict(outcomes)}, {time.monotonic() - started:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            worker.kill()
    return {
        "streams": num_streams,
        "seed": seed,
        "outcomes": dict(outcomes),
        "bitstream_errors": dict(errors),
        "failures": failures,
        "seconds": round(time.monotonic() - started, 1),
        "time_limit_s": time_limit,
        "memory_limit_mib": memory_limit_mib,
        "max_pixels": max_pixels,
    }


def _error_class(message: str) -> str:
    """Where a ``BitstreamError`` came from, by its message (for the report)."""
    for needle, name in (
        ("entropy parameters", "entropy check"),
        ("quality", "quality level"),
        ("entropy-coded string", "entropy decoder"),
        ("budget", "pixel budget"),
        ("checksum", "checksum"),
        ("another model", "fingerprint"),
        ("version", "version"),
        ("magic", "magic"),
        ("image size", "image size"),
        ("inconsistent", "string lengths"),
        ("truncated", "truncated"),
        ("varint", "varint"),
    ):
        if needle in message:
            return name
    return "other header"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--worker":
        worker_main(argv[1], int(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per stream (default 60)")
    parser.add_argument("--memory-limit-mib", type=int, default=2048, help="address space above the loaded worker")
    parser.add_argument("--max-pixels", type=int, default=WORKER_MAX_PIXELS)
    parser.add_argument("--out", help="write the report here as JSON")
    args = parser.parse_args(argv)
    report = fuzz(args.streams, args.seed, args.time_limit, args.memory_limit_mib, args.max_pixels, progress=True)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "failures"}, indent=2))
    print(f"{len(report['failures'])} failures")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
