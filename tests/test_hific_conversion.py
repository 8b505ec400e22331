"""HiFiC checkpoint conversion (Justin-Tan/high-fidelity-generative-compression → CompressionVAE and D_a).

The tests build a tiny model with the port's module names, parameter layouts and forward semantics
(tests/hific_port.py), save it as the port's ``save_model`` does, convert it, and compare the outputs.
"""

import json
import math
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hific_port import (
    ENCODER_FILTERS,
    GENERATOR_FILTERS,
    HYPER,
    LATENT,
    make_port_model,
    port_args,
    save_port_checkpoint,
)

from sodec_pipeline import CompressionVAE, FidelityGuidanceEncoder
from sodec_pipeline.conversion import HiFiCCheckpointError, convert_hific_checkpoint, load_hific_checkpoint


REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO_ROOT / "hub_configs" / "sodec-tiny"
SCRIPT = REPO_ROOT / "training" / "convert_hific_checkpoint.py"


@pytest.fixture(scope="module")
def port_model():
    return make_port_model()


@pytest.fixture(scope="module")
def port_checkpoint(port_model, tmp_path_factory):
    return save_port_checkpoint(port_model, tmp_path_factory.mktemp("hific") / "hific_tiny_epoch3_idx12345.pt")


@pytest.fixture(scope="module")
def converted(port_checkpoint):
    return convert_hific_checkpoint(port_checkpoint, config=TINY_CONFIG)


def _close(a, b, tol=1e-4):
    assert a.shape == b.shape
    scale = max(1.0, b.abs().max().item())
    assert (a - b).abs().max().item() <= tol * scale, (a - b).abs().max().item()


def _density_gap(cvae, port_model, low, high):
    """Largest difference between the converted EntropyBottleneck's and the port density's likelihoods."""
    with torch.no_grad():
        v = torch.linspace(low, high, 161).view(1, 1, 1, -1).expand(1, HYPER, 1, -1).contiguous()  # (N, C, H, W)
        ours, _, _ = cvae.entropy_bottleneck.likelihood(
            v.permute(1, 0, 2, 3).reshape(HYPER, 1, -1), stop_gradient=True
        )
        theirs = port_model.Hyperprior.hyperlatent_likelihood.likelihood(v).permute(1, 0, 2, 3).reshape(HYPER, 1, -1)
    return (ours - theirs).abs().max().item()


# ------------------------------------------------------------------------------ the tests
def test_converted_codec_computes_what_the_port_computes(port_model, converted):
    cvae, fg = converted.compression_vae, converted.fidelity_guidance
    torch.manual_seed(1)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        # E
        _close(cvae.encode(x), port_model.Encoder(x), 1e-5)
        # H_a: equal away from the borders, where HiFiC reflects and SODEC replicates
        y = torch.randn(1, LATENT, 32, 32)
        z_ours, z_port = cvae.hyper_analysis(y), port_model.Hyperprior.analysis_net(y)
        _close(z_ours[..., 2:6, 2:6], z_port[..., 2:6, 2:6], 1e-5)
        # P: mean and scale heads
        z = torch.randn(1, HYPER, 4, 4) * 3
        means, scales = cvae.hyper_synthesis(z)
        _close(means, port_model.Hyperprior.synthesis_mu(z), 1e-6)
        _close(scales, port_model.Hyperprior.synthesis_std(z), 1e-6)
        # factorized prior of z: same likelihoods (the EntropyBottleneck gets one extra, exact layer)
        assert _density_gap(cvae, port_model, -20, 20) < 1e-6
        # the bottleneck's quantiles solve the port density's median and tails
        density = port_model.Hyperprior.hyperlatent_likelihood
        q = cvae.entropy_bottleneck.quantiles.detach()
        target = math.log(2 / cvae.entropy_bottleneck.tail_mass - 1)
        for i, goal in enumerate((-target, 0.0, target)):
            logits = density.cdf_logits(q[:, :, i : i + 1].clone())
            assert (logits - goal).abs().max().item() < 1e-3 * max(1.0, abs(goal))
        # D_a: the generator
        y = torch.randn(1, LATENT, 4, 6)
        _close(fg.decode(y), port_model.Generator(y), 1e-5)


