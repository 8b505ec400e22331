"""One fuzzing campaign of a harness in tests/fuzz/ (tests/fuzz/README.md), and its figures as JSON: executions,
coverage (libFuzzer's ``cov``: Python branches of the instrumented modules; ``ft``: features), corpus, the
outcomes of the inputs, crashes, hangs over the timeout, running out of memory, peak RSS, the slowest input.

    python benchmarks/fuzzing_campaign.py container --seconds 3600 --corpus fuzz-corpus/container \\
        --out container_3600s.json

The harness runs in a child of a shell (a process started straight from this one would count this one's peak RSS
as its own: Linux keeps ``ru_maxrss`` across fork and exec, and libFuzzer's ``-rss_limit_mb`` reads it). Crash,
hang (``timeout-``) and memory (``oom-``) inputs are written to ``--artifacts``; the corpus grows in ``--corpus``
(a run goes on from the inputs already there).

``--stretches N`` runs the harness N times for ``--seconds`` each, from the corpus the stretch before left (a
campaign in stretches, as OSS-Fuzz runs its fuzzers in sessions), and with ``--lock FILE`` each stretch holds an
exclusive ``flock`` on FILE, so other work sharing the core goes between stretches instead of beside them (an input
slowed by a neighbour would otherwise read as a hang: libFuzzer's timeout is wall-clock). The figures sum the
executions, wall and CPU seconds over the stretches; the coverage is the first stretch's start and the last one's end.
``--resume`` continues the campaign that ``--out`` holds (another session's). Only the artifacts a stretch wrote are
its findings (the folder may hold an earlier campaign's).
"""

import argparse
import ast
import fcntl
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
STATS = re.compile(r"^#(\d+)\s+(INITED|DONE|pulse|NEW|REDUCE)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_stretch(args, number: int) -> dict:
    """One run of the harness from the corpus as it stands; its figures."""
    harness = REPO / "tests" / "fuzz" / f"fuzz_{args.harness}.py"
    command = [sys.executable, str(harness), f"-max_total_time={args.seconds}",
               f"-artifact_prefix={args.artifacts}/{args.harness}-", str(args.corpus)]  # fmt: skip
    corpus_before = sum(1 for p in args.corpus.iterdir() if p.is_file())
    artifacts_before = set(args.artifacts.glob(f"{args.harness}-*"))  # an earlier campaign's are not this one's
    started, cpu_before = time.time(), _children_cpu_seconds()
    run = subprocess.run(["sh", "-c", '"$@"; exit $?', "sh"] + command, capture_output=True, text=True)
    seconds = time.time() - started
    cpu_seconds = _children_cpu_seconds() - cpu_before
    log = run.stderr + run.stdout
    log_file = args.log or args.out.with_suffix(".log")
    if number:
        log_file = log_file.with_name(f"{log_file.stem}.stretch{number + 1}{log_file.suffix}")
    log_file.write_text(
        "\n".join(line for line in log.splitlines() if not re.match(r"#\d+\s+(NEW|REDUCE)|INFO: Instrumenting", line))
        + "\n"
    )
    stats = [m.groups() for m in map(STATS.match, log.splitlines()) if m]
    stat = dict(re.findall(r"stat::(\w+):\s*(\d+)", log))
    outcomes = re.findall(r"#(\d+)\toutcomes: (\{.*\})", log)
    artifacts = sorted(p.name for p in set(args.artifacts.glob(f"{args.harness}-*")) - artifacts_before)
    first, last = (stats[0], stats[-1]) if stats else ((0, "", 0, 0, 0, "0b"),) * 2  # a crash among the seeds
    figures = {
        "harness": f"tests/fuzz/fuzz_{args.harness}.py",
        "command": " ".join(command[1:]).replace(str(REPO) + "/", ""),
        "exit_status": run.returncode,
        "wall_seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "executions": int(stat.get("number_of_executed_units", last[0])),
        "executions_per_second": int(stat.get("average_exec_per_sec", 0)),
        "coverage_at_start": {"cov": int(first[2]), "ft": int(first[3]), "corpus": int(first[4])},
        "coverage_at_end": {"cov": int(last[2]), "ft": int(last[3]), "corpus": int(last[4]), "corpus_bytes": last[5]},
        "corpus_files_before": corpus_before,
        "new_units_added": int(stat.get("new_units_added", 0)),
        "outcomes": {"after_inputs": int(outcomes[-1][0]), **ast.literal_eval(outcomes[-1][1])} if outcomes else None,
        "crashes": [a for a in artifacts if "-crash-" in a],
        "hangs_over_timeout": [a for a in artifacts if "-timeout-" in a],
        "out_of_memory": [a for a in artifacts if "-oom-" in a],
        "slowest_input_seconds": int(stat.get("slowest_unit_time_sec", 0)),
        "peak_rss_mib": int(stat.get("peak_rss_mb", 0)),
    }
    return figures


def combine(stretches: list) -> dict:
    """The figures of a campaign run in stretches: sums, the first start and the last end, the worst of each."""
    first, last = stretches[0], stretches[-1]
    total = dict(last)
    for key in ("wall_seconds", "cpu_seconds"):
        total[key] = round(sum(s[key] for s in stretches), 1)
    total["executions"] = sum(s["executions"] for s in stretches)
    total["executions_per_second"] = int(total["executions"] / max(total["cpu_seconds"], 1e-9))
    total["coverage_at_start"] = first["coverage_at_start"]
    total["corpus_files_before"] = first["corpus_files_before"]
    total["new_units_added"] = sum(s["new_units_added"] for s in stretches)
    total["outcomes"] = {"per_stretch": [s["outcomes"] for s in stretches]}
    total["slowest_input_seconds"] = max(s["slowest_input_seconds"] for s in stretches)
    total["peak_rss_mib"] = max(s["peak_rss_mib"] for s in stretches)
    for key in ("crashes", "hangs_over_timeout", "out_of_memory"):
        total[key] = sorted({a for s in stretches for a in s[key]})
    total["stretches"] = stretches
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("harness", choices=["container", "entropy", "decompress", "image"])
    parser.add_argument("--seconds", type=int, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log", type=Path, help="the whole libFuzzer log (default: next to --out, .log)")
    parser.add_argument("--stretches", type=int, default=1, help="run the harness this many times, --seconds each")
    parser.add_argument("--lock", type=Path, help="a file each stretch holds an exclusive flock on while it runs")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the campaign of --out: its stretches count toward --stretches (one written without whole "
        "figures per stretch counts as one)",
    )
    args = parser.parse_args(argv)
    args.corpus.mkdir(parents=True, exist_ok=True)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    stretches = []
    if args.resume and args.out.exists():
        done = json.loads(args.out.read_text())
        stretches = done["stretches"] if all("harness" in s for s in done.get("stretches", [{}])) else [done]
    for number in range(len(stretches), args.stretches):
        with open(args.lock, "a") if args.lock else open("/dev/null") as lock:
            if args.lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
            stretches.append(run_stretch(args, number))
        figures = stretches[0] if len(stretches) == 1 else combine(stretches)
        args.out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")  # the campaign so far
        if stretches[-1]["exit_status"] != 0:
            break
        if args.lock and number + 1 < args.stretches:
            time.sleep(2)  # a process waiting for the lock takes it now
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    return figures["exit_status"]


if __name__ == "__main__":
    sys.exit(main())
