"""Saved folders and Hub repos that plain diffusers loads (issue 32, item 1), and ``variant="fp16"`` of the shipped
model, whose float16 weights carry the default file names (item 6).

A saved folder names its pipeline ``["pipeline_sodec", "SODECPipeline"]`` and holds small code files that import the
installed package (``pipeline_sodec.py``, ``<component>/sodec_pipeline.py``): ``DiffusionPipeline.from_pretrained(
folder_or_repo_id, trust_remote_code=True)`` loads it in a fresh interpreter that never imported ``sodec_pipeline``,
and ``SODECPipeline.from_pretrained`` loads it without running them (sodec_pipeline/pipelines/hub_code.py)."""

import ast
import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_hub import fake_hub_functions

from sodec_pipeline import SODECPipeline
from sodec_pipeline.pipelines.hub_code import component_code, pipeline_code
from sodec_pipeline.shipped_models import SHIPPED_MODELS


ASSETS = Path(__file__).parent / "assets"
PHOTO = ASSETS / "bsds_crop0_96x64.png"
REPO_ID = "sodec-test/sodec-tiny"
CODE_FILES = [
    "compression_vae/sodec_pipeline.py",
    "fidelity_guidance/sodec_pipeline.py",
    "pipeline_sodec.py",
    "scheduler/sodec_pipeline.py",
]

#: Run in a fresh interpreter: loads a folder (or, with a remote folder, a Hub repo id whose download is faked as in
#: test_pipeline.py's test_load_from_a_hub_repo_id_with_the_download_faked) with plain diffusers and
#: trust_remote_code=True, without importing sodec_pipeline first; writes the stream of the photo and the pixels of
#: the given stream's diffusion decode.
FRESH_LOAD = r"""
import sys

assert "sodec_pipeline" not in sys.modules
import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline

folder_or_repo, photo, stream, out, threads, remote = sys.argv[1:7]
torch.set_num_threads(int(threads))
if remote:
    from pathlib import Path

    import diffusers.pipelines.pipeline_utils as pipeline_utils
    import diffusers.utils.dynamic_modules_utils as dynamic_modules_utils

    sys.path.insert(0, sys.argv[7])  # tests/, for fake_hub
    from fake_hub import fake_hub_functions

    snapshot = Path(out + "-cache") / "snapshots" / ("0" * 40)
    model_info, hf_hub_download, snapshot_download = fake_hub_functions(remote, snapshot)
    for module in (pipeline_utils, dynamic_modules_utils):
        module.model_info, module.hf_hub_download = model_info, hf_hub_download
    pipeline_utils.snapshot_download = snapshot_download
assert "sodec_pipeline" not in sys.modules
pipe = DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
print(type(pipe).__module__, type(pipe).__name__)
open(out + ".sodec", "wb").write(pipe.compress(PIL.Image.open(photo).convert("RGB"))[0])
np.save(out + ".npy", pipe.decompress(open(stream, "rb").read(), output_type="np").images)
"""


def _load_in_a_fresh_interpreter(folder_or_repo, stream: bytes, tmp_path, remote=None):
    """(class printed, the photo's stream, the pixels of ``stream``) from :data:`FRESH_LOAD`."""
    (tmp_path / "stream.sodec").write_bytes(stream)
    out = tmp_path / "fresh"
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HOME": str(tmp_path / "hf_home")}
    env["HF_HUB_OFFLINE"] = "1"  # nothing reaches the network (a Hub repo's download is faked)
    tests = Path(__file__).resolve().parent
    args = [folder_or_repo, PHOTO, tmp_path / "stream.sodec", out, torch.get_num_threads(), remote or "", tests]
    done = subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, *map(str, args)], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split(), Path(f"{out}.sodec").read_bytes(), np.load(f"{out}.npy")


def _reference(pipe, photo):
    """The photo's stream and its diffusion decode by a pipeline loaded with ``SODECPipeline.from_pretrained``."""
    (stream,) = pipe.compress(photo)
    return stream, pipe.decompress(stream, output_type="np").images


