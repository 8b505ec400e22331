"""The errors of coding and decoding a SODEC stream: the one module that ``models/`` and the entropy coding import
for them (the container, :mod:`sodec_pipeline.codec.bitstream`, raises them too)."""


class BitstreamError(ValueError):
    """A SODEC bitstream is malformed, truncated, corrupted, from another model, or announces an image
    beyond the documented limits."""


class PixelBudgetError(BitstreamError):
    """A stream announces more pixels than the decoder's budget (``max_pixels``) allows."""


class SizeBudgetError(ValueError):
    """An image's smallest stream (quality 1) is larger than the size budget (``max_bytes``, ``target_bpp``) it
    was asked to fit in."""
