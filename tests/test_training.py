"""Tests of training/train_sodec.py on the tiny layout (hub_configs/sodec-tiny) with small crops.

Training runs in-process (``main(parse_args([...]))``) except the 2-process launch. Torch uses one thread
here: on a shared 2-core machine two threads per process are several times slower for the tiny model.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from ports import free_port


REPO_ROOT = Path(__file__).resolve().parent.parent
TRAINING_DIR = REPO_ROOT / "training"
SCRIPT = TRAINING_DIR / "train_sodec.py"
TINY_CONFIG = REPO_ROOT / "hub_configs" / "sodec-tiny"
ASSETS = Path(__file__).parent / "assets"
VALIDATION_IMAGE = ASSETS / "bsds_crop0_96x64.png"

sys.path.insert(0, str(TRAINING_DIR))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def train_sodec():
    import train_sodec

    return train_sodec


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    """Three training images of different sizes and modes, cut from the BSDS photographs."""
    folder = tmp_path_factory.mktemp("train_images")
    photo = PIL.Image.open(ASSETS / "bsds_481x321.jpg").convert("RGB")
    photo.crop((0, 0, 200, 150)).save(folder / "a.png")
    photo.crop((200, 100, 400, 321)).convert("L").save(folder / "b.jpg")
    sub = folder / "nested"
    sub.mkdir()
    PIL.Image.open(ASSETS / "bsds_crop1_96x64.png").save(sub / "c.png")  # smaller than 128: scaled up
    return folder


@pytest.fixture(scope="module")
def one_image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one_image")
    shutil.copy(ASSETS / "bsds_crop0_96x64.png", folder / "x.png")
    return folder


def run_training(train_sodec, argv):
    """One in-process run, as from a fresh interpreter (accelerate's state is a process-wide singleton)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    args = train_sodec.parse_args([str(a) for a in argv])
    return train_sodec.main(args)


def train_records(output_dir):
    from sodec_training.trackers import read_metrics

    records = read_metrics(Path(output_dir) / "logs" / "train_sodec" / "metrics.jsonl")
    return {r["step"]: r for r in records if "train/loss" in r}, [r for r in records if "validation/bpp" in r]


def base_args(pipeline_dir, data_dir, output_dir, *extra):
    return [
        "--pretrained_model_name_or_path",
        pipeline_dir,
        "--train_data_dir",
        data_dir,
        "--output_dir",
        output_dir,
        "--resolution",
        "64",
        "--report_to",
        "jsonl",
        "--seed",
        "0",
        "--checkpointing_steps",
        "100000",
        "--discriminator_channels",
        "8,16",
        *extra,
    ]


# ---------------------------------------------------------------------------------------------- pieces
def test_lambda_schedules_anneal_from_start_to_end():
    from sodec_training.schedules import annealed_lambda

    for schedule in ("step", "geometric", "linear", "cosine"):
        values = [annealed_lambda(p / 100, 0.01, 0.16, schedule, num_levels=5) for p in range(101)]
        assert values[0] == pytest.approx(0.01) and values[-1] == pytest.approx(0.16), schedule
        assert all(b >= a - 1e-12 for a, b in zip(values, values[1:])), f"{schedule} is not monotone"
    steps = sorted({round(annealed_lambda(p / 1000, 0.01, 0.16, "step", num_levels=5), 9) for p in range(1001)})
    assert steps == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16])  # geometric plateaus
    assert annealed_lambda(0.3, 0.01, 0.16, "constant") == 0.16
    with pytest.raises(ValueError, match="schedule"):
        annealed_lambda(0.3, 0.01, 0.16, "exp")


def test_training_plan_stages_and_lambda():
    from sodec_training.schedules import build_plan

    plan = build_plan(
        "all",
        10,
        [2, 2, 4, 2],
        lambda_rate_start=0.01,
        lambda_rate_end=0.1,
        lambda_schedule="linear",
        lambda_anneal_fraction=0.5,
    )
    assert [plan.stage_at(s)[0] for s in range(10)] == [1, 1, 2, 2, 3, 3, 3, 3, 4, 4]
    assert [plan.rate_weight(s) for s in range(10)] == pytest.approx(
        [0.01, 0.01, 0, 0, 0.01, 0.055, 0.1, 0.1, 0.1, 0.1]
    )
    assert plan.total_steps == 10
    single = build_plan("3", 5, None, lambda_rate_start=0.5, lambda_rate_end=0.5)
    assert single.stages == [(3, 5)] and single.rate_weight(4) == 0.5


def test_validation_metrics_match_pytorch_msssim_on_large_images_and_handle_small_ones():
    from pytorch_msssim import ms_ssim as reference

    from sodec_pipeline.metrics import batch_ms_ssim, batch_psnr

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 176, 192, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(batch_ms_ssim(x, y), reference(x, y, data_range=1.0, size_average=False))
    small_x, small_y = x[..., :64, :96], y[..., :64, :96]
    value = batch_ms_ssim(small_x, small_y)
    assert torch.all((value > 0.3) & (value < 1)) and batch_ms_ssim(small_x, small_x).allclose(torch.ones(2))
    assert batch_ms_ssim(small_x, small_y.flip(-1)).mean() < value.mean()
    assert torch.isnan(batch_ms_ssim(x[..., :8, :8], y[..., :8, :8])).all()  # below 11 px: undefined
    assert batch_psnr(x, x.clamp(0, 0.5))[0] < batch_psnr(x, y)[0]


def test_crops_depend_only_on_seed_epoch_and_index(train_dir):
    from sodec_training.data import EpochShuffleSampler, ImageFolderCrops

    dataset = ImageFolderCrops(train_dir, 64, random_flip=True, seed=3)
    assert len(dataset) == 3
    sampler = EpochShuffleSampler(3, seed=3)
    keys0 = list(sampler)
    sampler.set_epoch(1)
    keys1 = list(sampler)
    assert sorted(keys0) == [0, 1, 2] and sorted(keys1) == [3, 4, 5]
    a = dataset[keys1[0]]["pixel_values"]
    assert a.shape == (3, 64, 64) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, ImageFolderCrops(train_dir, 64, random_flip=True, seed=3)[keys1[0]]["pixel_values"])
    crops = [dataset[k]["pixel_values"] for k in range(0, 30, 3)]  # the same image, 10 epochs
    assert len({c.sum().item() for c in crops}) > 1  # crops move between epochs
    with pytest.raises(ValueError, match="multiple of 64"):
        ImageFolderCrops(train_dir, 100)


def fake_checkpoint(train_sodec, path, args, without=()):
    """A folder holding (one byte of) every file of a complete checkpoint but those named in ``without``."""
    path.mkdir(parents=True)
    for name in train_sodec.missing_checkpoint_files(path, args):
        if name not in without:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(b"x")


