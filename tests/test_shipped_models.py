"""Short names of shipped pipelines (sodec_pipeline.shipped_models): a folder under pretrained/ loads by
its name through SODECPipeline.from_pretrained; paths and Hub ids pass through; a local path wins."""

import shutil
from pathlib import Path

from sodec_pipeline import shipped_models


def test_a_shipped_folder_loads_by_its_short_name(tmp_path, tiny_pipeline_dir, monkeypatch, small_photo):
    from sodec_pipeline import SODECPipeline

    root = tmp_path / "pretrained"
    shutil.copytree(tiny_pipeline_dir, root / "sodec-example")
    monkeypatch.setattr(shipped_models.SHIPPED_MODELS, "root", lambda: root)
    assert shipped_models.shipped_model_names() == ["sodec-example"]
    assert Path(shipped_models.resolve_model_path("sodec-example")) == root / "sodec-example"
    assert shipped_models.resolve_model_path("owner/some-repo") == "owner/some-repo"
    assert shipped_models.resolve_model_path("sodec-missing") == "sodec-missing"
    pipe = SODECPipeline.from_pretrained("sodec-example")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.decompress(pipe.compress(small_photo)).images[0].size == small_photo.size

    (tmp_path / "cwd" / "sodec-example").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    assert shipped_models.resolve_model_path("sodec-example") == "sodec-example"  # an existing local path wins