@pytest.fixture(scope="module")
def shipped_folder():
    return SHIPPED_MODELS.root() / "sodec-small"


@pytest.fixture(scope="module")
def shipped_pipeline(shipped_folder):
    pipe = SODECPipeline.from_pretrained("sodec-small")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _photo():
    import PIL.Image

    return PIL.Image.open(PHOTO).convert("RGB")


def _files(folder: Path):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _loadable_folder_files(index):
    """The files a saved SODEC pipeline folder holds for diffusers: model_index.json, the code files, and each
    component's config and safetensors."""
    files = {"model_index.json", "pipeline_sodec.py"}
    for name, (library, _) in ((k, v) for k, v in index.items() if isinstance(v, list) and not k.startswith("_")):
        if name == "scheduler":
            files.add("scheduler/scheduler_config.json")
        else:
            weights = "model.safetensors" if library == "transformers" else "diffusion_pytorch_model.safetensors"
            files.update({f"{name}/config.json", f"{name}/{weights}"})
        if library == "sodec_pipeline":
            files.add(f"{name}/sodec_pipeline.py")
    return files


# ---------------------------------------------------------------------- the saved folder
def test_save_pretrained_writes_the_code_files_diffusers_needs(tiny_pipeline_dir, shipped_folder):
    """model_index.json names the pipeline's code file; the components keep ["sodec_pipeline", class]; each code file
    only imports the installed package, and the shipped model holds exactly what save_pretrained writes."""
    folder = Path(tiny_pipeline_dir)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_sodec", "SODECPipeline"]
    assert index["compression_vae"] == ["sodec_pipeline", "CompressionVAE"]
    assert set(_files(folder)) == _loadable_folder_files(index)
    pipeline_file = (folder / "pipeline_sodec.py").read_text()
    component_file = (folder / "compression_vae" / "sodec_pipeline.py").read_text()
    assert "from sodec_pipeline.pipelines.pipeline_sodec import SODECPipeline" in pipeline_file
    for name in ("CompressionVAE", "FidelityGuidanceEncoder", "SODECScheduler"):
        assert f" import {name}\n" in component_file
    for path in CODE_FILES:
        text = (folder / path).read_text()
        assert len(text) < 1000, path
        statements = ast.parse(text).body  # a docstring, imports of the installed package, __all__: no model code
        assert isinstance(statements[0], ast.Expr) and isinstance(statements[-1], ast.Assign), path
        imports = statements[1:-1]
        assert imports and all(
            isinstance(s, ast.ImportFrom) and s.module.startswith("sodec_pipeline.") for s in imports
        )
    assert (folder / "scheduler" / "sodec_pipeline.py").read_text() == component_file  # one text, one cache module

    shipped = json.loads((shipped_folder / "model_index.json").read_text())
    assert shipped["_class_name"] == ["pipeline_sodec", "SODECPipeline"]
    assert set(_files(shipped_folder)) == _loadable_folder_files(shipped) | {"README.md"}
    for path in CODE_FILES:
        assert (shipped_folder / path).read_text() == (folder / path).read_text(), path


def test_the_code_files_name_the_classes_of_the_pipeline():
    from sodec_pipeline import CompressionVAE, SODECScheduler

    code = pipeline_code(SODECPipeline)
    assert [line for line in code.splitlines() if line.startswith(("from ", "import "))] == [
        "from sodec_pipeline.pipelines.pipeline_sodec import SODECPipeline"
    ]
    text = component_code([SODECScheduler, CompressionVAE])
    assert text.index("import CompressionVAE") < text.index("import SODECScheduler")
    assert text.endswith('__all__ = ["CompressionVAE", "SODECScheduler"]\n')


# ---------------------------------------------------------------------- plain diffusers, fresh interpreter
def test_plain_diffusers_loads_the_shipped_model_in_a_fresh_interpreter(
    shipped_folder, shipped_pipeline, photos, tmp_path
):
    photo = photos[PHOTO.name]
    stream, pixels = _reference(shipped_pipeline, photo)
    printed, fresh_stream, fresh_pixels = _load_in_a_fresh_interpreter(shipped_folder, stream, tmp_path)
    assert printed == ["sodec_pipeline.pipelines.pipeline_sodec", "SODECPipeline"]  # the installed class
    assert fresh_stream == stream
    np.testing.assert_array_equal(fresh_pixels, pixels)


