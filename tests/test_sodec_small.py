"""The trained model that ships in pretrained/sodec-small: it loads by its short name, it is the CLI's
default, and it round-trips a held-out photo (a BSDS500 *test* image; training used train/ + val/) at the
bpp and PSNR its model card records, so that a change that breaks the shipped weights fails here."""

from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image

from sodec_pipeline.cli import DEFAULT_MODEL, main
from sodec_pipeline.metrics.fidelity import psnr
from sodec_pipeline.shipped_models import SHIPPED_MODELS, shipped_model_names


ASSETS = Path(__file__).parent / "assets"
NAME = "sodec-small"


@pytest.fixture(scope="module")
def card_check():
    card = ModelCard.load(SHIPPED_MODELS.root() / NAME / "README.md")
    return card.data.to_dict()["sodec_round_trip_check"]


@pytest.fixture(scope="module")
def pipe():
    from sodec_pipeline import SODECPipeline

    pipe = SODECPipeline.from_pretrained(NAME)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sodec_small_ships_and_is_the_default_model():
    assert NAME in shipped_model_names()
    assert DEFAULT_MODEL == NAME
    weights = sorted((SHIPPED_MODELS.root() / NAME).glob("*/*.safetensors"))
    assert len(weights) == 5 and sum(w.stat().st_size for w in weights) <= 30 * 2**20


def test_round_trip_matches_the_model_card(pipe, card_check):
    image = Image.open(ASSETS / card_check["image"]).convert("RGB")
    reference = np.asarray(image)
    stream = pipe.compress(image)[0]
    bpp = 8 * len(stream) / (image.width * image.height)
    assert bpp == pytest.approx(card_check["bpp"], rel=0.02)
    fidelity = np.asarray(pipe.decompress(stream, decoder="fidelity").images[0])
    diffusion = np.asarray(pipe.decompress(stream).images[0])
    assert fidelity.shape == diffusion.shape == reference.shape
    assert psnr(reference, fidelity) == pytest.approx(card_check["psnr_fidelity"], abs=0.1)
    assert psnr(reference, diffusion) == pytest.approx(card_check["psnr_diffusion"], abs=0.1)


def test_cli_compresses_with_the_shipped_model_when_no_model_is_given(tmp_path, card_check):
    photo = ASSETS / card_check["image"]
    stream = tmp_path / "photo.sodec"
    assert main(["compress", str(photo), "-o", str(stream), "--quiet"]) == 0
    assert 8 * stream.stat().st_size / (481 * 321) == pytest.approx(card_check["bpp"], rel=0.02)
    assert main(["decompress", str(stream), "-o", str(tmp_path), "--quiet"]) == 0
    assert Image.open(tmp_path / "photo.diffusion.png").size == (481, 321)


def test_quality_levels_grow_the_stream_and_the_fidelity(pipe, card_check):
    """The shipped levels: at least 4, the card's default, and on a held-out photo every level's stream is
    larger than the one below it, with the fidelity decode at least as close to the photo at the top as at
    the default and at the default as at the bottom."""
    levels = pipe.compression_vae.num_qualities
    assert levels >= 4 and pipe.compression_vae.default_quality == card_check["default_quality"]
    image = Image.open(ASSETS / card_check["image"]).convert("RGB")
    reference = np.asarray(image)
    streams = [pipe.compress(image, quality=q)[0] for q in range(1, levels + 1)]
    sizes = [len(s) for s in streams]
    assert sizes == sorted(set(sizes)), sizes
    assert pipe.compress(image)[0] == streams[pipe.compression_vae.default_quality - 1]
    fidelity = [
        psnr(reference, np.asarray(pipe.decompress(streams[q - 1], decoder="fidelity").images[0]))
        for q in (1, pipe.compression_vae.default_quality, levels)
    ]
    assert fidelity == sorted(fidelity), fidelity


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "v4", "v5", "v6"])
def test_a_stream_of_a_replaced_model_is_refused_with_a_clear_message(pipe, tmp_path, capsys, version):
    """The earlier sodec-smalls' streams carry their fingerprints: the model that replaced them refuses them, in
    the API and on the command line, before decoding anything."""
    from sodec_pipeline.codec.errors import BitstreamError

    old = ASSETS / f"sodec-small-{version}_bsds_crop0_96x64.sodec"
    with pytest.raises(BitstreamError, match="fingerprint|another model"):
        pipe.decompress(old.read_bytes())
    assert main(["decompress", str(old), "-o", str(tmp_path), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3 and "model" in err