def test_latest_checkpoint_is_the_newest_complete_one_and_pruning_keeps_it(train_sodec, tmp_path, caplog):
    """ "latest" skips (with a warning) a checkpoint-N lacking a file, as a run killed while saving left them before
    checkpoints were written atomically, and ignores temporary folders; pruning counts and removes complete
    checkpoints only, never the new one; the next start removes temporary folders and restores a replaced one."""
    import argparse

    from accelerate.state import AcceleratorState, PartialState

    PartialState()  # the script's logger needs accelerate's state
    try:
        args = argparse.Namespace(resume_from_checkpoint="latest", output_dir=str(tmp_path), unet_training="lora")
        assert train_sodec.find_checkpoint(args) is None
        for step in (2, 10, 9):
            fake_checkpoint(train_sodec, tmp_path / f"checkpoint-{step}", args)
        assert train_sodec.find_checkpoint(args) == str(tmp_path / "checkpoint-10")
        (tmp_path / "checkpoint-12").mkdir()
        fake_checkpoint(train_sodec, tmp_path / "checkpoint-11", args, without=["random_states_0.pkl"])
        (tmp_path / "checkpoint-11" / "optimizer.bin").write_bytes(b"")  # cut short
        fake_checkpoint(train_sodec, tmp_path / ".checkpoint-13.tmp", args)
        (tmp_path / "checkpoint-final").mkdir()
        with caplog.at_level("WARNING"):
            assert train_sodec.find_checkpoint(args) == str(tmp_path / "checkpoint-10")
        assert "incomplete checkpoint" in caplog.text and "checkpoint-12" in caplog.text
        assert "it lacks optimizer.bin, random_states_0.pkl" in caplog.text  # checkpoint-11
        args.unet_training = "full"  # these checkpoints hold a LoRA, not the whole UNet
        assert train_sodec.find_checkpoint(args) is None

        args.unet_training = "lora"
        fake_checkpoint(train_sodec, tmp_path / "checkpoint-14", args)
        train_sodec.prune_checkpoints(str(tmp_path), 2, str(tmp_path / "checkpoint-14"), args)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == [".checkpoint-13.tmp", "checkpoint-10", "checkpoint-11", "checkpoint-12", "checkpoint-14",
                         "checkpoint-final"]  # fmt: skip
        train_sodec.prune_checkpoints(str(tmp_path), 1, str(tmp_path / "checkpoint-14"), args)
        assert not (tmp_path / "checkpoint-10").exists() and (tmp_path / "checkpoint-14").is_dir()

        (tmp_path / "checkpoint-14").rename(tmp_path / ".checkpoint-14.old")  # killed between the two renames
        fake_checkpoint(train_sodec, tmp_path / ".checkpoint-11.old", args)  # killed before removing it
        fake_checkpoint(train_sodec, tmp_path / ".checkpoint-9.pruned", args)  # killed while pruning
        train_sodec.clear_temporary_checkpoints(str(tmp_path))
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["checkpoint-11", "checkpoint-12", "checkpoint-14", "checkpoint-final"]
        assert train_sodec.find_checkpoint(args) == str(tmp_path / "checkpoint-14")
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_lpips_flags_fail_with_a_clear_message(
    train_sodec, tiny_pipeline_dir, train_dir, tmp_path, capsys, monkeypatch
):
    from sodec_pipeline.metrics import weights

    cases = [
        (["--lpips_weights", str(tmp_path / "nowhere.pth")], "does not exist"),
        (["--lpips_net", "squeeze"], "use --lpips_net alex or --lpips_net vgg"),
    ]
    for extra, expected in cases:
        with pytest.raises(SystemExit):
            argv = base_args(
                tiny_pipeline_dir, train_dir, tmp_path / "out", "--stage", "1", "--perceptual_loss", "lpips", *extra
            )
            train_sodec.parse_args([str(a) for a in argv])
        assert expected in capsys.readouterr().err
    # A machine without any weights: the message names the command that installs them.
    monkeypatch.setattr(weights, "_backbone", lambda net: (None, ""))
    with pytest.raises(SystemExit):
        argv = base_args(tiny_pipeline_dir, train_dir, tmp_path / "out", "--stage", "1", "--perceptual_loss", "lpips")
        train_sodec.parse_args([str(a) for a in argv])
    assert weights.INSTALL_COMMAND in capsys.readouterr().err


def test_lpips_loss_loads_its_weights_from_a_path(tmp_path):
    from sodec_pipeline.metrics import LPIPS, MetricWeightsError
    from sodec_training.losses import DistortionLoss, load_lpips_loss

    torch.manual_seed(0)
    original = LPIPS("alex").eval()
    path = tmp_path / "lpips_alex.pth"
    torch.save(original.state_dict(), path)
    loaded = load_lpips_loss("vgg", str(path))  # the file decides the backbone
    x, y = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    assert loaded.net_type == "alex" and torch.equal(loaded(x, y), original(x, y))
    assert not any(p.requires_grad for p in loaded.parameters())
    loss = DistortionLoss(1.0, 0.5, loaded)(y, x)
    assert loss["distortion"] == pytest.approx((loss["mse"] + 0.5 * loss["lpips"]).item())
    torch.save({k: v for k, v in original.state_dict().items() if not k.startswith("lin")}, tmp_path / "trunk.pth")
    with pytest.raises(MetricWeightsError, match="lacks"):
        load_lpips_loss("alex", str(tmp_path / "trunk.pth"))


# ---------------------------------------------------------------------------------------------- runs
#: Every stage (1→2→3→4), checkpoints every 2 steps (the last 2 kept), validation every 4, λ annealed in stage 3.
FULL_RUN_ARGS = (
    "--stage", "all", "--stage_steps", "2,2,3,2", "--train_batch_size", "2",
    "--checkpointing_steps", "2", "--checkpoints_total_limit", "2",
    "--validation_images", VALIDATION_IMAGE, "--validation_steps", "4",
    "--lambda_rate_start", "0.01", "--lambda_rate_end", "0.1", "--lambda_schedule", "geometric",
)  # fmt: skip


@pytest.fixture(scope="module")
def full_run(train_sodec, tiny_pipeline_dir, train_dir, tmp_path_factory):
    """Every stage (1→2→3→4) in one uninterrupted run, with checkpoints, pruning and validation."""
    output_dir = tmp_path_factory.mktemp("full_run") / "out"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            output_dir,
            *FULL_RUN_ARGS,
        ),
    )
    return output_dir


