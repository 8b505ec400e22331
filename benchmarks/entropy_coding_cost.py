"""What bitstream version 2 costs against version 1, per Kodak image: time and bytes.

Version 1 coded with compressai's rANS coder (``EntropyBottleneck.compress`` / ``GaussianConditional.compress``
of compressai's layers, given the model's parameters and tables: compressai is needed here, the ``test`` extra)
and CDF indexes from P's float32 output; version 2 codes with constriction's ANS coder and derives (μ, σ) from
P in exact fixed point, and adds a 2-byte entropy check. Both are measured here on the same model and images,
so the differences are the format's:

- ``p_float_ms`` / ``p_fixed_ms``: P (both heads) on ẑ, float32 vs fixed point (weights quantised once, cached);
- ``encode_v1_ms`` / ``decode_v1_ms`` vs ``encode_v2_ms`` / ``decode_v2_ms``: the entropy coding of z and y
  (compressai vs constriction), P excluded;
- ``bytes_v1`` / ``bytes_v2``: whole streams (header and checksum included); ``bytes_v2_float_p``: version 2's
  coder with float32 P, which isolates the cost of the fixed point from the cost of the coder.

    python benchmarks/entropy_coding_cost.py --config sodec-sd21-base --images /work/shared/datasets/kodak \\
        --out benchmarks/results/entropy-coding-cost/sd21-base.json
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sodec_pipeline.codec.bitstream import encode_bitstream  # noqa: E402
from sodec_pipeline.codec.entropy_coding import decode_symbols, encode_symbols, table_indexes_of_channels  # noqa: E402
from sodec_pipeline.codec.stream_checks import entropy_check  # noqa: E402
from sodec_pipeline.hub_configs import resolve_hub_config  # noqa: E402
from sodec_pipeline.image_processing import pad_to_multiple  # noqa: E402
from sodec_pipeline.models.compression_vae import PADDING_MULTIPLE, CompressionVAE  # noqa: E402


V1_OVERHEAD_BYTES = 11  # magic 2, version 1, fingerprint 4, checksum 4 (+ the three varints, added below)


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def timed(fn, repeats: int):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(1000 * (time.perf_counter() - started))
    return min(times), out


def build_codec(config: str, seed: int, scale_bias_init) -> CompressionVAE:
    folder = resolve_hub_config(config) / "compression_vae"
    overrides = {} if scale_bias_init is None else {"scale_bias_init": list(scale_bias_init)}
    torch.manual_seed(seed)
    model = CompressionVAE.from_config({**dict(CompressionVAE.load_config(folder)), **overrides}).eval()
    model.update(force=True)
    return model


def compressai_layers(model: CompressionVAE):
    """compressai's ``EntropyBottleneck`` and ``GaussianConditional`` with the model's parameters and CDF tables
    (the same state-dict keys: ``sodec_pipeline/codec/entropy_layers.py``), for version 1's coder."""
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional

    layers = []
    for theirs, ours in (
        (EntropyBottleneck(model.entropy_bottleneck.channels, filters=model.entropy_bottleneck.filters),
         model.entropy_bottleneck),
        (GaussianConditional(None), model.gaussian_conditional),
    ):  # fmt: skip
        state = ours.state_dict()
        for name, buffer in theirs.named_buffers(recurse=False):
            if name in state:
                buffer.resize_(state[name].shape)
        theirs.load_state_dict(state)
        layers.append(theirs.eval())
    return layers