def test_plain_diffusers_loads_a_freshly_saved_pipeline_in_a_fresh_interpreter(tiny_pipeline, photos, tmp_path):
    folder = tmp_path / "saved"
    tiny_pipeline.save_pretrained(folder)
    stream, pixels = _reference(tiny_pipeline, photos[PHOTO.name])
    printed, fresh_stream, fresh_pixels = _load_in_a_fresh_interpreter(folder, stream, tmp_path)
    assert printed == ["sodec_pipeline.pipelines.pipeline_sodec", "SODECPipeline"]
    assert fresh_stream == stream
    np.testing.assert_array_equal(fresh_pixels, pixels)


# ---------------------------------------------------------------------- SODECPipeline.from_pretrained
def test_sodec_pipeline_from_pretrained_never_runs_a_folders_code_files(tiny_pipeline_dir, tiny_pipeline, tmp_path):
    """SODECPipeline.from_pretrained takes the classes from the installed package, with or without
    trust_remote_code: code files that would run are never run. Plain diffusers asks for trust_remote_code first."""
    from diffusers import DiffusionPipeline

    folder = tmp_path / "hostile"
    shutil.copytree(tiny_pipeline_dir, folder)
    marker = tmp_path / "code-ran"
    for path in CODE_FILES:
        (folder / path).write_text(f"open({str(marker)!r}, 'w').write({path!r})\nraise SystemExit(3)\n")
    for kwargs in ({}, {"trust_remote_code": True}):
        pipe = SODECPipeline.from_pretrained(folder, **kwargs)
        assert type(pipe) is SODECPipeline and type(pipe.compression_vae) is type(tiny_pipeline.compression_vae)
        assert pipe.compress(_photo()) == tiny_pipeline.compress(_photo())
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(folder)
    assert not marker.exists()


def test_folders_saved_before_the_code_files_load_as_before(tiny_pipeline_dir, tiny_pipeline, tmp_path):
    """A folder whose model_index.json has "_class_name": "SODECPipeline" and no code files: SODECPipeline and (once
    sodec_pipeline is imported) plain diffusers load it without trust_remote_code, and the CLI accepts both kinds."""
    from diffusers import DiffusionPipeline

    from sodec_pipeline.cli.model_loading import check_pipeline_folder

    old = tmp_path / "old"
    shutil.copytree(tiny_pipeline_dir, old)
    for path in CODE_FILES:
        (old / path).unlink()
    index = json.loads((old / "model_index.json").read_text())
    (old / "model_index.json").write_text(json.dumps({**index, "_class_name": "SODECPipeline"}, indent=2))
    expected = tiny_pipeline.compress(_photo())
    for pipe in (SODECPipeline.from_pretrained(old), DiffusionPipeline.from_pretrained(old)):
        assert type(pipe) is SODECPipeline and pipe.compress(_photo()) == expected
    check_pipeline_folder(old)
    check_pipeline_folder(Path(tiny_pipeline_dir))
    # saving what was loaded from an old folder writes the new one
    tiny_pipeline.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "model_index.json").read_text())["_class_name"][0] == "pipeline_sodec"
    assert all((tmp_path / "again" / path).is_file() for path in CODE_FILES)


