"""The README.md (model card) of a released SODEC pipeline, written by ``train_sodec.py``
(:func:`save_training_model_card`, from :data:`TRAINING_CARD_TEMPLATE`) and ``export_pipeline.py`` with diffusers'
model-card utilities (``load_or_create_model_card``, ``populate_model_card``) and huggingface_hub's
``ModelCard``/``ModelCardData``.

Front matter:

- ``license``: ``--license`` when given; otherwise (``--license inherit``, the default) the licence of the
  first base whose own card gives one — the ``README.md`` front matter of a local folder, of a shipped
  pipeline (``sodec-small``: ``other``, the research-only BSDS500 terms) or of a Hub repo whose card is in
  the local cache (nothing is downloaded for this); a Stable Diffusion 2.x base without a readable card gives
  ``openrail++``. A base with no card at all (a from-scratch codec) leaves ``license`` out and says so: its
  weights carry the training data's terms, so pass them, e.g. ``--license other --license_name
  bsds500-research-use`` for BSDS500 (research use only).
- ``pipeline_tag: image-to-image``, ``library_name: diffusers`` and the tags below.
- ``base_model``: the first base that is a Hub id (``owner/name`` that is neither an existing path nor a
  shipped name), none otherwise; ``datasets``: only what ``--dataset_tag`` names.
"""

import os
import re
import shlex
from typing import Dict, List, Optional, Sequence

import yaml
from diffusers.utils.hub_utils import MODEL_CARD_TEMPLATE_PATH, load_or_create_model_card, populate_model_card
from huggingface_hub import ModelCard, ModelCardData


INHERIT = "inherit"
PIPELINE_TAG = "image-to-image"
TAGS = ("sodec", "image-compression", "learned-image-compression", "diffusers")
SD2_LICENSE = "openrail++"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SD2 = re.compile(r"stable-diffusion-2", re.IGNORECASE)


def add_card_arguments(parser) -> None:
    """``--license``, ``--license_name``, ``--license_link``, ``--dataset_tag`` (shared by both scripts)."""
    parser.add_argument(
        "--license",
        type=str,
        default=INHERIT,
        help="Licence of the released model card (a Hub licence id such as openrail++, apache-2.0 or other). "
        "Default 'inherit': the base model's (its README.md front matter; openrail++ for an SD 2.x base). A model "
        "trained from scratch has no base card: give the training data's terms, e.g. BSDS500 is research-only, "
        "so '--license other --license_name bsds500-research-use --license_link URL'.",
    )
    parser.add_argument("--license_name", type=str, default=None, help="With --license other: its short name.")
    parser.add_argument("--license_link", type=str, default=None, help="With --license other: where it is stated.")
    parser.add_argument(
        "--dataset_tag",
        type=str,
        nargs="+",
        default=None,
        help="Hub dataset id(s) the model was trained on, written to the card's `datasets` (left out if not given).",
    )


def _shipped_names() -> List[str]:
    from sodec_pipeline.shipped_models import shipped_model_names

    return shipped_model_names()


def is_hub_id(name: Optional[str]) -> bool:
    """``owner/name`` that is neither an existing local path nor a shipped pipeline's short name."""
    if not name:
        return False
    name = str(name)
    return bool(_HUB_ID.match(name)) and not os.path.exists(name) and name not in _shipped_names()


def read_card_metadata(name_or_path: Optional[str]) -> Optional[Dict]:
    """The front matter of the README.md of a local folder, a shipped pipeline or a cached Hub repo; ``None``
    where there is no such card (never downloads)."""
    if not name_or_path:
        return None
    from sodec_pipeline.shipped_models import resolve_model_path

    folder = str(resolve_model_path(str(name_or_path)))
    readme = None
    if os.path.isdir(folder):
        readme = os.path.join(folder, "README.md")
    elif os.path.isfile(folder):  # e.g. --image_encoder pointing into a folder: not a card
        return None
    elif is_hub_id(folder):
        try:
            from huggingface_hub import hf_hub_download

            readme = hf_hub_download(folder, "README.md", local_files_only=True)
        except Exception:  # not in the cache (or no such repo): no card
            return None
    if not readme or not os.path.isfile(readme):
        return None
    text = open(readme, encoding="utf-8").read()
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def resolve_license(requested: Optional[str], bases: Sequence[Optional[str]], name=None, link=None) -> Dict:
    """``{"license": …, "license_name": …, "license_link": …}`` (values may be ``None``) and ``"source"``, a
    sentence for the card saying where the licence comes from."""
    if requested and requested != INHERIT:
        return {"license": requested, "license_name": name, "license_link": link, "source": "given at release"}
    for base in bases:
        if not base:
            continue
        data = read_card_metadata(base)
        if data and data.get("license"):
            return {
                "license": data["license"],
                "license_name": name or data.get("license_name"),
                "license_link": link or data.get("license_link"),
                "source": f"inherited from the card of `{base}`",
            }
        if _SD2.search(str(base)):
            return {"license": SD2_LICENSE, "license_name": None, "license_link": None, "source": f"that of `{base}`"}
    return {
        "license": None,
        "license_name": None,
        "license_link": None,
        "source": "not determined: no base model card gives one; the weights carry the training data's terms "
        "(BSDS500, for example, is for research use only) — pass `--license`",
    }


