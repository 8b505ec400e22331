"""`sodec eval`: Pillow baselines with downscale variants, the report files and the CLI errors."""

import csv
import json
import math
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from sodec_pipeline.cli import load_pipeline, main
from sodec_pipeline.evaluation import baselines
from sodec_pipeline.evaluation.baselines import CODECS, Variant, reconstruct, run_codec, select_best
from sodec_pipeline.metrics import DISTS, LPIPS, MetricWeightsError, ms_ssim, peak_power_ratio, psnr


#: the metrics of a report, in order: the built-in ones, then LPIPS and DISTS where their weights are found
REPORTED_METRICS = [
    "psnr",
    "ms_ssim",
    "colour_psnr",
    "flat_excess",
    "texture_recall",
    "chroma_excess",
    "peak_power_ratio",
    "lpips",
    "dists",
]


def _rgb(path):
    return np.asarray(PIL.Image.open(path).convert("RGB"), dtype=np.uint8)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------- baselines
def test_baseline_bpp_counts_bytes_at_the_original_size(photos):
    reference = np.asarray(photos["bsds_481x321.jpg"], dtype=np.uint8)[:160, :224]
    variants = run_codec(reference, CODECS["jpeg"], downscale_factors=(1.0, 2.0))
    assert {v.downscale for v in variants} == {1.0, 2.0}
    assert {v.upscale_filter for v in variants if v.downscale == 2.0} == {"bicubic", "lanczos"}
    for v in variants:
        assert v.bpp == 8.0 * v.num_bytes / (160 * 224)
    full = [v for v in variants if v.downscale == 1.0]
    half = [v for v in variants if v.downscale == 2.0]
    assert all(v.coded_size == (112, 80) for v in half)
    # A downscaled variant is charged the encoder's bytes plus 4 bytes of original size.
    small = PIL.Image.fromarray(reference).resize((112, 80), PIL.Image.Resampling.LANCZOS)
    n_bytes = len(CODECS["jpeg"].encode(small, half[0].setting))
    assert half[0].num_bytes == n_bytes + baselines.RESAMPLE_SIDE_INFO_BYTES
    assert min(v.bpp for v in half) < min(v.bpp for v in full)
    # The recorded PSNR is that of the image the variant decodes to.
    chosen = select_best(variants, 1.0)
    assert chosen.psnr == pytest.approx(psnr(reference, reconstruct(reference, chosen)))


def test_select_best_takes_highest_psnr_at_or_under_the_target():
    def v(bpp, quality):
        return Variant("jpeg", 1, 1.0, "none", 0, bpp, quality, (1, 1))

    grid = [v(0.02, 20.0), v(0.05, 24.0), v(0.05, 23.0), v(0.049, 24.0), v(0.08, 30.0)]
    assert select_best(grid, 0.05) is grid[3]  # equal PSNR: fewer bits
    assert select_best(grid, 0.03) is grid[0]
    assert select_best(grid, 0.01) is None
    assert select_best(grid, 1.0) is grid[4]


def test_a_codec_outside_pillow_fits(photos, monkeypatch):
    """A Codec is two functions: here zlib on pixels cut to `setting` bits, no Pillow format. Its variants are
    charged its own bytes (plus the 4 bytes of original size when downscaled), and once registered in CODECS a
    variant is made again as for the Pillow codecs."""

    def encode(image, bits):
        pixels = np.asarray(image, dtype=np.uint8) >> (8 - bits)
        return struct.pack("<HHB", *image.size, bits) + zlib.compress(pixels.tobytes(), 9)

    def decode(data):
        width, height, bits = struct.unpack("<HHB", data[:5])
        pixels = np.frombuffer(zlib.decompress(data[5:]), dtype=np.uint8).reshape(height, width, 3)
        return PIL.Image.fromarray(pixels << (8 - bits))

    codec = baselines.Codec("cut-bits", (2, 4), "bits", encode, decode, lambda: True, "built in", "zlib")
    monkeypatch.setitem(CODECS, codec.name, codec)
    reference = np.asarray(photos["bsds_481x321.jpg"], dtype=np.uint8)[:96, :128]
    variants = run_codec(reference, codec, downscale_factors=(1.0, 2.0))
    full = {v.setting: v for v in variants if v.downscale == 1.0}
    assert full[2].num_bytes == len(encode(PIL.Image.fromarray(reference), 2)) < full[4].num_bytes
    assert full[2].psnr < full[4].psnr
    half = [v for v in variants if v.downscale == 2.0]
    small = PIL.Image.fromarray(reference).resize((64, 48), PIL.Image.Resampling.LANCZOS)
    assert {(v.setting, v.upscale_filter) for v in half} == {(b, f) for b in (2, 4) for f in ("bicubic", "lanczos")}
    assert all(v.num_bytes == len(encode(small, v.setting)) + baselines.RESAMPLE_SIDE_INFO_BYTES for v in half)
    chosen = select_best(variants, full[4].bpp)
    assert chosen.psnr == pytest.approx(psnr(reference, reconstruct(reference, chosen)))


