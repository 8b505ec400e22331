import io
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from sodec_pipeline.cli import compress_command, decompress_command, main, model_loading
from sodec_pipeline.cli.dispatch import COMMANDS, build_parser
from sodec_pipeline.cli.progress import progress_enabled


HEAVY_MODULES = (
    "torch",
    "diffusers",
    "transformers",
    "compressai",
    "matplotlib",
    "torchvision",
    "gradio",
    "accelerate",
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, photo_paths):
    d = tmp_path_factory.mktemp("cli")
    for p in photo_paths:
        shutil.copy(p, d / p.name)
    (d / "not_an_image.png").write_text("this is text")
    PIL.Image.fromarray(np.full((5, 7), 200, dtype=np.uint8)).save(d / "grey.png")
    return d


@pytest.fixture(scope="module")
def streams(tiny_pipeline, workdir, tmp_path_factory):
    """Two streams of the tiny test model (seed 0)."""
    d = tmp_path_factory.mktemp("streams")
    paths = []
    for name in ("bsds_crop0_96x64.png", "grey.png"):
        path = d / (name.rsplit(".", 1)[0] + ".sodec")
        path.write_bytes(tiny_pipeline.compress(PIL.Image.open(workdir / name))[0])
        paths.append(path)
    return paths


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a command loads the model: for errors that must come before any compute."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(compress_command, "load_coding_pipeline", refuse)
    monkeypatch.setattr(decompress_command, "load_coding_pipeline", refuse)
    monkeypatch.setattr(decompress_command, "load_pipeline", refuse)


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _png_header(path, width, height):
    """A PNG whose header announces width×height, with a few bytes of pixel data: a decoder that reads
    the pixels fails, so a size error proves the size was checked from the header alone."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def _one_line_error(code, err, needle, status=2):
    assert code == status, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


# ---------------------------------------------------------------------- the main job
def test_init_compress_decompress(tiny_pipeline_dir, workdir, capsys, tmp_path):
    model = tmp_path / "model"
    code, out, err = _run(capsys, "init", "sodec-tiny", model, "--seed", "0")
    assert code == 0 and (model / "model_index.json").is_file()
    images = [workdir / "bsds_crop0_96x64.png", workdir / "bsds_481x321.jpg", workdir / "grey.png"]
    code, out, err = _run(capsys, "compress", *images, "--model", model, "-o", tmp_path / "streams")
    assert code == 0, err
    assert err == ""  # stderr is not a terminal here: no progress bars
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for image, line in zip(images, lines):
        stream = tmp_path / "streams" / (image.stem + ".sodec")
        w, h = PIL.Image.open(image).size
        assert line.startswith(str(stream))
        assert f"\t{w}×{h}\t" in line  # W×H, as Pillow
        assert f"{8 * stream.stat().st_size / (w * h):.4f} bpp" in line
    # same seed and config as the session fixture: the same model, so the same bytes
    from sodec_pipeline import SODECPipeline

    ref = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    assert (tmp_path / "streams" / "bsds_481x321.sodec").read_bytes() == ref.compress(PIL.Image.open(images[1]))[0]
    streams = sorted((tmp_path / "streams").glob("*.sodec"))
    code, out, err = _run(capsys, "decompress", *streams, "--model", model, "-o", tmp_path / "png")
    assert code == 0, err
    for image in images:
        decoded = tmp_path / "png" / (image.stem + ".diffusion.png")
        assert PIL.Image.open(decoded).size == PIL.Image.open(image).size
    # --fidelity gets its own name: the diffusion decode is not overwritten
    diffusion = tmp_path / "png" / "bsds_481x321.diffusion.png"
    before = diffusion.read_bytes()
    code, out, err = _run(capsys, "decompress", tmp_path / "streams" / "bsds_481x321.sodec", "--model", model,
                          "-o", tmp_path / "png", "--fidelity")  # fmt: skip
    assert code == 0 and out.rstrip().endswith("fidelity")
    fidelity = tmp_path / "png" / "bsds_481x321.fidelity.png"
    assert diffusion.read_bytes() == before and fidelity.read_bytes() != before
    # an explicit output file for one stream
    one = tmp_path / "streams" / (images[0].stem + ".sodec")
    code, out, err = _run(capsys, "decompress", one, "--model", model, "--fidelity", "-o", tmp_path / "mine.png")
    assert code == 0 and PIL.Image.open(tmp_path / "mine.png").size == PIL.Image.open(images[0]).size


def test_default_output_names_never_replace_the_photo(tiny_pipeline_dir, workdir, capsys, tmp_path):
    """compress writes photo.sodec next to photo.png; decompress of it must not write photo.png."""
    photo = tmp_path / "photo.png"
    shutil.copy(workdir / "bsds_crop0_96x64.png", photo)
    original = photo.read_bytes()
    assert _run(capsys, "compress", photo, "--model", tiny_pipeline_dir)[0] == 0
    assert _run(capsys, "decompress", tmp_path / "photo.sodec", "--model", tiny_pipeline_dir)[0] == 0
    assert photo.read_bytes() == original and (tmp_path / "photo.diffusion.png").is_file()


# ---------------------------------------------------------------------- one-line errors, exit status 2
@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing_image", "no such file"),
        ("not_an_image", "not a readable image"),
        ("folder_as_image", "a folder, not an image file"),
        ("folder_as_stream", "a folder, not a .sodec file"),
        ("corrupt_stream", "corrupted"),
        ("truncated_stream", "truncated"),
        ("other_model", "another model"),
        ("missing_model", "no such folder"),
        ("not_a_model_dir", "no model_index.json"),
        ("layout_name_as_model", "sodec init sodec-tiny my-model"),
        ("config_folder_as_model", "configs without weights"),
        ("missing_stream", "no such file"),
        ("bad_config", "hub config"),
        ("init_into_a_full_folder", "not empty"),
        ("bad_device", "--device"),
        ("over_budget", "96×64 image (6144 pixels), above this decoder's budget of 6000 pixels"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    case, needle, tiny_pipeline_dir, tiny_pipeline, workdir, streams, capsys, tmp_path
):
    stream = streams[0]
    data = stream.read_bytes()
    model = str(tiny_pipeline_dir)
    if case == "missing_image":
        args = ["compress", workdir / "nope.png", "--model", model]
    elif case == "not_an_image":
        args = ["compress", workdir / "not_an_image.png", "--model", model]
    elif case == "folder_as_image":
        args = ["compress", workdir, "--model", model]
    elif case == "folder_as_stream":
        args = ["decompress", workdir, "--model", model]
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
    elif case == "layout_name_as_model":
        args = ["compress", workdir / "grey.png", "--model", "sodec-tiny"]
    elif case == "config_folder_as_model":
        from sodec_pipeline.hub_configs import resolve_hub_config

        args = ["compress", workdir / "grey.png", "--model", resolve_hub_config("sodec-tiny")]
    elif case == "missing_stream":
        args = ["decompress", tmp_path / "none.sodec", "--model", model]
    elif case == "bad_device":
        args = ["decompress", stream, "--model", model, "--device", "no-such-device"]
    elif case == "init_into_a_full_folder":
        args = ["init", "sodec-tiny", workdir]
    elif case == "over_budget":
        args = ["decompress", stream, "--model", model, "--max-pixels", "6000"]
    else:
        args = ["init", tmp_path / "no_such_config", tmp_path / "out"]
    code, out, err = _run(capsys, *args, "-o", tmp_path / "out") if args[0] != "init" else _run(capsys, *args)
    _one_line_error(code, err, needle)
    if case == "over_budget":
        assert "--max-pixels" in err
    assert not any(p.suffix == ".png" and "diffusion" in p.name for p in tmp_path.rglob("*"))


def test_hub_id_offline_says_the_machine_is_offline(workdir, capsys, monkeypatch, tmp_path):
    """diffusers' real Hub path, with the network call failing as it does without a network."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import requests

    def model_info(repo, **kwargs):
        raise requests.ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(pipeline_utils, "model_info", model_info)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code, out, err = _run(capsys, "compress", workdir / "grey.png", "--model", "sodec-test/not-cached", "-o", tmp_path)
    _one_line_error(code, err, "this machine is offline")
    assert "stacktrace" not in err


