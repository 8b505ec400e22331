r"""Entropy models: how E's latent y becomes the strings of a stream and back, and what it costs in training.

A :class:`LatentEntropyModel` is everything between E's output y and the decoder's (ŷ, ẑ): the training pass
(quantisation and likelihoods), the CDF tables, the coding of the symbols (ANS, ``entropy_coding.py``) and the
entropy check. ``CompressionVAE`` (``models/compression_vae.py``) holds the networks and delegates its
``forward``, ``compress_latent``, ``decompress`` and ``update`` to its ``entropy_model``, so that another entropy
model (a context or channel-autoregressive one) is another subclass here plus a stream version in
``bitstream.py`` (``FORMAT_VERSION``, ``READABLE_VERSIONS``), without touching the model class.

:class:`HyperpriorEntropyModel` is SODEC's: Ballé et al.'s mean-scale hyperprior (CompressAI's
``MeanScaleHyperprior``/``HyperpriorLatentCodec``), z = H_a(y) coded with the factorized prior
(``EntropyBottleneck``, ``entropy_layers.py``), y with the Gaussian conditional (``GaussianConditional``) whose
(μ, σ) = P(ẑ) come from P in exact fixed point (``fixed_point_hyper_synthesis.py``), at a quality level's
quantisation step Δ.

An entropy model is not an ``nn.Module`` of its own: it works with modules the codec registers under its own
names (``hyper_analysis``, ``hyper_synthesis_mean``/``_scale``, ``entropy_bottleneck``,
``gaussian_conditional``), so that checkpoints, state-dict keys and so the model's fingerprint stay what they are.
A new entropy model with networks of its own has the codec register them under new names.
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .entropy_coding import CategoricalTables, decode_symbols, encode_symbols, table_indexes_of_channels
from .entropy_layers import TABLE_BUFFERS, EntropyBottleneck, GaussianConditional
from .errors import BitstreamError
from .fixed_point_hyper_synthesis import FixedPointHyperSynthesis, weights_key
from .ops import quantize_ste
from .stream_checks import entropy_check


#: How the coder computes the entropy parameters (μ, σ) from ẑ: "fixed_point" (exact, the same bits on
#: every machine; fixed_point_hyper_synthesis.py) or "float32" (P's float output as it is: fast to reason
#: about, but another machine can derive other CDF indexes; streams then fail the entropy check).
ENTROPY_PARAMETER_ARITHMETIC = ("fixed_point", "float32")


class LatentEntropyModel:
    """What ``CompressionVAE`` codes through. ``quantization_step`` is a quality level's Δ (a float; in
    :meth:`forward` also one per image as a (B,) tensor; ``None``: Δ = 1)."""

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
        modules = (
            self.entropy_bottleneck,
            self.gaussian_conditional,
            self.hyper_synthesis_mean,
            self.hyper_synthesis_scale,
        )
        key = weights_key(modules)
        if self._coding_cache is None or self._coding_cache[0] != key:
            state = {
                "z_tables": CategoricalTables.from_entropy_model(self.entropy_bottleneck),
                "y_tables": CategoricalTables.from_entropy_model(self.gaussian_conditional),
            }
            if self.arithmetic == "fixed_point":
                state["mean"] = FixedPointHyperSynthesis(self.hyper_synthesis_mean)
                state["scale"] = FixedPointHyperSynthesis(self.hyper_synthesis_scale)
            self._coding_cache = (key, state)
        return self._coding_cache[1]

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
        z_symbols = torch.round(z - medians)
        z_hat = z_symbols + medians
        z_tables_of = table_indexes_of_channels(z.shape[1], z.shape[-2:])
        z_string = encode_symbols(z_symbols.to(torch.int64), z_tables_of, state["z_tables"])
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
        device, channels = medians.device, self.entropy_bottleneck.channels
        z_symbols = decode_symbols(z_string, table_indexes_of_channels(channels, shape), state["z_tables"])
        z_hat = torch.from_numpy(z_symbols).to(device=device, dtype=torch.float32).reshape(1, channels, *shape)
        z_hat = z_hat + medians
        means, scales = self.entropy_parameters(z_hat)
        indexes = self.gaussian_conditional.build_indexes(_divide(scales, step))
        if check is not None and entropy_check(indexes, means) != check:
            raise BitstreamError(
                "this decoder derives other entropy parameters from the stream than its encoder did "
                f"(entropy check {entropy_check(indexes, means).hex()}, stream says {check.hex()}): the stream is "
                "damaged, or was written with another entropy-parameter arithmetic (a float32-P model on another "
                "machine)"
            )
        y_symbols = decode_symbols(y_string, indexes, state["y_tables"])
        y_symbols = torch.from_numpy(y_symbols).to(device=device, dtype=torch.float32).reshape(means.shape)
        if step != 1.0:
            y_symbols = y_symbols * torch.tensor(step, dtype=torch.float32, device=device)
        return y_symbols + means, z_hat


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
