#!/usr/bin/env python
"""Seconds per optimisation step of train_sodec.py's model for a layout, in fp32 and under bf16 autocast.

    python benchmarks/training_throughput.py --config sodec-small --resolution 128 --batch-size 8

Stage 1 runs the codec and D_a (x̂_f); stage 3 the whole decode with everything trainable (the UNet, the
VAE decoder and the ViT too, as for a layout without pretrained parts). Random weights and random images:
the cost of a step does not depend on them. The first step of each setting is a warm-up and not counted.
"""

import argparse
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))

from sodec_training.losses import DistortionLoss  # noqa: E402
from sodec_training.modeling import SODECTrainingModel  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="sodec-small")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="steps per setting, the first one not counted")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sodec_pipeline.pipelines import build_pipeline_from_config

    pipe = build_pipeline_from_config(args.config, seed=0)
    for name in ("unet", "vae", "image_encoder"):
        getattr(pipe, name).requires_grad_(True)
    model = SODECTrainingModel(pipe, DistortionLoss(), "full", train_vae_decoder=True, train_image_encoder=True)
    model.set_train_mode()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    x = torch.rand(args.batch_size, 3, args.resolution, args.resolution, generator=torch.Generator().manual_seed(0))
    print(f"{args.config}: {args.resolution}² crops, batch {args.batch_size}, {torch.get_num_threads()} threads")
    for stage in (1, 3):
        for bf16 in (False, True):
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = model(x, stage, rate_weight=0.01, alignment_weight=1.0)
                out["loss"].backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - start)
            print(
                f"stage {stage} {'bf16 autocast' if bf16 else 'fp32'}: {min(times[1:]):.2f} s/step (best of {len(times) - 1})"
            )


if __name__ == "__main__":
    main()