def test_unknown_hub_repo_is_named(capsys):
    from huggingface_hub.errors import RepositoryNotFoundError

    from sodec_pipeline.cli.model_loading import describe_load_error

    not_found = RepositoryNotFoundError(
        "404 Repository Not Found", response=types.SimpleNamespace(headers={}, request=None)
    )
    try:
        try:
            raise not_found
        except RepositoryNotFoundError as e:
            raise OSError("Cannot load model owner/name: the model is not fully cached locally") from e
    except OSError as e:
        message = describe_load_error("owner/name", e)
    assert "no such model on the Hugging Face Hub" in message


@pytest.mark.parametrize(
    "size, needle",
    [((100000, 100000), "10,000,000,000 pixels"), ((16385, 16384), "16385×16384 (W×H)"), ((20000, 16), "20000×16")],
)
def test_image_size_is_checked_from_the_header(size, needle, workdir, capsys, tmp_path, no_model_load):
    """Pillow's bomb guard (more than twice 16384² pixels: it counts them) and SODEC's own limit (a side > 16384,
    W×H) give one line, "beyond the limits of the format", before any pixel is decoded or the model is loaded."""
    path = _png_header(tmp_path / "huge.png", *size)
    code, out, err = _run(capsys, "compress", path, "--model", _fake_model(tmp_path), "-o", tmp_path)
    _one_line_error(code, err, needle)
    assert "beyond the limits of the format" in err and "DecompressionBomb" not in err


