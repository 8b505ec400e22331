"""sodec_pipeline's entropy layers, GDN and CDF tables against compressai's, the oracle: the same parameters and
buffers under the same names, the same random initialisation, and bit-identical likelihoods, gradients, quantiles,
CDF tables and indexes, so that compressai-trained weights load and code unchanged. compressai is a test-only
dependency (the ``test`` extra); without it these tests are skipped."""

import numpy as np
import pytest
import torch


compressai_entropy = pytest.importorskip("compressai.entropy_models")
compressai_layers = pytest.importorskip("compressai.layers")
compressai_ops = pytest.importorskip("compressai.ops")
compressai_base = pytest.importorskip("compressai.models.base")
compressai_cxx = pytest.importorskip("compressai._CXX")

from sodec_pipeline.codec.cdf_tables import pmf_to_quantized_cdf  # noqa: E402
from sodec_pipeline.codec.entropy_layers import (  # noqa: E402
    EntropyBottleneck,
    GaussianConditional,
    _standard_normal_quantile,
    get_scale_table,
)
from sodec_pipeline.codec.ops import LowerBound, quantize_ste  # noqa: E402
from sodec_pipeline.models.layers import GDN  # noqa: E402


def assert_same_tensors(ours: dict, theirs: dict):
    assert list(ours) == list(theirs)
    for key in ours:
        a, b = ours[key], theirs[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert torch.equal(a, b), key


def named_tensors(module):
    return {
        **{f"param:{k}": v for k, v in module.named_parameters()},
        **{f"buffer:{k}": v for k, v in module.named_buffers()},
    }


def load_into_compressai(theirs, ours):
    """compressai's layer with ours' parameters and tables (its table buffers resized first, as compressai's
    ``update_registered_buffers`` does)."""
    state = ours.state_dict()
    for name, buffer in theirs.named_buffers(recurse=False):
        if name in state:
            buffer.resize_(state[name].shape)
    theirs.load_state_dict(state)
    return theirs


# ---------------------------------------------------------------------- CDF tables
def _pmfs():
    rng = np.random.default_rng(0)
    yield torch.tensor([1.0])
    yield torch.tensor([0.5, 0.5])
    yield torch.tensor([1e-12, 1.0 - 1e-12, 1e-12, 0.0, 3e-6])
    yield torch.tensor([0.25, 0.0, 0.25, 0.0, 0.5])
    for n in (3, 17, 200, 3200):
        yield torch.from_numpy(rng.dirichlet(np.full(n, 0.3)).astype(np.float32))
    for n in (50, 3000):  # long tails of tiny probabilities: many empty symbols that steal
        x = np.arange(n) - n / 2
        p = np.exp(-0.5 * (x / (n / 40)) ** 2)
        yield torch.from_numpy((p / p.sum()).astype(np.float32))
    yield torch.from_numpy(rng.random(500).astype(np.float32) * 1e-3)  # unnormalised: not summing to 1
    dominant = torch.full((6000,), 1e-7)
    dominant[100] = 1.0
    yield dominant  # 5999 empty symbols, all fed by one


@pytest.mark.parametrize("pmf", list(_pmfs()), ids=lambda p: f"n{p.numel()}")
def test_quantized_cdf_is_compressais(pmf):
    theirs = torch.IntTensor(compressai_cxx.pmf_to_quantized_cdf(pmf.tolist(), 16))
    ours = pmf_to_quantized_cdf(pmf, 16)
    assert ours.dtype == torch.int32 and torch.equal(ours, theirs)
    assert ours[0] == 0 and ours[-1] == 1 << 16 and bool((ours.diff() > 0).all())


def test_quantized_cdf_refuses_what_has_no_table():
    for bad in (torch.tensor([0.5, -0.1]), torch.tensor([float("nan"), 1.0]), torch.zeros(4)):
        with pytest.raises(ValueError):
            pmf_to_quantized_cdf(bad)
    with pytest.raises(ValueError, match="more symbols"):
        pmf_to_quantized_cdf(torch.full((40,), 1 / 40), precision=5)


def test_scale_table_and_normal_quantile():
    scipy_stats = pytest.importorskip("scipy.stats")
    assert torch.equal(get_scale_table(), compressai_base.get_scale_table())
    assert torch.equal(get_scale_table(0.5, 64.0, 10), compressai_base.get_scale_table(0.5, 64.0, 10))
    for q in (5e-10, 1e-9, 1e-6, 0.01, 0.3):
        assert _standard_normal_quantile(q) == scipy_stats.norm.ppf(q)


# ---------------------------------------------------------------------- operators
def test_quantize_ste_and_lower_bound_match_compressai():
    torch.manual_seed(0)
    x = (torch.randn(1000) * 3).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    weights = torch.randn(1000)
    (quantize_ste(x) * weights).sum().backward()
    (compressai_ops.quantize_ste(x2) * weights).sum().backward()
    assert torch.equal(quantize_ste(x), compressai_ops.quantize_ste(x2)) and torch.equal(x.grad, x2.grad)

    ours, theirs = LowerBound(0.11), compressai_ops.LowerBound(0.11)
    assert_same_tensors(ours.state_dict(), theirs.state_dict())
    a = torch.randn(1000).requires_grad_()
    b = a.detach().clone().requires_grad_()
    (ours(a) * weights).sum().backward()
    (theirs(b) * weights).sum().backward()
    assert torch.equal(ours(a), theirs(b)) and torch.equal(a.grad, b.grad)
    assert bool(((a < 0.11) & (a.grad != 0)).any())  # the gradient passes below the bound where it pushes up


# ---------------------------------------------------------------------- the factorized prior
def _bottlenecks(channels=6, filters=(3, 3, 3, 3)):
    torch.manual_seed(3)
    ours = EntropyBottleneck(channels, filters=filters)
    torch.manual_seed(3)
    theirs = compressai_entropy.EntropyBottleneck(channels, filters=filters)
    return ours, theirs


def _perturb_(module, seed=1):
    """Moves every floating parameter off its initial value (trained-looking densities)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(module.named_parameters()):
            p.add_(torch.randn(p.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("filters", [(3, 3, 3, 3), (3, 3, 3, 1), (2,)])
def test_entropy_bottleneck_matches_compressai(filters):
    ours, theirs = _bottlenecks(filters=filters)
    assert_same_tensors(named_tensors(ours), named_tensors(theirs))  # the same draws: the same initialisation
    _perturb_(ours)
    _perturb_(theirs)
    z = torch.randn(2, 6, 5, 7) * 4

    for training in (False, True):
        ours.train(training), theirs.train(training)
        za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
        torch.manual_seed(7)
        out_a, like_a = ours(za)
        torch.manual_seed(7)
        out_b, like_b = theirs(zb)
        assert torch.equal(out_a, out_b) and torch.equal(like_a, like_b)
        (torch.log2(like_a).sum() + out_a.square().sum()).backward()
        (torch.log2(like_b).sum() + out_b.square().sum()).backward()
        assert torch.equal(za.grad, zb.grad)
        for (name, pa), (_, pb) in zip(sorted(ours.named_parameters()), sorted(theirs.named_parameters())):
            assert (pa.grad is None and pb.grad is None) or torch.equal(pa.grad, pb.grad), name
        ours.zero_grad(), theirs.zero_grad()

    assert torch.equal(ours.loss(), theirs.loss())
    assert torch.equal(ours.medians(), theirs._get_medians())
    x = torch.linspace(-30, 30, 101).expand(6, 1, 101)
    assert torch.equal(ours.logits_cumulative(x), theirs._logits_cumulative(x, stop_gradient=False))

    assert ours.update(force=True) and theirs.update(force=True)
    assert_same_tensors(ours.state_dict(), theirs.state_dict())  # the tables, bit for bit
    assert not ours.update()  # built already
    assert ours.update(force=True, update_quantiles=True) and theirs.update(force=True, update_quantiles=True)
    assert_same_tensors(ours.state_dict(), theirs.state_dict())


def test_entropy_bottleneck_loads_compressais_state_dict():
    ours, theirs = _bottlenecks()
    _perturb_(theirs, seed=5)
    theirs.update(force=True)
    ours = load_into_compressai(ours, theirs)  # the same resize-then-load, the other way round
    assert_same_tensors(ours.state_dict(), theirs.state_dict())
    assert ours.is_updated and torch.equal(ours._quantized_cdf, theirs._quantized_cdf)


# ---------------------------------------------------------------------- the Gaussian conditional
@pytest.mark.parametrize("scale_table", [get_scale_table(), get_scale_table(0.2, 40.0, 16), torch.tensor([1.0])])
def test_gaussian_conditional_matches_compressai(scale_table):
    ours, theirs = GaussianConditional(None), compressai_entropy.GaussianConditional(None)
    assert_same_tensors(named_tensors(ours), named_tensors(theirs))
    assert ours.update_scale_table(scale_table) and theirs.update_scale_table(scale_table)
    assert_same_tensors(ours.state_dict(), theirs.state_dict())
    assert not ours.update_scale_table(scale_table)

    torch.manual_seed(0)
    y = torch.randn(2, 5, 6, 7) * 6
    scales = torch.rand(2, 5, 6, 7) * 30 + 0.01
    means = torch.randn(2, 5, 6, 7)
    assert torch.equal(ours.build_indexes(scales), theirs.build_indexes(scales))
    for training in (False, True):
        for m in (None, means):
            ya, yb = y.clone().requires_grad_(), y.clone().requires_grad_()
            sa, sb = scales.clone().requires_grad_(), scales.clone().requires_grad_()
            torch.manual_seed(9)
            out_a, like_a = ours(ya, sa, means=m, training=training)
            torch.manual_seed(9)
            out_b, like_b = theirs(yb, sb, means=m, training=training)
            assert torch.equal(out_a, out_b) and torch.equal(like_a, like_b)
            torch.log2(like_a).sum().backward()
            torch.log2(like_b).sum().backward()
            assert torch.equal(ya.grad, yb.grad) and torch.equal(sa.grad, sb.grad)


def test_gaussian_conditional_checks_its_arguments():
    for bad in ([], [2.0, 1.0], [0.0, 1.0], (0.5, -1.0)):
        with pytest.raises(ValueError):
            GaussianConditional(bad)
    with pytest.raises(ValueError):
        GaussianConditional(None, scale_bound=0)
    with pytest.raises(ValueError):
        GaussianConditional(torch.ones(3))
    assert GaussianConditional([0.5, 1.0], scale_bound=None).lower_bound_scale.bound.item() == 0.5


# ---------------------------------------------------------------------- GDN
@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_matches_compressai(inverse):
    ours, theirs = GDN(8, inverse=inverse), compressai_layers.GDN(8, inverse=inverse)
    assert_same_tensors(named_tensors(ours), named_tensors(theirs))
    assert_same_tensors(ours.state_dict(), theirs.state_dict())
    _perturb_(ours, seed=2)
    _perturb_(theirs, seed=2)
    x = torch.randn(2, 8, 9, 11)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = ours(xa), theirs(xb)
    assert torch.equal(out_a, out_b)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(ours.beta.grad, theirs.beta.grad) and torch.equal(ours.gamma.grad, theirs.gamma.grad)


def test_compressai_state_dicts_of_the_codec_load_key_by_key():
    """A codec built with compressai's layers (what every shipped model was trained with) and SODEC's own have
    the same state-dict keys, shapes and dtypes, and the same fingerprint-relevant tensors."""
    from sodec_pipeline.models.hyperprior_codec import HyperpriorCodec

    ours = HyperpriorCodec(
        block_out_channels=(8, 8, 8), latent_channels=16, hyper_channels=8, analysis_type="gdn",
        latent_synthesis_channels=8, latent_transform_channels=8, latent_transform_num_blocks=1,
    )  # fmt: skip
    ours.update()
    theirs = {}
    for name, module in ours.named_modules():
        replacement = None
        if isinstance(module, EntropyBottleneck):
            replacement = compressai_entropy.EntropyBottleneck(module.channels, filters=module.filters)
        elif isinstance(module, GaussianConditional):
            replacement = compressai_entropy.GaussianConditional(None, scale_bound=0.11)
        elif isinstance(module, GDN):
            replacement = compressai_layers.GDN(module.beta.numel(), inverse=module.inverse)
        if replacement is not None:
            theirs[name] = load_into_compressai(replacement, module)
    assert len(theirs) == 5  # three GDNs, the bottleneck, the conditional
    for name, module in theirs.items():
        prefix = name + "."
        expected = {k[len(prefix) :]: v for k, v in ours.state_dict().items() if k.startswith(prefix)}
        assert_same_tensors(expected, module.state_dict())
        assert sorted(named_tensors(module)) == sorted(named_tensors(ours.get_submodule(name)))
