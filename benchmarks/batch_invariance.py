"""Why a batched decode is not bit-identical to one image at a time on CPU (benchmarks/README.md, Batching).

    PYTHONPATH=. python benchmarks/batch_invariance.py

1. One convolution, batch of 8 against 8 single calls, with PyTorch's oneDNN on (its default) and off (its
   own kernels), and the time of the batched call.
2. The tiny layout's D_a and VAE decoder (random weights, seed 0) on 4 inputs at once against the first
   alone: the first leaf module whose output differs, with the default kernels, and again with every small
   convolution (≤ 20480 input elements per sample, kernel ≤ 3×3, one group: those PyTorch runs outside
   oneDNN when given a single sample) kept outside oneDNN for batches too.
One thread, so that threading is not a cause.
"""

import time

import torch
from torch import nn

from sodec_pipeline.pipelines import build_pipeline_from_config


SMALL_INPUT = 20480  # PyTorch's ConvParams::use_mkldnn: a single input up to this size runs its own kernel


def convolutions():
    torch.manual_seed(0)
    for cin, cout, side in [(4, 8, 64), (4, 32, 32), (64, 64, 16), (32, 32, 32), (128, 128, 64)]:
        conv = nn.Conv2d(cin, cout, 3, padding=1)
        x = torch.randn(8, cin, side, side)
        for onednn in (True, False):
            with torch.no_grad(), torch.backends.mkldnn.flags(enabled=onednn):
                start = time.perf_counter()
                batched = conv(x)
                seconds = time.perf_counter() - start
                single = torch.cat([conv(x[i : i + 1]) for i in range(8)])
            print(f"conv {cin}→{cout} on {side}², oneDNN {'on ' if onednn else 'off'}: "
                  f"max |batch 8 − single| {(batched - single).abs().max().item():.2e}, batched call {seconds:.4f} s")  # fmt: skip


class SmallConvolutionsOutsideOneDNN:
    """Global module hooks: a small convolution runs outside oneDNN whatever the batch size."""

    def __enter__(self):
        self.saved = {}

        def before(module, args):
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and args[0].shape[0] > 1:
                small = args[0][0].numel() <= SMALL_INPUT and max(module.kernel_size) <= 3 and module.groups == 1
                if small:
                    self.saved[id(module)] = torch._C._get_mkldnn_enabled()
                    torch._C._set_mkldnn_enabled(False)

        def after(module, args, output):
            if id(module) in self.saved:
                torch._C._set_mkldnn_enabled(self.saved.pop(id(module)))

        self.hooks = [nn.modules.module.register_module_forward_pre_hook(before),
                      nn.modules.module.register_module_forward_hook(after)]  # fmt: skip
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


def first_differing_leaf(model, x):
    """Runs ``model`` on x[:1] and on x; the first leaf (in module order) whose output for sample 0 differs."""
    outputs, hooks = {}, []
    for name, module in model.named_modules():
        if not list(module.children()):
            hooks.append(
                module.register_forward_hook(
                    lambda m, a, o, n=name: outputs.setdefault(n, []).append(o.detach().clone())
                )
            )
    with torch.no_grad():
        model(x[:1])
        calls = {name: len(v) for name, v in outputs.items()}
        model(x)
    for hook in hooks:
        hook.remove()
    modules = dict(model.named_modules())
    for name, values in outputs.items():
        for a, b in zip(values[: calls[name]], values[calls[name] :]):
            difference = (a[0] - b[0]).abs().max().item()
            if difference > 0:
                return f"{name} ({type(modules[name]).__name__}, output {tuple(a.shape)}): {difference:.2e}"
    return "none: every leaf is bit-identical"


def networks():
    pipe = build_pipeline_from_config("hub_configs/sodec-tiny", seed=0)
    torch.manual_seed(0)
    inputs = {
        "D_a": (
            pipe.fidelity_guidance.fidelity_decoder,
            torch.randn(4, pipe.fidelity_guidance.config.latent_channels, 16, 16),
        ),
        "VAE decoder": (pipe.vae.decoder, torch.randn(4, pipe.vae.config.latent_channels, 32, 32)),
    }
    for name, (model, x) in inputs.items():
        print(f"{name}, default kernels: first differing leaf {first_differing_leaf(model, x)}")
        with SmallConvolutionsOutsideOneDNN():
            print(f"{name}, small convolutions outside oneDNN: first differing leaf {first_differing_leaf(model, x)}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread")
    convolutions()
    networks()