def test_every_codec_is_available_or_reported():
    available = baselines.codec_availability()
    assert set(available) == {"jpeg", "webp", "avif", "jpeg2000", "jpegxl"}
    assert available["jpeg"]


def test_jpegxl_encodes_and_decodes_through_its_pillow_plugin(photos):
    pytest.importorskip("pillow_jxl", reason="JPEG XL needs pillow-jxl-plugin (in the [test] extra)")
    codec = CODECS["jpegxl"]
    assert codec.available() and baselines.codec_availability()["jpegxl"]
    reference = np.asarray(photos["bsds_481x321.jpg"], dtype=np.uint8)[:160, :224]
    data = codec.encode(PIL.Image.fromarray(reference), 30)
    n_bytes, decoded = len(data), codec.decode(data)
    assert decoded.mode == "RGB" and decoded.size == (224, 160)
    assert 20 < psnr(reference, np.asarray(decoded)) < 60
    variants = run_codec(reference, codec, downscale_factors=(1.0, 2.0))
    full = {v.setting: v for v in variants if v.downscale == 1.0}
    assert set(full) == set(codec.settings) and full[0].num_bytes < full[60].num_bytes < n_bytes * 3
    assert full[30].num_bytes == n_bytes
    assert min(v.bpp for v in variants if v.downscale == 2.0) < full[0].bpp
    # The encoder is deterministic: the chosen variant is made again to the same bytes and PSNR.
    chosen = select_best(variants, full[20].bpp)
    assert chosen.psnr == pytest.approx(psnr(reference, reconstruct(reference, chosen)))