def test_every_stage_runs_and_logs(full_run):
    records, validations = train_records(full_run)
    assert sorted(records) == list(range(1, 10))
    assert [records[s]["train/stage"] for s in range(1, 10)] == [1, 1, 2, 2, 3, 3, 3, 4, 4]
    assert [records[s]["train/lambda"] for s in (1, 3, 5, 9)] == pytest.approx([0.01, 0.0, 0.01, 0.1])
    assert 0.01 < records[6]["train/lambda"] < 0.1  # annealing inside stage 3
    assert "train/align" not in records[1] and "train/aux_loss" not in records[3]  # stage 1 / frozen codec
    assert "train/d_loss" in records[8] and "train/g_adv" in records[8]
    for record in records.values():
        assert all(np.isfinite(v) for k, v in record.items() if k.startswith("train/"))
    assert [v["step"] for v in validations] == [4, 8]
    for v in validations:
        assert v["validation/bpp"] > 0 and 0 < v["validation/ms_ssim"] <= 1 and 0 < v["validation/psnr"] < 60
    images = list((full_run / "logs" / "train_sodec" / "images").glob("*.png"))
    assert len(images) == 2 and PIL.Image.open(images[0]).size == (96, 64)
    # --checkpoints_total_limit 2: of the checkpoints at steps 2, 4, 6, 8 the last two remain
    assert sorted(p.name for p in full_run.glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-8"]
    checkpoint = full_run / "checkpoint-6"
    for name in (
        "compression_vae",
        "fidelity_guidance",
        "pytorch_lora_weights.safetensors",
        "unet_conv_in.safetensors",
        "discriminator.safetensors",
        "optimizer.bin",
        "optimizer_1.bin",
        "random_states_0.pkl",
    ):
        assert (checkpoint / name).exists(), name


def test_resume_reproduces_the_uninterrupted_run(train_sodec, full_run, tiny_pipeline_dir, train_dir, tmp_path):
    output_dir = tmp_path / "resumed"
    output_dir.mkdir()
    shutil.copytree(full_run / "checkpoint-6", output_dir / "checkpoint-6")
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            output_dir,
            *FULL_RUN_ARGS,
            "--resume_from_checkpoint",
            "latest",
        ),
    )
    uninterrupted, validations = train_records(full_run)
    resumed, resumed_validations = train_records(output_dir)
    assert sorted(resumed) == [7, 8, 9]  # stage 3 (annealed λ) and the adversarial stage 4
    for step in (7, 8, 9):
        for key, value in uninterrupted[step].items():
            assert resumed[step][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (step, key)
    assert resumed_validations[0] == pytest.approx(validations[-1])  # step 8, real bitstreams
    assert (output_dir / "model_index.json").is_file()


#: Stage 1 with a checkpoint after every step, only the newest kept, each run resuming from the newest complete one.
KILLED_RUN_ARGS = (
    "--stage", "1", "--max_train_steps", "4", "--train_batch_size", "2",
    "--checkpointing_steps", "1", "--checkpoints_total_limit", "1", "--resume_from_checkpoint", "latest",
)  # fmt: skip


class Crash(Exception):
    """What a run stopped at a given moment raises instead (see :func:`crash_after`)."""


def crash_after(function, step):
    """``function``, which writes into the checkpoint folder that is its last argument, then :class:`Crash` when
    that folder is the temporary one of checkpoint ``step``."""

    def crashing(*args):
        function(*args)
        if Path(args[-1]).name == f".checkpoint-{step}.tmp":
            raise Crash

    return crashing


def test_a_run_killed_while_it_saves_resumes_from_its_last_complete_checkpoint(
    train_sodec, tiny_pipeline_dir, train_dir, tmp_path, monkeypatch, caplog, capsys
):
    """A run stopped at three moments of writing a checkpoint, with --checkpoints_total_limit 1: SIGKILLed (a
    subprocess) when the checkpoint's temporary folder appears; crashed in the save hook; crashed once the checkpoint
    is complete but not yet renamed. Besides, a partial checkpoint-3 as older versions of the script left when
    killed. Each run resumes from the newest complete checkpoint; the last ends with the losses and weights of an
    uninterrupted run."""
    from safetensors.torch import load_file

    uninterrupted_dir = tmp_path / "uninterrupted"
    run_training(train_sodec, base_args(tiny_pipeline_dir, train_dir, uninterrupted_dir, *KILLED_RUN_ARGS))
    uninterrupted, _ = train_records(uninterrupted_dir)
    out = tmp_path / "killed"
    argv = base_args(tiny_pipeline_dir, train_dir, out, *KILLED_RUN_ARGS)
    args = train_sodec.parse_args([str(a) for a in argv])
    metrics = out / "logs" / "train_sodec" / "metrics.jsonl"

    def complete_checkpoints():
        found = train_sodec.list_checkpoints(out)
        return [step for step, path in found if not train_sodec.missing_checkpoint_files(path, args)]

    def logged_steps():
        return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]

    # 1: SIGKILL when checkpoint 2's temporary folder appears (or checkpoint-2, should the poll miss the folder)
    log_path = tmp_path / "killed.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    with open(log_path, "w") as log:
        command = [sys.executable, str(SCRIPT), *[str(a) for a in argv]]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        while not ((out / ".checkpoint-2.tmp").exists() or (out / "checkpoint-2").exists()):
            assert process.poll() is None, log_path.read_text()[-4000:]
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        process.kill()
    assert logged_steps() == [1, 2] and complete_checkpoints() in ([1], [1, 2], [2])
    newest = complete_checkpoints()[-1]
    # the partial checkpoint-3 that a run killed while an older version of the script saved it left (the bug)
    (out / "checkpoint-3" / "compression_vae").mkdir(parents=True)
    (out / "checkpoint-3" / "compression_vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"")

    # 2: a crash in the save hook of checkpoint 3, once it has written the trained networks
    with monkeypatch.context() as patch:
        patch.setattr(train_sodec, "save_trainable_state", crash_after(train_sodec.save_trainable_state, 3))
        with pytest.raises(Crash):
            run_training(train_sodec, argv)
    assert logged_steps()[2:] == list(range(newest + 1, 4))
    assert f"Resuming from checkpoint {out / f'checkpoint-{newest}'}" in capsys.readouterr().out
    assert "Skipping the incomplete checkpoint" in caplog.text and complete_checkpoints() == [2]
    partial = out / ".checkpoint-3.tmp"
    assert (partial / "compression_vae").is_dir() and not (partial / "optimizer.bin").exists()

    # 3: a crash once checkpoint 4 is complete but not yet renamed; checkpoint 3 replaces the partial one
    logged = len(logged_steps())
    with monkeypatch.context() as patch:
        patch.setattr(train_sodec.TrainingClock, "save", crash_after(train_sodec.TrainingClock.save, 4))
        with pytest.raises(Crash):
            run_training(train_sodec, argv)
    assert f"Resuming from checkpoint {out / 'checkpoint-2'}" in capsys.readouterr().out
    assert f"Removing {partial}" in caplog.text and logged_steps()[logged:] == [3, 4]
    assert complete_checkpoints() == [3] and (out / ".checkpoint-4.tmp" / "training_clock.json").is_file()

    # the last run resumes from checkpoint 3 and finishes
    logged = len(logged_steps())
    run_training(train_sodec, argv)
    assert logged_steps()[logged:] == [4]
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-4"]
    assert "minutes_trained" in json.loads((out / "checkpoint-4" / "training_clock.json").read_text())

    for record in map(json.loads, metrics.read_text().splitlines()):  # every step of every run
        for key, value in uninterrupted[record["step"]].items():
            assert record[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (record["step"], key)
    for component in ("compression_vae", "fidelity_guidance"):
        expected = load_file(uninterrupted_dir / component / "diffusion_pytorch_model.safetensors")
        resumed = load_file(out / component / "diffusion_pytorch_model.safetensors")
        assert expected.keys() == resumed.keys()
        for key, value in expected.items():
            torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-7, msg=f"{component}.{key}")


def test_stage_2_step_leaves_the_codec_bit_identical_and_trains_hs_ts(
    train_sodec, tiny_pipeline_dir, train_dir, tmp_path
):
    """Stage 2 (docs/design.md §4) freezes the codec: one optimiser step of a real run — AdamW with weight decay,
    which would also move a weight whose gradient is zero rather than absent — leaves E, H_a, P and the
    entropy models bit-identical, and changes H_s and T_s."""
    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
    from safetensors.torch import load_file

    output_dir = tmp_path / "stage2"
    run_training(train_sodec, base_args(
        tiny_pipeline_dir, train_dir, output_dir, "--stage", "2", "--max_train_steps", "1", "--train_batch_size", "2",
        "--adam_weight_decay", "0.01",
    ))  # fmt: skip
    records, _ = train_records(output_dir)
    assert sorted(records) == [1] and records[1]["train/stage"] == 2
    before = load_file(Path(tiny_pipeline_dir) / "compression_vae" / SAFETENSORS_WEIGHTS_NAME)
    after = load_file(output_dir / "compression_vae" / SAFETENSORS_WEIGHTS_NAME)
    frozen = ("analysis_transform.", "hyper_analysis.", "hyper_synthesis_mean.", "hyper_synthesis_scale.",
              "entropy_bottleneck.", "gaussian_conditional.")  # fmt: skip
    trained = ("latent_synthesis.", "latent_transform.")  # H_s, T_s
    assert set(after) == set(before) and all(k.startswith(frozen + trained) for k in before)
    assert any(k.startswith("entropy_bottleneck.quantiles") for k in before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert sorted(k for k in changed if k.startswith(frozen)) == []
    for prefix in trained:
        assert any(k.startswith(prefix) for k in changed), prefix


def test_final_pipeline_reloads_and_compresses(full_run, tiny_pipeline_dir, small_photo):
    from safetensors.torch import load_file

    from sodec_pipeline import SODECPipeline

    pipe = SODECPipeline.from_pretrained(full_run)
    pipe.set_progress_bar_config(disable=True)
    unet_keys = pipe.unet.state_dict().keys()
    assert not [k for k in unet_keys if "lora" in k or "base_layer" in k]  # fused and unloaded
    lora = load_file(full_run / "pytorch_lora_weights.safetensors")
    assert lora and all(k.startswith("unet.") and "lora" in k for k in lora)
    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.equal(pipe.unet.state_dict()[name], base.unet.state_dict()[name])  # LoRA fused in
    assert not torch.equal(pipe.unet.conv_in.weight, base.unet.conv_in.weight)  # conv_in trained

    streams = pipe.compress(small_photo)
    output = pipe.decompress(streams, output_type="pt")
    assert output.images.shape == (1, 3, 64, 96)
    _, validations = train_records(full_run)
    final = [
        json.loads(line)
        for line in open(full_run / "logs" / "train_sodec" / "metrics.jsonl")
        if "final_validation/bpp" in line
    ][0]
    assert output.bpp[0] == pytest.approx(final["final_validation/bpp"])  # the same bytes after reloading
    reference = torch.from_numpy(np.asarray(small_photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    from sodec_pipeline.metrics import batch_psnr

    assert batch_psnr(output.images, reference).item() == pytest.approx(final["final_validation/psnr"], abs=1e-3)
    card = (full_run / "README.md").read_text()
    assert "library_name: diffusers" in card and "sodec" in card
    assert "--stage_steps 2,2,3,2" in card and f"{final['final_validation/bpp']:.4f}" in card
    assert str(tiny_pipeline_dir) in card
    data = front_matter(card)  # a local base without a card: no licence to inherit, no base_model
    assert data["pipeline_tag"] == "image-to-image" and "license" not in data and "base_model" not in data
    assert "## Quality levels" in card


def test_training_without_pretrained_priors_trains_unet_vae_decoder_and_vit(
    train_sodec, tiny_pipeline_dir, train_dir, tmp_path
):
    """--unet_training full --train_vae_decoder --train_image_encoder (the sodec-small recipe): every UNet
    weight, the VAE decoder and the ViT change, the VAE encoder does not; checkpoints hold them; a resumed
    run matches the uninterrupted one; the release reloads with the trained weights."""
    from safetensors.torch import load_file

    from sodec_pipeline import SODECPipeline

    def args(output_dir, *extra):
        return base_args(
            tiny_pipeline_dir,
            train_dir,
            output_dir,
            "--stage",
            "all",
            "--stage_steps",
            "1,1,2",
            "--train_batch_size",
            "2",
            "--unet_training",
            "full",
            "--train_vae_decoder",
            "--train_image_encoder",
            "--checkpointing_steps",
            "2",
            *extra,
        )

    output_dir = tmp_path / "no_priors"
    run_training(train_sodec, args(output_dir))
    checkpoint = output_dir / "checkpoint-2"
    for name in ("unet", "vae", "image_encoder"):
        assert (checkpoint / name / "diffusion_pytorch_model.safetensors").is_file(), name
    assert not (checkpoint / "pytorch_lora_weights.safetensors").exists()

    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    trained = SODECPipeline.from_pretrained(output_dir)

    def changed(a, b):
        return {k for k, v in a.state_dict().items() if not torch.equal(v, b.state_dict()[k])}

    unet_changed = changed(trained.unet, base.unet)
    assert any(".attn2." in k for k in unet_changed) and any(
        "up_blocks" in k for k in unet_changed
    )  # not only LoRA targets
    vae_changed = changed(trained.vae, base.vae)
    assert vae_changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in vae_changed)
    assert changed(trained.image_encoder, base.image_encoder)
    card = (output_dir / "README.md").read_text()
    assert (
        "the whole UNet" in card
        and "VAE decoder D_m" in card.split("Frozen:")[0]
        and "lora" not in card.split("---")[1]
    )

    resumed_dir = tmp_path / "no_priors_resumed"
    resumed_dir.mkdir()
    shutil.copytree(checkpoint, resumed_dir / "checkpoint-2")
    run_training(train_sodec, args(resumed_dir, "--resume_from_checkpoint", "latest"))
    uninterrupted, _ = train_records(output_dir)
    resumed, _ = train_records(resumed_dir)
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        for key, value in uninterrupted[step].items():
            assert resumed[step][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (step, key)
    released = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(
        released["conv_out.weight"],
        load_file(resumed_dir / "unet" / "diffusion_pytorch_model.safetensors")["conv_out.weight"],
    )


def test_freeze_fidelity_decoder_keeps_d_a_in_stage_2(train_sodec, tiny_pipeline_dir, train_dir, tmp_path):
    """--freeze_fidelity_decoder: a stage-2 run leaves D_a bit-identical (the fidelity decode stays stage 1's)
    while F_p, which steers the UNet, still trains; the model card says so."""
    from sodec_pipeline import SODECPipeline

    output_dir = tmp_path / "frozen_d_a"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            output_dir,
            "--stage",
            "2",
            "--max_train_steps",
            "2",
            "--train_batch_size",
            "2",
            "--freeze_fidelity_decoder",
        ),
    )
    base = SODECPipeline.from_pretrained(tiny_pipeline_dir).fidelity_guidance.state_dict()
    trained = SODECPipeline.from_pretrained(output_dir).fidelity_guidance.state_dict()
    changed = {k for k, v in trained.items() if not torch.equal(v, base[k])}
    assert changed and all(k.startswith("guidance_projection.") for k in changed)
    assert "F_p (D_a in stage 1 only)" in (output_dir / "README.md").read_text()


def test_quality_level_fine_tune_trains_d_a_alone_and_writes_the_levels(
    train_sodec, tiny_pipeline_dir, train_dir, tmp_path
):
    """--freeze_codec with --quantization_step_range: a stage-1 run changes D_a and nothing of the codec, so the
    bytes of every level are the base codec's; --quantization_steps/--default_quality land in the release."""
    from sodec_pipeline import SODECPipeline

    output_dir = tmp_path / "levels"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir, train_dir, output_dir, "--stage", "1", "--max_train_steps", "2",
            "--train_batch_size", "2", "--freeze_codec", "--quantization_step_range", "0.5", "2",
            "--quantization_steps", "2", "1", "0.5", "--default_quality", "3",
        ),
    )  # fmt: skip
    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    trained = SODECPipeline.from_pretrained(output_dir)
    codec = trained.compression_vae
    assert codec.config.quantization_steps == [2.0, 1.0, 0.5] and codec.default_quality == 3
    base_codec = base.compression_vae.state_dict()
    assert all(torch.equal(v, base_codec[k]) for k, v in codec.state_dict().items())
    d_a = base.fidelity_guidance.state_dict()
    changed = {k for k, v in trained.fidelity_guidance.state_dict().items() if not torch.equal(v, d_a[k])}
    assert changed and all(k.startswith("fidelity_decoder.") for k in changed)


