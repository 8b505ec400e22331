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
    for item in gallery:  # what the page shows is the decode's pixels: a PNG, not Gradio's default lossy WebP
        with PIL.Image.open(item["image"]) as image:
            assert image.size == (481, 321) and image.format == "PNG"
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


# ---------------------------------------------------------------------- under load
#: 20 clients at once, 3 requests each; the last 2 clients send bad files only.
LOAD_CLIENTS = 20
LOAD_REQUESTS = 3
BAD_CLIENTS = 2
#: The most the server's peak RSS may grow over its warm RSS during the load (MiB): a decoded 8000×8000 bomb would
#: take 183 MiB as RGB alone.
LOAD_MAX_RSS_GROWTH_MIB = 150


def _memory_mib(pid: int, field: str) -> float:
    """VmRSS or VmHWM (the peak) of a process, from /proc, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


@pytest.fixture(scope="module")
def tiny_demo(tiny_pipeline_dir, tmp_path_factory):
    """`sodec demo` of the tests' tiny pipeline in its own process (whose memory is measured), on a free port, with
    as many threads as this process uses (so that its streams are this process's, bit for bit)."""
    import torch

    port = free_port()
    log = tmp_path_factory.mktemp("tiny-demo") / "server.log"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), GRADIO_ANALYTICS_ENABLED="False",
               OMP_NUM_THREADS=str(torch.get_num_threads()))  # fmt: skip
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "sodec_pipeline", "demo", "--model", str(tiny_pipeline_dir), "--port", str(port),
             "--no-perceptual", "-q"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 180
        while True:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                assert time.time() < deadline, "no page within 3 minutes"
                time.sleep(0.5)
        yield server, url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def load_files(tiny_pipeline, tmp_path_factory):
    """Three real photos (96×64) and their streams as this process writes them; a text file, a decompression bomb
    (an 8000×8000 PNG of 62 kB: 64 Mpx, under Pillow's own guard of 89 Mpx) and a truncated stream."""
    folder = tmp_path_factory.mktemp("load-files")
    with PIL.Image.open(PHOTO) as opened:
        photos = [PIL.Image.open(ASSETS / f"bsds_crop{i}_96x64.png").convert("RGB") for i in (0, 1)]
        photos.append(opened.convert("RGB").crop((200, 120, 296, 184)))
    good = []
    for i, photo in enumerate(photos):
        path = folder / f"photo{i}.png"
        photo.save(path)
        (stream,) = tiny_pipeline.compress(photo)
        (folder / f"photo{i}.sodec").write_bytes(stream)
        good.append((path, folder / f"photo{i}.sodec", stream))
    text = folder / "notes.png"
    text.write_bytes(b"not an image at all\n")
    bomb = folder / "bomb.png"
    PIL.Image.new("L", (8000, 8000)).save(bomb, optimize=True)
    truncated = folder / "truncated.sodec"
    truncated.write_bytes(good[0][2][: len(good[0][2]) // 2])
    return {"good": good, "text": text, "bomb": bomb, "truncated": truncated, "fingerprint":
            tiny_pipeline.compression_vae.fingerprint().hex()}  # fmt: skip


def _good_requests(client, files, index: int):
    """A client's three requests: two photos compressed, a stream decoded; what came back, checked."""
    from gradio_client import handle_file

    good = files["good"]
    for k in range(2):
        photo, _, stream = good[(index + k) % len(good)]
        _, figures, _, stream_path, *_ = client.predict(handle_file(str(photo)), api_name="/compress")
        assert Path(stream_path).read_bytes() == stream, f"client {index}: another stream for {photo.name}"
        assert figures["data"][0][:2] == ["SODEC diffusion", len(stream)]
    _, stream_file, stream = good[(index + 2) % len(good)]
    decodes, header = client.predict(handle_file(str(stream_file)), api_name="/decode")
    assert (
        len(decodes) == 2 and "96×64" in header and files["fingerprint"] in header and f"| {len(stream)} |" in header
    )
    for item in decodes:
        with PIL.Image.open(item["image"]) as image:
            assert image.size == (96, 64)


def _bad_requests(client, files, index: int):
    """A client's three bad files: each refused with a message, none decoded."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    for path, api, message in [
        (files["text"], "/compress", "not a readable image"),
        (files["bomb"], "/compress", r"8000×8000 \(64\.0 Mpx\); this demo takes photos up to 2\.1 Mpx"),
        (files["truncated"], "/decode", "truncated|checksum"),
    ]:
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(path)), api_name=api)


def test_the_demo_under_load_answers_every_good_request_and_refuses_every_bad_one(tiny_demo, load_files, tmp_path):
    """Issue 33: 20 gradio_client clients at once on 127.0.0.1, 3 requests each; 2 of them send a text file, a
    decompression bomb and a truncated stream. Every good request gets the bytes this process writes for its photo,
    every bad one a message; the server answers afterwards, and its peak RSS stays within bounds.
    ``SODEC_DEMO_LOAD_RESULTS=FILE`` writes the figures (benchmarks/results/demo-load/)."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client

    server, url = tiny_demo

    def client(index: int):
        return Client(url, verbose=False, download_files=str(tmp_path / f"client{index}"), analytics_enabled=False)

    _good_requests(client(-1), load_files, 0)  # warm: every stage has run once
    warm_rss = _memory_mib(server.pid, "VmRSS")
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here

    def one_client(index: int):
        session = client(index)
        started = time.perf_counter()
        (_bad_requests if index >= LOAD_CLIENTS - BAD_CLIENTS else _good_requests)(session, load_files, index)
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        client_seconds = list(pool.map(one_client, range(LOAD_CLIENTS)))  # re-raises the first failure
    wall = time.perf_counter() - started
    peak_rss = _memory_mib(server.pid, "VmHWM")

    assert server.poll() is None
    _good_requests(client(LOAD_CLIENTS), load_files, 1)  # still serving, still right
    assert peak_rss - warm_rss < LOAD_MAX_RSS_GROWTH_MIB, (warm_rss, peak_rss)
    figures = {
        "clients": LOAD_CLIENTS, "requests_per_client": LOAD_REQUESTS, "bad_clients": BAD_CLIENTS,
        "good_requests_answered": (LOAD_CLIENTS - BAD_CLIENTS) * LOAD_REQUESTS,
        "bad_requests_refused": BAD_CLIENTS * LOAD_REQUESTS, "wall_seconds": round(wall, 2),
        "slowest_client_seconds": round(max(client_seconds), 2), "server_warm_rss_mib": round(warm_rss, 1),
        "server_peak_rss_during_load_mib": round(peak_rss, 1),
    }  # fmt: skip
    if os.environ.get("SODEC_DEMO_LOAD_RESULTS"):
        import json

        Path(os.environ["SODEC_DEMO_LOAD_RESULTS"]).write_text(json.dumps(figures, indent=2) + "\n")
    print(figures)


def test_the_demo_queue_has_a_limit(tiny_pipeline):
    """At most DEMO_MAX_QUEUE requests wait; the load test's 20 clients stay within it."""
    from sodec_pipeline.demo.app import DEMO_MAX_QUEUE, build_demo

    assert LOAD_CLIENTS < DEMO_MAX_QUEUE
    assert build_demo(tiny_pipeline, "tiny")._queue.max_size == DEMO_MAX_QUEUE
    assert build_demo(tiny_pipeline, "tiny", max_queue=3)._queue.max_size == 3


def test_the_realism_slider_shows_for_a_model_with_the_control_and_sets_its_decode(tiny_pipeline):
    """A model trained with a realism control gets the slider (hidden for the others, whose decode ignores it), and
    the slider's β names and makes the SODEC decode in both tabs."""
    from sodec_pipeline import SODECPipeline
    from sodec_pipeline.demo.app import DemoHandlers, build_demo
    from sodec_pipeline.schedulers import SODECScheduler

    def sliders(demo):
        return {
            b.elem_id: b.visible
            for b in demo.blocks.values()
            if (getattr(b, "elem_id", None) or "").endswith("realism")
        }

    assert sliders(build_demo(tiny_pipeline, "tiny")) == {"realism": False, "decode-realism": False}
    scheduler = SODECScheduler.from_config({**tiny_pipeline.scheduler.config, "realism_control": True})
    pipe = SODECPipeline(**{**tiny_pipeline.components, "scheduler": scheduler})
    assert sliders(build_demo(pipe, "tiny")) == {"realism": True, "decode-realism": True}
    photo, quiet = str(ASSETS / "bsds_crop0_96x64.png"), lambda *args, **kwargs: None
    gallery, figures, _, stream_path, *_ = DemoHandlers(pipe).compress(photo, None, 0.5, progress=quiet)
    names = [row[0] for row in figures["data"]]
    assert names[:2] == ["SODEC realism 0.5", "SODEC fidelity"]
    stream = Path(stream_path).read_bytes()
    with PIL.Image.open(gallery[0][0]) as shown:  # the page's file holds the decode's pixels exactly
        assert np.array_equal(np.asarray(shown), np.asarray(pipe.decompress(stream, realism=0.5).images[0]))
    decodes, _ = DemoHandlers(pipe).decode(stream_path, 0.25, progress=quiet)
    assert [name for _, name in decodes] == ["SODEC realism 0.25", "SODEC fidelity"]
    ignored, _ = DemoHandlers(tiny_pipeline).decode(stream_path, 0.25, progress=quiet)
    assert [name for _, name in ignored] == ["SODEC diffusion", "SODEC fidelity"]