def quality_levels_text(codec) -> str:
    """The released codec's quality levels (its ``quantization_steps`` and default level) as Markdown."""
    steps = list(codec.config.quantization_steps or [1.0])
    default = codec.default_quality
    rows = "\n".join(
        f"| {i} | {step:g} | {'default' if i == default else ''} |" for i, step in enumerate(steps, start=1)
    )
    return (
        f"{len(steps)} quality level(s) (`compression_vae` `quantization_steps`; level 1 is the coarsest), "
        f"default level {default} (`pipe.compress(images, quality=…)`):\n\n"
        "| level | quantisation step Δ | |\n| --- | --- | --- |\n" + rows
    )


def write_model_card(
    output_dir: str,
    repo_id: str,
    description: str,
    codec,
    *,
    bases: Sequence[Optional[str]],
    license: Optional[str] = INHERIT,
    license_name: Optional[str] = None,
    license_link: Optional[str] = None,
    datasets: Optional[Sequence[str]] = None,
    extra_tags: Sequence[str] = (),
    push_to_hub: bool = False,
    hub_token: Optional[str] = None,
) -> ModelCard:
    """Writes ``output_dir/README.md``. ``description`` is the Markdown body (after the model's title); the
    licence line and the quality levels of ``codec`` (the released ``compression_vae``) are appended to it.
    With ``push_to_hub`` the card of an existing Hub repo is reused, as diffusers' training examples do."""
    licence = resolve_license(license, bases, license_name, license_link)
    base_model = next((str(b) for b in bases if is_hub_id(b)), None)  # the first base that is a Hub repo
    licence_text = f"`{licence['license']}`" if licence["license"] else "none stated"
    if licence["license_name"]:
        licence_text += f" ({licence['license_name']}" + (
            f", {licence['license_link']})" if licence["license_link"] else ")"
        )
    body = (
        description.rstrip()
        + f"\n\n## Quality levels\n\n{quality_levels_text(codec)}\n\n## Licence\n\n"
        + f"{licence_text}; {licence['source']}.\n"
    )
    if push_to_hub:
        card = load_or_create_model_card(
            repo_id_or_path=repo_id,
            token=hub_token,
            from_training=True,
            license=licence["license"],
            base_model=base_model,
            model_description=body,
            inference=False,
        )
    else:  # the same template, without asking the Hub about a repo that is not being pushed
        card = ModelCard.from_template(
            card_data=ModelCardData(
                license=licence["license"], library_name="diffusers", inference=False, base_model=base_model
            ),
            template_path=MODEL_CARD_TEMPLATE_PATH,
            model_description=body,
        )
    data = card.data
    for key in ("license", "license_name", "license_link"):
        if getattr(data, key, None) is None and licence[key] is not None:
            setattr(data, key, licence[key])
    if data.base_model is None and base_model is not None:
        data.base_model = base_model
    if getattr(data, "pipeline_tag", None) is None:
        data.pipeline_tag = PIPELINE_TAG
    if datasets and not data.datasets:
        data.datasets = list(datasets)
    existing = set(data.tags or [])
    card = populate_model_card(card, tags=[t for t in dict.fromkeys([*TAGS, *extra_tags]) if t not in existing])
    card.save(os.path.join(output_dir, "README.md"))
    return card


#: The body of the card of a model trained by ``train_sodec.py`` (before the quality levels and the licence):
#: ``{args.…}`` are the run's arguments, the other fields come from :func:`training_card_fields`.
TRAINING_CARD_TEMPLATE = """
# SODEC — {repo_id}

A [SODEC](https://arxiv.org/abs/2508.04979) image codec (one-step diffusion decoder steered by a
fidelity decoder) trained with `training/train_sodec.py` of the `sodec-pipeline` package.
Base model: {base_text}.

## Use

```python
from sodec_pipeline import SODECPipeline

pipe = SODECPipeline.from_pretrained("{repo_id}")
streams = pipe.compress(images)            # list of bytes
decoded = pipe.decompress(streams).images  # PIL images
```

{unet_text}

## Training

- Data: `{data}` ({args.num_train_images} images), random {args.resolution}×{args.resolution} crops{flips}.
- Stages: {stages}; λ from {args.lambda_rate_start} to {args.lambda_rate_end} ({args.lambda_schedule} schedule).
- Distortion: {args.mse_weight}·MSE{perceptual}; alignment α = {args.alignment_weight}.
- Trained: {trained}. Frozen: {frozen}.
- {lora}learning rate {args.learning_rate}; batch {args.train_batch_size} × {args.gradient_accumulation_steps} \
accumulation × {args.num_processes} process(es); mixed precision {mixed_precision}; seed {args.seed}.

Command:

```bash
{command}
```

## Validation

{metrics_text}
"""


