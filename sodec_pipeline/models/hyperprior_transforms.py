"""Hyperprior transforms of SODEC: hyper-analysis H_a and the mean and scale hyper-synthesis P."""

from torch import nn

from .layers import ThreeConvTransform


class HyperAnalysisTransform(ThreeConvTransform):
    r"""H_a: latent ``y`` (B, C, h, w) → hyper-latent ``z`` (B, N, h/4, w/4).

    A 3×3 convolution then two stride-2 5×5 convolutions with ReLU between them (Ballé et al. 2018,
    HiFiC's ``HyperpriorAnalysis``: ``conv1`` … ``conv3``, same weight layout). HiFiC pads the strided
    convolutions by reflection, which needs feature maps larger than the padding: SODEC pads by edge
    replication (``padding_mode="replicate"``) so that a 64×64 input (a 4×4 latent) works too.
    """

    def __init__(self, latent_channels: int = 220, hyper_channels: int = 320, padding_mode: str = "replicate"):
        super().__init__()
        self.conv1 = nn.Conv2d(latent_channels, hyper_channels, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(hyper_channels, hyper_channels, 5, stride=2, padding=2, padding_mode=padding_mode)
        self.conv3 = nn.Conv2d(hyper_channels, hyper_channels, 5, stride=2, padding=2, padding_mode=padding_mode)


class HyperSynthesisTransform(ThreeConvTransform):
    r"""P (one head): hyper-latent ``ẑ`` (B, N, h/4, w/4) → a per-element parameter of ``y`` (B, C, h, w).

    SODEC uses two of them, one for the means μ and one for the scales σ of the Gaussian conditional
    (HiFiC's ``synthesis_mu`` and ``synthesis_std``). Two stride-2 5×5 transposed convolutions and a
    3×3 one; the scales are lower-bounded by the entropy model, not here.
    """

    def __init__(self, latent_channels: int = 220, hyper_channels: int = 320):
        super().__init__()
        kwargs = dict(kernel_size=5, stride=2, padding=2, output_padding=1)
        self.conv1 = nn.ConvTranspose2d(hyper_channels, hyper_channels, **kwargs)
        self.conv2 = nn.ConvTranspose2d(hyper_channels, hyper_channels, **kwargs)
        self.conv3 = nn.ConvTranspose2d(hyper_channels, latent_channels, kernel_size=3, stride=1, padding=1)