def test_tables_are_built_and_codec_round_trips(converted, small_photo):

    cvae = converted.compression_vae
    assert cvae.is_updated
    x = torch.from_numpy(np.asarray(small_photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    x = x[..., :64, :64]
    coded = cvae.compress(x)
    decoded = cvae.decompress(coded["strings"], coded["shape"])
    with torch.no_grad():
        y = cvae.encode(x)
        z = cvae.hyper_analysis(y)
        medians = cvae.entropy_bottleneck.quantiles[:, 0, 1].view(1, -1, 1, 1)
        means, _ = cvae.hyper_synthesis(torch.round(z - medians) + medians)
    assert torch.allclose(decoded["z_hat"], torch.round(z - medians) + medians, atol=1e-5)
    assert torch.allclose(decoded["y_hat"], torch.round(y - means) + means, atol=1e-4)


def test_report_lists_mapped_unmapped_and_initialised_keys(port_model, converted):
    report = converted.report
    port_keys = set(port_model.state_dict())
    sources = set(report.mapped.values())
    expected_mapped = {k for k in port_keys if k.startswith(("Encoder.", "Generator.", "Hyperprior."))}
    assert expected_mapped <= sources
    assert set(report.unmapped) == {k for k in port_keys if k.startswith("Discriminator.")}
    assert all("discriminator" in why for why in report.unmapped.values())
    # every HiFiC-covered SODEC parameter is mapped; the new modules are initialised
    cvae_params = {f"compression_vae.{n}" for n, _ in converted.compression_vae.named_parameters()}
    assert "compression_vae.entropy_bottleneck.matrices.4" in report.mapped
    assert {k for k in cvae_params if k.startswith("compression_vae.latent_")} <= set(report.initialised)
    assert any(k.startswith("fidelity_guidance.guidance_projection.") for k in report.initialised)
    assert not set(report.initialised) & set(report.mapped)
    assert (
        report.mapped["fidelity_guidance.fidelity_decoder.resblock_0.norm1.gamma"]
        == "Generator.resblock_0.norm1.gamma"
    )
    assert not any(k.endswith((".gamma", ".beta")) for k in report.transformed)  # channel norm copied unchanged
    assert any("reflection" in note for note in report.notes)
    assert report.hific_args["normalize_input_image"] is False


def test_script_saves_a_loadable_codec(port_checkpoint, converted, tmp_path, capsys, small_photo):
    out = tmp_path / "converted"
    module = runpy.run_path(str(SCRIPT))
    assert (
        module["main"](
            ["--input", str(port_checkpoint), "--output", str(out), "--config", str(TINY_CONFIG), "--list-keys"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Encoder.conv_block1.1.weight" in printed and "Discriminator.conv_out.weight" in printed
    report = json.loads((out / "conversion_report.json").read_text())
    assert (
        report["mapped"]["compression_vae.hyper_synthesis_scale.conv3.weight"]
        == "Hyperprior.synthesis_std.conv3.weight"
    )
    assert report["source"] == str(port_checkpoint)

    cvae = CompressionVAE.from_pretrained(out / "compression_vae")
    fg = FidelityGuidanceEncoder.from_pretrained(out / "fidelity_guidance")
    assert cvae.fingerprint() == converted.compression_vae.fingerprint()
    for key, value in converted.fidelity_guidance.state_dict().items():
        assert torch.equal(value, fg.state_dict()[key]), key
    x = torch.rand(1, 3, 64, 128)
    a, b = cvae.compress(x), converted.compression_vae.compress(x)
    assert a["strings"] == b["strings"]


def test_normalized_input_checkpoint_is_folded(port_model, tmp_path):
    path = save_port_checkpoint(port_model, tmp_path / "norm.pt", normalize_input_image=True)
    result = convert_hific_checkpoint(path, config=TINY_CONFIG)
    x = torch.rand(1, 3, 64, 64)
    y = torch.randn(1, LATENT, 4, 4)
    with torch.no_grad():
        _close(result.compression_vae.encode(x), port_model.Encoder(2 * x - 1), 1e-5)
        # the port's Model applies tanh to the generator's output for -norm checkpoints
        _close(result.fidelity_guidance.decode(y), (torch.tanh(port_model.Generator(y)) + 1) / 2, 1e-5)
    assert result.fidelity_guidance.config.decoder_output_activation == "tanh"
    assert any("tanh" in note for note in result.report.notes)
    assert "2x" in result.report.transformed["compression_vae.analysis_transform.conv_block1.1.weight"]


def test_evaluation_mode_and_dataparallel_state_dicts(port_model):
    # The port in evaluation mode also registers the density inside its entropy model, plus rANS tables;
    # DataParallel prefixes every key with "module.".
    state = dict(port_model.state_dict())
    for k, v in list(state.items()):
        if k.startswith("Hyperprior.hyperlatent_likelihood."):
            state["Hyperprior.hyperprior_entropy_model.distribution." + k.split(".")[-1]] = v
    state["Hyperprior.prior_entropy_model.CDF"] = torch.zeros(64, 100, dtype=torch.int32)
    state["Hyperprior.prior_entropy_model.scale_table_tensor"] = torch.ones(64)
    state = {"module." + k: v for k, v in state.items()}
    result = convert_hific_checkpoint({"model_state_dict": state, "args": port_args()}, config=TINY_CONFIG)
    assert "shared module" in result.report.unmapped["Hyperprior.hyperprior_entropy_model.distribution.H_0"]
    assert "GaussianConditional" in result.report.unmapped["Hyperprior.prior_entropy_model.CDF"]
    ref = convert_hific_checkpoint({"model_state_dict": port_model.state_dict()}, config=TINY_CONFIG)
    assert result.compression_vae.fingerprint() == ref.compression_vae.fingerprint()


def test_not_a_hific_checkpoint(tmp_path):
    with pytest.raises(HiFiCCheckpointError, match="not a HiFiC checkpoint.*got a dict with keys 'state_dict'"):
        load_hific_checkpoint({"state_dict": {"encoder.weight": torch.zeros(1)}})
    with pytest.raises(HiFiCCheckpointError, match="not a HiFiC checkpoint.*no Generator"):
        load_hific_checkpoint(
            {"model_state_dict": {"Encoder.conv_block1.1.weight": torch.zeros(1), "Hyperprior.x": torch.zeros(1)}}
        )
    with pytest.raises(HiFiCCheckpointError, match="got a list"):
        load_hific_checkpoint([torch.zeros(1)])
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(HiFiCCheckpointError, match="cannot be read as a torch checkpoint"):
        load_hific_checkpoint(garbage)
    with pytest.raises(HiFiCCheckpointError, match="no such file"):
        load_hific_checkpoint(tmp_path / "missing.pt")


def test_unsupported_hific_variants_are_refused(port_model):
    state = port_model.state_dict()
    with pytest.raises(HiFiCCheckpointError, match="logistic mixture"):
        load_hific_checkpoint({"model_state_dict": state, "args": port_args(use_latent_mixture_model=True)})
    with pytest.raises(HiFiCCheckpointError, match="sample_noise"):
        load_hific_checkpoint({"model_state_dict": state, "args": port_args(sample_noise=True)})


def test_mismatched_shapes_list_key_and_both_shapes(port_model):
    state = dict(port_model.state_dict())
    state["Encoder.conv_block_out.1.weight"] = torch.zeros(12, ENCODER_FILTERS[-1], 3, 3)
    state["Generator.resblock_1.conv1.weight"] = torch.zeros(GENERATOR_FILTERS[0], GENERATOR_FILTERS[0], 3, 3)
    del state["Generator.upconv_block2.0.bias"]
    before = convert_hific_checkpoint({"model_state_dict": port_model.state_dict()}, config=TINY_CONFIG)
    with pytest.raises(HiFiCCheckpointError) as info:
        convert_hific_checkpoint({"model_state_dict": state}, config=TINY_CONFIG)
    message = str(info.value)
    assert (
        "Encoder.conv_block_out.1.weight (12, 8, 3, 3) → compression_vae.analysis_transform.conv_block_out.1.weight (8, 8, 3, 3)"
        in message
    )
    assert "Generator.resblock_1.conv1.weight" in message and "no such parameter" in message
    assert "fidelity_guidance.fidelity_decoder.upconv_block2.0.bias (8,) has no counterpart" in message
    assert "latent_channels=12" in message
    assert before.report.mapped  # the good checkpoint still converts


def test_density_filters_must_be_representable(port_model, tmp_path):
    config = tmp_path / "config"
    shutil.copytree(TINY_CONFIG, config)
    cfg_path = config / "compression_vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["entropy_bottleneck_filters"] = [3, 3, 3]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(
        HiFiCCheckpointError, match=r"filters \(3, 3, 3, 'n'\).*entropy_bottleneck_filters=\(3, 3, 3\)"
    ):
        convert_hific_checkpoint({"model_state_dict": port_model.state_dict()}, config=config)
    # n = 1 works as well as n = 3
    cfg["entropy_bottleneck_filters"] = [3, 3, 3, 1]
    cfg_path.write_text(json.dumps(cfg))
    result = convert_hific_checkpoint({"model_state_dict": port_model.state_dict()}, config=config)
    assert _density_gap(result.compression_vae, port_model, -5, 5) < 1e-6


def test_script_reports_errors(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    module = runpy.run_path(str(SCRIPT))
    assert module["main"](["--input", str(bad), "--output", str(tmp_path / "out"), "--config", str(TINY_CONFIG)]) == 2
    assert "not a HiFiC checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
