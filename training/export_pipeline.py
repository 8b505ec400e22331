#!/usr/bin/env python
# Copyright 2026 The sodec-pipeline authors. Licensed under the Apache License, Version 2.0.
"""Writes a SODEC pipeline folder from a base pipeline and, optionally, a training checkpoint.

    python training/export_pipeline.py --pipeline ./sodec-init --checkpoint ./run/checkpoint-2000 \
        --output ./sodec-release --weights_dtype float16

- ``--checkpoint``: a ``checkpoint-N`` folder of ``train_sodec.py``; its trained networks (codec, fidelity/
  guidance encoder, and the UNet, VAE and image encoder where it holds them in full) replace the base
  pipeline's (the codec converted first to the checkpoint's entropy model, for a run with ``--entropy_model``).
  A LoRA checkpoint is not handled here (the end of a training run fuses it). The checkpoint's scheduler config,
  where it has one, replaces the base's (a run with ``--realism_control`` trained its UNet for it).
- ``--default_realism β``: the realism of a diffusion decode that does not name one (``model_index.json``; a
  β below 1 needs a scheduler with ``realism_control``).
- ``--take MODULE=PIPELINE`` (repeatable, applied after ``--checkpoint``): the weights of a component
  (``unet``) or of one of its submodules (``compression_vae.latent_transform``, ``fidelity_guidance.
  guidance_projection``) from another saved pipeline of the same shapes, e.g. to start a new codec's diffusion
  path from networks trained with an earlier one.
- ``--weights_dtype float16``: every *parameter* is stored in float16 (half the size); buffers — the
  entropy models' CDF tables and scale table, normalisation constants — keep their dtype, so the loaded
  pipeline (float32 by default) computes the same entropy parameters as the stored one.

- ``README.md``: a model card (``sodec_training.model_card``) whose licence is inherited from the base
  pipeline's card unless ``--license`` says otherwise; ``--dataset_tag`` fills its ``datasets``.

The output loads with ``SODECPipeline.from_pretrained(output)``; training can continue from it with
``--pretrained_model_name_or_path output``.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import load_file, save_file


sys.path.insert(0, str(Path(__file__).resolve().parent))

from sodec_training.entropy_tables import refresh_entropy_tables  # noqa: E402
from sodec_training.model_card import add_card_arguments, write_model_card  # noqa: E402


COMPONENTS = ("compression_vae", "fidelity_guidance", "image_encoder", "unet", "vae")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", required=True, help="a saved SODEC pipeline (folder, Hub id or shipped name)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint-N folder of train_sodec.py")
    parser.add_argument("--output", required=True, help="the folder to write")
    parser.add_argument(
        "--take",
        action="append",
        default=[],
        metavar="MODULE=PIPELINE",
        help="copy a component's or submodule's weights from another saved pipeline (repeatable)",
    )
    parser.add_argument("--weights_dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--default_realism", type=float, default=None, help="the pipeline's default realism, (0, 1]")
    add_card_arguments(parser)
    args = parser.parse_args(argv)
    for item in args.take:
        module, _, source = item.partition("=")
        if not source or module.split(".")[0] not in COMPONENTS:
            parser.error(
                f"--take needs MODULE=PIPELINE with MODULE one of {', '.join(COMPONENTS)} (or a submodule); got {item!r}"
            )
    return args


def load_checkpoint_into(pipe, checkpoint: Path) -> list:
    """Copies the networks a training checkpoint holds into ``pipe``; returns their names."""
    loaded = []
    convert_entropy_model(pipe, checkpoint / "compression_vae" / "config.json")
    for name in COMPONENTS:
        path = checkpoint / name / SAFETENSORS_WEIGHTS_NAME
        if path.is_file():
            getattr(pipe, name).load_state_dict(load_file(str(path)))
            loaded.append(name)
    if "compression_vae" not in loaded:
        raise FileNotFoundError(
            f"{checkpoint} is not a train_sodec.py checkpoint (no compression_vae/{SAFETENSORS_WEIGHTS_NAME})"
        )
    scheduler_config = checkpoint / "scheduler" / "scheduler_config.json"
    if scheduler_config.is_file():
        pipe.register_modules(scheduler=type(pipe.scheduler).from_pretrained(checkpoint / "scheduler"))
        loaded.append("scheduler (config)")
    if (checkpoint / "pytorch_lora_weights.safetensors").is_file() and "unet" not in loaded:
        print(
            f"note: {checkpoint} holds a UNet LoRA, which is not merged here; the base UNet is kept", file=sys.stderr
        )
    return loaded


def convert_entropy_model(pipe, config_path: Path) -> None:
    """Gives ``pipe``'s codec the entropy model of a checkpoint's codec config (a run with ``--entropy_model``
    trained another one than the base pipeline's), so that the checkpoint's weights load."""
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    entropy_model = config.get("entropy_model_type", "hyperprior")
    if entropy_model != pipe.compression_vae.config.entropy_model_type:
        channels = (config.get("context_channels"), config.get("entropy_parameters_channels"))
        pipe.register_modules(compression_vae=pipe.compression_vae.with_entropy_model(entropy_model, *channels))


def pipeline_options(pipe) -> dict:
    """The pipeline's own config values (``colour_correction_block_size``, ``default_realism``, ...), not its
    components or diffusers' keys."""
    return {k: v for k, v in pipe.config.items() if not k.startswith("_") and k not in pipe.components}


def take_modules(pipe, takes) -> list:
    """Copies each ``MODULE=PIPELINE`` of ``takes`` into ``pipe`` (strict: same parameter names and shapes)."""
    from sodec_pipeline import SODECPipeline

    sources, taken = {}, []
    for item in takes:
        module_name, _, source = item.partition("=")
        if source not in sources:
            sources[source] = SODECPipeline.from_pretrained(source)
        target, origin = pipe, sources[source]
        for part in module_name.split("."):
            target, origin = getattr(target, part), getattr(origin, part)
        target.load_state_dict(origin.state_dict())
        taken.append(f"{module_name} from {source}")
    return taken


def cast_saved_parameters(folder: Path, pipe, dtype: torch.dtype) -> None:
    """Rewrites each component's safetensors file with its parameters (not its buffers) in ``dtype``."""
    for name in COMPONENTS:
        module = getattr(pipe, name)
        parameter_names = {k for k, _ in module.named_parameters()}
        for path in sorted((folder / name).glob("*.safetensors")):
            state = load_file(str(path))
            state = {
                k: (v.to(dtype) if k in parameter_names and v.is_floating_point() else v) for k, v in state.items()
            }
            save_file(state, str(path), metadata={"format": "pt"})


def remove_source_paths(folder: Path) -> None:
    """Drops the ``_name_or_path`` that diffusers writes into each config: it names the folder the weights
    were loaded from (a path on the training machine), which means nothing where the release is used."""
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*/*.json")):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and config.pop("_name_or_path", None) is not None:
            path.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")


def save_export_card(args, output: Path, pipe, loaded, taken) -> None:
    """README.md of the exported folder: where its weights come from, its quality levels and licence."""
    sources = [f"- Base pipeline: `{args.pipeline}`."]
    if args.checkpoint:
        sources.append(f"- From the training checkpoint `{Path(args.checkpoint).name}`: {', '.join(loaded)}.")
    sources += [f"- {line}." for line in taken]
    sources.append(f"- Parameters stored in {args.weights_dtype} (buffers keep their dtype).")
    description = f"""
# SODEC — {output.name}

A [SODEC](https://arxiv.org/abs/2508.04979) image codec (one-step diffusion decoder steered by a
fidelity decoder) written by `training/export_pipeline.py` of the `sodec-pipeline` package.

## Use

```python
from sodec_pipeline import SODECPipeline

pipe = SODECPipeline.from_pretrained("{output.name}")
streams = pipe.compress(images)            # list of bytes
decoded = pipe.decompress(streams).images  # PIL images
```

## Weights

""" + "\n".join(sources)
    write_model_card(
        str(output),
        output.name,
        description,
        pipe.compression_vae,
        bases=[args.pipeline],
        license=args.license,
        license_name=args.license_name,
        license_link=args.license_link,
        datasets=args.dataset_tag,
    )


def main(argv=None):
    args = parse_args(argv)
    from sodec_pipeline import SODECPipeline

    pipe = SODECPipeline.from_pretrained(args.pipeline)
    base_codec_state = {k: v.clone() for k, v in pipe.compression_vae.state_dict().items()}
    loaded = []
    if args.checkpoint:
        loaded = load_checkpoint_into(pipe, Path(args.checkpoint))
        print(f"from {args.checkpoint}: {', '.join(loaded)}")
    taken = take_modules(pipe, args.take)
    for line in taken:
        print(line)
    if args.default_realism is not None:
        try:
            pipe = SODECPipeline(
                **pipe.components, **{**pipeline_options(pipe), "default_realism": args.default_realism}
            )
        except ValueError as e:
            raise SystemExit(f"--default_realism {args.default_realism}: {e}") from None
    refresh_entropy_tables(pipe.compression_vae, base_codec_state)  # the base's tables if they did not train
    output = Path(args.output)
    pipe.save_pretrained(output)
    remove_source_paths(output)
    save_export_card(args, output, pipe, loaded, taken)
    dtype = getattr(torch, args.weights_dtype)
    if dtype != torch.float32:
        cast_saved_parameters(output, pipe, dtype)
    size = sum(p.stat().st_size for p in output.rglob("*.safetensors"))
    print(f"wrote {output} ({size / 1e6:.1f} MB of safetensors, parameters in {args.weights_dtype})")


if __name__ == "__main__":
    main()
