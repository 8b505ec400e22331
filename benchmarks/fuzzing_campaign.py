"""One fuzzing campaign of a harness in tests/fuzz/ (tests/fuzz/README.md), and its figures as JSON: executions,
coverage (libFuzzer's ``cov``: Python branches of the instrumented modules; ``ft``: features), corpus, the
outcomes of the inputs, crashes, hangs over the timeout, running out of memory, peak RSS, the slowest input.

    python benchmarks/fuzzing_campaign.py container --seconds 3600 --corpus fuzz-corpus/container \\
        --out container_3600s.json

The harness runs in a child of a shell (a process started straight from this one would count this one's peak RSS
as its own: Linux keeps ``ru_maxrss`` across fork and exec, and libFuzzer's ``-rss_limit_mb`` reads it). Crash,
hang (``timeout-``) and memory (``oom-``) inputs are written to ``--artifacts``; the corpus grows in ``--corpus``
(a run goes on from the inputs already there).
"""

import argparse
import ast
import json
import re
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
STATS = re.compile(r"^#(\d+)\s+(INITED|DONE|pulse|NEW|REDUCE)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("harness", choices=["container", "entropy", "decompress", "image"])
    parser.add_argument("--seconds", type=int, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--log", type=Path, help="the whole libFuzzer log (default: next to --out, .log)")
    args = parser.parse_args(argv)
    args.corpus.mkdir(parents=True, exist_ok=True)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    harness = REPO / "tests" / "fuzz" / f"fuzz_{args.harness}.py"
    command = [sys.executable, str(harness), f"-max_total_time={args.seconds}",
               f"-artifact_prefix={args.artifacts}/{args.harness}-", str(args.corpus)]  # fmt: skip
    corpus_before = sum(1 for p in args.corpus.iterdir() if p.is_file())
    started = time.time()
    run = subprocess.run(["sh", "-c", '"$@"; exit $?', "sh"] + command, capture_output=True, text=True)
    seconds = time.time() - started
    log = run.stderr + run.stdout
    (args.log or args.out.with_suffix(".log")).write_text(
        "\n".join(line for line in log.splitlines() if not re.match(r"#\d+\s+(NEW|REDUCE)|INFO: Instrumenting", line))
        + "\n"
    )
    stats = [m.groups() for m in map(STATS.match, log.splitlines()) if m]
    stat = dict(re.findall(r"stat::(\w+):\s*(\d+)", log))
    outcomes = re.findall(r"#(\d+)\toutcomes: (\{.*\})", log)
    artifacts = sorted(p.name for p in args.artifacts.glob(f"{args.harness}-*"))
    first, last = stats[0], stats[-1]
    figures = {
        "harness": f"tests/fuzz/fuzz_{args.harness}.py",
        "command": " ".join(command[1:]).replace(str(REPO) + "/", ""),
        "exit_status": run.returncode,
        "wall_seconds": round(seconds, 1),
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
    args.out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(figures, indent=2, ensure_ascii=False))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