def test_rate_weight_per_image_follows_its_quantisation_step(train_sodec):
    """--lambda_step_exponent γ: λ·Δᵢ^γ per image (a larger Δ, a coarser level, weighs its rate more)."""
    steps = torch.tensor([0.5, 1.0, 2.0])
    assert train_sodec.image_rate_weights(0.03, steps, 0.0) == 0.03
    assert train_sodec.image_rate_weights(0.03, None, 2.0) == 0.03
    torch.testing.assert_close(train_sodec.image_rate_weights(0.03, steps, 2.0), torch.tensor([0.0075, 0.03, 0.12]))
    with pytest.raises(SystemExit):
        train_sodec.parse_args(["--pretrained_model_name_or_path", "x", "--train_data_dir", "y",
                                "--quantization_step_range", "2", "1"])  # fmt: skip


def front_matter(card_text):
    import yaml

    assert card_text.startswith("---\n")
    return yaml.safe_load(card_text.split("---")[1])


def test_model_card_inherits_the_licence_and_names_only_hub_bases(train_sodec, tiny_pipeline, tmp_path, monkeypatch):
    """The release card (sodec_training.model_card): licence from the base's own card front matter (a local
    folder, the shipped sodec-small), openrail++ for an SD 2.x Hub base, none for a base without a card unless
    --license says; pipeline_tag/library_name/tags always; base_model only for a Hub id; --dataset_tag; the
    released codec's quality levels."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    base = tmp_path / "sd-derived-base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: openrail++\nlibrary_name: diffusers\n---\n# a base\n")
    plan = argparse.Namespace(stages=[(1, 2)])

    def card(name, *argv):
        args = train_sodec.parse_args(["--train_data_dir", "data", "--stage", "1", *[str(a) for a in argv]])
        args.num_train_images, args.num_processes = 4, 1
        out = tmp_path / name
        out.mkdir()
        train_sodec.save_model_card(args, name, str(out), {}, plan, tiny_pipeline.compression_vae)
        text = (out / "README.md").read_text()
        return front_matter(text), text

    data, text = card("local", "--pretrained_model_name_or_path", base)
    assert data["license"] == "openrail++" and "base_model" not in data and "datasets" not in data
    assert data["pipeline_tag"] == "image-to-image" and data["library_name"] == "diffusers"
    assert {"sodec", "image-compression", "diffusers", "diffusers-training", "lora"} <= set(data["tags"])
    assert "## Quality levels" in text and f"default level {tiny_pipeline.compression_vae.default_quality}" in text
    assert "## Validation" in text and "No validation images" in text

    data, _ = card("shipped", "--pretrained_model_name_or_path", "sodec-small")
    assert data["license"] == "other" and data["license_name"] == "bsds500-research-use"
    assert "base_model" not in data  # a shipped short name is no Hub id

    data, _ = card(
        "parts",
        "--sd_model",
        "stabilityai/stable-diffusion-2-1-base",
        "--image_encoder",
        "openai/clip-vit-base-patch16",
        "--codec_init",
        base,
    )
    assert data["license"] == "openrail++" and data["base_model"] == "stabilityai/stable-diffusion-2-1-base"

    data, text = card("hub", "--pretrained_model_name_or_path", "someone/sodec-from-scratch")
    assert "license" not in data and data["base_model"] == "someone/sodec-from-scratch"
    assert "pass `--license`" in text

    data, _ = card(
        "explicit",
        "--pretrained_model_name_or_path",
        base,
        "--license",
        "other",
        "--license_name",
        "bsds500-research-use",
        "--dataset_tag",
        "someone/bsds500",
    )
    assert data["license"] == "other" and data["license_name"] == "bsds500-research-use"
    assert data["datasets"] == ["someone/bsds500"]


def test_export_pipeline_writes_a_model_card(tiny_pipeline_dir, tmp_path):
    """export_pipeline.py writes README.md with front matter; the licence comes from the base pipeline's card
    (or --license), a local base is no base_model."""
    import export_pipeline

    base = tmp_path / "base"
    shutil.copytree(tiny_pipeline_dir, base)
    (base / "README.md").write_text("---\nlicense: openrail++\n---\n# base\n")
    out = tmp_path / "exported"
    export_pipeline.main(["--pipeline", str(base), "--output", str(out), "--dataset_tag", "someone/bsds500"])
    text = (out / "README.md").read_text()
    data = front_matter(text)
    assert data["license"] == "openrail++" and data["pipeline_tag"] == "image-to-image"
    assert data["library_name"] == "diffusers" and "sodec" in data["tags"] and "base_model" not in data
    assert data["datasets"] == ["someone/bsds500"]
    assert "# SODEC — exported" in text and "## Quality levels" in text and "float32" in text
    export_pipeline.main(["--pipeline", str(base), "--output", str(tmp_path / "other"), "--license", "mit"])
    assert front_matter((tmp_path / "other" / "README.md").read_text())["license"] == "mit"


def test_export_pipeline_from_a_checkpoint_in_float16(tiny_pipeline_dir, tmp_path, small_photo):
    """training/export_pipeline.py: a checkpoint's networks into a pipeline folder, parameters in fp16,
    buffers (the entropy tables) untouched; the folder loads in fp32 and round-trips an image."""
    import export_pipeline
    from safetensors.torch import load_file, save_file

    from sodec_pipeline import SODECPipeline

    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    checkpoint = tmp_path / "checkpoint-7"
    for name in ("compression_vae", "unet"):
        module = getattr(base, name)
        state = {
            k: (v + 0.01 if v.is_floating_point() and k in dict(module.named_parameters()) else v)
            for k, v in module.state_dict().items()
        }
        (checkpoint / name).mkdir(parents=True)
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            str(checkpoint / name / "diffusion_pytorch_model.safetensors"),
        )
    out = tmp_path / "exported"
    export_pipeline.main(
        [
            "--pipeline",
            str(tiny_pipeline_dir),
            "--checkpoint",
            str(checkpoint),
            "--output",
            str(out),
            "--weights_dtype",
            "float16",
        ]
    )
    saved = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in saved.values()} == {torch.float16}
    codec_file = load_file(str(out / "compression_vae" / "diffusion_pytorch_model.safetensors"))
    assert codec_file["gaussian_conditional.scale_table"].dtype == torch.float32  # buffers keep their dtype
    configs = sorted(out.glob("*.json")) + sorted(out.glob("*/*.json"))
    assert len(configs) >= 7 and not [p for p in configs if "_name_or_path" in p.read_text()]  # no source paths
    loaded = SODECPipeline.from_pretrained(out)
    expected = base.unet.state_dict()["conv_out.weight"] + 0.01
    assert loaded.unet.conv_out.weight.dtype == torch.float32
    assert torch.equal(loaded.unet.conv_out.weight, expected.half().float())
    assert torch.equal(loaded.vae.decoder.conv_out.weight, base.vae.decoder.conv_out.weight.half().float())
    output = loaded(image=small_photo)
    assert output.images[0].size == small_photo.size and output.bpp[0] > 0
    card = (out / "README.md").read_text()
    assert front_matter(card)["pipeline_tag"] == "image-to-image"
    assert "checkpoint-7" in card and "compression_vae, unet" in card and "float16" in card
    with pytest.raises(FileNotFoundError, match="not a train_sodec.py checkpoint"):
        export_pipeline.main(
            ["--pipeline", str(tiny_pipeline_dir), "--checkpoint", str(tmp_path), "--output", str(tmp_path / "x")]
        )


def test_push_to_hub_uploads_the_output_folder(train_sodec, tiny_pipeline_dir, train_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class Repo:
        repo_id = "someone/sodec-test"

    def fake_create_repo(repo_id, exist_ok, token):
        calls["create_repo"] = repo_id
        return Repo()

    def fake_upload_folder(**kwargs):
        calls["upload_folder"] = kwargs
        calls["uploaded_files"] = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())

    monkeypatch.setattr(train_sodec, "create_repo", fake_create_repo)
    monkeypatch.setattr(train_sodec, "upload_folder", fake_upload_folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the card lookup: no such repo yet
    output_dir = tmp_path / "sodec-test"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            output_dir,
            "--stage",
            "1",
            "--max_train_steps",
            "2",
            "--push_to_hub",
            "--hub_model_id",
            "someone/sodec-test",
            "--validation_images",
            VALIDATION_IMAGE,
        ),
    )
    assert calls["create_repo"] == "someone/sodec-test"
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "someone/sodec-test" and Path(upload["folder_path"]) == output_dir
    assert "checkpoint-*" in upload["ignore_patterns"]
    for name in ("README.md", "model_index.json", "unet", "compression_vae", "pytorch_lora_weights.safetensors"):
        assert name in calls["uploaded_files"]
    # the code files that let plain diffusers load the repo (trust_remote_code=True; tests/test_hub_folders.py)
    assert "pipeline_sodec.py" in calls["uploaded_files"]
    assert (output_dir / "compression_vae" / "sodec_pipeline.py").is_file()
    assert "# SODEC — someone/sodec-test" in (output_dir / "README.md").read_text()


def test_assemble_from_parts(train_sodec, tiny_pipeline_dir, train_dir, tmp_path):
    from sodec_pipeline import SODECPipeline

    output_dir = tmp_path / "from_parts"
    argv = base_args(tiny_pipeline_dir, train_dir, output_dir, "--stage", "1", "--max_train_steps", "2")
    argv = argv[2:] + [
        "--sd_model",
        tiny_pipeline_dir,
        "--image_encoder",
        Path(tiny_pipeline_dir) / "image_encoder",
        "--codec_init",
        tiny_pipeline_dir,
        "--assembly_config",
        TINY_CONFIG,
    ]
    run_training(train_sodec, argv)
    pipe = SODECPipeline.from_pretrained(output_dir)
    assert len(pipe.compress(PIL.Image.open(VALIDATION_IMAGE))[0]) > 0
    with pytest.raises(SystemExit):
        train_sodec.parse_args([str(a) for a in argv] + ["--pretrained_model_name_or_path", str(tiny_pipeline_dir)])


def test_bf16_mixed_precision_keeps_trained_weights_in_fp32(train_sodec, tiny_pipeline_dir, train_dir, tmp_path):
    from safetensors.torch import load_file

    output_dir = tmp_path / "bf16"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            output_dir,
            "--stage",
            "3",
            "--max_train_steps",
            "2",
            "--mixed_precision",
            "bf16",
        ),
    )
    records, _ = train_records(output_dir)
    assert all(np.isfinite(r["train/loss"]) for r in records.values())
    unet = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in unet.values()} == {torch.float32}  # released from the fp32 base


def test_perceptual_loss_run(train_sodec, tiny_pipeline_dir, train_dir, tmp_path):
    from sodec_pipeline.metrics import LPIPS

    torch.manual_seed(0)
    state = LPIPS("alex").state_dict()
    state = {k: v.abs() if k.startswith("lin") else v for k, v in state.items()}  # a distance: ≥ 0
    weights = tmp_path / "lpips_alex.pth"
    torch.save(state, weights)
    output_dir = tmp_path / "lpips"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            output_dir,
            "--stage",
            "3",
            "--max_train_steps",
            "2",
            "--perceptual_loss",
            "lpips",
            "--lpips_weights",
            weights,
            "--lpips_net",
            "alex",
            "--perceptual_weight",
            "0.5",
        ),
    )
    records, _ = train_records(output_dir)
    for r in records.values():
        assert r["train/lpips"] > 0
        expected = (
            r["train/mse"] + 0.5 * r["train/lpips"] + r["train/lambda"] * r["train/bpp"] + 1.0 * r["train/align"]
        )
        assert r["train/loss"] == pytest.approx(expected, rel=1e-5)


def test_two_process_launch(tiny_pipeline_dir, train_dir, tmp_path):
    """Two gloo processes through accelerate's torchrun launcher (see training/README.md for why not --cpu)."""
    from sodec_pipeline import SODECPipeline

    output_dir = tmp_path / "ddp"
    # PYTHONPATH: the launched script imports this checkout's sodec_pipeline, not another installed copy
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(SCRIPT),
        *[
            str(a)
            for a in base_args(
                tiny_pipeline_dir,
                train_dir,
                output_dir,
                "--stage",
                "all",
                "--stage_steps",
                "1,1,1,1",
                "--train_batch_size",
                "1",
                "--checkpointing_steps",
                "2",
            )
        ],
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "MULTI_CPU  Backend: gloo" in log and "Num processes: 2" in log
    assert "Total train batch size (w. parallel, distributed & accumulation) = 2" in log
    assert (output_dir / "checkpoint-2" / "random_states_1.pkl").is_file()
    records, _ = train_records(output_dir)
    assert sorted(records) == [1, 2, 3, 4]
    assert len(SODECPipeline.from_pretrained(output_dir).compress(PIL.Image.open(VALIDATION_IMAGE))[0]) > 0


