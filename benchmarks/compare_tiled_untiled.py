"""Tiled vs untiled decode of the same stream (and tiled vs untiled E on the same image).

    python benchmarks/compare_tiled_untiled.py MODEL_OR_CONFIG IMAGE OUT_JSON [OUT_PNG]

MODEL_OR_CONFIG: a saved pipeline (a folder with model_index.json, or a shipped name such as sodec-small),
or a config folder of hub_configs/ (random weights, seed 0). Untiled = the networks on the whole grid (what the pipeline did before tiling). Prints and writes max and
mean |tiled − untiled| for y (E), x̂_f (D_a), ŷ_0 (UNet step) and x̂ (VAE decoder), on the [0, 1] image scale.
"""

import json
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from sodec_pipeline import SODECPipeline
from sodec_pipeline.image_processing import pad_to_multiple, to_image_tensors
from sodec_pipeline.pipelines import build_pipeline_from_config
from sodec_pipeline.pipelines.pipeline_sodec import padded_size
from sodec_pipeline.shipped_models import resolve_model_path


def stats(a, b):
    d = (a.float() - b.float()).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "shape": list(a.shape)}


@torch.no_grad()
def main(config, image_path, out_json, out_png=None):
    torch.set_num_threads(2)
    model = resolve_model_path(config)
    if (Path(model) / "model_index.json").is_file():
        pipe = SODECPipeline.from_pretrained(model).to(torch.float32)
    else:
        pipe = build_pipeline_from_config(config, seed=0)
    pipe.set_progress_bar_config(disable=True)
    image = PIL.Image.open(image_path).convert("RGB")
    x = pad_to_multiple(to_image_tensors(image)[0][None], 64)
    from fractions import Fraction

    from sodec_pipeline.pipelines.tiling import run_tiled

    y_untiled = pipe.compression_vae.encode(x)
    y_tiled = run_tiled(lambda t, _: pipe.compression_vae.encode(t), x, pipe.tile_specs.analysis, Fraction(1, 16))
    (stream,) = pipe.compress(image)
    parsed = pipe.parse_bitstreams(stream)[0]
    y_hat, z_hat = pipe.entropy_decode(parsed)
    x_f_untiled = pipe.fidelity_guidance.decode(y_hat).float()
    x_f_tiled = pipe.decode_fidelity(y_hat)
    noisy = pipe.synthesize_latents(y_hat, z_hat)
    guidance = pipe.encode_guidance(x_f_tiled)
    latents_untiled = pipe.denoise(noisy, guidance)
    latents_tiled = pipe.denoise_tiled(noisy, guidance)
    sf = pipe.vae.config.scaling_factor
    image_untiled = (pipe.vae.decode(latents_untiled / sf).sample.float() + 1) / 2
    image_tiled = pipe.decode_vae(latents_tiled)
    h, w = parsed.height, parsed.width
    result = {
        "config": config, "image": image_path, "size": [h, w], "padded": list(padded_size(h, w)),
        "tile_specs": {k: vars(v) for k, v in vars(pipe.tile_specs).items()},
        "E_y": stats(y_tiled, y_untiled),
        "D_a_x_f": stats(x_f_tiled.clamp(0, 1), x_f_untiled.clamp(0, 1)),
        "unet_latents_same_guidance": stats(latents_tiled, latents_untiled),
        "vae_image_from_untiled_latents": stats(pipe.decode_vae(latents_untiled).clamp(0, 1), image_untiled.clamp(0, 1)),
        "decode_end_to_end": stats(pipe.decompress(stream, output_type="pt").images[0],
                                   image_untiled.clamp(0, 1)[0, :, :h, :w]),
    }  # fmt: skip
    original = x[0, :, :h, :w]
    for name, decoded in (("tiled", image_tiled), ("untiled", image_untiled)):  # 8-bit, as users get them
        eight_bit = (decoded.clamp(0, 1)[0, :, :h, :w] * 255).round() / 255
        result[f"psnr_{name}_db"] = float(-10 * torch.log10(((eight_bit - original) ** 2).mean()))
    print(json.dumps(result, indent=2))
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    if out_png:
        pair = torch.cat([image_tiled.clamp(0, 1)[0, :, :h, :w], image_untiled.clamp(0, 1)[0, :, :h, :w]], dim=2)
        PIL.Image.fromarray((pair.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(out_png)


if __name__ == "__main__":
    main(*sys.argv[1:])
