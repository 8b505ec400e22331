"""The README.md (model card) of a released SODEC pipeline, written by ``train_sodec.py`` and
``export_pipeline.py`` with diffusers' model-card utilities (``load_or_create_model_card``,
``populate_model_card``) and huggingface_hub's ``ModelCard``/``ModelCardData``.

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
