"""`sodec demo`: the Gradio page served on 127.0.0.1, used through gradio_client and in headless Chromium."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from demo_browser import chromium_path, drive, serve
from ports import free_port

from sodec_pipeline.cli import main
from sodec_pipeline.demo.comparison import DEMO_MAX_PIXELS, DemoInputError, check_photo_size


ASSETS = Path(__file__).parent / "assets"
PHOTO = ASSETS / "bsds_481x321.jpg"  # a BSDS500 test photograph: never trained on


@pytest.fixture(scope="module")
def server():
    """The demo page of the shipped sodec-small, with LPIPS and DISTS, on a free port (one per module)."""
    from sodec_pipeline import SODECPipeline
    from sodec_pipeline.metrics import load_perceptual_metrics

    pipe = SODECPipeline.from_pretrained("sodec-small")
    pipe.set_progress_bar_config(disable=True)
    perceptual, _ = load_perceptual_metrics()
    demo, url = serve(pipe, "sodec-small", perceptual, card="# sodec-small\nThe model card.")
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False, download_files=True)


def test_the_photo_size_budget_is_a_clear_error():
    check_photo_size(1920, 1080)
    with pytest.raises(DemoInputError, match="up to 2.1 Mpx"):
        check_photo_size(4000, 3000, DEMO_MAX_PIXELS)


def test_a_photo_comes_back_as_decodes_and_a_stream_that_the_cli_decodes(client, tmp_path):
    from gradio_client import handle_file

    gallery, figures, slider, stream, choice, notes = client.predict(handle_file(str(PHOTO)), api_name="/compress")
    names = [row[0] for row in figures["data"]]
    assert names[:2] == ["SODEC diffusion", "SODEC fidelity"] and {"JPEG", "WebP", "AVIF"} <= set(names)
    assert len(gallery) == len(names) >= 2
    for item in gallery:
        with PIL.Image.open(item["image"]) as image:
            assert image.size == (481, 321)
    headers = figures["headers"]
    assert headers[:3] == ["decode", "bytes", "bpp"] and "PSNR (dB) ↑" in headers and "DISTS ↓" in headers
    sodec_bytes = figures["data"][0][1]
    assert Path(stream).suffix == ".sodec" and Path(stream).stat().st_size == sodec_bytes
    for row in figures["data"][2:]:  # each classical codec at or under SODEC's bytes
        assert row[1] <= sodec_bytes
    assert len(slider) == 2
    out = tmp_path / "decoded"
    assert main(["decompress", stream, "-o", str(out), "--quiet"]) == 0
    with PIL.Image.open(out / (Path(stream).stem + ".diffusion.png")) as decoded:
        assert decoded.size == (481, 321)

    decodes, header = client.predict(handle_file(stream), api_name="/decode")
    assert len(decodes) == 2 and "481×321" in header and f"| {sodec_bytes} |" in header


def test_the_quality_level_sets_the_size_and_the_stream_says_it(client):
    """The page's quality slider: level 1 writes a smaller file than the default level, the classical codecs
    follow it, and the Decode tab reads the level from the stream; a level the model lacks is a message."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    _, default, *_ = client.predict(handle_file(str(PHOTO)), api_name="/compress")
    _, figures, _, stream, *_ = client.predict(handle_file(str(PHOTO)), 1, api_name="/compress")
    smallest = figures["data"][0][1]
    assert smallest < default["data"][0][1] and all(row[1] <= smallest for row in figures["data"][2:])
    _, header = client.predict(handle_file(stream), api_name="/decode")
    assert "quality level" in header and f"| 1 | {smallest} |" in header
    with pytest.raises(AppError, match="greater than maximum value 9"):  # the slider's own bound
        client.predict(handle_file(str(PHOTO)), 99, api_name="/compress")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not an image at all", "not a readable image"),
        (b"SODEC" + bytes(40), "not a readable image"),
    ],
    ids=["text", "zeros"],
)
def test_a_bad_upload_is_a_message_and_the_page_keeps_serving(client, tmp_path, content, message):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "upload.png"
    bad.write_bytes(content)
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(bad)), api_name="/compress")
    with pytest.raises(AppError, match="stream|magic|SODEC"):
        client.predict(handle_file(str(bad)), api_name="/decode")
    big = tmp_path / "big.png"
    PIL.Image.fromarray(np.zeros((1200, 2000, 3), np.uint8)).save(big)
    with pytest.raises(AppError, match="up to 2.1 Mpx"):
        client.predict(handle_file(str(big)), api_name="/compress")
    small = tmp_path / "small.png"
    shutil.copy(ASSETS / "bsds_crop0_96x64.png", small)
    assert len(client.predict(handle_file(str(small)), api_name="/compress")[0]) >= 2  # still serving


@pytest.mark.skipif(
    chromium_path() is None, reason="needs Debian's chromium (apt-get install -y chromium; .ci/run does)"
)
def test_the_page_works_in_headless_chromium(server, tmp_path):
    seen = drive(server, ASSETS / "bsds_crop1_96x64.png", tmp_path)
    assert seen["title"] == "SODEC demo" and "one diffusion step" in seen["intro"]
    assert "Model card" in seen["intro"]
    assert seen["num_decodes"] >= 2 and seen["slider_images"] >= 1
    for text in ("SODEC diffusion", "SODEC fidelity", "WebP", "PSNR", "bpp", "DISTS"):
        assert text in seen["figures"]
    assert "jpeg: no setting fits in" in seen["notes"]  # 96×64 in about 120 bytes: below JPEG's headers
    assert seen["stream"].suffix == ".sodec" and seen["stream"].stat().st_size > 0
    assert "96×64" in seen["header"] and seen["num_decoded"] == 2


def test_sodec_demo_serves_the_page_on_localhost(tmp_path):
    """The command itself, as a user starts it: the page answers on 127.0.0.1 within 2 minutes."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen(
        [sys.executable, "-m", "sodec_pipeline", "demo", "--port", str(port), "--no-perceptual", "-q"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None, server.stdout.read()[-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode("utf-8", "replace")
                break
            except OSError:
                assert time.time() < deadline, "no page within 2 minutes"
                time.sleep(0.5)
        assert response.status == 200 and "SODEC" in page
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_sodec_demo_refuses_a_bad_port_in_one_line(capsys):
    assert main(["demo", "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "--port must be between 1 and 65535" in err and "Traceback" not in err


def test_sodec_demo_says_in_one_line_why_it_cannot_serve(tiny_pipeline_dir, monkeypatch, capsys):
    """A server that cannot start (here an OSError without a message) is one line and exit status 2."""
    import gradio as gr

    def refuse(self, **kwargs):
        raise OSError()

    monkeypatch.setattr(gr.Blocks, "launch", refuse)
    argv = ["demo", "--model", str(tiny_pipeline_dir), "--no-perceptual", "--port", str(free_port())]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"sodec demo: error: cannot serve on 127.0.0.1:{argv[-1]}: OSError"
