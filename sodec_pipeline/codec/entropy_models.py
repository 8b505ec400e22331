r"""Entropy models: how E's latent y becomes the strings of a stream and back, and what it costs in training.

A :class:`LatentEntropyModel` is everything between E's output y and the decoder's (ŷ, ẑ): the training pass
(quantisation and likelihoods), the CDF tables, the coding of the symbols (ANS, ``entropy_coding.py``) and the
entropy check. ``CompressionVAE`` (``models/compression_vae.py``) holds the networks and delegates its
``forward``, ``compress_latent``, ``decompress`` and ``update`` to its ``entropy_model``, so that another entropy
model is another subclass here plus a stream version in ``stream_versions.py`` (the class's ``stream_version``
and ``readable_stream_versions``; the container's ``READABLE_VERSIONS``, ``WRITABLE_VERSIONS``) and a value of the
codec's config key ``entropy_model_type`` (:data:`ENTROPY_MODEL_TYPES`).

:class:`HyperpriorEntropyModel` is SODEC's: Ballé et al.'s mean-scale hyperprior (CompressAI's
``MeanScaleHyperprior``/``HyperpriorLatentCodec``), z = H_a(y) coded with the factorized prior
(``EntropyBottleneck``, ``entropy_layers.py``), y with the Gaussian conditional (``GaussianConditional``) whose
(μ, σ) = P(ẑ) come from P in exact fixed point (``fixed_point_hyper_synthesis.py``), at a quality level's
quantisation step Δ; streams of version 3.

:class:`CheckerboardEntropyModel` is He et al.'s checkerboard context model over it (CompressAI's
``CheckerboardLatentCodec``): the anchors coded as the hyperprior codes them, the other half with parameters from the
decoded anchors (g_cm, g_ep; their second pass in exact fixed point, ``fixed_point_context.py``); streams of
version 4 (docs/bitstream.md).

An entropy model is not an ``nn.Module`` of its own: it works with modules the codec registers under its own
names (``hyper_analysis``, ``hyper_synthesis_mean``/``_scale``, ``entropy_bottleneck``,
``gaussian_conditional``), so that checkpoints, state-dict keys and so the model's fingerprint stay what they are.
A new entropy model with networks of its own has the codec register them under new names (the checkerboard's:
``context_prediction``, ``entropy_parameters``, only in codecs that use it).
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .entropy_coding import (
    CategoricalTables,
    SymbolDecoder,
    codable_symbols,
    decode_symbols,
    encode_symbol_groups,
    encode_symbols,
    table_indexes_of_channels,
)
from .entropy_layers import TABLE_BUFFERS, EntropyBottleneck, GaussianConditional
from .errors import BitstreamError
from .fixed_point_context import FixedPointCheckerboardContext, anchor_mask
from .fixed_point_hyper_synthesis import FixedPointHyperSynthesis, weights_key
from .ops import quantize_ste
from .stream_checks import entropy_check
from .stream_versions import CHECKERBOARD_FORMAT_VERSION, FORMAT_VERSION


#: How the coder computes the entropy parameters (μ, σ) from ẑ: "fixed_point" (exact, the same bits on
#: every machine; fixed_point_hyper_synthesis.py) or "float32" (P's float output as it is: fast to reason
#: about, but another machine can derive other CDF indexes; streams then fail the entropy check).
ENTROPY_PARAMETER_ARITHMETIC = ("fixed_point", "float32")


class LatentEntropyModel:
    """What ``CompressionVAE`` codes through. ``quantization_step`` is a quality level's Δ (a float; in
    :meth:`forward` also one per image as a (B,) tensor; ``None``: Δ = 1). :attr:`stream_version` is the container
    version of its streams (``bitstream.py``), :attr:`readable_stream_versions` those it decodes."""

    stream_version: int = FORMAT_VERSION
    readable_stream_versions: Tuple[int, ...] = (2, FORMAT_VERSION)

    def forward(self, y: torch.Tensor, quantization_step=None) -> Dict[str, object]:
        """Training pass on y: ``{"y_hat": ŷ, "z_hat": ẑ, "likelihoods": {"y": …, "z": …}}`` (straight-through
        quantisation, likelihoods of the noisy latents)."""
        raise NotImplementedError

    def __call__(self, y: torch.Tensor, quantization_step=None) -> Dict[str, object]:
        return self.forward(y, quantization_step)

    def update(self, scale_table: torch.Tensor, force: bool = False, update_quantiles: bool = False) -> bool:
        """Builds the CDF tables; returns whether anything changed."""
        raise NotImplementedError

    @property
    def is_updated(self) -> bool:
        """Whether the CDF tables are built (needed before :meth:`compress` and :meth:`decompress`)."""
        raise NotImplementedError

    def compress(self, y: torch.Tensor, quantization_step: float) -> Dict[str, object]:
        """Codes y (B, C, h, w), each image on its own: ``{"strings": [y_strings, z_strings], "shape": z_shape,
        "entropy_checks": checks}``."""
        raise NotImplementedError

    def decompress(
        self,
        strings: List[List[bytes]],
        shape: Sequence[int],
        quantization_step: float,
        entropy_checks: Optional[Sequence[bytes]] = None,
    ) -> Dict[str, torch.Tensor]:
        """Inverse of :meth:`compress`: ``{"y_hat": ŷ, "z_hat": ẑ}``; ``BitstreamError`` for strings that do not
        decode or entropy checks that do not match."""
        raise NotImplementedError


class HyperpriorEntropyModel(LatentEntropyModel):
    """The mean-scale hyperprior (see the module docstring) over the codec's modules.

    Args:
        hyper_analysis: H_a, y → z.
        hyper_synthesis_mean, hyper_synthesis_scale: P's two heads, ẑ → μ and ẑ → σ.
        entropy_bottleneck: the factorized prior of z (``entropy_layers.EntropyBottleneck``).
        gaussian_conditional: the conditional of y (``entropy_layers.GaussianConditional``).
        arithmetic: how :meth:`compress`/:meth:`decompress` evaluate P, one of
            :data:`ENTROPY_PARAMETER_ARITHMETIC`. Training (:meth:`forward`) always uses the float P.
    """

    def __init__(
        self,
        hyper_analysis: nn.Module,
        hyper_synthesis_mean: nn.Module,
        hyper_synthesis_scale: nn.Module,
        entropy_bottleneck: EntropyBottleneck,
        gaussian_conditional: GaussianConditional,
        arithmetic: str = "fixed_point",
    ):
        if arithmetic not in ENTROPY_PARAMETER_ARITHMETIC:
            raise ValueError(
                f"entropy_parameter_arithmetic must be one of {ENTROPY_PARAMETER_ARITHMETIC}, got {arithmetic!r}"
            )
        self.hyper_analysis = hyper_analysis
        self.hyper_synthesis_mean = hyper_synthesis_mean
        self.hyper_synthesis_scale = hyper_synthesis_scale
        self.entropy_bottleneck = entropy_bottleneck
        self.gaussian_conditional = gaussian_conditional
        self.arithmetic = arithmetic
        self._coding_cache: Optional[Tuple[tuple, dict]] = None

    def __getstate__(self) -> dict:
        """Copies and pickles leave the coding cache behind (constriction's models do not pickle); it is rebuilt
        from the tables at first use."""
        return {**self.__dict__, "_coding_cache": None}

    # ------------------------------------------------------------------ training
    def hyper_synthesis(self, z_hat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """P in float: ẑ → (μ, σ) of the Gaussian conditional over y."""
        return self.hyper_synthesis_mean(z_hat), self.hyper_synthesis_scale(z_hat)

    def forward(self, y: torch.Tensor, quantization_step: Union[float, torch.Tensor, None] = None):
        """ŷ = Δ · round((y − μ) / Δ) + μ (straight through) and the likelihoods of (y − μ) / Δ under
        N(0, σ / Δ), as :meth:`compress` codes a level with that Δ; ẑ rounded around the medians."""
        z = self.hyper_analysis(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        z_offset = self.entropy_bottleneck.medians()
        z_hat = quantize_ste(z - z_offset) + z_offset
        means, scales = self.hyper_synthesis(z_hat)
        if quantization_step is None:
            _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
            y_hat = quantize_ste(y - means) + means
        else:
            step = torch.as_tensor(quantization_step, dtype=y.dtype, device=y.device).reshape(-1, 1, 1, 1)
            residual = (y - means) / step
            _, y_likelihoods = self.gaussian_conditional(residual, scales / step)
            y_hat = quantize_ste(residual) * step + means
        return {"y_hat": y_hat, "z_hat": z_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    # ------------------------------------------------------------------ tables
    def update(self, scale_table: torch.Tensor, force: bool = False, update_quantiles: bool = False) -> bool:
        """The factorized prior's tables, and the Gaussian conditional's for ``scale_table`` (compressai's
        ``CompressionModel.update`` for these two layers)."""
        updated = self.entropy_bottleneck.update(force=force, update_quantiles=update_quantiles)
        updated |= self.gaussian_conditional.update_scale_table(scale_table, force=force)
        return updated

    @property
    def is_updated(self) -> bool:
        return (
            self.entropy_bottleneck._quantized_cdf.numel() > 0 and self.gaussian_conditional._quantized_cdf.numel() > 0
        )

    def coding_state(self) -> dict:
        """The constriction tables of both entropy models (``"z_tables"``, ``"y_tables"``) and, in fixed point,
        P's two heads (``"mean"``, ``"scale"``): rebuilt when any weight changes. ``RuntimeError`` without tables."""
        if not self.is_updated:
            raise RuntimeError(
                "the entropy models have no CDF tables: call `compression_vae.update()` after training or "
                "initialising the model, before compressing"
            )
        key = weights_key(self.coding_modules())
        if self._coding_cache is None or self._coding_cache[0] != key:
            self._coding_cache = (key, self._build_coding_state())
        return self._coding_cache[1]

    def coding_modules(self) -> Tuple[nn.Module, ...]:
        """The modules whose weights :meth:`coding_state` is derived from."""
        return (
            self.entropy_bottleneck,
            self.gaussian_conditional,
            self.hyper_synthesis_mean,
            self.hyper_synthesis_scale,
        )

    def _build_coding_state(self) -> dict:
        state = {
            "z_tables": CategoricalTables.from_entropy_model(self.entropy_bottleneck),
            "y_tables": CategoricalTables.from_entropy_model(self.gaussian_conditional),
        }
        if self.arithmetic == "fixed_point":
            state["mean"] = FixedPointHyperSynthesis(self.hyper_synthesis_mean)
            state["scale"] = FixedPointHyperSynthesis(self.hyper_synthesis_scale)
        return state

    def entropy_parameters(self, z_hat: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) of the Gaussian conditional as the coder uses them: P evaluated in exact fixed point (the same
        bits on every machine), or P's float32 output with ``arithmetic="float32"``."""
        if self.arithmetic == "float32":
            return self.hyper_synthesis(z_hat)
        state = self.coding_state()
        return state["mean"](z_hat), state["scale"](z_hat)

    def z_medians(self) -> torch.Tensor:
        """The factorized prior's medians (1, C, 1, 1), float32: ẑ's symbols are round(z − medians)."""
        return self.entropy_bottleneck.medians().detach().reshape(1, -1, 1, 1).float()

    # ------------------------------------------------------------------ coding
    def compress(self, y: torch.Tensor, quantization_step: float) -> Dict[str, object]:
        state = self.coding_state()
        y_strings, z_strings, checks = [], [], []
        with torch.autocast(device_type=y.device.type, enabled=False):  # bit-exact fp32 under any autocast
            y = y.float()
            z = self.hyper_analysis(y)
            medians = self.z_medians().to(z.device)
            for i in range(y.shape[0]):
                y_string, z_string, check = self._compress_one(
                    state, y[i : i + 1], z[i : i + 1], medians, quantization_step
                )
                y_strings.append(y_string)
                z_strings.append(z_string)
                checks.append(check)
        return {"strings": [y_strings, z_strings], "shape": tuple(z.shape[-2:]), "entropy_checks": checks}

    def _compress_one(
        self, state: dict, y: torch.Tensor, z: torch.Tensor, medians: torch.Tensor, step: float
    ) -> Tuple[bytes, bytes, bytes]:
        """One image's (y string, z string, entropy check) from its y and z (1, C, h, w)."""
        z_string, z_hat = self._encode_z(state, z, medians)
        means, scales = self.entropy_parameters(z_hat)
        indexes = self.gaussian_conditional.build_indexes(_divide(scales, step))
        y_symbols = torch.round(_divide(y - means, step))
        y_string = encode_symbols(y_symbols.to(torch.int64), indexes, state["y_tables"])
        return y_string, z_string, entropy_check(indexes, means)

    def decompress(
        self,
        strings: List[List[bytes]],
        shape: Sequence[int],
        quantization_step: float,
        entropy_checks: Optional[Sequence[bytes]] = None,
    ) -> Dict[str, torch.Tensor]:
        state = self.coding_state()
        y_strings, z_strings = strings
        if len(y_strings) != len(z_strings) or (entropy_checks is not None and len(entropy_checks) != len(y_strings)):
            raise ValueError("decompress needs as many y strings, z strings (and entropy checks) as images")
        shape = tuple(int(v) for v in shape)
        device = self.entropy_bottleneck.quantiles.device
        medians = self.z_medians().to(device)
        y_hats, z_hats = [], []
        with torch.autocast(device_type=device.type, enabled=False):  # bit-exact fp32 under any autocast
            for i, (y_string, z_string) in enumerate(zip(y_strings, z_strings)):
                check = None if entropy_checks is None else bytes(entropy_checks[i])
                y_hat, z_hat = self._decompress_one(
                    state, (y_string, z_string), shape, medians, quantization_step, check
                )
                y_hats.append(y_hat)
                z_hats.append(z_hat)
        return {"y_hat": torch.cat(y_hats), "z_hat": torch.cat(z_hats)}

    def _decompress_one(
        self,
        state: dict,
        strings: Tuple[bytes, bytes],
        shape: Tuple[int, ...],
        medians: torch.Tensor,
        step: float,
        check: Optional[bytes],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One image's (ŷ, ẑ), each (1, C, …), from its (y string, z string), on the entropy models' device; its
        entropy check verified before its y string is decoded."""
        y_string, z_string = strings
        z_hat = self._decode_z(state, z_string, shape, medians)
        means, scales = self.entropy_parameters(z_hat)
        indexes = self.gaussian_conditional.build_indexes(_divide(scales, step))
        _verify_entropy_check(check, indexes, means)
        y_symbols = decode_symbols(y_string, indexes, state["y_tables"])
        y_symbols = torch.from_numpy(y_symbols).to(device=medians.device, dtype=torch.float32).reshape(means.shape)
        return _dequantize(y_symbols, step, means), z_hat

    def _encode_z(self, state: dict, z: torch.Tensor, medians: torch.Tensor) -> Tuple[bytes, torch.Tensor]:
        """One image's z string and ẑ from its z (1, N, h, w): the symbols round(z − medians), table = channel."""
        z_symbols = torch.round(z - medians)
        z_hat = z_symbols + medians
        z_tables_of = table_indexes_of_channels(z.shape[1], z.shape[-2:])
        return encode_symbols(z_symbols.to(torch.int64), z_tables_of, state["z_tables"]), z_hat

    def _decode_z(self, state: dict, z_string: bytes, shape: Tuple[int, ...], medians: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_encode_z`: ẑ (1, N, *shape) on the medians' device."""
        channels = self.entropy_bottleneck.channels
        z_symbols = decode_symbols(z_string, table_indexes_of_channels(channels, shape), state["z_tables"])
        z_hat = torch.from_numpy(z_symbols).to(device=medians.device, dtype=torch.float32)
        return z_hat.reshape(1, channels, *shape) + medians


class CheckerboardEntropyModel(HyperpriorEntropyModel):
    """The checkerboard context model (He et al. 2021) over the hyperprior: ŷ is coded in two passes of one ANS
    string. The anchors (positions (i, j) with i + j even, :func:`anchor_mask`) are coded with the hyperprior's
    (μ_P, σ_P) = P(ẑ), exactly as :class:`HyperpriorEntropyModel` codes them; the other half with
    μ = μ_P + Δμ, σ = σ_P + Δσ, where (Δμ, Δσ) = g_ep([μ_P, σ_P, g_cm(ŷ of the anchors)]). The decoder decodes the
    anchors, evaluates the context, verifies the entropy check (over both passes' indexes and μ) and decodes the
    rest. In coding, g_cm and g_ep run in exact fixed point (``fixed_point_context.py``) as P does, so that the
    second pass's CDF indexes are the same bits on every machine; training uses the float networks.

    Args:
        hyper_analysis, hyper_synthesis_mean, hyper_synthesis_scale, entropy_bottleneck, gaussian_conditional,
            arithmetic: as for :class:`HyperpriorEntropyModel` (``arithmetic`` covers g_cm and g_ep too).
        context_prediction: g_cm, a ``CheckerboardContextPrediction`` (``models/context_transforms.py``).
        entropy_parameters: g_ep, an ``EntropyParametersTransform``.
    """

    stream_version = CHECKERBOARD_FORMAT_VERSION
    readable_stream_versions = (CHECKERBOARD_FORMAT_VERSION,)

    def __init__(
        self,
        hyper_analysis: nn.Module,
        hyper_synthesis_mean: nn.Module,
        hyper_synthesis_scale: nn.Module,
        entropy_bottleneck: EntropyBottleneck,
        gaussian_conditional: GaussianConditional,
        context_prediction: nn.Module,
        entropy_parameters: nn.Module,
        arithmetic: str = "fixed_point",
    ):
        super().__init__(
            hyper_analysis,
            hyper_synthesis_mean,
            hyper_synthesis_scale,
            entropy_bottleneck,
            gaussian_conditional,
            arithmetic,
        )
        self.context_prediction = context_prediction
        self.entropy_parameters_transform = entropy_parameters  # g_ep (the method entropy_parameters is P's)

    # ------------------------------------------------------------------ training
    def context_parameters(
        self, y_hat_anchors: torch.Tensor, means: torch.Tensor, scales: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The float networks: (μ_P + Δμ, σ_P + Δσ) at every position from ŷ of the anchors (zero elsewhere)."""
        context = self.context_prediction(y_hat_anchors)
        delta = self.entropy_parameters_transform(torch.cat([means, scales, context], dim=1))
        delta_means, delta_scales = delta.chunk(2, dim=1)
        return means + delta_means, scales + delta_scales

    def forward(self, y: torch.Tensor, quantization_step: Union[float, torch.Tensor, None] = None):
        """As :meth:`HyperpriorEntropyModel.forward`, with the non-anchors' (μ, σ) from the context of the anchors'
        ŷ (straight-through quantised around μ_P, as the decoder has them)."""
        z = self.hyper_analysis(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        z_offset = self.entropy_bottleneck.medians()
        z_hat = quantize_ste(z - z_offset) + z_offset
        means, scales = self.hyper_synthesis(z_hat)
        step = 1.0 if quantization_step is None else quantization_step
        step = torch.as_tensor(step, dtype=y.dtype, device=y.device).reshape(-1, 1, 1, 1)
        anchors = anchor_mask(*y.shape[-2:], device=y.device)
        y_hat_anchors = (quantize_ste((y - means) / step) * step + means) * anchors
        context_means, context_scales = self.context_parameters(y_hat_anchors, means, scales)
        means = torch.where(anchors, means, context_means)
        scales = torch.where(anchors, scales, context_scales)
        residual = (y - means) / step
        _, y_likelihoods = self.gaussian_conditional(residual, scales / step)
        y_hat = quantize_ste(residual) * step + means
        return {"y_hat": y_hat, "z_hat": z_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    # ------------------------------------------------------------------ tables
    def coding_modules(self) -> Tuple[nn.Module, ...]:
        return super().coding_modules() + (self.context_prediction, self.entropy_parameters_transform)

    def _build_coding_state(self) -> dict:
        state = super()._build_coding_state()
        if self.arithmetic == "fixed_point":
            state["context"] = FixedPointCheckerboardContext(
                self.context_prediction, self.entropy_parameters_transform
            )
        return state

    def context_entropy_parameters(
        self, y_hat_anchors: torch.Tensor, means: torch.Tensor, scales: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(μ, σ) of every position as the coder uses them, from ŷ of the anchors (zero elsewhere) and (μ_P, σ_P):
        the anchors' unchanged, the others' from g_cm and g_ep in exact fixed point (float32 networks with
        ``arithmetic="float32"``)."""
        if self.arithmetic == "fixed_point":
            return self.coding_state()["context"](y_hat_anchors, means, scales)
        anchors = anchor_mask(*means.shape[-2:], device=means.device)
        context_means, context_scales = self.context_parameters(y_hat_anchors, means, scales)
        return torch.where(anchors, means, context_means), torch.where(anchors, scales, context_scales)

    # ------------------------------------------------------------------ coding
    def _compress_one(
        self, state: dict, y: torch.Tensor, z: torch.Tensor, medians: torch.Tensor, step: float
    ) -> Tuple[bytes, bytes, bytes]:
        """One image's (y string, z string, entropy check): the anchors' symbols (as the decoder will get them
        back), their ŷ, the context's (μ, σ), the other half's symbols; one string, anchors first."""
        z_string, z_hat = self._encode_z(state, z, medians)
        means, scales = self.entropy_parameters(z_hat)
        anchors = anchor_mask(*y.shape[-2:], device=y.device)
        indexes = self.gaussian_conditional.build_indexes(_divide(scales, step))
        anchor_indexes = indexes[0][:, anchors]
        anchor_symbols = torch.round(_divide(y - means, step))[0][:, anchors].to(torch.int64)
        anchor_symbols = codable_symbols(anchor_symbols, anchor_indexes, state["y_tables"])
        y_hat_anchors = torch.zeros_like(means)
        y_hat_anchors[0][:, anchors] = _dequantize(anchor_symbols.to(torch.float32), step, means[0][:, anchors])
        means, scales = self.context_entropy_parameters(y_hat_anchors, means, scales)
        indexes = self.gaussian_conditional.build_indexes(_divide(scales, step))
        other_symbols = torch.round(_divide(y - means, step))[0][:, ~anchors].to(torch.int64)
        groups = [(anchor_symbols, anchor_indexes), (other_symbols, indexes[0][:, ~anchors])]
        y_string = encode_symbol_groups(groups, state["y_tables"])
        return y_string, z_string, entropy_check(indexes, means)

    def _decompress_one(
        self,
        state: dict,
        strings: Tuple[bytes, bytes],
        shape: Tuple[int, ...],
        medians: torch.Tensor,
        step: float,
        check: Optional[bytes],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One image's (ŷ, ẑ): the anchors, the context, the entropy check, then the other half."""
        y_string, z_string = strings
        device = medians.device
        z_hat = self._decode_z(state, z_string, shape, medians)
        means, scales = self.entropy_parameters(z_hat)
        anchors = anchor_mask(*means.shape[-2:], device=device)
        indexes = self.gaussian_conditional.build_indexes(_divide(scales, step))
        decoder = SymbolDecoder(y_string)
        symbols = decoder.decode(indexes[0][:, anchors], state["y_tables"])
        symbols = torch.from_numpy(symbols).to(device=device, dtype=torch.float32).reshape(means.shape[1], -1)
        y_hat = torch.zeros_like(means)
        y_hat[0][:, anchors] = _dequantize(symbols, step, means[0][:, anchors])
        means, scales = self.context_entropy_parameters(y_hat, means, scales)
        indexes = self.gaussian_conditional.build_indexes(_divide(scales, step))
        _verify_entropy_check(check, indexes, means)
        symbols = decoder.decode(indexes[0][:, ~anchors], state["y_tables"])
        decoder.finish()
        symbols = torch.from_numpy(symbols).to(device=device, dtype=torch.float32).reshape(means.shape[1], -1)
        y_hat[0][:, ~anchors] = _dequantize(symbols, step, means[0][:, ~anchors])
        return y_hat, z_hat


#: The entropy models a ``CompressionVAE`` can code with (its config's ``entropy_model_type``).
ENTROPY_MODEL_TYPES = {"hyperprior": HyperpriorEntropyModel, "checkerboard": CheckerboardEntropyModel}


def resize_table_buffers(model: nn.Module, state_dict: dict) -> None:
    """Gives the CDF-table buffers (:data:`~.entropy_layers.TABLE_BUFFERS`) of every entropy layer in ``model`` the
    shapes they have in ``state_dict``, tables already built included, so that a strict ``load_state_dict``
    follows (an ``nn.Module`` cannot load a buffer of another shape)."""
    for name, module in model.named_modules():
        if isinstance(module, (EntropyBottleneck, GaussianConditional)):
            for buffer_name, buffer in module.named_buffers(recurse=False):
                key = f"{name}.{buffer_name}" if name else buffer_name
                if buffer_name in TABLE_BUFFERS and key in state_dict:
                    buffer.resize_(state_dict[key].size())


def _divide(values: torch.Tensor, step: float) -> torch.Tensor:
    """values / Δ in float32 (one IEEE division: the same bits on every machine); Δ = 1 returns values."""
    if step == 1.0:
        return values
    return values / torch.tensor(step, dtype=torch.float32, device=values.device)


def _dequantize(symbols: torch.Tensor, step: float, means: torch.Tensor) -> torch.Tensor:
    """ŷ = Δ · s + μ in float32: one IEEE multiplication (none for Δ = 1) and one addition, so that the encoder and
    every decoder get the same bits (the context model's encoder computes the anchors' ŷ as its decoder does)."""
    if step != 1.0:
        symbols = symbols * torch.tensor(step, dtype=torch.float32, device=symbols.device)
    return symbols + means


def _verify_entropy_check(check: Optional[bytes], indexes: torch.Tensor, means: torch.Tensor) -> None:
    """``BitstreamError`` when a stream's entropy check differs from that of the parameters the decoder derived."""
    if check is not None and entropy_check(indexes, means) != check:
        raise BitstreamError(
            "this decoder derives other entropy parameters from the stream than its encoder did "
            f"(entropy check {entropy_check(indexes, means).hex()}, stream says {check.hex()}): the stream is "
            "damaged, or was written with another entropy-parameter arithmetic (a float32-P model on another "
            "machine)"
        )
