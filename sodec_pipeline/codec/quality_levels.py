"""Quality levels of a codec: its quantisation steps Δ, one per level, and its default level.

Pure Python (no torch), so that the command line can check ``--quality`` against a model's config before it
loads anything; ``CompressionVAE`` holds a :class:`QualityLevels` built by the same functions.
"""

import math
import operator
from typing import Optional, Sequence, Tuple


#: Most quality levels a model may have (a stream's level is one byte).
MAX_QUALITY_LEVELS = 255


def check_quantization_steps(steps: Optional[Sequence[float]]) -> Tuple[float, ...]:
    """The steps as floats; ``(1.0,)`` (one level, the single-rate codec) for ``None``. ``ValueError`` unless
    there are 1 … 255 of them, positive and decreasing (level 1 is the coarsest: the smallest streams)."""
    if steps is None:
        return (1.0,)
    steps = tuple(float(s) for s in steps)
    if not 1 <= len(steps) <= MAX_QUALITY_LEVELS:
        raise ValueError(f"quantization_steps needs 1 to {MAX_QUALITY_LEVELS} levels, got {len(steps)}")
    if not all(math.isfinite(s) and s > 0 for s in steps) or any(a <= b for a, b in zip(steps, steps[1:])):
        raise ValueError(
            f"quantization_steps must be positive and decreasing (level 1 is the coarsest), got {list(steps)}"
        )
    return steps


def resolve_default_quality(steps: Sequence[float], default_quality: Optional[int]) -> int:
    """The default level: ``default_quality`` when given (``ValueError`` outside 1 … len(steps)), else the
    level whose Δ is 1, else the middle one."""
    if default_quality is None:
        return steps.index(1.0) + 1 if 1.0 in steps else (len(steps) + 1) // 2
    if not 1 <= int(default_quality) <= len(steps):
        raise ValueError(f"default_quality must be a level from 1 to {len(steps)}, got {default_quality}")
    return int(default_quality)


def quality_levels_of_config(config: dict) -> Tuple[int, int]:
    """(number of levels, default level) of a ``CompressionVAE`` config (a dict, as in its config.json)."""
    steps = check_quantization_steps(config.get("quantization_steps"))
    return len(steps), resolve_default_quality(steps, config.get("default_quality"))


class QualityLevels:
    """The levels of one codec: ``steps[q - 1]`` is Δ of level q (1-based), ``default`` the level used when none
    is asked for. ``steps=None`` is one level, Δ = 1 (the single-rate codec)."""

    def __init__(self, steps: Optional[Sequence[float]] = None, default: Optional[int] = None):
        self.steps = check_quantization_steps(steps)
        self.default = resolve_default_quality(self.steps, default)

    def __len__(self) -> int:
        return len(self.steps)

    def check(self, quality: Optional[int]) -> int:
        """The level as an int, :attr:`default` for ``None``; ``ValueError`` saying the range otherwise."""
        if quality is None:
            return self.default
        try:
            level = operator.index(quality)
        except TypeError:
            level = None
        if level is None or isinstance(quality, bool):
            raise ValueError(f"quality must be an integer level from 1 to {len(self)}, got {quality!r}")
        if not 1 <= level <= len(self):
            raise ValueError(f"quality must be a level from 1 to {len(self)}, got {level}")
        return level

    def step(self, level: int) -> float:
        """Δ of a level that :meth:`check` returned."""
        return self.steps[level - 1]