def _base_models(args):
    """The card's sentence on the base model, and the bases whose licence it may inherit (in that order)."""
    if args.pretrained_model_name_or_path is not None:
        return f"`{args.pretrained_model_name_or_path}`", [args.pretrained_model_name_or_path]
    text = f"assembled from `{args.sd_model}` (UNet, VAE), `{args.image_encoder}` (ViT)"
    if args.codec_init:
        text += f" and `{args.codec_init}` (codec)"
    return text, [args.sd_model, args.codec_init, args.image_encoder]


def _trained_and_frozen(args):
    """The networks that trained and those left as loaded, as two comma-separated lists."""
    trained, frozen = ["codec (E, H_a, P, entropy models, H_s, T_s)"], []
    trained.append("F_p (D_a in stage 1 only)" if args.freeze_fidelity_decoder else "D_a and F_p")
    if args.unet_training == "full":
        trained.append("the whole UNet")
    else:
        trained.append("UNet LoRA and conv_in")
        frozen.append("UNet base weights")
    (trained if args.train_vae_decoder else frozen).append("VAE decoder D_m")
    frozen.append("VAE encoder (unused at inference)")
    (trained if args.train_image_encoder else frozen).append("image encoder F (ViT)")
    return ", ".join(trained), ", ".join(frozen)


def _metrics_text(args, metrics) -> str:
    if not metrics:
        return "No validation images were given (`--validation_images`), so no metrics were measured."
    rows = "\n".join(f"| {k.split('/', 1)[1]} | {v:.4f} |" for k, v in metrics.items())
    return (
        f"Measured at the end of training on {len(args.validation_images_resolved)} validation image(s) "
        f"({', '.join(args.validation_images_resolved)}), compressed to real bitstreams "
        "(bpp = 8 × bytes / pixels):\n\n| metric | value |\n| --- | --- |\n" + rows
    )


def training_card_fields(args, repo_id: str, metrics, plan) -> Dict:
    """The fields of :data:`TRAINING_CARD_TEMPLATE` for a run of ``train_sodec.py`` (``args``, its
    ``TrainingPlan``) and its final validation ``metrics``."""
    lora = args.unet_training == "lora"
    base_text, _ = _base_models(args)
    trained, frozen = _trained_and_frozen(args)
    return {
        "args": args,
        "repo_id": repo_id,
        "base_text": base_text,
        "unet_text": "The UNet LoRA is fused into `unet/`; the unfused adapter is `pytorch_lora_weights.safetensors`."
        if lora
        else "Every UNet weight was trained (`--unet_training full`); `unet/` holds them.",
        "data": args.dataset_name or ", ".join(args.train_data_dir),
        "flips": ", flips" if args.random_flip else "",
        "stages": ", ".join(f"stage {int(stage)}: {steps} steps" for stage, steps in plan.stages),
        "perceptual": f" + {args.perceptual_weight}·LPIPS-{args.lpips_net}" if args.perceptual_loss == "lpips" else "",
        "trained": trained,
        "frozen": frozen,
        "lora": f"LoRA rank {args.lora_rank} on `{args.lora_target_modules}`; " if lora else "",
        "mixed_precision": args.mixed_precision or "no",
        "command": "accelerate launch training/train_sodec.py " + " ".join(shlex.quote(a) for a in args.command_line),
        "metrics_text": _metrics_text(args, metrics),
    }


def save_training_model_card(args, repo_id: str, output_dir, metrics, plan, codec) -> ModelCard:
    """README.md of a model released by ``train_sodec.py`` (:data:`TRAINING_CARD_TEMPLATE`); ``codec`` is the
    released ``compression_vae`` (its quality levels go into the card)."""
    _, bases = _base_models(args)
    return write_model_card(
        output_dir,
        repo_id,
        TRAINING_CARD_TEMPLATE.format(**training_card_fields(args, repo_id, metrics, plan)),
        codec,
        bases=bases,
        license=args.license,
        license_name=args.license_name,
        license_link=args.license_link,
        datasets=args.dataset_tag,
        extra_tags=["diffusers-training"] + (["lora"] if args.unet_training == "lora" else []),
        push_to_hub=args.push_to_hub,
        hub_token=args.hub_token,
    )
