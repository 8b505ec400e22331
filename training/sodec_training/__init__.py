"""Helpers of ``training/train_sodec.py``: data, the rate-annealing plan, losses, the discriminator,
the training wrapper of the pipeline and a JSON-lines tracker.

Importable when ``training/`` is on ``sys.path`` (as it is for ``python training/train_sodec.py`` and
``accelerate launch training/train_sodec.py``).
"""