def test_jpegxl_without_its_plugin_is_left_out_with_a_note(
    tmp_path, two_images, tiny_pipeline_dir, monkeypatch, capsys
):
    import importlib

    real_import = importlib.import_module

    def no_plugin(name, *args):
        if name == "pillow_jxl":
            raise ImportError("No module named 'pillow_jxl'")
        return real_import(name, *args)

    argv = ["eval", "--model", str(tiny_pipeline_dir), "--images", str(two_images), "--no-progress",
            "--no-perceptual", "--targets", "1,2"]  # fmt: skip
    if CODECS["jpegxl"].available():  # with the plugin (the [test] extra): a point at each target
        assert main(argv + ["--codecs", "jpegxl", "--out", str(tmp_path / "with")]) == 0
        rows = _read_csv(tmp_path / "with" / "per_image.csv")
        assert {r["method"] for r in rows} == {"sodec-diffusion", "sodec-fidelity", "jpegxl"}
        assert {r["target"] for r in rows if r["method"] == "jpegxl"} >= {"2", "sodec"}
        assert (tmp_path / "with" / "compressai" / "jpegxl.json").is_file()
    capsys.readouterr()
    monkeypatch.setattr(baselines.importlib, "import_module", no_plugin)
    assert not CODECS["jpegxl"].available() and baselines.codec_availability()["jpegxl"] is False
    out = tmp_path / "without"
    assert main(argv + ["--codecs", "jpeg,jpegxl", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "jpegxl: not available" in printed and "pip install pillow-jxl-plugin" in printed
    report = json.loads((out / "results.json").read_text())
    assert report["codecs_available"] == {"jpeg": True, "jpegxl": False}
    assert {r["method"] for r in report["per_image"]} == {"sodec-diffusion", "sodec-fidelity", "jpeg"}
    assert sorted(p.name for p in (out / "compressai").iterdir()) == [
        "jpeg.json", "sodec-diffusion.json", "sodec-fidelity.json",
    ]  # fmt: skip


# ---------------------------------------------------------------------- the command
def test_eval_two_images_writes_every_file_with_sane_numbers(
    tmp_path, two_images, tiny_pipeline_dir, tiny_pipeline, capsys, monkeypatch
):
    import sodec_pipeline.cli.dispatch as dispatch

    monkeypatch.setattr(dispatch, "progress_enabled", lambda quiet: not quiet)  # stderr as a terminal: bars on
    out = tmp_path / "report"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_pipeline_dir),
            "--images",
            str(two_images),
            "--out",
            str(out),
            "--targets",
            "0.5,1,2",
            "--no-perceptual",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2/2" in captured.err  # the progress bar over images
    for name in ("per_image.csv", "summary.csv", "baseline_grid.csv", "results.json", "rd.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with PIL.Image.open(out / "rd.png") as plot:
        assert plot.format == "PNG" and plot.width > 500

    rows = _read_csv(out / "per_image.csv")
    images = sorted(p.name for p in two_images.iterdir())
    originals = {name: _rgb(two_images / name) for name in images}
    methods = {r["method"] for r in rows}
    with_jpegxl = {"jpegxl"} if baselines.codec_availability()["jpegxl"] else set()
    assert methods == {"sodec-diffusion", "sodec-fidelity", "jpeg", "webp", "avif", "jpeg2000"} | with_jpegxl
    assert sorted(p.name for p in (out / "compressai").iterdir()) == sorted(f"{m}.json" for m in methods)
    sodec_bpp = {}
    for row in rows:
        w, h = int(row["width"]), int(row["height"])
        assert (w, h) == (96, 64)
        assert float(row["bpp"]) == pytest.approx(8.0 * int(row["bytes"]) / (w * h), rel=1e-12)
        assert math.isfinite(float(row["psnr"])) and 3 < float(row["psnr"]) < 60
        assert 0 <= float(row["ms_ssim"]) <= 1 and row["ms_ssim_scales"] == "3"
        assert "lpips" not in row and "dists" not in row
        if row["method"].startswith("sodec"):
            stream = out / row["file"]
            assert int(row["bytes"]) == stream.stat().st_size  # bpp from the file on disk
            sodec_bpp[row["image"]] = float(row["bpp"])
    # the CLI's own loader: channels-last decoders, and --dtype auto's choice (bfloat16 decoder networks on a CPU
    # with native bfloat16, float32 elsewhere)
    as_the_cli_loads_it = load_pipeline(str(tiny_pipeline_dir))
    for name in images:
        stream_file = out / "streams" / (Path(name).stem + ".sodec")
        for decoder in ("diffusion", "fidelity"):
            png = out / "decoded" / f"{Path(name).stem}.{decoder}.png"
            decoded = _rgb(png)
            # The saved PNG is the pipeline's decode of the file (loaded as the CLI loads it), and the CSV's
            # PSNR is that PNG's.
            expected = as_the_cli_loads_it.decompress(
                stream_file.read_bytes(), output_type="pil", decoder=decoder
            ).images[0]
            np.testing.assert_array_equal(decoded, np.asarray(expected))
            (row,) = [r for r in rows if r["image"] == name and r["method"] == f"sodec-{decoder}"]
            assert float(row["psnr"]) == pytest.approx(psnr(originals[name], decoded))
            assert float(row["ms_ssim"]) == pytest.approx(ms_ssim(originals[name], decoded))
            assert float(row["peak_power_ratio"]) == pytest.approx(peak_power_ratio(originals[name], decoded)[0])

    # Each baseline choice is at or under its target and the best PSNR of the grid there.
    grid = _read_csv(out / "baseline_grid.csv")
    for row in (r for r in rows if not r["method"].startswith("sodec")):
        target = sodec_bpp[row["image"]] if row["target"] == "sodec" else float(row["target"])
        assert float(row["bpp"]) <= target + 1e-12
        fitting = [
            float(g["psnr"])
            for g in grid
            if g["image"] == row["image"] and g["codec"] == row["method"] and float(g["bpp"]) <= target + 1e-12
        ]
        assert float(row["psnr"]) == pytest.approx(max(fitting))

    report = json.loads((out / "results.json").read_text())
    assert report["metrics"] == REPORTED_METRICS[:-2]
    for row in rows:  # where each decode puts texture, per image (sodec_pipeline.metrics.texture)
        assert float(row["flat_excess"]) >= 0 and 0 <= float(row["texture_recall"]) < 10
    assert any("MS-SSIM" in n and "3 scales" in n for n in report["notes"])
    assert len(report["per_image"]) == len(rows)
    summary = {(e["method"], e["target"]): e for e in report["summary"]}
    diffusion = summary[("sodec-diffusion", "")]
    assert diffusion["bpp"] == pytest.approx(np.mean(list(sodec_bpp.values())))
    assert ("jpeg", "2") in summary and summary[("jpeg", "2")]["images"] == 2


def test_eval_writes_compressai_results_that_compressai_plots(tmp_path, two_images, tiny_pipeline_dir, capsys):
    out = tmp_path / "report"
    rc = main([
        "eval", "--model", str(tiny_pipeline_dir), "--images", str(two_images), "--out", str(out), "--no-progress",
        "--no-perceptual", "--codecs", "jpeg,webp", "--targets", "0.5,1,2", "--quality", "1,3",
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "compressai: " in capsys.readouterr().out
    summary = json.loads((out / "results.json").read_text())["summary"]
    files = sorted((out / "compressai").iterdir())
    assert [f.name for f in files] == ["jpeg.json", "sodec-diffusion.json", "sodec-fidelity.json", "webp.json"]
    for path in files:
        document = json.loads(path.read_text())
        method = path.stem
        assert set(document) == {"name", "description", "results", "points"}
        results = document["results"]
        assert set(results) == {"bpp", "psnr-rgb", "ms-ssim-rgb", "colour-psnr"}
        entries = sorted((e for e in summary if e["method"] == method), key=lambda e: e["bpp"])
        # one point per entry of the summary (SODEC: per quality level; a baseline: per target), by bpp
        assert results["bpp"] == [e["bpp"] for e in entries] == sorted(results["bpp"])
        assert results["psnr-rgb"] == [e["psnr"] for e in entries]
        assert results["ms-ssim-rgb"] == [e["ms_ssim"] for e in entries]
        assert len(document["points"]) == len(entries)
        if method.startswith("sodec"):
            assert document["points"] == ["quality 1", "quality 3"] and method.split("-")[1] in document["description"]
        else:
            assert "target 2 bpp" in document["points"]
            matched = [f"SODEC's bpp at quality {e['quality']}" for e in entries if e["target"] == "sodec"]
            assert [p for p in document["points"] if p.startswith("SODEC")] == matched
    names = {json.loads(f.read_text())["name"] for f in files}
    assert names == {"JPEG", "WebP", "SODEC (diffusion decode)", "SODEC (fidelity decode)"}

    # CompressAI's own plotting tool reads them: PSNR (its default metric) and MS-SSIM (in dB)
    plot = tmp_path / "compressai-rd.png"
    env = dict(os.environ, MPLBACKEND="Agg")
    command = [sys.executable, "-m", "compressai.utils.plot", "-f", *map(str, files), "-o", str(plot)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with PIL.Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 500
    plot_main = pytest.importorskip("compressai.utils.plot.__main__")
    for path in files:
        parsed = plot_main.parse_json_file(path, "ms-ssim")
        assert len(parsed["xs"]) == len(parsed["ys"]) and all(np.isfinite(parsed["ys"]))


def test_eval_with_perceptual_weights_and_a_missing_codec(
    tmp_path, two_images, tiny_pipeline_dir, monkeypatch, capsys
):
    torch.manual_seed(1)
    torch.save(LPIPS("alex").state_dict(), tmp_path / "lpips_alex.pth")
    torch.save(DISTS().state_dict(), tmp_path / "dists.pth")
    monkeypatch.setattr(baselines, "codec_availability", lambda: {name: name != "avif" for name in CODECS})
    out = tmp_path / "report"
    rc = main([
        "eval", "--model", str(tiny_pipeline_dir), "--images", str(two_images), "--out", str(out), "--no-progress",
        "--codecs", "jpeg,avif", "--targets", "1", "--lpips-weights", str(tmp_path / "lpips_alex.pth"),
        "--dists-weights", str(tmp_path / "dists.pth"),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = _read_csv(out / "per_image.csv")
    assert {r["method"] for r in rows} == {"sodec-diffusion", "sodec-fidelity", "jpeg"}
    for row in rows:
        assert math.isfinite(float(row["lpips"])) and math.isfinite(float(row["dists"]))
    report = json.loads((out / "results.json").read_text())
    assert report["metrics"] == REPORTED_METRICS
    assert report["codecs_available"] == {"jpeg": True, "avif": False}
    assert any(n.startswith("avif: not available") for n in report["notes"])
    assert "avif: not available" in captured.out


def test_eval_reports_lpips_and_dists_by_default_or_says_how_to_get_them(
    tmp_path, two_images, tiny_pipeline_dir, monkeypatch, capsys
):
    import sodec_pipeline.metrics.weights as metrics_module  # where load_perceptual_metrics finds the loaders

    fake = {"lpips": LPIPS("alex"), "dists": DISTS()}  # random weights: what is tested is that they are used
    for model in fake.values():
        model.weights_source = "test weights"
    monkeypatch.setattr(metrics_module, "load_lpips", lambda net, path=None, flag=None: fake["lpips"])
    monkeypatch.setattr(metrics_module, "load_dists", lambda path=None, flag=None: fake["dists"])
    out = tmp_path / "with"
    argv = [
        "eval",
        "--model",
        str(tiny_pipeline_dir),
        "--images",
        str(two_images),
        "--no-progress",
        "--codecs",
        "jpeg",
        "--targets",
        "1",
    ]
    assert main(argv + ["--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["metrics"] == REPORTED_METRICS
    assert report["settings"]["perceptual_weights"] == {"lpips": "test weights", "dists": "test weights"}
    for row in _read_csv(out / "summary.csv"):
        assert math.isfinite(float(row["lpips"])) and math.isfinite(float(row["dists"]))
    capsys.readouterr()

    def missing(*args, **kwargs):
        raise MetricWeightsError("no weights here: install them with `pip install ...`")

    monkeypatch.setattr(metrics_module, "load_lpips", missing)
    monkeypatch.setattr(metrics_module, "load_dists", missing)
    out = tmp_path / "without"
    assert main(argv + ["--out", str(out)]) == 0  # PSNR and MS-SSIM still come
    err = capsys.readouterr().err
    assert "LPIPS left out" in err and "DISTS left out" in err and "pip install" in err
    report = json.loads((out / "results.json").read_text())
    assert report["metrics"] == REPORTED_METRICS[:-2]
    assert any(n.startswith("LPIPS left out") for n in report["notes"])


def _one_line_error(capsys, argv, *fragments):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_eval_errors_are_one_line(tmp_path, two_images, tiny_pipeline_dir, capsys):
    model = str(tiny_pipeline_dir)
    out = str(tmp_path / "out")
    _one_line_error(
        capsys, ["eval", "--model", model, "--images", str(tmp_path / "nope"), "--out", out], "no such directory"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    _one_line_error(capsys, ["eval", "--model", model, "--images", str(empty), "--out", out], "no images")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png at all")
    _one_line_error(
        capsys, ["eval", "--model", model, "--images", str(broken), "--out", out], "a.png", "not a readable image"
    )
    not_a_model = tmp_path / "not_a_model"
    not_a_model.mkdir()
    _one_line_error(
        capsys, ["eval", "--model", str(not_a_model), "--images", str(two_images), "--out", out], "model_index.json"
    )
    _one_line_error(
        capsys,
        [
            "eval",
            "--model",
            model,
            "--images",
            str(two_images),
            "--out",
            out,
            "--lpips-weights",
            str(tmp_path / "missing.pth"),
        ],
        "missing.pth",
        "does not exist",
    )
    _one_line_error(
        capsys, ["eval", "--model", model, "--images", str(two_images), "--out", out, "--codecs", "jpeg,heic"], "heic"
    )
    _one_line_error(
        capsys,
        ["eval", "--model", model, "--images", str(two_images), "--out", out, "--targets", "0.1,x"],
        "--targets",
    )
    assert not Path(out).exists()  # nothing was written: every check came before the work


def test_eval_without_matplotlib_fails_early_in_one_line(tmp_path, two_images, tiny_pipeline_dir, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a)
    )
    out = tmp_path / "out"
    _one_line_error(
        capsys,
        ["eval", "--model", str(tiny_pipeline_dir), "--images", str(two_images), "--out", str(out)],
        "pip install matplotlib",
    )
    assert not out.exists()


def test_a_photo_smaller_than_a_spectrum_tile_has_no_peak_power_ratio_and_keeps_its_other_metrics(photo_paths):
    """The peak power ratio needs one whole 64×64 tile: below it a row's value is NaN (no mean, no point), not an
    error, and the row's other metrics are still there."""
    from sodec_pipeline.evaluation.evaluate import BUILTIN_METRICS, _quality

    photo = np.asarray(PIL.Image.open(photo_paths[0]).convert("RGB"))
    noisy = np.clip(photo.astype(int) + np.random.default_rng(0).integers(-9, 10, photo.shape), 0, 255).astype(
        np.uint8
    )
    whole, small = _quality(photo[:64], noisy[:64], {}), _quality(photo[:63], noisy[:63], {})
    assert math.isfinite(whole["peak_power_ratio"]) and math.isnan(small["peak_power_ratio"])
    assert all(math.isfinite(small[m]) for m in BUILTIN_METRICS if m != "peak_power_ratio")
