"""Start-up time and memory of the ``sodec`` command line: ``--help``, each ``COMMAND --help``,
``import sodec_pipeline`` and two early one-line errors, each in a fresh interpreter; with ``--photo``, also the
time to the first file: ``sodec compress`` of one photo and ``sodec decompress`` of its stream (diffusion and
``--fidelity``) end to end, and what each import costs in them (``-X importtime``).

    python benchmarks/measure_startup.py --repeats 10 --out benchmarks/results/startup/lazy-imports.json
    python benchmarks/measure_startup.py --source /tmp/sodec-before --label before ...   # another checkout
    python benchmarks/measure_startup.py --source CLONE --sodec-script VENV/bin/sodec ...   # + the console script
    python benchmarks/measure_startup.py --photo kodim04.png --crop 512x600 --only-photo --import-breakdown ...

Each case runs ``python -m sodec_pipeline ...`` (or ``python -c ...``) with the checkout ``--source`` as
working directory, so that its code is the one imported (not the installed ``sodec`` script's). Rounds
are interleaved (every case once per round) so that a change of machine load touches all cases alike;
one untimed warm-up round comes first. Wall time is measured around the child process; peak RSS is the
child's own (``os.wait4``).

The photo cases use the shipped default model (no ``--model``) and write to a temporary folder (``--overwrite``);
the photo is centre-cropped to ``--crop`` and saved as PNG there first, and compressed once before the rounds so
that the decompress cases have their stream. ``--import-breakdown`` runs each photo case once more under
``python -X importtime`` (which itself adds some time) and reports the import time of the heaviest packages: their
own modules' time summed (``self``), and the time of the first import of a few modules with what they pulled in
(``cumulative``: ``torch``, ``diffusers``, ``compressai``, …).
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


CASES = {
    "python -c pass (the interpreter alone)": ["-c", "pass"],
    "import sodec_pipeline": ["-c", "import sodec_pipeline"],
    "sodec --help": ["-m", "sodec_pipeline", "--help"],
    "sodec init --help": ["-m", "sodec_pipeline", "init", "--help"],
    "sodec compress --help": ["-m", "sodec_pipeline", "compress", "--help"],
    "sodec decompress --help": ["-m", "sodec_pipeline", "decompress", "--help"],
    "sodec eval --help": ["-m", "sodec_pipeline", "eval", "--help"],
    "sodec benchmark --help": ["-m", "sodec_pipeline", "benchmark", "--help"],
    "sodec compress photo.png (error: no --model)": ["-m", "sodec_pipeline", "compress", "photo.png"],
    "sodec compress photo.png --model sodec-tiny (error: a layout)": [
        "-m",
        "sodec_pipeline",
        "compress",
        "photo.png",
        "--model",
        "sodec-tiny",
    ],  # fmt: skip
}


#: Modules whose first import (with everything it pulls in) the breakdown reports, when a command imports them.
CUMULATIVE_MODULES = (
    "torch",
    "torch._dynamo",
    "diffusers",
    "transformers",
    "compressai",
    "torch_geometric",
    "scipy",
    "constriction",
    "safetensors",
    "PIL.Image",
    "sodec_pipeline.pipelines.coding",
    "sodec_pipeline.pipelines.pipeline_sodec",
)


def photo_cases(photo: Path, folder: Path) -> dict:
    """The time-to-first-file cases: compress the photo, decompress its stream both ways (default model)."""
    stream = folder / "photo.sodec"
    return {
        f"sodec compress {photo.name}": ["-m", "sodec_pipeline", "compress", str(photo), "-o", str(stream),
                                         "--overwrite"],
        "sodec decompress photo.sodec (diffusion)": ["-m", "sodec_pipeline", "decompress", str(stream), "-o",
                                                     str(folder / "photo.diffusion.png"), "--overwrite"],
        "sodec decompress --fidelity photo.sodec": ["-m", "sodec_pipeline", "decompress", str(stream), "--fidelity",
                                                    "-o", str(folder / "photo.fidelity.png"), "--overwrite"],
    }  # fmt: skip


def crop_photo(source: Path, size: str, folder: Path) -> Path:
    """``source`` centre-cropped to ``size`` (``WxH``), saved as PNG in ``folder`` (Pillow only: no torch here)."""
    import PIL.Image

    width, height = (int(v) for v in size.lower().split("x"))
    image = PIL.Image.open(source).convert("RGB")
    if image.width < width or image.height < height:
        raise SystemExit(f"{source} is {image.width}×{image.height}, smaller than the crop {width}×{height}")
    left, top = (image.width - width) // 2, (image.height - height) // 2
    path = folder / f"{source.stem}_{width}x{height}.png"
    image.crop((left, top, left + width, top + height)).save(path)
    return path


def import_breakdown(args, cwd, top: int = 8) -> dict:
    """One run of ``args`` under ``-X importtime``: the total, the ``top`` packages by their own modules' import
    time (``self``), and the cumulative time of the first import of each of :data:`CUMULATIVE_MODULES`."""
    command = [sys.executable, "-X", "importtime", *args]
    result = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    own, cumulative, total = defaultdict(int), {}, 0
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not match:
            continue
        self_us, cumulative_us, name = int(match.group(1)), int(match.group(2)), match.group(4)
        total += self_us
        package = name.split(".")[0]
        own["sodec_pipeline" if package == "sodec_pipeline" else package] += self_us
        if name in CUMULATIVE_MODULES and name not in cumulative:
            cumulative[name] = cumulative_us / 1e6
    heaviest = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return {
        "exit_status": result.returncode,
        "total_import_s": total / 1e6,
        "self_s": {name: us / 1e6 for name, us in heaviest},
        "cumulative_s": cumulative,
    }


def run_once(args, cwd):
    """(wall seconds, peak RSS in MiB, exit status) of one fresh interpreter (``args`` starting with a
    path: that program instead of this Python)."""
    command = list(args) if os.path.isabs(args[0]) else [sys.executable, *args]
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024.0, child.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", default=str(Path(__file__).resolve().parent.parent), help="checkout to measure (default: this one)"
    )
    parser.add_argument("--label", default="this checkout", help="name of the measured code in the output")
    parser.add_argument(
        "--sodec-script",
        help="also time this installed `sodec` console script (one installed from --source: pip install -e . --no-deps)",
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--photo", type=Path, help="also time compress and decompress of this photo, end to end")
    parser.add_argument("--crop", default="512x600", help="the photo's centre crop, WxH (default 512x600)")
    parser.add_argument("--only-photo", action="store_true", help="time the photo cases only")
    parser.add_argument(
        "--import-breakdown", action="store_true", help="what each import costs in the photo cases (-X importtime)"
    )
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if args.only_photo and not args.photo:
        parser.error("--only-photo needs --photo")

    source = str(Path(args.source).resolve())
    git = subprocess.run(["git", "-C", source, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else None
    load_before = os.getloadavg()
    workdir = tempfile.TemporaryDirectory(prefix="sodec-startup-")
    cases = {} if args.only_photo else dict(CASES)
    if args.sodec_script:
        cases["sodec --help (the installed console script)"] = [str(Path(args.sodec_script).resolve()), "--help"]
    photo = photos = None
    if args.photo:
        photo = crop_photo(args.photo.resolve(), args.crop, Path(workdir.name))
        photos = photo_cases(photo, Path(workdir.name))
        first = run_once(next(iter(photos.values())), source)  # the stream the decompress cases read
        if first[2] != 0:
            raise SystemExit(f"compressing {photo} failed (exit {first[2]})")
        cases.update(photos)
    samples = {name: [] for name in cases}
    for round_index in range(args.repeats + 1):
        for name, case in cases.items():
            result = run_once(case, source)
            if round_index:  # round 0 is the warm-up
                samples[name].append(result)
    load_after = os.getloadavg()
    breakdown = {}
    if args.import_breakdown and photos:
        breakdown = {name: import_breakdown(case, source) for name, case in photos.items()}

    rows = []
    for name, runs in samples.items():
        times = [t for t, _, _ in runs]
        rows.append({
            "case": name,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
            "peak_rss_mib": statistics.median(r for _, r, _ in runs),
            "exit_status": sorted({c for _, _, c in runs}),
        })  # fmt: skip
    result = {
        "label": args.label,
        "source": source,
        "commit": commit,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "photo": None if photo is None else {"source": args.photo.name, "crop": args.crop},
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cases": rows,
        "import_breakdown": breakdown,
    }
    print(f"{args.label} ({commit}), {args.repeats} rounds, load average {load_before[0]:.2f} → {load_after[0]:.2f}")
    print("| case | median s | min s | max s | peak RSS MiB | exit |\n| --- | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        print(f"| `{row['case']}` | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['max_s']:.2f} | {row['peak_rss_mib']:.0f} | "
              f"{','.join(map(str, row['exit_status']))} |")  # fmt: skip
    for name, b in breakdown.items():
        print(f"\n`{name}` under -X importtime (exit {b['exit_status']}): {b['total_import_s']:.2f} s of imports")
        print("  own modules: " + ", ".join(f"{k} {v:.2f} s" for k, v in b["self_s"].items()))
        print("  first import, cumulative: " + ", ".join(f"{k} {v:.2f} s" for k, v in b["cumulative_s"].items()))
    workdir.cleanup()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
