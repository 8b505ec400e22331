"""Start-up time and memory of the ``sodec`` command line: ``--help``, each ``COMMAND --help``,
``import sodec_pipeline`` and two early one-line errors, each in a fresh interpreter.

    python benchmarks/measure_startup.py --repeats 10 --out benchmarks/results/startup/lazy-imports.json
    python benchmarks/measure_startup.py --source /tmp/sodec-before --label before ...   # another checkout
    python benchmarks/measure_startup.py --source CLONE --sodec-script VENV/bin/sodec ...   # + the console script

Each case runs ``python -m sodec_pipeline ...`` (or ``python -c ...``) with the checkout ``--source`` as
working directory, so that its code is the one imported (not the installed ``sodec`` script's). Rounds
are interleaved (every case once per round) so that a change of machine load touches all cases alike;
one untimed warm-up round comes first. Wall time is measured around the child process; peak RSS is the
child's own (``os.wait4``).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
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
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    source = str(Path(args.source).resolve())
    git = subprocess.run(["git", "-C", source, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    commit = git.stdout.strip() if git.returncode == 0 else None
    load_before = os.getloadavg()
    cases = dict(CASES)
    if args.sodec_script:
        cases["sodec --help (the installed console script)"] = [str(Path(args.sodec_script).resolve()), "--help"]
    samples = {name: [] for name in cases}
    for round_index in range(args.repeats + 1):
        for name, case in cases.items():
            result = run_once(case, source)
            if round_index:  # round 0 is the warm-up
                samples[name].append(result)
    load_after = os.getloadavg()

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
        "cases": rows,
    }
    print(f"{args.label} ({commit}), {args.repeats} rounds, load average {load_before[0]:.2f} → {load_after[0]:.2f}")
    print("| case | median s | min s | max s | peak RSS MiB | exit |\n| --- | ---: | ---: | ---: | ---: | --- |")
    for row in rows:
        print(f"| `{row['case']}` | {row['median_s']:.2f} | {row['min_s']:.2f} | {row['max_s']:.2f} | {row['peak_rss_mib']:.0f} | "
              f"{','.join(map(str, row['exit_status']))} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
