"""A tiny HiFiC model as Justin-Tan/high-fidelity-generative-compression builds and saves it, for the conversion
tests (tests/test_hific_conversion.py): the port's module names, parameter layouts and forward semantics
(unbiased channel variance, reflect-padded hyper-analysis, a tanh factor on every density layer, tanh output with
-norm), at the sizes of hub_configs/sodec-tiny, and a checkpoint written as the port's ``save_model`` writes it."""

import torch
from torch import nn
from torch.nn import functional as F


# Sizes of hub_configs/sodec-tiny (the port hardcodes HiFiC's sizes; the key names do not depend on them).
ENCODER_FILTERS = (4, 8, 8, 8, 8)
GENERATOR_FILTERS = (16, 8, 8, 8, 4)
LATENT, HYPER, RESBLOCKS = 8, 8, 1


class PortChannelNorm(nn.Module):
    """HiFiC port's ChannelNorm2D: moments over channels, unbiased variance, gamma/beta (1, C, 1, 1)."""

    def __init__(self, c, eps=1e-3):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        mu, var = x.mean(1, keepdim=True), x.var(1, keepdim=True)
        return self.gamma * (x - mu) * torch.rsqrt(var + self.eps) + self.beta


class PortEncoder(nn.Module):
    def __init__(self, filters=ENCODER_FILTERS, C=LATENT):
        super().__init__()
        self.conv_block1 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, filters[0], 7), PortChannelNorm(filters[0]), nn.ReLU()
        )
        for i in range(1, 5):
            self.add_module(
                f"conv_block{i + 1}",
                nn.Sequential(
                    nn.ReflectionPad2d((0, 1, 1, 0)),
                    nn.Conv2d(filters[i - 1], filters[i], 3, stride=2),
                    PortChannelNorm(filters[i]),
                    nn.ReLU(),
                ),
            )
        self.conv_block_out = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(filters[4], C, 3))

    def forward(self, x):
        for i in range(1, 6):
            x = getattr(self, f"conv_block{i}")(x)
        return self.conv_block_out(x)


class PortHyperAnalysis(nn.Module):
    def __init__(self, C=LATENT, N=HYPER):
        super().__init__()
        self.conv1 = nn.Conv2d(C, N, 3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(N, N, 5, stride=2, padding=2, padding_mode="reflect")
        self.conv3 = nn.Conv2d(N, N, 5, stride=2, padding=2, padding_mode="reflect")

    def forward(self, x):
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


class PortHyperSynthesis(nn.Module):
    def __init__(self, C=LATENT, N=HYPER):
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(N, N, 5, stride=2, padding=2, output_padding=1)
        self.conv2 = nn.ConvTranspose2d(N, N, 5, stride=2, padding=2, output_padding=1)
        self.conv3 = nn.ConvTranspose2d(N, C, 3, stride=1, padding=1)

    def forward(self, x):
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))


class PortDensity(nn.Module):
    """HiFiC port's HyperpriorDensity: H_k (C, f_{k+1}, f_k), a_k and b_k (C, f_{k+1}, 1), tanh factor on every layer."""

    def __init__(self, n_channels=HYPER, filters=(3, 3, 3)):
        super().__init__()
        self.filters = filters
        f = (1,) + tuple(filters) + (1,)
        for k in range(len(filters) + 1):
            self.register_parameter(f"H_{k}", nn.Parameter(torch.randn(n_channels, f[k + 1], f[k]) * 0.5))
            self.register_parameter(f"a_{k}", nn.Parameter(torch.randn(n_channels, f[k + 1], 1)))
            self.register_parameter(f"b_{k}", nn.Parameter(torch.rand(n_channels, f[k + 1], 1) - 0.5))

    def cdf_logits(self, x):
        for k in range(len(self.filters) + 1):
            x = torch.bmm(F.softplus(getattr(self, f"H_{k}")), x) + getattr(self, f"b_{k}")
            x = x + torch.tanh(getattr(self, f"a_{k}")) * torch.tanh(x)
        return x

    def likelihood(self, z):
        c = z.shape[1]
        v = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
        upper, lower = self.cdf_logits(v + 0.5), self.cdf_logits(v - 0.5)
        sign = -torch.sign(upper + lower)
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return lik.reshape(c, z.shape[0], *z.shape[2:]).permute(1, 0, 2, 3)