def test_overfitting_one_image_lowers_rate_and_distortion(train_sodec, tiny_pipeline_dir, one_image_dir, tmp_path):
    """Stage 3 (everything trained, λ annealed) on one 64×64 crop for 200 steps."""
    output_dir = tmp_path / "overfit"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            one_image_dir,
            output_dir,
            "--stage",
            "3",
            "--max_train_steps",
            "200",
            "--center_crop",
            "--no-random_flip",
            "--train_batch_size",
            "1",
            "--learning_rate",
            "1e-3",
            "--lambda_rate_start",
            "0.1",
            "--lambda_rate_end",
            "1.0",
        ),
    )
    records, _ = train_records(output_dir)
    first = [records[s] for s in range(1, 11)]
    last = [records[s] for s in range(191, 201)]

    def mean(rs, key):
        return sum(r[key] for r in rs) / len(rs)

    assert mean(last, "train/bpp") < 0.5 * mean(first, "train/bpp")
    assert mean(last, "train/mse") < 0.9 * mean(first, "train/mse")
    assert mean(last, "train/align") < 0.5 * mean(first, "train/align")


def test_stage_0_trains_the_latent_autoencoder_and_stage_2_starts_from_it(
    train_sodec, tiny_pipeline_dir, train_dir, tmp_path
):
    """--stage 0 trains the VAE's encoder and decoder alone (codec untouched; MSE and KL logged); a stage-2 run
    with --pretrained_vae_model_name_or_path takes that VAE, logs the colour term and the ŷ_t regression to the
    VAE's latents (--latent_weight), and, with the VAE frozen, releases exactly stage 0's VAE."""
    from sodec_pipeline import SODECPipeline

    vae_dir = tmp_path / "stage0"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            vae_dir,
            "--stage",
            "0",
            "--max_train_steps",
            "2",
            "--train_batch_size",
            "2",
            "--unet_training",
            "full",
        ),
    )
    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    stage0 = SODECPipeline.from_pretrained(vae_dir)
    changed = {k for k, v in stage0.vae.state_dict().items() if not torch.equal(v, base.vae.state_dict()[k])}
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    for k, v in stage0.compression_vae.state_dict().items():
        assert torch.equal(v, base.compression_vae.state_dict()[k]), k
    records, _ = train_records(vae_dir)
    assert sorted(records) == [1, 2] and {"train/mse", "train/kl"} <= set(records[2]) and "train/bpp" not in records[2]
    assert records[2]["train/stage"] == 0 and records[2]["train/lambda"] == 0.0

    out = tmp_path / "stage2"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            out,
            "--stage",
            "2",
            "--max_train_steps",
            "1",
            "--train_batch_size",
            "2",
            "--pretrained_vae_model_name_or_path",
            vae_dir,
            "--colour_weight",
            "2",
            "--latent_weight",
            "0.5",
            "--unet_training",
            "full",
        ),
    )
    records, _ = train_records(out)
    assert records[1]["train/colour"] > 0 and records[1]["train/latent"] > 0
    released = SODECPipeline.from_pretrained(out)
    for k, v in released.vae.state_dict().items():
        assert torch.equal(v, stage0.vae.state_dict()[k]), k


