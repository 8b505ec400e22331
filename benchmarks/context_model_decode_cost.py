#!/usr/bin/env python
"""What the checkerboard context model costs the decoder (issue 30, item 5: at most +30 % on the fidelity decode).

For a layout (a saved pipeline, or a hub config built with random weights) it codes one image with its hyperprior
codec and with the same codec converted to the context model (``CompressionVAE.with_entropy_model``, g_ep's last
layer given random weights so that the second pass is not trivially P's), and times, best of ``--repeats``:
the entropy decoding (``SODECPipeline.entropy_decode``: z, P in fixed point, the context pass in fixed point, the
ANS decoding) and the whole fidelity decode (``decompress(decoder="fidelity")``: parsing, entropy decoding, D_a).
The image is a photo resized to ``--size`` (bicubic), so that the rate is a photo's.

    python benchmarks/context_model_decode_cost.py --model pretrained/sodec-small --size 768x512 --threads 1 \\
        --out benchmarks/results/context-model-decode-cost/sodec-small_768x512_1thread.json
"""

import argparse
import json
import time
from pathlib import Path

import PIL.Image
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.pipelines import build_pipeline_from_config


ROOT = Path(__file__).resolve().parent.parent


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(pipe, image, quality: int, repeats: int) -> dict:
    (stream,) = pipe.compress(image, quality=quality)
    parsed = pipe.parse_bitstreams(stream)[0]
    pipe.entropy_decode(parsed)  # the fixed-point weights and the coder's tables, built once per model
    return {
        "version": stream[2],
        "bytes": len(stream),
        "entropy_decode_ms": 1000 * best_time(lambda: pipe.entropy_decode(parsed), repeats),
        "fidelity_decode_ms": 1000 * best_time(lambda: pipe.decompress(stream, decoder="fidelity"), repeats),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a saved pipeline, or a hub config name (random weights)")
    parser.add_argument("--image", default=str(ROOT / "tests" / "assets" / "bsds_481x321.jpg"))
    parser.add_argument("--size", default="768x512", help="WxH the photo is resized to")
    parser.add_argument("--quality", type=int, default=None, help="default: the model's default level")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    image = PIL.Image.open(args.image).convert("RGB").resize((width, height), PIL.Image.BICUBIC)
    if Path(args.model, "model_index.json").is_file():
        pipe = SODECPipeline.from_pretrained(args.model)
    else:
        pipe = build_pipeline_from_config(args.model, seed=0)
    pipe.set_progress_bar_config(disable=True)
    hyperprior = pipe.compression_vae
    if hyperprior.config.entropy_model_type != "hyperprior":
        hyperprior = hyperprior.with_entropy_model("hyperprior")
    context = hyperprior.with_entropy_model("checkerboard")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in (context.entropy_parameters.conv3.weight, context.entropy_parameters.conv3.bias):
            tensor.copy_(0.01 * torch.randn(tensor.shape, generator=generator))
    results = {"model": args.model, "size": args.size, "threads": args.threads, "repeats": args.repeats}
    for name, codec in (("hyperprior", hyperprior), ("checkerboard", context)):
        pipe.register_modules(compression_vae=codec.eval())
        results[name] = measure(pipe, image, args.quality or codec.default_quality, args.repeats)
        print(name, results[name], flush=True)
    for key in ("entropy_decode_ms", "fidelity_decode_ms"):
        results[f"{key}_increase_percent"] = 100 * (results["checkerboard"][key] / results["hyperprior"][key] - 1)
    print({k: v for k, v in results.items() if k.endswith("percent")})
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
