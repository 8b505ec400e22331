import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from sodec_pipeline.cli import main


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, photo_paths):
    d = tmp_path_factory.mktemp("cli")
    for p in photo_paths:
        shutil.copy(p, d / p.name)
    (d / "not_an_image.png").write_text("this is text")
    PIL.Image.fromarray(np.full((5, 7), 200, dtype=np.uint8)).save(d / "grey.png")
    return d


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_compress_decompress(tiny_pipeline_dir, workdir, capsys, tmp_path):
    model = tmp_path / "model"
    code, out, err = _run(capsys, "init", "sodec-tiny", model, "--seed", "0")
    assert code == 0 and (model / "model_index.json").is_file()
    images = [workdir / "bsds_crop0_96x64.png", workdir / "bsds_481x321.jpg", workdir / "grey.png"]
    code, out, err = _run(capsys, "compress", *images, "--model", model, "-o", tmp_path / "streams")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for image, line in zip(images, lines):
        stream = tmp_path / "streams" / (image.stem + ".sodec")
        w, h = PIL.Image.open(image).size
        assert line.startswith(str(stream))
        assert f"{8 * stream.stat().st_size / (w * h):.4f} bpp" in line
    # same seed and config as the session fixture: the same model, so the same bytes
    from sodec_pipeline import SODECPipeline

    ref = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    assert (tmp_path / "streams" / "bsds_481x321.sodec").read_bytes() == ref.compress(PIL.Image.open(images[1]))[0]
    streams = sorted((tmp_path / "streams").glob("*.sodec"))
    code, out, err = _run(capsys, "decompress", *streams, "--model", model, "-o", tmp_path / "png")
    assert code == 0, err
    for image in images:
        assert PIL.Image.open(tmp_path / "png" / (image.stem + ".png")).size == PIL.Image.open(image).size
    code, out, err = _run(capsys, "decompress", streams[0], "--model", model, "-o", tmp_path / "fid", "--fidelity")
    assert code == 0 and "fidelity" in out


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing_image", "no such file"),
        ("not_an_image", "not a readable image"),
        ("corrupt_stream", "corrupted"),
        ("truncated_stream", "truncated"),
        ("other_model", "another model"),
        ("missing_model", "neither a pipeline folder"),
        ("not_a_model_dir", "no model_index.json"),
        ("missing_stream", "no such file"),
        ("bad_config", "hub config"),
        ("over_budget", "96×64 image (6144 pixels), above this decoder's budget of 6000 pixels"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(case, needle, tiny_pipeline_dir, tiny_pipeline, workdir, capsys, tmp_path):
    stream = tmp_path / "good.sodec"
    stream.write_bytes(tiny_pipeline.compress(PIL.Image.open(workdir / "bsds_crop0_96x64.png"))[0])
    data = stream.read_bytes()
    model = str(tiny_pipeline_dir)
    if case == "missing_image":
        args = ["compress", workdir / "nope.png", "--model", model]
    elif case == "not_an_image":
        args = ["compress", workdir / "not_an_image.png", "--model", model]
    elif case == "corrupt_stream":
        bad = tmp_path / "bad.sodec"
        bad.write_bytes(data[:20] + bytes([data[20] ^ 0xFF]) + data[21:])
        args = ["decompress", bad, "--model", model]
    elif case == "truncated_stream":
        bad = tmp_path / "bad.sodec"
        bad.write_bytes(data[:9])
        args = ["decompress", bad, "--model", model]
    elif case == "other_model":
        code, _, _ = _run(capsys, "init", "sodec-tiny", tmp_path / "other", "--seed", "7")
        args = ["decompress", stream, "--model", tmp_path / "other"]
    elif case == "missing_model":
        args = ["compress", workdir / "grey.png", "--model", tmp_path / "no_model_here"]
    elif case == "not_a_model_dir":
        args = ["compress", workdir / "grey.png", "--model", workdir]
    elif case == "missing_stream":
        args = ["decompress", tmp_path / "none.sodec", "--model", model]
    elif case == "over_budget":
        args = ["decompress", stream, "--model", model, "--max-pixels", "6000"]
    else:
        args = ["init", tmp_path / "no_such_config", tmp_path / "out"]
    code, out, err = _run(capsys, *args)
    assert code != 0
    assert needle in err
    if case == "over_budget":
        assert code == 2 and "--max-pixels" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_and_module_entry_point(workdir):
    for cmd in (["sodec", "--help"], [sys.executable, "-m", "sodec_pipeline", "--help"]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0 and "compress" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "sodec_pipeline", "compress", str(workdir / "not_an_image.png"), "--model", str(workdir)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