def test_max_train_minutes_stops_checkpoints_and_releases(train_sodec, tiny_pipeline_dir, train_dir, tmp_path):
    """--max_train_minutes: the run stops at the first step past the limit, saves a checkpoint of that step and
    writes the release; the cosine decay follows the clock (the learning rate is 0 once time is up)."""
    out = tmp_path / "timed"
    run_training(
        train_sodec,
        base_args(
            tiny_pipeline_dir,
            train_dir,
            out,
            "--stage",
            "1",
            "--max_train_steps",
            "1000",
            "--train_batch_size",
            "2",
            "--max_train_minutes",
            "0.0001",
            "--lr_scheduler",
            "cosine",
            "--learning_rate",
            "1e-3",
        ),
    )
    records, _ = train_records(out)
    assert sorted(records) == [1]
    assert (out / "checkpoint-1").is_dir() and (out / "model_index.json").is_file()
    assert records[1]["train/lr"] == pytest.approx(0.0, abs=1e-12)
    clock_file = out / "checkpoint-1" / "training_clock.json"
    assert json.loads(clock_file.read_text())["minutes_trained"] >= 0.0001


def test_a_resumed_run_continues_the_clock(train_sodec, tiny_pipeline_dir, train_dir, tmp_path):
    """The minutes a checkpoint records count towards --max_train_minutes and the decay after a resume: a run
    resumed past its time budget stops after one step with the learning rate decayed."""
    out = tmp_path / "timed"
    args = [
        *("--stage", "1", "--train_batch_size", "2", "--lr_scheduler", "cosine", "--learning_rate", "1e-3"),
        *("--lr_warmup_steps", "0", "--checkpointing_steps", "1"),
    ]
    run_training(train_sodec, base_args(tiny_pipeline_dir, train_dir, out, *args, "--max_train_steps", "1"))
    (out / "checkpoint-1" / "training_clock.json").write_text(json.dumps({"minutes_trained": 30.0}))
    resume = ["--resume_from_checkpoint", "latest", "--max_train_steps", "4"]
    run_training(
        train_sodec, base_args(tiny_pipeline_dir, train_dir, out, *args, *resume, "--max_train_minutes", "20")
    )
    records, _ = train_records(out)
    assert max(records) == 2  # without the recorded 30 minutes it would have run to step 4
    assert records[2]["train/lr"] == pytest.approx(0.0, abs=1e-12)
    assert json.loads((out / "checkpoint-2" / "training_clock.json").read_text())["minutes_trained"] >= 30.0


