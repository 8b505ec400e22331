#!/usr/bin/env python
"""Decode time of the shipped sodec-small with contiguous and channels-last decoders (D_a, UNet, VAE), alternating
in one process on one thread, and the largest pixel difference between the two:

    taskset -c 1 python benchmarks/channels_last_decode.py kodak/kodim23.png --rounds 3
"""

import argparse
import time

import PIL.Image
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.pipelines.pipeline_sodec import DECODERS


def set_memory_format(pipe, channels_last: bool) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for module in (pipe.fidelity_guidance, pipe.unet, pipe.vae):
        module.to(memory_format=fmt)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = SODECPipeline.from_pretrained("sodec-small")
    (stream,) = pipe.compress(PIL.Image.open(args.image).convert("RGB"))
    reference = {d: pipe.decompress(stream, decoder=d, output_type="pt").images for d in DECODERS}
    times, differences = {}, {}
    for _ in range(args.rounds):
        for channels_last in (False, True):
            set_memory_format(pipe, channels_last)
            for decoder in DECODERS:
                start = time.perf_counter()
                out = pipe.decompress(stream, decoder=decoder, output_type="pt").images
                times.setdefault((channels_last, decoder), []).append(time.perf_counter() - start)
                differences[(channels_last, decoder)] = (out - reference[decoder]).abs().max().item()
    for decoder in DECODERS:
        plain, fast = min(times[(False, decoder)]), min(times[(True, decoder)])
        print(
            f"{decoder}: contiguous {plain:.3f} s, channels-last {fast:.3f} s (best of {args.rounds}; "
            f"{fast / plain:.2f}×), largest pixel difference {differences[(True, decoder)]:.1e}"
        )


if __name__ == "__main__":
    main()