@torch.no_grad()
def measure_image(model: CompressionVAE, image: PIL.Image.Image, repeats: int) -> dict:
    height, width = image.height, image.width
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    x = pad_to_multiple(x, PADDING_MULTIPLE)
    y = model.encode(x)
    z = model.hyper_analysis(y)
    medians = model.entropy_model.z_medians()
    z_symbols = torch.round(z - medians)
    z_hat = z_symbols + medians
    state = model.entropy_model.coding_state()
    eb, gc = compressai_layers(model)

    p_float_ms, (means_f, scales_f) = timed(lambda: model.hyper_synthesis(z_hat), repeats)
    p_fixed_ms, (means_x, scales_x) = timed(lambda: (state["mean"](z_hat), state["scale"](z_hat)), repeats)
    indexes_f, indexes_x = gc.build_indexes(scales_f), gc.build_indexes(scales_x)

    # version 1: compressai's coder, float32 P
    def encode_v1():
        return eb.compress(z), gc.compress(y, indexes_f, means=means_f)

    encode_v1_ms, (z_v1, y_v1) = timed(encode_v1, repeats)
    decode_v1_ms, _ = timed(
        lambda: (eb.decompress(z_v1, z.shape[-2:]), gc.decompress(y_v1, indexes_f, means=means_f)), repeats
    )
    payload_v1 = len(z_v1[0]) + len(y_v1[0])
    bytes_v1 = V1_OVERHEAD_BYTES + _varint_size(height) + _varint_size(width) + _varint_size(len(z_v1[0])) + payload_v1

    # version 2: constriction's coder, fixed-point P (and float32 P, to separate the two effects)
    z_tables_of = table_indexes_of_channels(z.shape[1], z.shape[-2:])

    def encode_v2(means, indexes):
        z_string = encode_symbols(z_symbols.to(torch.int64), z_tables_of, state["z_tables"])
        y_string = encode_symbols(torch.round(y - means).to(torch.int64), indexes, state["y_tables"])
        return z_string, y_string

    encode_v2_ms, (z_v2, y_v2) = timed(lambda: encode_v2(means_x, indexes_x), repeats)
    decode_v2_ms, _ = timed(
        lambda: (
            decode_symbols(z_v2, z_tables_of, state["z_tables"]),
            decode_symbols(y_v2, indexes_x, state["y_tables"]),
        ),
        repeats,
    )
    check = entropy_check(indexes_x, means_x)
    bytes_v2 = len(encode_bitstream(b"\0" * 4, height, width, z_v2, y_v2, check))
    z_f, y_f = encode_v2(means_f, indexes_f)
    bytes_v2_float_p = len(encode_bitstream(b"\0" * 4, height, width, z_f, y_f, check))
    return {
        "size": f"{width}x{height}",
        "p_float_ms": p_float_ms,
        "p_fixed_ms": p_fixed_ms,
        "encode_v1_ms": encode_v1_ms,
        "decode_v1_ms": decode_v1_ms,
        "encode_v2_ms": encode_v2_ms,
        "decode_v2_ms": decode_v2_ms,
        "bytes_v1": bytes_v1,
        "bytes_v2": bytes_v2,
        "bytes_v2_float_p": bytes_v2_float_p,
        "indexes_differing_fixed_vs_float": int((indexes_f != indexes_x).sum()),
        "indexes_used": int(indexes_x.unique().numel()),
        "symbols": int(y.numel() + z.numel()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sodec-sd21-base")
    parser.add_argument("--images", required=True, help="folder of images (Kodak)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale-bias-init",
        type=float,
        nargs=2,
        default=(0.11, 256.0),
        help="σ bias range of the random-init P_scale (default 0.11 256: σ spans the scale table)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = build_codec(args.config, args.seed, args.scale_bias_init)
    started = time.perf_counter()
    model.entropy_model.coding_state()
    setup_ms = 1000 * (time.perf_counter() - started)
    paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    rows = []
    for path in paths:
        row = measure_image(model, PIL.Image.open(path), args.repeats)
        row["image"] = path.name
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [
        k for k in rows[0] if k.endswith("_ms") or k.startswith("bytes") or k == "indexes_differing_fixed_vs_float"
    ]
    summary = {k: statistics.mean(r[k] for r in rows) for k in keys}
    report = {
        "config": args.config,
        "seed": args.seed,
        "scale_bias_init": list(args.scale_bias_init),
        "threads": args.threads,
        "repeats": args.repeats,
        "images": len(rows),
        "torch": torch.__version__,
        "coding_state_setup_ms": setup_ms,
        "mean": summary,
        "per_image": rows,
    }
    print(json.dumps({"coding_state_setup_ms": setup_ms, "mean": summary}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