def test_lr_decay_follows_steps_or_minutes_whichever_runs_out_first(train_sodec):
    """build_lr_scheduler with --max_train_minutes: warm-up by steps, then cosine over the larger of the step
    and time fractions."""
    import argparse

    clock = {"minutes": 0.0}
    args = argparse.Namespace(lr_scheduler="cosine", max_train_minutes=10.0, lr_warmup_steps=2, max_train_steps=100)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = train_sodec.build_lr_scheduler(args, optimizer, 1, lambda: clock["minutes"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)  # warm-up step 0 of 2
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)  # step 2: warm-up done, no time spent
    clock["minutes"] = 5.0  # half the time: the clock leads the steps (2 of 100)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    args_steps = argparse.Namespace(
        lr_scheduler="constant", max_train_minutes=10.0, lr_warmup_steps=0, max_train_steps=100
    )
    constant = train_sodec.build_lr_scheduler(
        args_steps, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 1, lambda: 9.0
    )
    assert constant.get_last_lr() == [1.0]


def test_distortion_with_dists_and_colour_terms():
    """DistortionLoss: k_M·MSE + k_D·DISTS + k_C·(MSE of 16×16 block means), each logged; a weight without its
    model is refused."""
    from sodec_pipeline.metrics import DISTS
    from sodec_training.losses import DistortionLoss, block_mean_mse

    torch.manual_seed(0)
    dists = DISTS().eval().requires_grad_(False)  # random weights: the arithmetic, not the metric, is tested
    loss = DistortionLoss(mse_weight=2.0, dists_weight=0.5, dists_model=dists, colour_weight=3.0)
    x, x_hat = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    out = loss(x_hat, x)
    expected = 2.0 * out["mse"] + 0.5 * out["dists"] + 3.0 * out["colour"]
    torch.testing.assert_close(out["distortion"], expected)
    torch.testing.assert_close(
        out["colour"],
        torch.nn.functional.mse_loss(torch.nn.functional.avg_pool2d(x_hat, 16), torch.nn.functional.avg_pool2d(x, 16)),
    )
    shifted = x + 0.1
    assert block_mean_mse(shifted, x).item() == pytest.approx(0.01, rel=1e-5)
    assert "dists" not in DistortionLoss()(x_hat, x) and "colour" not in DistortionLoss()(x_hat, x)
    with pytest.raises(ValueError, match="DISTS model"):
        DistortionLoss(dists_weight=1.0)


def test_export_takes_modules_from_another_pipeline(tiny_pipeline_dir, tmp_path):
    """export_pipeline.py --take MODULE=PIPELINE copies a component or a submodule's weights, nothing else."""
    import export_pipeline

    from sodec_pipeline import SODECPipeline

    other = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    with torch.no_grad():
        for p in list(other.unet.parameters()) + list(other.compression_vae.latent_transform.parameters()):
            p.add_(0.25)
        other.compression_vae.analysis_transform.conv_block1[1].weight.add_(1.0)
    other.save_pretrained(tmp_path / "other")
    out = tmp_path / "merged"
    export_pipeline.main(
        [
            "--pipeline",
            str(tiny_pipeline_dir),
            "--output",
            str(out),
            "--take",
            f"unet={tmp_path / 'other'}",
            "--take",
            f"compression_vae.latent_transform={tmp_path / 'other'}",
        ]
    )
    base, merged = SODECPipeline.from_pretrained(tiny_pipeline_dir), SODECPipeline.from_pretrained(out)
    assert torch.equal(merged.unet.conv_out.weight, other.unet.conv_out.weight)
    assert torch.equal(
        merged.compression_vae.latent_transform.conv_out.weight, other.compression_vae.latent_transform.conv_out.weight
    )
    assert torch.equal(
        merged.compression_vae.analysis_transform.conv_block1[1].weight,
        base.compression_vae.analysis_transform.conv_block1[1].weight,
    )
    with pytest.raises(SystemExit):
        export_pipeline.main(["--pipeline", str(tiny_pipeline_dir), "--output", str(out), "--take", "codec=x"])


