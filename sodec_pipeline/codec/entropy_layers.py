r"""The two entropy layers of Ballé et al.'s scale hyperprior ("Variational image compression with a scale
hyperprior", ICLR 2018): the factorized prior of z (:class:`EntropyBottleneck`) and the Gaussian conditional of
y (:class:`GaussianConditional`), each with its training pass (likelihoods of the noisy or rounded values) and
its CDF tables for the coder.

They are drop-in for compressai's layers of the same names (compressai 1.2), whose checkpoints every SODEC model
was trained and saved with: the same parameters and buffers under the same names, shapes and dtypes (so that the
weights load key by key and the model's fingerprint does not change), the same random initialisation (the same
draws in the same order), and the same floating-point operations in the same order, so that likelihoods,
quantiles and CDF tables are bit-identical (``tests/test_entropy_layers.py`` checks them against compressai).
They do not code anything themselves: ``entropy_coding.py`` codes the symbols with constriction, from the tables
built here (:meth:`EntropyBottleneck.update`, :meth:`GaussianConditional.update_scale_table`).

**Factorized prior.** Each channel c of z has its own density, the derivative of a cumulative c(x) =
σ(f_K ∘ … ∘ f_0(x)) with f_k(x) = softplus(H_k) x + b_k, followed for k < K by x + tanh(a_k) ⊙ tanh(x) (Ballé et
al.'s appendix 6.1). The likelihood of an integer-centred value v is c(v + ½) − c(v − ½), computed on the logits.
``quantiles`` holds each channel's tails (cdf = tail_mass / 2 and 1 − tail_mass / 2) and median; they are
trained by :meth:`EntropyBottleneck.loss` (the auxiliary loss), or solved by bisection (``update_quantiles``).
z is coded as round(z − median) with one table per channel over [tail, tail], plus an escape bin.

**Gaussian conditional.** y is N(μ, σ²) convolved with U(−½, ½): the likelihood of v is Φ((½ − |v − μ|) / σ) −
Φ((−½ − |v − μ|) / σ), with σ bounded below by ``scale_bound``. The coder uses one table per σ of a
log-spaced scale table (:func:`get_scale_table`), each over ±⌈σ · Φ⁻¹(1 − tail_mass / 2)⌉, and codes a value with
the table of the smallest tabulated σ at least its own (:meth:`GaussianConditional.build_indexes`).
"""

import math
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .cdf_tables import pmf_to_quantized_cdf
from .ops import LowerBound


#: The buffers of the entropy layers whose shapes are only known once the tables are built.
TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
#: Precision of the quantised CDF tables, in bits.
CDF_PRECISION = 16


def get_scale_table(minimum: float = 0.11, maximum: float = 256.0, levels: int = 64) -> torch.Tensor:
    """``levels`` scales σ, log-spaced from ``minimum`` to ``maximum`` (Ballé et al.'s 0.11 … 256 in 64 steps)."""
    return torch.exp(torch.linspace(math.log(minimum), math.log(maximum), levels))


class _TabulatedEntropyLayer(nn.Module):
    """What both layers share: the likelihood floor and the CDF-table buffers (empty until built)."""

    def __init__(self, likelihood_bound: float = 1e-9):
        super().__init__()
        self.entropy_coder_precision = CDF_PRECISION
        self.use_likelihood_bound = likelihood_bound > 0
        if self.use_likelihood_bound:
            self.likelihood_lower_bound = LowerBound(likelihood_bound)
        self.register_buffer("_offset", torch.IntTensor())
        self.register_buffer("_quantized_cdf", torch.IntTensor())
        self.register_buffer("_cdf_length", torch.IntTensor())

    @property
    def is_updated(self) -> bool:
        """Whether the CDF tables are built."""
        return self._offset.numel() > 0

    def _bounded(self, likelihood: torch.Tensor) -> torch.Tensor:
        return self.likelihood_lower_bound(likelihood) if self.use_likelihood_bound else likelihood

    @staticmethod
    def _perturb(values: torch.Tensor, training: bool, means: Optional[torch.Tensor]) -> torch.Tensor:
        """Training: values + U(−½, ½) noise; otherwise values rounded around ``means`` (when given)."""
        if training:
            return values + torch.empty_like(values).uniform_(-0.5, 0.5)
        rounded = values.clone()
        if means is not None:
            rounded -= means
        rounded = torch.round(rounded)
        if means is not None:
            rounded += means
        return rounded

    def _tables(self, pmf: torch.Tensor, tail_mass: torch.Tensor, pmf_length: torch.Tensor) -> torch.Tensor:
        """(L, max length + 2) int32: row i the quantised CDF of pmf[i]'s first ``pmf_length[i]`` values and the
        escape bin's ``tail_mass[i]``, zero-padded."""
        lengths = [int(n) for n in pmf_length]
        cdf = torch.zeros((len(lengths), max(lengths) + 2), dtype=torch.int32, device=pmf.device)
        for i, length in enumerate(lengths):
            row = pmf_to_quantized_cdf(torch.cat((pmf[i, :length], tail_mass[i])), self.entropy_coder_precision)
            cdf[i, : row.numel()] = row.to(cdf.device)
        return cdf


