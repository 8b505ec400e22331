"""SHA-256 of the streams and decoded pixels of the test assets: the check that a refactoring of the codec
changes no bit of what it writes or decodes.

For every photo in ``tests/assets`` (``bsds_*``) it compresses

- with the shipped ``pretrained/sodec-small`` at levels 1, 5 and 9,
- with the tiny random pipeline the tests build (``hub_configs/sodec-tiny``, seed 0, saved and loaded as
  ``tests/conftest.py`` does) at each of its levels, and with the same weights under
  ``entropy_parameter_arithmetic="float32"`` at its default level,

and records the SHA-256 of each stream and of the float32 pixels of its fidelity and diffusion decodes
(``output_type="np"``). It also hashes the outputs of the tiny codec's training pass (``CompressionVAE.forward``,
eval and train mode, Δ = 1 and a per-image Δ), which go through the same entropy models.

    PYTHONPATH=$PWD python benchmarks/stream_pixel_hashes.py --out before.json
    PYTHONPATH=$PWD python benchmarks/stream_pixel_hashes.py --out after.json --compare before.json

``--compare`` exits with status 1 and lists the entries that differ.
"""

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch


ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "tests" / "assets"
SMALL_LEVELS = (1, 5, 9)


def sha256(data) -> str:
    if isinstance(data, torch.Tensor):
        data = data.detach().to("cpu").contiguous().numpy()
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes()
    return hashlib.sha256(bytes(data)).hexdigest()


def photos():
    return {p.name: PIL.Image.open(p).convert("RGB") for p in sorted(ASSETS.glob("bsds_*"))}


def pipeline_hashes(pipe, images, levels) -> dict:
    """{image: {level: {stream, fidelity, diffusion, bytes}}} for one pipeline."""
    out = {"fingerprint": pipe.compression_vae.fingerprint().hex()}
    for name, image in images.items():
        for level in levels:
            stream = pipe.compress(image, quality=level)[0]
            fidelity = pipe.decompress(stream, output_type="np", decoder="fidelity").images
            diffusion = pipe.decompress(stream, output_type="np").images
            out[f"{name}@q{level}"] = {
                "bytes": len(stream),
                "stream": sha256(stream),
                "fidelity": sha256(fidelity.astype(np.float32)),
                "diffusion": sha256(diffusion.astype(np.float32)),
            }
    return out


def forward_hashes(codec, image) -> dict:
    """Hashes of ``CompressionVAE.forward`` on one padded photo, eval and train mode (seeded noise)."""
    from sodec_pipeline.image_processing import pad_to_multiple

    x = pad_to_multiple(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0, 64)
    x = torch.cat([x, x.flip(-1)])
    out = {}
    for mode in ("eval", "train"):
        codec.train(mode == "train")
        for label, step in (("step1", None), ("steps", torch.tensor([2.0, 0.5]))):
            torch.manual_seed(0)
            with torch.no_grad():
                result = codec(x, quantization_step=step)
            out[f"{mode}_{label}"] = {k: sha256(getattr(result, k)) for k in ("y_hat", "z_hat", "latents", "bpp")}
            out[f"{mode}_{label}"]["likelihoods"] = sha256(
                torch.cat([result.y_likelihoods.flatten(), result.z_likelihoods.flatten()])
            )
    codec.eval()
    return out


def tiny_pipelines(folder: Path):
    from sodec_pipeline import CompressionVAE, SODECPipeline
    from sodec_pipeline.pipelines import build_pipeline_from_config

    build_pipeline_from_config(ROOT / "hub_configs" / "sodec-tiny", seed=0).save_pretrained(folder)
    pipe = SODECPipeline.from_pretrained(folder)
    codec = pipe.compression_vae
    config = {k: v for k, v in codec.config.items() if not k.startswith("_")}
    float_codec = CompressionVAE.from_config({**config, "entropy_parameter_arithmetic": "float32"})
    float_codec.load_state_dict(codec.state_dict())
    float_pipe = SODECPipeline.from_pretrained(folder, compression_vae=float_codec.eval())
    return pipe, float_pipe


def measure() -> dict:
    from sodec_pipeline import SODECPipeline

    torch.set_num_threads(1)
    images = photos()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny, tiny_float = tiny_pipelines(Path(tmp) / "tiny")
        for pipe in (tiny, tiny_float):
            pipe.set_progress_bar_config(disable=True)
        results["sodec-tiny"] = pipeline_hashes(tiny, images, range(1, tiny.compression_vae.num_qualities + 1))
        results["sodec-tiny-float32-P"] = pipeline_hashes(
            tiny_float, images, [tiny_float.compression_vae.default_quality]
        )
        results["sodec-tiny-forward"] = forward_hashes(tiny.compression_vae, images["bsds_crop0_96x64.png"])
    small = SODECPipeline.from_pretrained(ROOT / "pretrained" / "sodec-small")
    small.set_progress_bar_config(disable=True)
    results["sodec-small"] = pipeline_hashes(small, images, SMALL_LEVELS)
    return results


def differences(before, after, path="") -> list:
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            d
            for k in sorted(set(before) | set(after))
            for d in differences(before.get(k), after.get(k), f"{path}/{k}")
        ]
    return [] if before == after else [f"{path}: {before} -> {after}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write the hashes to")
    parser.add_argument("--compare", type=Path, help="an earlier run's JSON: exit 1 unless every hash is the same")
    args = parser.parse_args(argv)
    results = measure()
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if args.compare is None:
        return 0
    diff = differences(json.loads(args.compare.read_text()), results)
    print("\n".join(diff) if diff else f"identical to {args.compare}: {sum(1 for _ in _leaves(results))} hashes")
    return 1 if diff else 0


def _leaves(tree):
    for value in tree.values():
        yield from _leaves(value) if isinstance(value, dict) else [value]


if __name__ == "__main__":
    sys.exit(main())