# ---------------------------------------------------------------------------------------------- 🤗 datasets
@pytest.fixture(scope="module")
def imagefolder_dataset(tmp_path_factory):
    """A local `imagefolder` dataset of three PNGs (the images of ``train_dir``, as RGB)."""
    folder = tmp_path_factory.mktemp("imagefolder")
    photo = PIL.Image.open(ASSETS / "bsds_481x321.jpg").convert("RGB")
    photo.crop((0, 0, 200, 150)).save(folder / "a.png")
    photo.crop((200, 100, 400, 321)).save(folder / "b.png")
    PIL.Image.open(ASSETS / "bsds_crop1_96x64.png").convert("RGB").save(folder / "c.png")
    return folder


def test_dataset_crops_equal_the_folder_crops(imagefolder_dataset):
    datasets = pytest.importorskip("datasets")
    from sodec_training.data import DatasetCrops, ImageFolderCrops, list_images

    folder = ImageFolderCrops(imagefolder_dataset, 64, random_flip=True, seed=5)
    paths = [str(p) for p in list_images(imagefolder_dataset)]
    table = datasets.Dataset.from_dict({"image": paths, "label": [0, 1, 2]}).cast_column("image", datasets.Image())
    for source in (table, datasets.Dataset.from_dict({"picture": paths})):  # decoded images, or file paths
        column = source.column_names[0]
        crops = DatasetCrops(source, 64, image_column=column, random_flip=True, seed=5)
        assert len(crops) == 3
        for key in range(9):  # three epochs
            assert torch.equal(crops[key]["pixel_values"], folder[key]["pixel_values"]), key
    with pytest.raises(ValueError, match="--image_column 'img'"):
        DatasetCrops(table, 64, image_column="img")


def test_training_from_a_local_imagefolder_and_a_parquet_dataset(
    train_sodec, tiny_pipeline_dir, imagefolder_dataset, tmp_path
):
    datasets = pytest.importorskip("datasets")

    def args(output_dir, dataset_name, *extra):
        argv = base_args(tiny_pipeline_dir, "unused", output_dir, "--stage", "1", "--train_batch_size", "1", *extra)
        index = argv.index("--train_data_dir")
        argv[index : index + 2] = ["--dataset_name", dataset_name]
        return [str(a) for a in argv]

    output_dir = tmp_path / "imagefolder_run"
    run_training(train_sodec, args(output_dir, imagefolder_dataset, "--max_train_steps", "2"))
    records, _ = train_records(output_dir)
    assert sorted(records) == [1, 2]
    assert (output_dir / "model_index.json").is_file()

    # The same images through --train_data_dir: the same batches, so the same losses.
    folder_dir = tmp_path / "folder_run"
    argv = base_args(tiny_pipeline_dir, imagefolder_dataset, folder_dir, "--stage", "1", "--train_batch_size", "1")
    run_training(train_sodec, [*argv, "--max_train_steps", "2"])
    folder_records, _ = train_records(folder_dir)
    for step in (1, 2):
        assert folder_records[step]["train/loss"] == pytest.approx(records[step]["train/loss"], rel=1e-6)

    # A parquet file (images stored as bytes) and --max_train_samples: one epoch is then 2 images, 2 steps.
    parquet = tmp_path / "images.parquet"
    paths = sorted(str(p) for p in imagefolder_dataset.glob("*.png"))
    table = datasets.Dataset.from_dict({"img": paths}).cast_column("img", datasets.Image(decode=False))
    table = table.map(lambda item: {"img": {"bytes": Path(item["img"]["path"]).read_bytes(), "path": None}})
    table.to_parquet(str(parquet))
    output_dir = tmp_path / "parquet_run"
    extra = ("--image_column", "img", "--max_train_samples", "2", "--num_train_epochs", "1")
    run_training(train_sodec, args(output_dir, parquet, *extra))
    records, _ = train_records(output_dir)
    assert sorted(records) == [1, 2]


def test_dataset_flags_are_checked(train_sodec):
    base = ["--pretrained_model_name_or_path", "x", "--stage", "1"]
    with pytest.raises(SystemExit):
        train_sodec.parse_args(base)  # no data
    with pytest.raises(SystemExit):
        train_sodec.parse_args([*base, "--train_data_dir", "y", "--dataset_name", "z"])
    with pytest.raises(SystemExit):
        train_sodec.parse_args([*base, "--train_data_dir", "y", "--max_train_samples", "2"])
    args = train_sodec.parse_args([*base, "--dataset_name", "z", "--max_train_samples", "2"])
    assert args.image_column == "image" and args.max_train_samples == 2


# ---------------------------------------------------------------------------------------------- EMA
def test_use_ema_releases_the_ema_weights_and_resumes(train_sodec, tiny_pipeline_dir, train_dir, tmp_path):
    from safetensors.torch import load_file

    ema_args = ("--stage", "1", "--max_train_steps", "4", "--train_batch_size", "1", "--use_ema", "--ema_decay", "0.9")
    ema_args += ("--checkpointing_steps", "2")
    weights = Path("compression_vae", "diffusion_pytorch_model.safetensors")
    output_dir = tmp_path / "ema"
    run_training(train_sodec, base_args(tiny_pipeline_dir, train_dir, output_dir, *ema_args))
    released = load_file(output_dir / weights)
    raw = load_file(output_dir / "checkpoint-4" / weights)
    saved = torch.load(output_dir / "checkpoint-4" / "ema.pt", weights_only=True)
    shadow = dict(zip(saved["names"], saved["state"]["shadow_params"]))
    codec = {
        name.removeprefix("compression_vae."): p for name, p in shadow.items() if name.startswith("compression_vae.")
    }
    assert codec and set(codec) <= set(released)
    for name, p in codec.items():
        assert torch.equal(released[name], p.float()), name
    assert any(not torch.equal(released[name], raw[name]) for name in codec)

    resumed_dir = tmp_path / "ema_resumed"
    resumed_dir.mkdir()
    shutil.copytree(output_dir / "checkpoint-2", resumed_dir / "checkpoint-2")
    resume = ("--resume_from_checkpoint", "latest")
    run_training(train_sodec, base_args(tiny_pipeline_dir, train_dir, resumed_dir, *ema_args, *resume))
    uninterrupted, _ = train_records(output_dir)
    resumed, _ = train_records(resumed_dir)
    assert sorted(resumed) == [3, 4]
    for step in (3, 4):
        assert resumed[step]["train/loss"] == pytest.approx(uninterrupted[step]["train/loss"], rel=1e-6)
    resumed_released = load_file(resumed_dir / weights)
    for name in codec:
        torch.testing.assert_close(resumed_released[name], released[name], rtol=1e-5, atol=1e-7)
