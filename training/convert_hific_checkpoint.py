#!/usr/bin/env python
"""Convert a HiFiC checkpoint (PyTorch port, github.com/Justin-Tan/high-fidelity-generative-compression)
into SODEC's CompressionVAE and fidelity decoder.

    python training/convert_hific_checkpoint.py --input hific_low.pt --output converted/hific-low

writes ``converted/hific-low/compression_vae/``, ``converted/hific-low/fidelity_guidance/`` (diffusers
layouts) and ``converted/hific-low/conversion_report.json`` (every mapped, transformed, unmapped and
initialised key). Pass the output folder as ``codec=`` to ``SODECPipeline.from_pretrained_parts``.
"""

import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="HiFiC checkpoint (.pt) as the port's save_model writes it")
    parser.add_argument("--output", required=True, help="output folder (compression_vae/, fidelity_guidance/, report)")
    parser.add_argument(
        "--config",
        default="sodec-sd21-base",
        help="SODEC hub config name or folder giving the target architecture (default: sodec-sd21-base)",
    )
    parser.add_argument(
        "--normalize-input-image",
        choices=("auto", "yes", "no"),
        default="auto",
        help="whether the HiFiC model takes [-1,1] images (its -norm flag); auto: read it from the checkpoint's args",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load with torch.load(weights_only=False): only for checkpoints from a source you trust",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the SODEC modules HiFiC does not have (H_s, T_s, F_p)"
    )
    parser.add_argument(
        "--list-keys", action="store_true", help="print every mapped, transformed, unmapped and initialised key"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from sodec_pipeline.conversion import HiFiCCheckpointError, convert_hific_checkpoint

    normalize = {"auto": None, "yes": True, "no": False}[args.normalize_input_image]
    try:
        result = convert_hific_checkpoint(
            args.input,
            config=args.config,
            output_dir=args.output,
            normalize_input_image=normalize,
            trust_pickle=args.trust_pickle,
            seed=args.seed,
        )
    except (HiFiCCheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(result.report.summary(list_keys=args.list_keys))
    print(f"saved to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
