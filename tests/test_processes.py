"""`accelerate launch` over `sodec eval`, `compress` and `decompress`: shares of the files, gathered results."""

import csv
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
from ports import free_port

from sodec_pipeline.cli import main
from sodec_pipeline.cli.processes import WORLD_SIZE_VARIABLES, Processes, launched_processes
from sodec_pipeline.evaluation.evaluate import evaluate, merge_results


REPO = Path(__file__).resolve().parents[1]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def three_images(two_images):
    """The two crops and a copy of the first under a third name."""
    shutil.copy(two_images / "bsds_crop0_96x64.png", two_images / "bsds_crop2_96x64.png")
    return two_images


def test_one_process_without_accelerate(monkeypatch):
    for name in WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    processes = Processes()
    assert launched_processes() == 1 and processes.state is None
    assert processes.share([3, 1, 2]) == [3, 1, 2] and processes.gather("x") == ["x"]
    assert processes.is_main_process and processes.device(None) == "cpu" and processes.device("cuda:1") == "cuda:1"


def test_merged_shares_are_the_one_process_result(tmp_path, three_images, tiny_pipeline):
    paths = sorted(three_images.iterdir())
    kwargs = dict(codecs=["jpeg"], targets=[0.5, 1.0], progress=False)
    whole = evaluate(tiny_pipeline, paths, str(tmp_path / "whole"), **kwargs)
    shares = [evaluate(tiny_pipeline, share, str(tmp_path / "shares"), **kwargs) for share in (paths[:2], paths[2:])]
    merged = merge_results(shares)
    assert len(merged.rows) == len(whole.rows) > 0
    assert merged.rows == whole.rows and merged.grid == whole.grid and merged.images == whole.images
    assert merged.notes == whole.notes and merged.metrics == whole.metrics and merged.codecs == whole.codecs


@contextmanager
def one_thread():
    """One torch thread, and ``OMP_NUM_THREADS=1`` as accelerate gives each launched process: without it the CLI's
    loader sets one thread per physical core again."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
            yield
    finally:
        torch.set_num_threads(threads)


def _launch(commands, tmp_path, processes=2):
    """``sodec`` command lines, one after the other, in ``processes`` CPU processes of one thread each under
    ``accelerate launch``; returns (stdout, stderr, {command index: [exit status of each process]})."""
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), str(REPO / "tests" / "launched_commands.py"),
               json.dumps(commands)]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"status.{rank}.json").read_text()) for rank in range(processes)]
    return run.stdout, run.stderr, {index: [r[index] for r in ranks] for index in range(len(commands))}


def test_accelerate_launch_eval_and_batch_coding_match_one_process(tmp_path, three_images, tiny_pipeline_dir):
    """Two processes under accelerate launch: the eval rows are the one-process rows and the report is
    written once; compress/decompress write each file once and count a bad file of either process."""
    model = str(tiny_pipeline_dir)
    common = [
        "--model",
        model,
        "--images",
        str(three_images),
        "--codecs",
        "jpeg",
        "--targets",
        "1",
        "--no-perceptual",
        "-q",
    ]
    images = sorted(str(p) for p in three_images.iterdir())
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    streams = [str(tmp_path / "s" / (Path(p).stem + ".sodec")) for p in images]
    stdout, stderr, status = _launch(
        [
            ["eval", *common, "--out", str(tmp_path / "two")],
            ["compress", images[0], str(bad), *images[1:], "--model", model, "-o", str(tmp_path / "s"), "-q"],
            ["decompress", *streams, "--model", model, "-o", str(tmp_path / "d2"), "-q"],
        ],
        tmp_path,
    )
    assert status == {0: [0, 0], 1: [2, 2], 2: [0, 0]}, stderr[-3000:]  # the bad file fails the batch everywhere
    with one_thread():  # as each launched process: the same floating-point sums
        assert main(["eval", *common, "--out", str(tmp_path / "one")]) == 0
    assert _read_csv(tmp_path / "two" / "per_image.csv") == _read_csv(tmp_path / "one" / "per_image.csv")
    assert stdout.count("per_image_csv:") == 1  # only the main process reports

    errors = [line for line in stderr.splitlines() if line.startswith("sodec compress: error:")]
    assert len(errors) == 1 and "not_an_image.png: not a readable image" in errors[0]
    assert stderr.count("1 of 4 images failed, 3 compressed") == 1
    assert sorted(str(p) for p in (tmp_path / "s").iterdir()) == streams

    with one_thread():
        assert main(["decompress", *streams, "--model", model, "-o", str(tmp_path / "d1"), "-q"]) == 0
    decoded = sorted((tmp_path / "d1").iterdir())
    assert len(decoded) == 3 and sorted(p.name for p in (tmp_path / "d2").iterdir()) == [p.name for p in decoded]
    for path in decoded:
        assert (tmp_path / "d2" / path.name).read_bytes() == path.read_bytes()
