"""The codec: everything between E's latent and the bytes of a stream, apart from the networks.

- ``bitstream.py``: the container, one image per stream (docs/bitstream.md); ``stream_versions.py``: its versions,
  one per entropy model.
- ``errors.py``: the errors of coding and decoding a stream (``BitstreamError``, ``PixelBudgetError``,
  ``SizeBudgetError``); ``models/`` imports them from here, never the container.
- ``stream_checks.py``: the two check values a stream carries, the model's fingerprint and the entropy check.
- ``quality_levels.py``: the quality levels (quantisation steps Δ) and their validation.
- ``entropy_models.py``: the entropy models ``CompressionVAE`` delegates its coding to (the mean-scale
  hyperprior, and the checkerboard context model over it: training likelihoods, CDF tables, compress and
  decompress).
- ``entropy_layers.py``: the factorized prior (``EntropyBottleneck``) and the Gaussian conditional
  (``GaussianConditional``) of Ballé et al., compressai's layers of those names bit for bit (keys, initialisation,
  likelihoods, tables), without compressai; ``cdf_tables.py`` makes their quantised CDF tables, ``ops.py`` holds
  ``quantize_ste`` and ``LowerBound``.
- ``entropy_coding.py``: the coding of integer symbols with the CDF tables, by constriction's ANS coder.
- ``fixed_point_hyper_synthesis.py``: P in exact fixed point, so that every machine derives the same entropy
  parameters; ``fixed_point_context.py``: the checkerboard context model's second pass (g_cm, g_ep) likewise.

The container, the errors, the checks and the quality levels import no torch, so that the command line can parse
streams and check options before it loads anything; nothing is imported here.
"""