class PortHyperprior(nn.Module):
    def __init__(self):
        super().__init__()
        self.analysis_net = PortHyperAnalysis()
        self.synthesis_mu = PortHyperSynthesis()
        self.synthesis_std = PortHyperSynthesis()
        self.hyperlatent_likelihood = PortDensity()


class PortResidualBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(c, c, 3)
        self.conv2 = nn.Conv2d(c, c, 3)
        self.norm1 = PortChannelNorm(c)
        self.norm2 = PortChannelNorm(c)

    def forward(self, x):
        res = F.relu(self.norm1(self.conv1(self.pad(x))))
        return self.norm2(self.conv2(self.pad(res))) + x


class PortGenerator(nn.Module):
    def __init__(self, C=LATENT, filters=GENERATOR_FILTERS, n_residual_blocks=RESBLOCKS):
        super().__init__()
        self.n_residual_blocks = n_residual_blocks
        self.conv_block_init = nn.Sequential(
            PortChannelNorm(C), nn.ReflectionPad2d(1), nn.Conv2d(C, filters[0], 3), PortChannelNorm(filters[0])
        )
        for m in range(n_residual_blocks):
            self.add_module(f"resblock_{m}", PortResidualBlock(filters[0]))
        for i in range(1, 5):
            self.add_module(
                f"upconv_block{i}",
                nn.Sequential(
                    nn.ConvTranspose2d(filters[i - 1], filters[i], 3, stride=2, padding=1, output_padding=1),
                    PortChannelNorm(filters[i]),
                    nn.ReLU(),
                ),
            )
        self.conv_block_out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(filters[4], 3, 7))

    def forward(self, y):
        head = self.conv_block_init(y)
        x = head
        for m in range(self.n_residual_blocks):
            x = getattr(self, f"resblock_{m}")(x)
        x = x + head
        for i in range(1, 5):
            x = getattr(self, f"upconv_block{i}")(x)
        return self.conv_block_out(x)


class PortDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.context_conv = nn.Conv2d(LATENT, 4, 3, padding=1)
        self.conv_out = nn.Conv2d(4, 1, 1)


class PortModel(nn.Module):
    """The port's Model: attributes Encoder, Hyperprior, Generator (and Discriminator for GAN models)."""

    def __init__(self, gan=True):
        super().__init__()
        self.Encoder = PortEncoder()
        self.Generator = PortGenerator()
        self.Hyperprior = PortHyperprior()
        self.Discriminator = PortDiscriminator() if gan else None


def make_port_model(seed=0, gan=True):
    torch.manual_seed(seed)
    model = PortModel(gan=gan)
    with torch.no_grad():  # channel-norm affine parameters away from their (1, 0) initialisation
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("beta"):
                p.copy_(0.1 * torch.randn_like(p))
    return model.eval()


def port_args(**overrides):
    args = dict(
        name="hific_tiny",
        model_type="compression_gan",
        model_mode="training",
        regime="low",
        latent_channels=LATENT,
        n_residual_blocks=RESBLOCKS,
        use_channel_norm=True,
        likelihood_type="gaussian",
        normalize_input_image=False,
        sample_noise=False,
        noise_dim=32,
        use_latent_mixture_model=False,
        image_dims=(3, 256, 256),
        batch_size=8,
        lambda_schedule=dict(vals=[2.0, 1.0], steps=[50000]),
        learning_rate=1e-4,
        multigpu=False,
        timestamp="2020_09_01_12:00",
    )
    args.update(overrides)
    return args


def save_port_checkpoint(model, path, **arg_overrides):
    """As the port's ``src/helpers/utils.save_model`` writes it."""
    amort = torch.optim.Adam(
        [
            p
            for n, p in model.named_parameters()
            if not n.startswith(("Hyperprior.hyperlatent_likelihood", "Discriminator"))
        ],
        lr=1e-4,
    )
    hyper = torch.optim.Adam(model.Hyperprior.hyperlatent_likelihood.parameters(), lr=1e-4)
    checkpoint = {
        "model_state_dict": model.state_dict(),
        "compression_optimizer_state_dict": amort.state_dict(),
        "hyperprior_optimizer_state_dict": hyper.state_dict(),
        "epoch": 3,
        "steps": 12345,
        "args": port_args(**arg_overrides),
    }
    if model.Discriminator is not None:
        checkpoint["discriminator_state_dict"] = model.Discriminator.state_dict()
    torch.save(checkpoint, path)
    return path