# ---------------------------------------------------------------------- push_to_hub, faked at the HTTP layer
class FakeHub:
    """The Hub's HTTP API as huggingface_hub's client sees it (an httpx transport): a repo is created, README.md is
    not found (diffusers makes a new model card), the YAML is valid, every file is uploaded inline ("regular") and
    the commit's files are kept in ``self.commits``."""

    def __init__(self):
        self.requests, self.commits = [], []

    def __call__(self, request):
        import httpx2 as httpx

        self.requests.append((request.method, request.url.path))
        path = request.url.path
        if path == "/api/repos/create":
            body = json.loads(request.content)
            repo = f"{body.get('organization')}/{body['name']}"
            return httpx.Response(200, json={"url": f"https://huggingface.co/{repo}", "name": repo})
        if path == "/api/validate-yaml":
            return httpx.Response(200, json={"errors": [], "warnings": []})
        if path.startswith(f"/api/models/{REPO_ID}/preupload/"):
            files = json.loads(request.content)["files"]
            return httpx.Response(
                200,
                json={"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
            )
        if path.startswith(f"/api/models/{REPO_ID}/commit/"):
            items = [json.loads(line) for line in request.content.decode().splitlines()]
            self.commits.append(
                {i["value"]["path"]: base64.b64decode(i["value"]["content"]) for i in items if i["key"] == "file"}
            )
            oid = "1" * 40
            return httpx.Response(
                200, json={"commitUrl": f"https://huggingface.co/{REPO_ID}/commit/{oid}", "commitOid": oid}
            )
        return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound", "X-Error-Message": "not on the fake Hub"})


@pytest.fixture
def fake_hub(monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    httpx = pytest.importorskip("httpx2")
    from huggingface_hub.utils import _http

    hub = FakeHub()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(_http, "_GLOBAL_CLIENT_FACTORY", lambda: httpx.Client(transport=httpx.MockTransport(hub)))
    _http.close_session()
    yield hub
    monkeypatch.undo()
    _http.close_session()


def test_push_to_hub_uploads_a_folder_that_plain_diffusers_loads(fake_hub, tiny_pipeline, photos, tmp_path):
    """push_to_hub, and save_pretrained(push_to_hub=True), commit exactly the folder diffusers loads (and the model
    card diffusers writes); that repo, its download faked, loads in a fresh interpreter with trust_remote_code."""
    tiny_pipeline.push_to_hub(REPO_ID, token="hf_fake")
    tiny_pipeline.save_pretrained(str(tmp_path / "sodec-tiny"), push_to_hub=True, repo_id=REPO_ID, token="hf_fake")
    assert ("POST", "/api/repos/create") in fake_hub.requests and len(fake_hub.commits) == 2
    uploaded = fake_hub.commits[0]
    index = json.loads(uploaded["model_index.json"])
    assert set(uploaded) == _loadable_folder_files(index) | {"README.md"}
    assert set(fake_hub.commits[1]) == set(uploaded)
    assert index["_class_name"] == ["pipeline_sodec", "SODECPipeline"]
    for path in CODE_FILES:
        assert uploaded[path] == (tmp_path / "sodec-tiny" / path).read_bytes()

    remote = tmp_path / "remote"
    for path, content in uploaded.items():
        (remote / path).parent.mkdir(parents=True, exist_ok=True)
        (remote / path).write_bytes(content)
    stream, pixels = _reference(tiny_pipeline, photos[PHOTO.name])
    printed, fresh_stream, fresh_pixels = _load_in_a_fresh_interpreter(REPO_ID, stream, tmp_path, remote=remote)
    assert printed == ["sodec_pipeline.pipelines.pipeline_sodec", "SODECPipeline"]
    assert fresh_stream == stream
    np.testing.assert_array_equal(fresh_pixels, pixels)


# ---------------------------------------------------------------------- variant="fp16"
def _assert_same_weights(a, b):
    for name in ("compression_vae", "fidelity_guidance", "image_encoder", "unet", "vae"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        for key in sa:
            assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), (name, key)


def test_the_fp16_variant_of_the_shipped_model_is_its_weights(shipped_folder, shipped_pipeline, photos):
    """The shipped weights are float16 under the default file names: variant="fp16" loads those same weights (with or
    without torch_dtype=float16), no copy of them exists, and another dtype's variant still raises."""
    from sodec_pipeline.pipelines.weight_variants import unsuffixed_weights_are_variant

    assert not list(shipped_folder.glob("*/*.fp16.*"))
    assert unsuffixed_weights_are_variant(shipped_folder, "fp16")
    assert not unsuffixed_weights_are_variant(shipped_folder, "bf16")
    fp16 = SODECPipeline.from_pretrained("sodec-small", variant="fp16")
    _assert_same_weights(fp16, shipped_pipeline)
    fp16.set_progress_bar_config(disable=True)
    photo = photos[PHOTO.name]
    assert fp16.compress(photo) == shipped_pipeline.compress(photo)
    half = SODECPipeline.from_pretrained("sodec-small", variant="fp16", torch_dtype=torch.float16)
    _assert_same_weights(half, SODECPipeline.from_pretrained("sodec-small", torch_dtype=torch.float16))
    assert half.unet.dtype == torch.float16 and half.compression_vae.dtype == torch.float32
    with pytest.raises(ValueError, match="variant=bf16"):
        SODECPipeline.from_pretrained("sodec-small", variant="bf16")


def test_fp16_variant_of_a_float32_folder_still_raises_and_real_variant_files_still_load(
    tiny_pipeline_dir, tiny_pipeline, tmp_path
):
    from sodec_pipeline.pipelines.weight_variants import unsuffixed_weights_are_variant

    assert not unsuffixed_weights_are_variant(tiny_pipeline_dir, "fp16")  # float32 weights: no fp16 variant
    with pytest.raises(ValueError, match="variant=fp16"):
        SODECPipeline.from_pretrained(tiny_pipeline_dir, variant="fp16")
    # diffusers' own variant files (save_pretrained(variant="fp16")) load as diffusers loads them
    tiny_pipeline.save_pretrained(tmp_path / "variant", variant="fp16")
    assert (tmp_path / "variant" / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert not unsuffixed_weights_are_variant(tmp_path / "variant", "fp16")
    pipe = SODECPipeline.from_pretrained(tmp_path / "variant", variant="fp16")
    assert pipe.compress(_photo()) == tiny_pipeline.compress(_photo())


def test_an_exported_float16_folder_has_the_code_files_and_its_fp16_variant(tiny_pipeline_dir, tmp_path):
    """training/export_pipeline.py --weights_dtype float16 (how sodec-small was made) writes a folder plain diffusers
    loads, whose variant="fp16" is its default files."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training"))
    try:
        import export_pipeline
    finally:
        sys.path.pop(0)
    from sodec_pipeline.pipelines.weight_variants import unsuffixed_weights_are_variant

    out = tmp_path / "exported"
    export_pipeline.main(["--pipeline", str(tiny_pipeline_dir), "--output", str(out), "--weights_dtype", "float16"])
    index = json.loads((out / "model_index.json").read_text())
    assert set(_files(out)) == _loadable_folder_files(index) | {"README.md"}  # + the model card export writes
    assert unsuffixed_weights_are_variant(out, "fp16")
    _assert_same_weights(SODECPipeline.from_pretrained(out, variant="fp16"), SODECPipeline.from_pretrained(out))


def test_fp16_variant_of_a_hub_repo_with_float16_default_files(
    shipped_folder, shipped_pipeline, tmp_path, monkeypatch
):
    """The same for a Hub repo id (download faked as in test_pipeline.py): diffusers refuses the variant before it
    downloads anything; the default files are downloaded, found to be float16, and loaded."""
    import diffusers.pipelines.pipeline_utils as pipeline_utils

    snapshot = tmp_path / "cache" / "snapshots" / ("0" * 40)
    model_info, hf_hub_download, snapshot_download = fake_hub_functions(shipped_folder, snapshot)
    monkeypatch.setattr(pipeline_utils, "model_info", model_info)
    monkeypatch.setattr(pipeline_utils, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(pipeline_utils, "snapshot_download", snapshot_download)
    pipe = SODECPipeline.from_pretrained("sodec-test/sodec-small", variant="fp16", cache_dir=str(tmp_path / "cache"))
    _assert_same_weights(pipe, shipped_pipeline)
    assert pipe.config._name_or_path == "sodec-test/sodec-small"
    # SODECPipeline runs no code of the repo: its pipeline and model code files are not even downloaded
    assert not (snapshot / "pipeline_sodec.py").exists() and not (snapshot / "unet" / "sodec_pipeline.py").exists()
    assert not (snapshot / "compression_vae" / "sodec_pipeline.py").exists()