class EntropyBottleneck(_TabulatedEntropyLayer):
    r"""The factorized prior of z (module docstring): one learned density per channel.

    Args:
        channels: channels of z.
        tail_mass: probability outside the tabulated range of each channel (the escape bin's share).
        init_scale: initial width of each density (quantiles at ±init_scale).
        filters: hidden widths of the density model (K = len(filters) + 1 layers).
    """

    def __init__(
        self,
        channels: int,
        tail_mass: float = 1e-9,
        init_scale: float = 10,
        filters: Tuple[int, ...] = (3, 3, 3, 3),
        likelihood_bound: float = 1e-9,
    ):
        super().__init__(likelihood_bound)
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.tail_mass = float(tail_mass)

        widths = (1,) + self.filters + (1,)
        # each layer's softplus(H) starts at 1 / (scale · width): the composition starts near a logistic of
        # width init_scale
        scale = self.init_scale ** (1 / (len(self.filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(self.filters) + 1):
            inverse_softplus = np.log(np.expm1(1 / scale / widths[k + 1]))
            self.matrices.append(nn.Parameter(torch.empty(channels, widths[k + 1], widths[k]).fill_(inverse_softplus)))
            self.biases.append(nn.Parameter(torch.empty(channels, widths[k + 1], 1).uniform_(-0.5, 0.5)))
            if k < len(self.filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[k + 1], 1)))

        self.quantiles = nn.Parameter(torch.empty(channels, 1, 3))
        self.quantiles.data = torch.Tensor([-self.init_scale, 0, self.init_scale]).repeat(channels, 1, 1)
        # the logits of tail_mass / 2, ½ and 1 − tail_mass / 2: the auxiliary loss drives the quantiles to them
        logit = np.log(2 / self.tail_mass - 1)
        self.register_buffer("target", torch.Tensor([-logit, 0, logit]))

    # ------------------------------------------------------------------ the density
    def medians(self) -> torch.Tensor:
        """Each channel's median, (C, 1, 1): ẑ's symbols are round(z − median)."""
        return self.quantiles[:, :, 1:2]

    def logits_cumulative(self, x: torch.Tensor, stop_gradient: bool = False) -> torch.Tensor:
        """The logits of each channel's cumulative at ``x`` (C, 1, N); ``stop_gradient``: no gradient to the
        density's parameters."""
        logits = x
        for k in range(len(self.filters) + 1):
            matrix, bias = self.matrices[k], self.biases[k]
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(F.softplus(matrix), logits)
            logits = logits + bias
            if k < len(self.filters):
                factor = self.factors[k].detach() if stop_gradient else self.factors[k]
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def likelihood(
        self, x: torch.Tensor, stop_gradient: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(likelihood of the unit bin around ``x``, the logits at its lower edge, at its upper edge); x is
        (C, 1, N)."""
        lower = self.logits_cumulative(x - 0.5, stop_gradient=stop_gradient)
        upper = self.logits_cumulative(x + 0.5, stop_gradient=stop_gradient)
        return torch.sigmoid(upper) - torch.sigmoid(lower), lower, upper

    def loss(self) -> torch.Tensor:
        """The auxiliary loss: how far the quantiles are from the tails and median of the density (it moves
        ``quantiles`` only)."""
        logits = self.logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def forward(self, x: torch.Tensor, training: Optional[bool] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(z with noise in training, rounded around the medians otherwise; its likelihoods), both shaped as
        ``x`` (B, C, …)."""
        if training is None:
            training = self.training
        order = (1, 0, *range(2, x.ndim))  # B × C × … → C × B × …, and back
        x = x.permute(*order).contiguous()
        shape = x.size()
        values = x.reshape(x.size(0), 1, -1)
        outputs = self._perturb(values, training, self.medians())
        likelihood = self._bounded(self.likelihood(outputs)[0])
        outputs = outputs.reshape(shape).permute(*order).contiguous()
        likelihood = likelihood.reshape(shape).permute(*order).contiguous()
        return outputs, likelihood

    # ------------------------------------------------------------------ the tables
    @torch.no_grad()
    def update(self, force: bool = False, update_quantiles: bool = False) -> bool:
        """Builds each channel's table over [lower tail, upper tail] around its median; returns whether it did
        (``force``: also when built already; ``update_quantiles``: solve the quantiles first)."""
        if self.is_updated and not force:
            return False
        if update_quantiles:
            self.update_quantiles()
        medians = self.quantiles[:, 0, 1]
        below = torch.clamp(torch.ceil(medians - self.quantiles[:, 0, 0]).int(), min=0)
        above = torch.clamp(torch.ceil(self.quantiles[:, 0, 2] - medians).int(), min=0)
        self._offset = -below
        start = medians - below
        pmf_length = above + below + 1
        samples = torch.arange(pmf_length.max().item(), device=start.device)
        samples = samples[None, :] + start[:, None, None]
        pmf, lower, upper = self.likelihood(samples, stop_gradient=True)
        # the escape bin: the mass below the first bin and above the last
        tail_mass = torch.sigmoid(lower[:, 0, :1]) + torch.sigmoid(-upper[:, 0, -1:])
        self._quantized_cdf = self._tables(pmf[:, 0, :], tail_mass, pmf_length)
        self._cdf_length = pmf_length + 2
        return True

    @torch.no_grad()
    def update_quantiles(self, search_radius: float = 1e5, rtol: float = 1e-4, atol: float = 1e-3) -> None:
        """Solves each quantile by bisection on the (increasing) cumulative logits, to ``rtol``/``atol``: more
        precise, and much faster, than minimising :meth:`loss`."""
        shape = (self.channels, 1, 1)
        device = self.quantiles.device
        for i in range(len(self.target)):
            low = torch.full(shape, -search_radius, device=device)
            high = torch.full(shape, search_radius, device=device)
            solved = _bisect(
                lambda v: self.logits_cumulative(v, stop_gradient=True), self.target[i], low, high, rtol, atol
            )
            self.quantiles[:, :, i] = solved[:, :, 0]


def _bisect(f, target, low, high, rtol, atol):
    """The x in [low, high] where the increasing ``f`` crosses ``target``, per element, to ``rtol``/``atol``; an
    element whose bracket misses the target ends at the nearer end."""
    low = torch.where(target <= f(high), low, high)
    high = torch.where(f(low) <= target, high, low)
    while not torch.isclose(low, high, rtol=rtol, atol=atol).all():
        mid = (low + high) / 2
        value = f(mid)
        low = torch.where(value <= target, mid, low)
        high = torch.where(value >= target, mid, high)
    return (low + high) / 2


class GaussianConditional(_TabulatedEntropyLayer):
    r"""The Gaussian conditional of y (module docstring): N(μ, σ²) convolved with U(−½, ½), σ ≥ ``scale_bound``.

    Args:
        scale_table: the σ of the coder's tables, increasing (``None``: set by :meth:`update_scale_table`).
        scale_bound: lower bound of σ.
        tail_mass: probability outside each table's range (its escape bin's share).
    """

    def __init__(
        self,
        scale_table: Optional[Union[List[float], Tuple[float, ...]]],
        scale_bound: float = 0.11,
        tail_mass: float = 1e-9,
        likelihood_bound: float = 1e-9,
    ):
        super().__init__(likelihood_bound)
        if not isinstance(scale_table, (type(None), list, tuple)):
            raise ValueError(f"scale_table must be a list, a tuple or None, not {type(scale_table).__name__}")
        if scale_table is not None and len(scale_table) < 1:
            raise ValueError("scale_table must not be empty")
        if scale_table and (list(scale_table) != sorted(scale_table) or any(s <= 0 for s in scale_table)):
            raise ValueError(f"scale_table must be increasing and positive, got {scale_table}")
        if scale_bound is None and scale_table:
            scale_bound = scale_table[0]
        if scale_bound is None or scale_bound <= 0:
            raise ValueError(f"scale_bound must be positive, got {scale_bound}")
        self.tail_mass = float(tail_mass)
        self.lower_bound_scale = LowerBound(scale_bound)
        self.register_buffer("scale_table", _as_scale_table(scale_table) if scale_table else torch.Tensor())
        self.register_buffer("scale_bound", torch.Tensor([float(scale_bound)]))

    @staticmethod
    def standardized_cumulative(x: torch.Tensor) -> torch.Tensor:
        """Φ(x), through erfc (precise in the lower tail)."""
        return 0.5 * torch.erfc(float(-(2**-0.5)) * x)

    def likelihood(self, x: torch.Tensor, scales: torch.Tensor, means: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The likelihood of the unit bin around ``x`` under N(means, scales²) (σ bounded below)."""
        values = x - means if means is not None else x
        scales = self.lower_bound_scale(scales)
        values = torch.abs(values)
        upper = self.standardized_cumulative((0.5 - values) / scales)
        lower = self.standardized_cumulative((-0.5 - values) / scales)
        return upper - lower

    def forward(
        self,
        x: torch.Tensor,
        scales: torch.Tensor,
        means: Optional[torch.Tensor] = None,
        training: Optional[bool] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(y with noise in training, rounded around ``means`` otherwise; its likelihoods)."""
        if training is None:
            training = self.training
        outputs = self._perturb(x, training, means)
        return outputs, self._bounded(self.likelihood(outputs, scales, means))

    # ------------------------------------------------------------------ the tables
    @torch.no_grad()
    def update_scale_table(self, scale_table: Union[torch.Tensor, Sequence[float]], force: bool = False) -> bool:
        """Sets the scale table and builds one table per σ; returns whether it did (``force``: also when built
        already)."""
        if self.is_updated and not force:
            return False
        self.scale_table = _as_scale_table(scale_table).to(self.scale_table.device)
        self.update()
        return True

    @torch.no_grad()
    def update(self) -> None:
        """Builds the tables of the current scale table: σ's table covers ±⌈σ · Φ⁻¹(1 − tail_mass / 2)⌉."""
        multiplier = -_standard_normal_quantile(self.tail_mass / 2)
        centre = torch.ceil(self.scale_table * multiplier).int()
        pmf_length = 2 * centre + 1
        distance = torch.abs(torch.arange(pmf_length.max().item(), device=centre.device).int() - centre[:, None])
        distance = distance.float()
        scales = self.scale_table.unsqueeze(1).float()
        upper = self.standardized_cumulative((0.5 - distance) / scales)
        lower = self.standardized_cumulative((-0.5 - distance) / scales)
        pmf = upper - lower
        tail_mass = 2 * lower[:, :1]  # both tails, symmetric
        self._quantized_cdf = self._tables(pmf, tail_mass, pmf_length)
        self._offset = -centre
        self._cdf_length = pmf_length + 2

    def build_indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """The table of each element (int32): that of the smallest tabulated σ at least its own σ (bounded),
        the last one above the table."""
        scales = self.lower_bound_scale(scales)
        indexes = torch.full(scales.size(), len(self.scale_table) - 1, dtype=torch.int32, device=scales.device)
        for s in self.scale_table[:-1]:
            # torch.le, not `<=`: the same bits, and no comparison operator for a coverage fuzzer to trace (atheris
            # kept every traced tensor comparison's result: memory grew ~20 KiB per input, benchmarks/results/fuzzing)
            indexes -= torch.le(scales, s).int()
        return indexes


def _as_scale_table(scale_table) -> torch.Tensor:
    """A scale table as a float32 tensor of its values (each taken as a Python float)."""
    return torch.Tensor(tuple(float(s) for s in scale_table))


def _standard_normal_quantile(q: float) -> float:
    """Φ⁻¹(q) in float64 (torch's ndtri, the Cephes algorithm SciPy's ``norm.ppf`` uses: the same double)."""
    return torch.special.ndtri(torch.tensor(q, dtype=torch.float64)).item()
