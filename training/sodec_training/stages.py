"""The training stages of docs/design.md §4, as ``--stage`` names them.

0. :attr:`Stage.AUTOENCODER`: the latent autoencoder (the VAE's encoder and decoder) alone, before any diffusion
   training (SD's VAE is trained before SD);
1. :attr:`Stage.CODEC`: codec (E, H_a, P, entropy models) and D_a at high rate;
2. :attr:`Stage.DECODER`: the decoder side (H_s, T_s, D_a, F_p, UNet), the codec frozen;
3. :attr:`Stage.JOINT`: everything jointly, λ annealed to the target rate, plus the alignment loss;
4. :attr:`Stage.ADVERSARIAL`: stage 3 plus the discriminator's GAN loss (optional).

``--stage all`` runs stages 1, 2, 3 (and 4 when ``--stage_steps`` has a fourth count).
"""

import enum
from typing import Optional, Sequence, Tuple


class Stage(enum.IntEnum):
    """A training stage; its value is its number on the command line and in the logs (``train/stage``)."""

    AUTOENCODER = 0
    CODEC = 1
    DECODER = 2
    JOINT = 3
    ADVERSARIAL = 4


#: The stages that train the diffusion decode, where ``--realism_control`` gives each image a realism.
REALISM_STAGES = (Stage.DECODER, Stage.JOINT, Stage.ADVERSARIAL)

#: ``--stage``: one stage by its number, or "all" (stages 1, 2, 3 and optionally 4 with ``--stage_steps``).
ALL_STAGES = "all"
STAGE_CHOICES = tuple(str(stage.value) for stage in Stage) + (ALL_STAGES,)


def stage_sequence(choice: str, stage_steps: Optional[Sequence[int]] = None) -> Tuple[Stage, ...]:
    """The stages that ``--stage choice`` runs, in order: that one stage, or for "all" stages 1, 2, 3 (and 4) —
    one per count of ``stage_steps``."""
    if choice == ALL_STAGES:
        return tuple(Stage(i + 1) for i in range(len(stage_steps)))
    return (Stage(int(choice)),)
