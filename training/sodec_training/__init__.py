"""What ``training/train_sodec.py`` runs besides its arguments and loop: the stages and the rate-annealing plan,
data, losses, the discriminator, the pipeline to train and its training wrapper, the training step, checkpoints,
validation, the release and its model card, and the trackers (training/README.md lists the modules).

Importable when ``training/`` is on ``sys.path`` (as it is for ``python training/train_sodec.py`` and
``accelerate launch training/train_sodec.py``).
"""
