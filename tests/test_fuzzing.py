"""The coverage-guided fuzzing harnesses of tests/fuzz/ (atheris): a short run of each, the inputs they found
replayed (tests/assets/fuzz-regressions/), and that their rules can fail.

Each short run is ``SODEC_FUZZ_SECONDS`` (default 20) seconds of fuzzing in a child process, plus its start
(importing torch and Pillow's plugins instrumented, building the tiny pipelines, replaying the seeds: 1 s for the
container harness, 13 to 19 s for the others on the development machine's one core). The four took 130 s
together there; the issue's 30 s each would add 40 s to every run of the suite, for coverage that the campaigns
(benchmarks/results/fuzzing/) show levelling off long before. Long campaigns: tests/fuzz/README.md.
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest


FUZZ_DIR = Path(__file__).parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import fuzz_container  # noqa: E402
import fuzz_decompress  # noqa: E402
import fuzz_entropy  # noqa: E402
import fuzz_image  # noqa: E402
from harness import REGRESSIONS, SEEDS, RuleBroken, regression_inputs  # noqa: E402


SHORT_RUN_SECONDS = int(os.environ.get("SODEC_FUZZ_SECONDS", "20"))
#: What a short run must have seen at least once: inputs that passed every check, not only refusals.
ACCEPTED = {"container": "parsed", "entropy": "decoded", "decompress": "decoded", "image": "read"}
HARNESSES = {"container": fuzz_container, "entropy": fuzz_entropy, "decompress": fuzz_decompress, "image": fuzz_image}


@pytest.mark.parametrize("name", list(HARNESSES))
def test_a_short_fuzzing_run_finds_no_crash_hang_or_memory_blowup(name, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    command = [sys.executable, str(FUZZ_DIR / f"fuzz_{name}.py"), f"-max_total_time={SHORT_RUN_SECONDS}",
               f"-artifact_prefix={tmp_path}/", str(corpus)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(FUZZ_DIR.parents[1]))
    # Through a shell that forks it: a process started straight from this one would inherit this process's peak
    # RSS (Linux keeps ru_maxrss across fork and exec), which libFuzzer's -rss_limit_mb counts.
    shell = ["sh", "-c", '"$@"; exit $?', "sh"]
    run = subprocess.Popen(shell + command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # fmt: skip
    try:
        log, _ = run.communicate(timeout=SHORT_RUN_SECONDS + 300)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        raise
    artifacts = sorted(p.name for p in tmp_path.iterdir() if re.match(r"(crash|timeout|oom|leak|slow-unit)-", p.name))
    artifacts = [
        a for a in artifacts if not (a.startswith("slow-unit-") and replays_fast(shell, command[1], tmp_path / a))
    ]
    assert run.returncode == 0 and not artifacts, f"exit status {run.returncode}, {artifacts}\n{log[-6000:]}"
    executed = int(re.search(r"stat::number_of_executed_units: *(\d+)", log).group(1))
    assert executed >= 1024, log[-3000:]
    outcomes = re.findall(r"outcomes: (\{.*\})", log)
    assert outcomes and f"'{ACCEPTED[name]}'" in outcomes[-1], log[-3000:]
    assert any(corpus.iterdir()), "the run kept no new input"


def replays_fast(shell, harness: str, unit: Path) -> bool:
    """Whether a unit libFuzzer reported slow (over 10 s) runs in under a second when the harness replays it alone:
    then the machine stalled during the run, and the input is not a finding (a run of the suite on the development
    machine, its other core training, once reported a 32 s unit of the image harness that replays in 0 s; the
    cause of the stall was not found). A unit that is slow again, or fails, stays a finding."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(FUZZ_DIR.parents[1]))
    replay = subprocess.run(shell + [sys.executable, harness, str(unit)], env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    slowest = re.search(r"stat::slowest_unit_time_sec: *(\d+)", replay.stdout + replay.stderr)
    return replay.returncode == 0 and slowest is not None and int(slowest.group(1)) < 1


@pytest.mark.parametrize("seconds, status, fast", [(0, 0, True), (7, 0, False), (0, 1, False)])
def test_a_slow_unit_is_a_finding_unless_it_replays_fast(seconds, status, fast, tmp_path):
    """replays_fast reads the replay's libFuzzer figures: a unit slow again, or a replay that fails, is kept."""
    harness = tmp_path / "harness.py"
    harness.write_text(f"import sys\nprint('stat::slowest_unit_time_sec: {seconds}')\nsys.exit({status})\n")
    unit = tmp_path / "slow-unit-1"
    unit.write_bytes(b"x")
    assert replays_fast(["sh", "-c", '"$@"; exit $?', "sh"], str(harness), unit) is fast


@pytest.fixture(scope="module")
def checks(tiny_pipeline):
    """Each harness's check, in this process, with the session's tiny pipeline."""
    return {
        "container": fuzz_container.load(),
        "entropy": fuzz_entropy.load(tiny_pipeline),
        "decompress": fuzz_decompress.load(tiny_pipeline),
        "image": fuzz_image.load(),
    }


def test_the_seeds_are_real_streams_and_images(checks):
    """The seed streams of the tiny pipeline decode (so the fuzzers start past the checks), the images read."""
    streams = sorted((SEEDS / "streams").glob("tiny*.sodec"))  # the hyperprior's and the checkerboard model's
    assert len(streams) == 18 and sum(s.read_bytes()[2] == 4 for s in streams) == 9
    for seed in streams:
        assert checks["entropy"](seed.read_bytes()) == "decoded", seed.name
    assert checks["decompress"](streams[0].read_bytes()) == checks["decompress"](streams[-1].read_bytes()) == "decoded"
    outcomes = {p.name: checks["image"](p.read_bytes()) for p in sorted((SEEDS / "images").iterdir())}
    assert sum(o == "read" for o in outcomes.values()) >= 25, outcomes
    assert outcomes["text.txt"] == "refused" and outcomes["announces_16385x16.png"] == "refused"


@pytest.mark.parametrize("name", list(HARNESSES))
def test_the_inputs_the_fuzzers_found_keep_the_rules(name, checks):
    for path in regression_inputs(name):
        checks[name](path.read_bytes())  # raises for an input that breaks a rule


def test_every_finding_is_kept_with_a_note():
    notes = (REGRESSIONS / "README.md").read_text()
    for name in HARNESSES:
        for path in regression_inputs(name):
            assert f"{name}/{path.name}" in notes, f"{name}/{path.name} is not described in {REGRESSIONS}/README.md"


def test_a_damaged_avif_is_a_one_line_refusal_in_the_cli_and_the_demo(tmp_path, capsys):
    """The image harness's first finding: Pillow's AVIF decoder raises RuntimeError for a file without an image
    item, which `sodec compress` reported as an unexpected error (exit status 1) and the demo as "something went
    wrong"."""
    from sodec_pipeline.cli import main
    from sodec_pipeline.demo.comparison import read_photo
    from sodec_pipeline.image_files import UnreadableImageError

    bad = tmp_path / "photo.avif"
    bad.write_bytes((REGRESSIONS / "image" / "avif_missing_image_item.avif").read_bytes())
    assert main(["compress", str(bad), "--model", "sodec-small", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sodec compress: error: {bad}: not a readable image (Failed to decode image: Missing or empty "
                   "image item)"]  # fmt: skip
    with pytest.raises(UnreadableImageError, match="Missing or empty image item"):
        read_photo(bad)


def test_a_png_turned_by_a_late_exif_chunk_is_reported_at_the_size_it_is_compressed_at(tiny_pipeline_dir, tmp_path,
                                                                                        capsys):  # fmt: skip
    """A PNG (16×8) whose eXIf chunk (orientation 6) follows its pixels: Pillow reads the chunk only with the
    pixels, so its header gives 16×8 and its pixels are 8×16. `sodec compress` compressed the 8×16 image and said
    16×8 in its result line; the line now gives the size of what was compressed."""
    from sodec_pipeline.cli import main
    from sodec_pipeline.codec.bitstream import decode_bitstream

    photo = tmp_path / "late.png"
    photo.write_bytes((REGRESSIONS / "image" / "png_exif_after_pixels.png").read_bytes())
    assert main(["compress", str(photo), "--model", str(tiny_pipeline_dir), "--quiet"]) == 0
    assert "\t8×16\t" in capsys.readouterr().out
    stream = decode_bitstream((tmp_path / "late.sodec").read_bytes())
    assert (stream.width, stream.height) == (8, 16)


def test_the_rules_fail_for_an_exception_that_is_no_refusal(monkeypatch):
    """A harness lets an exception other than the package's refusals through (libFuzzer records a crash), and
    holds a refusal to one line."""
    from sodec_pipeline.codec import bitstream

    seed = next(iter(sorted((SEEDS / "streams").glob("tiny_*.sodec")))).read_bytes()

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(bitstream, "decode_bitstream", broken)
    with pytest.raises(KeyError):
        fuzz_container.load()(seed)

    def two_lines(*args, **kwargs):
        raise bitstream.BitstreamError("first line\nsecond line")

    monkeypatch.setattr(bitstream, "decode_bitstream", two_lines)
    with pytest.raises(RuleBroken, match="one-line"):
        fuzz_container.load()(seed)