def test_a_gif_frame_beyond_its_screen_is_refused_without_allocating_it(tmp_path):
    """The fuzzer's GIF (tests/assets/fuzz-regressions/): a 16×3112 screen with a 56174×57600 frame, which Pillow
    allocates while opening the file unless its bomb guard is on. In a child limited to 1.5 GB of address space,
    its header is refused in one line (before the fix: 3.1 GB, then the refusal)."""
    gif = Path(__file__).parent / "assets" / "fuzz-regressions" / "image" / "gif_frame_beyond_the_screen.gif"
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))\n"
        "from sodec_pipeline.cli.errors import CLIError\n"
        "from sodec_pipeline.cli.files import read_image_size\n"
        "try:\n"
        "    read_image_size(sys.argv[1])\n"
        "except CLIError as e:\n"
        "    print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(gif)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "3,350,666,752 pixels is beyond the limits of the format" in run.stdout


def _fake_model(tmp_path):
    """A folder that passes the cheap --model checks (for tests where the model must never load)."""
    folder = tmp_path / "fake-model"
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "SODECPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    (folder / "unet" / "config.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    "case,needle",
    [
        ("output_under_a_file", "cannot create the output folder"),
        ("output_is_a_file", "it is a file, not a folder"),
        ("one_file_for_two_inputs", "names one file, but 2 images were given"),
        ("two_inputs_one_name", "would both be written to"),
    ],
)
def test_output_paths_are_checked_before_any_compute(case, needle, workdir, capsys, tmp_path, no_model_load):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    image = workdir / "grey.png"
    if case == "output_under_a_file":
        args = [image, "-o", a_file / "sub"]
    elif case == "output_is_a_file":
        args = [image, "-o", a_file]
    elif case == "one_file_for_two_inputs":
        args = [image, workdir / "bsds_crop0_96x64.png", "-o", tmp_path / "one.sodec"]
    else:
        jpg = tmp_path / "grey.jpg"
        PIL.Image.open(image).convert("RGB").save(jpg)
        args = [image, jpg, "-o", tmp_path / "out"]
    code, out, err = _run(capsys, "compress", *args, "--model", _fake_model(tmp_path))
    _one_line_error(code, err, needle)


@pytest.mark.skipif(
    not os.path.isdir("/sys"), reason="needs Linux's sysfs: a folder that no user, root included, can write in"
)
def test_read_only_output_folder_is_refused_before_compute(workdir, capsys, tmp_path, no_model_load):
    # sysfs refuses new files to every user, root included (a chmod 0o500 folder would not stop root).
    code, out, err = _run(capsys, "compress", workdir / "grey.png", "--model", _fake_model(tmp_path), "-o", "/sys")
    _one_line_error(code, err, "cannot write in the output folder")


