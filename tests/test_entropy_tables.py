"""The released codec's CDF tables (training/sodec_training/entropy_tables.py): a run whose entropy models did not
train keeps its base's tables bit for bit, so that its streams are the base's; one whose entropy models trained
gets tables rebuilt from them."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sodec_pipeline import CompressionVAE


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from sodec_training.entropy_tables import entropy_layer_keys, refresh_entropy_tables  # noqa: E402


CONFIG = dict(
    block_out_channels=(4, 8, 8, 8, 8),
    latent_channels=16,
    hyper_channels=8,
    latent_synthesis_channels=8,
    latent_transform_channels=8,
    latent_transform_num_blocks=1,
    scale_table_levels=16,
)


def codec_and_base_with_other_tables():
    """A codec, and its state as a base built elsewhere would hold it: the same networks, but two entries of the
    ẑ table one apart (a valid CDF still), as a rebuild on another machine can give."""
    torch.manual_seed(0)
    codec = CompressionVAE(**CONFIG).eval()
    codec.update(force=True)
    base = {k: v.clone() for k, v in codec.state_dict().items()}
    cdf = base["entropy_bottleneck._quantized_cdf"]
    rows, cols = torch.nonzero((cdf[:, 1:-1] - cdf[:, :-2] > 1) & (cdf[:, 2:] - cdf[:, 1:-1] > 1), as_tuple=True)
    assert len(rows) >= 2
    for r, c in zip(rows[:2].tolist(), cols[:2].tolist()):
        cdf[r, c + 1] += 1  # stays strictly between its neighbours
    return codec, base


def test_the_keys_split_into_tables_and_what_they_are_built_from():
    tables, networks = entropy_layer_keys(CompressionVAE(**CONFIG))
    assert "entropy_bottleneck._quantized_cdf" in tables and "gaussian_conditional.scale_table" in tables
    assert "entropy_bottleneck.quantiles" in networks and not set(tables) & set(networks)
    assert not any(k.startswith(("latent_synthesis.", "latent_transform.", "encoder.")) for k in tables + networks)


def test_unchanged_entropy_networks_keep_the_base_tables_and_its_bytes(small_photo):
    codec, base = codec_and_base_with_other_tables()
    from_base = CompressionVAE(**CONFIG).eval()
    from_base.load_state_dict(base)
    with torch.no_grad():  # what the diffusion path trains: not an entropy layer
        codec.latent_transform.conv_out.weight.add_(0.1)
    assert refresh_entropy_tables(codec, base) is False
    assert torch.equal(codec.entropy_bottleneck._quantized_cdf, base["entropy_bottleneck._quantized_cdf"])
    x = torch.from_numpy(np.asarray(small_photo, dtype=np.float32) / 255).permute(2, 0, 1)[None, :, :64, :64]
    with torch.no_grad():
        assert codec.compress(x)["strings"] == from_base.compress(x)["strings"]


def test_trained_entropy_networks_get_rebuilt_tables():
    codec, base = codec_and_base_with_other_tables()
    with torch.no_grad():
        codec.entropy_bottleneck.quantiles.add_(0.5)
    assert refresh_entropy_tables(codec, base) is True
    rebuilt = codec.entropy_bottleneck._quantized_cdf.clone()
    codec.update(force=True)
    assert torch.equal(rebuilt, codec.entropy_bottleneck._quantized_cdf)


@pytest.mark.parametrize("empty", ["base without tables", "base of another layout"])
def test_a_base_without_usable_tables_gets_rebuilt_ones(empty):
    codec, base = codec_and_base_with_other_tables()
    if empty == "base without tables":
        base["entropy_bottleneck._quantized_cdf"] = torch.IntTensor()
    else:
        base = {k: v for k, v in base.items() if not k.startswith("entropy_bottleneck.")}
    assert refresh_entropy_tables(codec, base) is True
    assert codec.entropy_bottleneck._quantized_cdf.numel() > 0