# ---------------------------------------------------------------------- batches
def test_compress_batch_survives_bad_files(tiny_pipeline_dir, workdir, capsys, tmp_path):
    images = [
        workdir / "grey.png",
        workdir / "not_an_image.png",
        workdir / "missing.png",
        workdir / "bsds_crop0_96x64.png",
    ]
    code, out, err = _run(capsys, "compress", *images, "--model", tiny_pipeline_dir, "-o", tmp_path)
    assert code == 2
    assert sorted(p.name for p in tmp_path.glob("*.sodec")) == ["bsds_crop0_96x64.sodec", "grey.sodec"]
    assert len(out.strip().splitlines()) == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "not_an_image.png" in lines[0] and "missing.png" in lines[1]
    assert lines[-1] == "sodec compress: 2 of 4 images failed, 2 compressed"


def test_decompress_realism(tiny_pipeline_dir, tiny_pipeline, streams, capsys, tmp_path):
    """--realism 0 is --fidelity's decode; 1 the default decode under its own name (float32, as the in-process pipeline
    here: --dtype auto is bfloat16 on a CPU with native bfloat16); a value between is refused in
    one line by a model trained without a realism control and decoded by one trained with it; a bad value and
    --realism with --fidelity are refused by argparse."""
    from sodec_pipeline import SODECPipeline
    from sodec_pipeline.schedulers import SODECScheduler

    stream, out = streams[0], tmp_path / "out"
    code, _, err = _run(
        capsys, "decompress", stream, "--model", tiny_pipeline_dir, "-o", out, "--realism", "0", "--dtype", "float32"
    )
    assert code == 0, err
    fidelity = tiny_pipeline.decompress(stream.read_bytes(), decoder="fidelity").images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(out / "bsds_crop0_96x64.fidelity.png")), np.asarray(fidelity))
    code, stdout, err = _run(
        capsys, "decompress", stream, "--model", tiny_pipeline_dir, "-o", out, "--realism", "1", "--dtype", "float32"
    )
    assert code == 0 and stdout.rstrip().endswith("realism 1"), err
    diffusion = tiny_pipeline.decompress(stream.read_bytes()).images[0]
    assert np.array_equal(np.asarray(PIL.Image.open(out / "bsds_crop0_96x64.realism-1.png")), np.asarray(diffusion))
    code, _, err = _run(capsys, "decompress", stream, "--model", tiny_pipeline_dir, "-o", out, "--realism", "0.5")
    _one_line_error(code, err, "without a realism control")
    assert not (out / "bsds_crop0_96x64.realism-0.5.png").exists()
    for bad in (["--realism", "1.5"], ["--realism", "much"], ["--realism", "0.5", "--fidelity"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["decompress", str(stream), "--model", str(tiny_pipeline_dir), *bad])
        assert exit_info.value.code == 2
    capsys.readouterr()
    scheduler = SODECScheduler.from_config({**tiny_pipeline.scheduler.config, "realism_control": True})
    SODECPipeline(**{**tiny_pipeline.components, "scheduler": scheduler}).save_pretrained(tmp_path / "control")
    code, _, err = _run(capsys, "decompress", stream, "--model", tmp_path / "control", "-o", out, "--realism", "0.5")
    assert code == 0, err
    assert PIL.Image.open(out / "bsds_crop0_96x64.realism-0.5.png").size == (96, 64)


def test_a_realism_the_model_lacks_is_refused_before_it_loads(
    tiny_pipeline_dir, streams, capsys, tmp_path, no_model_load
):
    """A local model's scheduler config says whether it takes a realism between 0 and 1: read before any stream or
    weight is."""
    code, _, err = _run(capsys, "decompress", streams[0], "--model", tiny_pipeline_dir, "--realism", "0.3")
    _one_line_error(code, err, "trained without a realism control: --realism takes 0 (the fidelity decode) or 1")


def test_decompress_batch_survives_a_bad_stream(tiny_pipeline_dir, streams, capsys, tmp_path):
    corrupt = tmp_path / "corrupt.sodec"
    data = bytearray(streams[0].read_bytes())
    data[len(data) // 2] ^= 0x10
    corrupt.write_bytes(bytes(data))
    code, out, err = _run(
        capsys, "decompress", streams[0], corrupt, streams[1], "--model", tiny_pipeline_dir, "-o", tmp_path
    )
    assert code == 2
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["bsds_crop0_96x64.diffusion.png", "grey.diffusion.png"]
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "corrupt.sodec" in lines[0] and "corrupted" in lines[0]
    assert lines[-1] == "sodec decompress: 1 of 3 streams failed, 2 decoded"


def test_unexpected_failure_of_one_file_exits_1_and_the_rest_go_on(
    tiny_pipeline_dir, streams, capsys, tmp_path, monkeypatch
):
    from sodec_pipeline import SODECPipeline

    real = SODECPipeline.decompress
    first = streams[0].read_bytes()

    def flaky(self, data, **kwargs):
        if data == first:
            raise RuntimeError("out of memory (simulated)")
        return real(self, data, **kwargs)

    monkeypatch.setattr(SODECPipeline, "decompress", flaky)
    code, out, err = _run(capsys, "decompress", *streams, "--model", tiny_pipeline_dir, "-o", tmp_path)
    assert code == 1
    assert [p.name for p in tmp_path.glob("*.png")] == ["grey.diffusion.png"]
    lines = err.strip().splitlines()
    assert "RuntimeError: out of memory (simulated) (run with --debug for the traceback)" in lines[0]
    assert lines[-1] == "sodec decompress: 1 of 2 streams failed, 1 decoded"
    # --debug, after the subcommand: the traceback, and the batch still goes on
    code, out, err = _run(
        capsys, "decompress", *streams, "--model", tiny_pipeline_dir, "-o", tmp_path, "--debug", "--overwrite"
    )
    assert code == 1 and "Traceback" in err and "grey.diffusion.png" in out


# ---------------------------------------------------------------------- existing outputs, atomic writes
@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_an_existing_output_is_refused_before_any_compute(command, workdir, streams, capsys, tmp_path, no_model_load):
    source = workdir / "grey.png" if command == "compress" else streams[1]
    existing = tmp_path / ("grey.sodec" if command == "compress" else "grey.diffusion.png")
    existing.write_bytes(b"an earlier result")
    code, out, err = _run(capsys, command, source, "--model", _fake_model(tmp_path), "-o", tmp_path)
    _one_line_error(code, err, f"{existing} exists; pass --overwrite to replace it")
    assert existing.read_bytes() == b"an earlier result" and out == ""


def test_overwrite_replaces_an_existing_output(tiny_pipeline_dir, tiny_pipeline, workdir, streams, capsys, tmp_path):
    stream, decoded = tmp_path / "grey.sodec", tmp_path / "grey.diffusion.png"
    for path in (stream, decoded):
        path.write_bytes(b"an earlier result")
    code, out, err = _run(capsys, "compress", workdir / "grey.png", "--model", tiny_pipeline_dir, "-o", tmp_path,
                          "--overwrite")  # fmt: skip
    assert code == 0, err
    assert stream.read_bytes() == tiny_pipeline.compress(PIL.Image.open(workdir / "grey.png"))[0]
    code, out, err = _run(capsys, "decompress", stream, "--model", tiny_pipeline_dir, "--overwrite")
    assert code == 0, err
    assert PIL.Image.open(decoded).size == (7, 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.diffusion.png", "grey.sodec"]  # no temporary file


def test_a_failed_write_leaves_no_partial_file_and_the_earlier_one_intact(
    tiny_pipeline_dir, streams, capsys, tmp_path, monkeypatch
):
    earlier = tmp_path / "grey.diffusion.png"
    earlier.write_bytes(b"an earlier decode")

    def save_half(image, file, *args, **kwargs):  # half a PNG, then the disk is full
        file.write(b"\x89PNG\r\n\x1a\nhalf a PNG")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PIL.Image.Image, "save", save_half)
    code, out, err = _run(capsys, "decompress", *streams, "--model", tiny_pipeline_dir, "-o", tmp_path, "--overwrite")
    assert code == 2 and err.count("No space left on device") == 2, err
    assert f"cannot write {earlier}: No space left on device" in err
    assert [p.name for p in tmp_path.iterdir()] == ["grey.diffusion.png"]  # no partial file, no temporary file
    assert earlier.read_bytes() == b"an earlier decode"


def test_an_interrupted_write_leaves_no_file(tiny_pipeline_dir, workdir, capsys, tmp_path, monkeypatch):
    from sodec_pipeline.cli import files

    def interrupted(descriptor):  # Ctrl-C after the stream was written, before it was renamed into place
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "fsync", interrupted)
    code, out, err = _run(capsys, "compress", workdir / "grey.png", "--model", tiny_pipeline_dir, "-o", tmp_path)
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- standard input and output
def test_a_pipe_round_trip_through_standard_input_and_output(tiny_pipeline_dir, tiny_pipeline, workdir):
    """`sodec compress - -o - < photo | sodec decompress - -o - > decoded.png`: standard output holds the
    stream, then the PNG, and nothing else (the result lines go to stderr)."""
    photo = workdir / "bsds_crop0_96x64.png"
    sodec = [sys.executable, "-m", "sodec_pipeline"]
    model = ["--model", str(tiny_pipeline_dir)]
    with open(photo, "rb") as stdin:
        compress = subprocess.run([*sodec, "compress", "-", "-o", "-", *model], stdin=stdin, capture_output=True)
    assert compress.returncode == 0, compress.stderr.decode()
    assert compress.stdout == tiny_pipeline.compress(PIL.Image.open(photo))[0]
    assert f"-\t{len(compress.stdout)} bytes\t96×64\t" in compress.stderr.decode()
    decompress = subprocess.run([*sodec, "decompress", "-", "-o", "-", *model], input=compress.stdout,
                                capture_output=True)  # fmt: skip
    assert decompress.returncode == 0, decompress.stderr.decode()
    assert decompress.stdout.startswith(b"\x89PNG\r\n\x1a\n") and decompress.stdout.endswith(b"IEND\xaeB`\x82")
    with PIL.Image.open(io.BytesIO(decompress.stdout)) as decoded:
        assert decoded.format == "PNG" and decoded.size == (96, 64)
    assert "-\t96×64\t" in decompress.stderr.decode()


@pytest.mark.parametrize(
    "case,needle",
    [
        ("stdin_without_output", "- (standard input) has no name for its result: pass -o OUT.sodec, or -o -"),
        ("stdin_with_another_image", "- (standard input) holds one image: give it alone, not with 1 more"),
        ("stdout_for_two_images", "-o - names standard output, for one result, but 2 images were given"),
        ("stdin_is_a_terminal", "standard input is a terminal; pipe an image in"),
        ("stdout_is_a_terminal", "standard output is a terminal; redirect it"),
        ("empty_stdin", "standard input: empty, an image was expected"),
        ("not_an_image_on_stdin", "standard input: not a readable image"),
        ("not_a_stream_on_stdin", "standard input: not a SODEC stream"),
    ],
)
def test_standard_streams_misused_give_one_line(case, needle, workdir, capsys, tmp_path, monkeypatch, no_model_load):
    stdin = b"this is text"
    command, inputs, output = "compress", ["-"], "-"
    if case == "stdin_without_output":
        output = None
    elif case == "stdin_with_another_image":
        inputs, output = ["-", workdir / "grey.png"], tmp_path
    elif case == "stdout_for_two_images":
        inputs = [workdir / "grey.png", workdir / "bsds_crop0_96x64.png"]
    elif case == "stdin_is_a_terminal":
        stdin = None
    elif case == "stdout_is_a_terminal":
        inputs = [workdir / "grey.png"]
        monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    elif case == "empty_stdin":
        stdin = b""
    elif case == "not_a_stream_on_stdin":
        command = "decompress"
    terminal = types.SimpleNamespace(isatty=lambda: True)
    monkeypatch.setattr(sys, "stdin", terminal if stdin is None else io.TextIOWrapper(io.BytesIO(stdin)))
    args = [command, *inputs, "--model", _fake_model(tmp_path)] + (["-o", output] if output else [])
    code, out, err = _run(capsys, *args)
    _one_line_error(code, err, needle)
    assert out == ""


# ---------------------------------------------------------------------- options anywhere, progress
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_and_quiet_are_accepted_anywhere(where):
    flags = ["--debug", "--quiet"]
    argv = flags + ["compress", "a.png"] if where == "before" else ["compress", "a.png"] + flags
    args = build_parser("compress").parse_args(argv)
    assert args.debug and args.quiet
    args = build_parser("compress").parse_args(["compress", "a.png"])
    assert not args.debug and not args.quiet


def test_debug_shows_the_traceback(workdir, capsys, tmp_path):
    with pytest.raises(Exception, match="no such folder"):
        main(["compress", str(workdir / "grey.png"), "--model", str(tmp_path / "no_model_here"), "--debug"])


def test_progress_only_for_a_terminal_and_not_with_quiet():
    tty = types.SimpleNamespace(isatty=lambda: True)
    pipe = types.SimpleNamespace(isatty=lambda: False)
    assert progress_enabled(False, tty) and not progress_enabled(True, tty) and not progress_enabled(False, pipe)


def test_progress_shows_each_step_on_stderr(tiny_pipeline_dir, streams, capsys, tmp_path, monkeypatch):
    import sodec_pipeline.cli.dispatch as dispatch

    monkeypatch.setattr(dispatch, "progress_enabled", lambda quiet: not quiet)  # as on a terminal
    code, out, err = _run(capsys, "decompress", *streams, "--model", tiny_pipeline_dir, "-o", tmp_path)
    assert code == 0
    for step in ("loading the model", "entropy decoding", "UNet step", "VAE decoder", "sodec decompress:"):
        assert step in err, step
    assert len(out.strip().splitlines()) == 2 and all("\r" not in line for line in out.splitlines())
    code, out, err = _run(
        capsys, "decompress", *streams, "--model", tiny_pipeline_dir, "-o", tmp_path, "-q", "--overwrite"
    )
    assert code == 0 and err == ""


# ---------------------------------------------------------------------- the README
def test_readme_quick_start_runs_as_written(photo_paths, capsys, tmp_path, monkeypatch):
    """The README's quick start, both blocks, top to bottom, in a folder laid out like the repository."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "tests" / "assets").mkdir(parents=True)
    for path in photo_paths:
        shutil.copy(path, tmp_path / "tests" / "assets" / path.name)
    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line, comments=True) for line in shell.splitlines() if line.strip()]
    assert [c[:2] for c in commands[:3]] == [["sodec", "compress"], ["sodec", "decompress"], ["sodec", "decompress"]]
    assert all(c[:2] == ["sodec", "compress"] for c in commands[3:])  # the quality levels and size budgets
    assert not any("--model" in c for c in commands)  # the shipped default
    for command in commands:
        code, out, err = _run(capsys, *command[1:])
        assert code == 0, (command, err)
    assert PIL.Image.open("decoded/bsds_481x321.diffusion.png").size == (481, 321)
    assert PIL.Image.open("decoded/bsds_481x321.fidelity.png").size == (481, 321)
    exec(compile(python, "README.md quick start", "exec"), {})
    assert PIL.Image.open("decoded.png").size == (481, 321)
    assert "bpp" in capsys.readouterr().out


# ---------------------------------------------------------------------- start-up
def _modules_after(code):
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=os.getcwd())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_help_imports_no_heavy_library():
    """`sodec --help` and `sodec COMMAND --help` (checked in a child process: sys.modules is clean there)."""
    for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
        code = (
            "from sodec_pipeline.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main({argv!r})\n    except SystemExit as e:\n        assert e.code == 0\n"
        )
        assert _modules_after(code) == [], argv


def test_help_says_what_ships_today(capsys):
    """`sodec --help`: the shipped model is the default (no "random weights until a trained model ships"), and
    --overwrite and the pipe are there."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "random weights" not in out and "until a trained model ships" not in out
    assert f"{model_loading.DEFAULT_MODEL}, a trained model, ships with the package and is the default" in out
    assert "--overwrite" in out and "sodec compress photo.png -o - | sodec decompress - -o - > decoded.png" in out
    for command in ("compress", "decompress"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
        assert "--overwrite" in out and "- reads one from stdin" in out and "or - for stdout" in out


def test_import_sodec_pipeline_is_lazy():
    """`import sodec_pipeline` imports nothing heavy; a name is imported when used (and `SODECPipeline`
    registers itself with diffusers then: tests/test_pipeline.py::test_package_exports)."""
    assert _modules_after("import sodec_pipeline\nassert sodec_pipeline.MAX_IMAGE_SIDE == 16384") == []


def test_console_script_and_module_entry_point(workdir):
    for cmd in (["sodec", "--help"], [sys.executable, "-m", "sodec_pipeline", "--help"]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0 and "compress" in result.stdout
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sodec_pipeline",
            "compress",
            str(workdir / "not_an_image.png"),
            "--model",
            str(workdir),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
