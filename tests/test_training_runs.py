"""End-to-end runs of training/train_sodec.py on the tiny layout (hub_configs/sodec-tiny) with 64×64 crops: every
stage, resuming (after a kill too), the release and its card, the options of what trains, mixed precision,
LPIPS, two processes, 🤗 datasets, EMA and the time budget. The argv of every run is
``training_runs.train_argv``'s; runs are in-process (``main(parse_args([...]))``) except the 2-process launch and
the killed run. Torch uses one thread here: on a shared 2-core machine two threads per process are several times
slower for the tiny model. Unit tests of the pieces are in test_training_units.py."""

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
from training_runs import (
    ASSETS,
    REPO_ROOT,
    SCRIPT,
    TINY_CONFIG,
    VALIDATION_IMAGE,
    assert_same_records,
    copy_checkpoint,
    front_matter,
    make_imagefolder,
    make_train_images,
    run_training,
    torch_threads,
    train,
    train_argv,
    train_records,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return make_train_images(tmp_path_factory.mktemp("train_images"))


def changed_keys(a, b):
    """The names of the tensors that differ between two state dicts of the same keys."""
    return {k for k, v in a.items() if not torch.equal(v, b[k])}


# ---------------------------------------------------------------------------------------------- every stage
#: Every stage (1→2→3→4), checkpoints every 2 steps (the last 2 kept), validation every 4, λ annealed in stage 3.
FULL_RUN = {
    "stage": "all", "stage_steps": "2,2,3,2", "train_batch_size": 2, "checkpointing_steps": 2,
    "checkpoints_total_limit": 2, "validation_images": VALIDATION_IMAGE, "validation_steps": 4,
    "lambda_rate_start": 0.01, "lambda_rate_end": 0.1, "lambda_schedule": "geometric",
}  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tiny_pipeline_dir, train_dir, tmp_path_factory):
    """Every stage (1→2→3→4) in one uninterrupted run, with checkpoints, pruning and validation."""
    output_dir = tmp_path_factory.mktemp("full_run") / "out"
    train(tiny_pipeline_dir, train_dir, output_dir, **FULL_RUN)
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
        assert v["validation/chroma_excess"] >= 0 and v["validation/flat_excess"] >= 0
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


def test_resume_reproduces_the_uninterrupted_run(full_run, tiny_pipeline_dir, train_dir, tmp_path):
    output_dir = copy_checkpoint(full_run, 6, tmp_path / "resumed")
    train(tiny_pipeline_dir, train_dir, output_dir, **FULL_RUN, resume_from_checkpoint="latest")
    uninterrupted, validations = train_records(full_run)
    resumed, resumed_validations = train_records(output_dir)
    assert sorted(resumed) == [7, 8, 9]  # stage 3 (annealed λ) and the adversarial stage 4
    assert_same_records(resumed, uninterrupted, [7, 8, 9])
    assert resumed_validations[0] == pytest.approx(validations[-1])  # step 8, real bitstreams
    assert (output_dir / "model_index.json").is_file()


def test_final_pipeline_reloads_and_compresses(full_run, tiny_pipeline_dir, small_photo):
    from safetensors.torch import load_file

    from sodec_pipeline import SODECPipeline
    from sodec_pipeline.metrics import batch_psnr

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
    metrics = full_run / "logs" / "train_sodec" / "metrics.jsonl"
    final = [json.loads(line) for line in open(metrics) if "final_validation/bpp" in line][0]
    assert output.bpp[0] == pytest.approx(final["final_validation/bpp"])  # the same bytes after reloading
    reference = torch.from_numpy(np.asarray(small_photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    assert batch_psnr(output.images, reference).item() == pytest.approx(final["final_validation/psnr"], abs=1e-3)
    card = (full_run / "README.md").read_text()
    assert "library_name: diffusers" in card and "sodec" in card
    assert "--stage_steps 2,2,3,2" in card and f"{final['final_validation/bpp']:.4f}" in card
    assert "- Stages: stage 1: 2 steps, stage 2: 2 steps, stage 3: 3 steps, stage 4: 2 steps;" in card
    assert str(tiny_pipeline_dir) in card
    data = front_matter(card)  # a local base without a card: no licence to inherit, no base_model
    assert data["pipeline_tag"] == "image-to-image" and "license" not in data and "base_model" not in data
    assert "## Quality levels" in card


# ---------------------------------------------------------------------------------------------- killed runs
#: Stage 1 with a checkpoint after every step, only the newest kept, each run resuming from the newest complete one.
KILLED_RUN = {
    "stage": 1, "max_train_steps": 4, "train_batch_size": 2, "checkpointing_steps": 1, "checkpoints_total_limit": 1,
    "resume_from_checkpoint": "latest",
}  # fmt: skip


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


def sigkill_when_saving(argv, out, step, log_path):
    """Runs ``train_sodec.py argv`` in a subprocess and SIGKILLs it when checkpoint ``step``'s temporary folder
    appears (or ``checkpoint-<step>``, should the poll miss the folder)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    with open(log_path, "w") as log:
        command = [sys.executable, str(SCRIPT), *argv]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    try:
        while not ((out / f".checkpoint-{step}.tmp").exists() or (out / f"checkpoint-{step}").exists()):
            assert process.poll() is None, log_path.read_text()[-4000:]
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        process.kill()


def test_a_run_killed_while_it_saves_resumes_from_its_last_complete_checkpoint(
    tiny_pipeline_dir, train_dir, tmp_path, monkeypatch, caplog, capsys
):
    """A run stopped at three moments of writing a checkpoint, with --checkpoints_total_limit 1: SIGKILLed (a
    subprocess) when the checkpoint's temporary folder appears; crashed in the save hook; crashed once the checkpoint
    is complete but not yet renamed. Besides, a partial checkpoint-3 as older versions of the script left when
    killed. Each run resumes from the newest complete checkpoint; the last ends with the losses and weights of an
    uninterrupted run."""
    import train_sodec
    from safetensors.torch import load_file

    from sodec_training import checkpoints

    uninterrupted_dir = tmp_path / "uninterrupted"
    train(tiny_pipeline_dir, train_dir, uninterrupted_dir, **KILLED_RUN)
    uninterrupted, _ = train_records(uninterrupted_dir)
    out = tmp_path / "killed"
    argv = train_argv(tiny_pipeline_dir, train_dir, out, **KILLED_RUN)
    args = train_sodec.parse_args(argv)
    metrics = out / "logs" / "train_sodec" / "metrics.jsonl"

    def complete_checkpoints():
        found = checkpoints.list_checkpoints(out)
        return [step for step, path in found if not checkpoints.missing_checkpoint_files(path, args)]

    def logged_steps():
        return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]

    # 1: SIGKILL when checkpoint 2's temporary folder appears
    sigkill_when_saving(argv, out, 2, tmp_path / "killed.log")
    assert logged_steps() == [1, 2] and complete_checkpoints() in ([1], [1, 2], [2])
    newest = complete_checkpoints()[-1]
    # the partial checkpoint-3 that a run killed while an older version of the script saved it left (the bug)
    (out / "checkpoint-3" / "compression_vae").mkdir(parents=True)
    (out / "checkpoint-3" / "compression_vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"")

    # 2: a crash in the save hook of checkpoint 3, once it has written the trained networks
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints, "save_trainable_state", crash_after(checkpoints.save_trainable_state, 3))
        with pytest.raises(Crash):
            run_training(argv)
    assert logged_steps()[2:] == list(range(newest + 1, 4))
    assert f"Resuming from checkpoint {out / f'checkpoint-{newest}'}" in capsys.readouterr().out
    assert "Skipping the incomplete checkpoint" in caplog.text and complete_checkpoints() == [2]
    partial = out / ".checkpoint-3.tmp"
    assert (partial / "compression_vae").is_dir() and not (partial / "optimizer.bin").exists()

    # 3: a crash once checkpoint 4 is complete but not yet renamed; checkpoint 3 replaces the partial one
    logged = len(logged_steps())
    with monkeypatch.context() as patch:
        patch.setattr(checkpoints.TrainingClock, "save", crash_after(checkpoints.TrainingClock.save, 4))
        with pytest.raises(Crash):
            run_training(argv)
    assert f"Resuming from checkpoint {out / 'checkpoint-2'}" in capsys.readouterr().out
    assert f"Removing {partial}" in caplog.text and logged_steps()[logged:] == [3, 4]
    assert complete_checkpoints() == [3] and (out / ".checkpoint-4.tmp" / "training_clock.json").is_file()

    # the last run resumes from checkpoint 3 and finishes
    logged = len(logged_steps())
    run_training(argv)
    assert logged_steps()[logged:] == [4]
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-4"]
    assert "minutes_trained" in json.loads((out / "checkpoint-4" / "training_clock.json").read_text())

    for record in map(json.loads, metrics.read_text().splitlines()):  # every step of every run
        assert_same_records({record["step"]: record}, uninterrupted, [record["step"]])
    for component in ("compression_vae", "fidelity_guidance"):
        expected = load_file(uninterrupted_dir / component / "diffusion_pytorch_model.safetensors")
        resumed = load_file(out / component / "diffusion_pytorch_model.safetensors")
        assert expected.keys() == resumed.keys()
        for key, value in expected.items():
            torch.testing.assert_close(resumed[key], value, rtol=1e-5, atol=1e-7, msg=f"{component}.{key}")


# ---------------------------------------------------------------------------------------------- what trains
def test_stage_2_step_leaves_the_codec_bit_identical_and_trains_hs_ts(tiny_pipeline_dir, train_dir, tmp_path):
    """Stage 2 (docs/design.md §4) freezes the codec: one optimiser step of a real run — AdamW with weight decay,
    which would also move a weight whose gradient is zero rather than absent — leaves E, H_a, P and the
    entropy models bit-identical, and changes H_s and T_s."""
    from diffusers.utils import SAFETENSORS_WEIGHTS_NAME
    from safetensors.torch import load_file

    output_dir = tmp_path / "stage2"
    train(
        tiny_pipeline_dir, train_dir, output_dir, stage=2, max_train_steps=1, train_batch_size=2,
        adam_weight_decay=0.01,
    )  # fmt: skip
    records, _ = train_records(output_dir)
    assert sorted(records) == [1] and records[1]["train/stage"] == 2
    before = load_file(Path(tiny_pipeline_dir) / "compression_vae" / SAFETENSORS_WEIGHTS_NAME)
    after = load_file(output_dir / "compression_vae" / SAFETENSORS_WEIGHTS_NAME)
    frozen = ("analysis_transform.", "hyper_analysis.", "hyper_synthesis_mean.", "hyper_synthesis_scale.",
              "entropy_bottleneck.", "gaussian_conditional.")  # fmt: skip
    trained = ("latent_synthesis.", "latent_transform.")  # H_s, T_s
    assert set(after) == set(before) and all(k.startswith(frozen + trained) for k in before)
    assert any(k.startswith("entropy_bottleneck.quantiles") for k in before)
    changed = changed_keys(before, after)
    assert sorted(k for k in changed if k.startswith(frozen)) == []
    for prefix in trained:
        assert any(k.startswith(prefix) for k in changed), prefix


def test_training_without_pretrained_priors_trains_unet_vae_decoder_and_vit(tiny_pipeline_dir, train_dir, tmp_path):
    """--unet_training full --train_vae_decoder --train_image_encoder (the sodec-small recipe): every UNet
    weight, the VAE decoder and the ViT change, the VAE encoder does not; checkpoints hold them; a resumed
    run matches the uninterrupted one; the release reloads with the trained weights."""
    from safetensors.torch import load_file

    from sodec_pipeline import SODECPipeline

    flags = {
        "stage": "all", "stage_steps": "1,1,2", "train_batch_size": 2, "unet_training": "full",
        "train_vae_decoder": True, "train_image_encoder": True, "checkpointing_steps": 2,
    }  # fmt: skip
    output_dir = tmp_path / "no_priors"
    train(tiny_pipeline_dir, train_dir, output_dir, **flags)
    checkpoint = output_dir / "checkpoint-2"
    for name in ("unet", "vae", "image_encoder"):
        assert (checkpoint / name / "diffusion_pytorch_model.safetensors").is_file(), name
    assert not (checkpoint / "pytorch_lora_weights.safetensors").exists()

    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    trained = SODECPipeline.from_pretrained(output_dir)
    unet_changed = changed_keys(trained.unet.state_dict(), base.unet.state_dict())
    assert any(".attn2." in k for k in unet_changed) and any("up_blocks" in k for k in unet_changed)  # not only LoRA's
    vae_changed = changed_keys(trained.vae.state_dict(), base.vae.state_dict())
    assert vae_changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in vae_changed)
    assert changed_keys(trained.image_encoder.state_dict(), base.image_encoder.state_dict())
    card = (output_dir / "README.md").read_text()
    assert "the whole UNet" in card and "VAE decoder D_m" in card.split("Frozen:")[0]
    assert "lora" not in card.split("---")[1]

    resumed_dir = copy_checkpoint(output_dir, 2, tmp_path / "no_priors_resumed")
    train(tiny_pipeline_dir, train_dir, resumed_dir, **flags, resume_from_checkpoint="latest")
    uninterrupted, _ = train_records(output_dir)
    resumed, _ = train_records(resumed_dir)
    assert sorted(resumed) == [3, 4]
    assert_same_records(resumed, uninterrupted, [3, 4])
    released = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(
        released["conv_out.weight"],
        load_file(resumed_dir / "unet" / "diffusion_pytorch_model.safetensors")["conv_out.weight"],
    )


def test_freeze_fidelity_decoder_keeps_d_a_in_stage_2(tiny_pipeline_dir, train_dir, tmp_path):
    """--freeze_fidelity_decoder: a stage-2 run leaves D_a bit-identical (the fidelity decode stays stage 1's)
    while F_p, which steers the UNet, still trains; the model card says so."""
    from sodec_pipeline import SODECPipeline

    output_dir = tmp_path / "frozen_d_a"
    train(
        tiny_pipeline_dir, train_dir, output_dir, stage=2, max_train_steps=2, train_batch_size=2,
        freeze_fidelity_decoder=True,
    )  # fmt: skip
    base = SODECPipeline.from_pretrained(tiny_pipeline_dir).fidelity_guidance.state_dict()
    trained = SODECPipeline.from_pretrained(output_dir).fidelity_guidance.state_dict()
    changed = changed_keys(trained, base)
    assert changed and all(k.startswith("guidance_projection.") for k in changed)
    assert "F_p (D_a in stage 1 only)" in (output_dir / "README.md").read_text()


def test_quality_level_fine_tune_trains_d_a_alone_and_writes_the_levels(tiny_pipeline_dir, train_dir, tmp_path):
    """--freeze_codec with --quantization_step_range: a stage-1 run changes D_a and nothing of the codec, so the
    bytes of every level are the base codec's; --quantization_steps/--default_quality land in the release."""
    from sodec_pipeline import SODECPipeline

    output_dir = tmp_path / "levels"
    train(
        tiny_pipeline_dir, train_dir, output_dir, stage=1, max_train_steps=2, train_batch_size=2, freeze_codec=True,
        quantization_step_range=(0.5, 2), quantization_steps=(2, 1, 0.5), default_quality=3,
    )  # fmt: skip
    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    trained = SODECPipeline.from_pretrained(output_dir)
    codec = trained.compression_vae
    assert codec.config.quantization_steps == [2.0, 1.0, 0.5] and codec.default_quality == 3
    assert not changed_keys(codec.state_dict(), base.compression_vae.state_dict())
    changed = changed_keys(trained.fidelity_guidance.state_dict(), base.fidelity_guidance.state_dict())
    assert changed and all(k.startswith("fidelity_decoder.") for k in changed)


def test_entropy_model_flag_trains_a_context_model_from_a_hyperprior_codec(
    tiny_pipeline_dir, train_dir, tmp_path, small_photo
):
    """--entropy_model checkerboard converts the loaded hyperprior codec (its weights kept, the context networks
    new) and stage 1 trains the context networks through the rate (each image at its own Δ, λ·Δ²); the release and
    an export of a checkpoint onto the hyperprior base are context-model codecs writing version-4 streams; a resumed
    run converts the base again and loads the checkpoint's context networks."""
    import export_pipeline

    from sodec_pipeline import SODECPipeline

    output_dir = tmp_path / "context"
    flags = dict(
        stage=1, train_batch_size=2, entropy_model="checkerboard", context_channels=4, checkpointing_steps=2,
        quantization_step_range=(0.5, 2), lambda_step_exponent=2, learning_rate=1e-3,
    )  # fmt: skip
    train(tiny_pipeline_dir, train_dir, output_dir, max_train_steps=2, **flags)
    base = SODECPipeline.from_pretrained(tiny_pipeline_dir).compression_vae
    codec = SODECPipeline.from_pretrained(output_dir).compression_vae
    assert codec.config.entropy_model_type == "checkerboard" and codec.context_prediction.out_channels == 4
    assert codec.entropy_parameters.conv3.weight.abs().sum() > 0  # g_ep's last layer left zero: it trained
    assert changed_keys(base.state_dict(), codec.state_dict()) >= {"hyper_synthesis_scale.conv3.weight"}
    export_pipeline.main(
        ["--pipeline", str(tiny_pipeline_dir), "--checkpoint", str(output_dir / "checkpoint-2"), "--output",
         str(tmp_path / "exported")]
    )  # fmt: skip
    exported = SODECPipeline.from_pretrained(tmp_path / "exported")
    exported.set_progress_bar_config(disable=True)
    assert not changed_keys(exported.compression_vae.state_dict(), codec.state_dict())
    (stream,) = exported.compress(small_photo)
    assert stream[2] == 4 and exported.decompress(stream).images[0].size == small_photo.size
    train(tiny_pipeline_dir, train_dir, output_dir, max_train_steps=3, resume_from_checkpoint="latest", **flags)
    records, _ = train_records(output_dir)
    assert sorted(records) == [1, 2, 3]


def test_realism_control_trains_the_unet_at_each_images_timestep(tiny_pipeline_dir, train_dir, tmp_path, monkeypatch):
    """--realism_control in stage 2: the UNet runs at round(β·999) for each image's β (25 % of them at 999), and the
    release's scheduler takes a realism, so that decompress(realism=0.5) decodes where the base model refuses it."""
    import diffusers

    from sodec_pipeline import SODECPipeline

    seen = []
    forward = diffusers.UNet2DConditionModel.forward

    def spy(unet, sample, timestep, *args, **kwargs):
        seen.extend(timestep.tolist())
        return forward(unet, sample, timestep, *args, **kwargs)

    monkeypatch.setattr(diffusers.UNet2DConditionModel, "forward", spy)
    import export_pipeline

    output_dir = tmp_path / "realism"
    train(
        tiny_pipeline_dir, train_dir, output_dir, stage=2, max_train_steps=3, train_batch_size=4, realism_control=True,
        texture_weight=0.1, chroma_weight=0.1, grain_weight=0.5, checkpointing_steps=3,
    )  # fmt: skip
    records = train_records(output_dir)[0].values()
    assert all(r["train/chroma"] >= 0 and r["train/grain"] >= 0 for r in records)  # the chroma and grain losses
    training_timesteps = seen[: 3 * 4]
    assert len(set(training_timesteps)) > 3 and all(0 <= t <= 999 for t in training_timesteps)
    released = SODECPipeline.from_pretrained(output_dir)
    released.set_progress_bar_config(disable=True)
    assert released.scheduler.config.realism_control is True
    photo = PIL.Image.open(train_dir / sorted(os.listdir(train_dir))[0]).convert("RGB").crop((0, 0, 64, 64))
    (stream,) = released.compress(photo)
    assert released.decompress(stream, realism=0.5).images[0].size == (64, 64)
    with pytest.raises(ValueError, match="without a realism control"):
        SODECPipeline.from_pretrained(tiny_pipeline_dir).decompress(stream, realism=0.5)
    # an export of the checkpoint onto the base carries the scheduler over, with the default chosen
    exported_dir = tmp_path / "exported"
    export_pipeline.main(
        ["--pipeline", str(tiny_pipeline_dir), "--checkpoint", str(output_dir / "checkpoint-3"), "--output",
         str(exported_dir), "--default_realism", "0.75"]
    )  # fmt: skip
    exported = SODECPipeline.from_pretrained(exported_dir)
    assert exported.scheduler.config.realism_control is True and exported.config.default_realism == 0.75
    with pytest.raises(SystemExit, match="without a realism control"):
        export_pipeline.main(
            ["--pipeline", str(tiny_pipeline_dir), "--output", str(tmp_path / "x"), "--default_realism", "0.5"]
        )


def test_stage_0_trains_the_latent_autoencoder_and_stage_2_starts_from_it(tiny_pipeline_dir, train_dir, tmp_path):
    """--stage 0 trains the VAE's encoder and decoder alone (codec untouched; MSE and KL logged); a stage-2 run
    with --pretrained_vae_model_name_or_path takes that VAE, logs the colour term and the ŷ_t regression to the
    VAE's latents (--latent_weight), and, with the VAE frozen, releases exactly stage 0's VAE."""
    from sodec_pipeline import SODECPipeline

    vae_dir = tmp_path / "stage0"
    train(tiny_pipeline_dir, train_dir, vae_dir, stage=0, max_train_steps=2, train_batch_size=2, unet_training="full")
    base = SODECPipeline.from_pretrained(tiny_pipeline_dir)
    stage0 = SODECPipeline.from_pretrained(vae_dir)
    changed = changed_keys(stage0.vae.state_dict(), base.vae.state_dict())
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder.") for k in changed)
    assert not changed_keys(stage0.compression_vae.state_dict(), base.compression_vae.state_dict())
    records, _ = train_records(vae_dir)
    assert sorted(records) == [1, 2] and {"train/mse", "train/kl"} <= set(records[2]) and "train/bpp" not in records[2]
    assert records[2]["train/stage"] == 0 and records[2]["train/lambda"] == 0.0

    out = tmp_path / "stage2"
    train(
        tiny_pipeline_dir, train_dir, out, stage=2, max_train_steps=1, train_batch_size=2,
        pretrained_vae_model_name_or_path=vae_dir, colour_weight=2, latent_weight=0.5, unet_training="full",
    )  # fmt: skip
    records, _ = train_records(out)
    assert records[1]["train/colour"] > 0 and records[1]["train/latent"] > 0
    released = SODECPipeline.from_pretrained(out)
    assert not changed_keys(released.vae.state_dict(), stage0.vae.state_dict())


# ---------------------------------------------------------------------------------------------- other options
def test_push_to_hub_uploads_the_output_folder(tiny_pipeline_dir, train_dir, tmp_path, monkeypatch):
    import huggingface_hub
    import train_sodec

    from sodec_training import release

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
    monkeypatch.setattr(release, "upload_folder", fake_upload_folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the card lookup: no such repo yet
    output_dir = tmp_path / "sodec-test"
    train(
        tiny_pipeline_dir, train_dir, output_dir, stage=1, max_train_steps=2, push_to_hub=True,
        hub_model_id="someone/sodec-test", validation_images=VALIDATION_IMAGE,
    )  # fmt: skip
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


def test_assemble_from_parts(tiny_pipeline_dir, train_dir, tmp_path):
    import train_sodec

    from sodec_pipeline import SODECPipeline

    output_dir = tmp_path / "from_parts"
    parts = {
        "sd_model": tiny_pipeline_dir, "image_encoder": Path(tiny_pipeline_dir) / "image_encoder",
        "codec_init": tiny_pipeline_dir, "assembly_config": TINY_CONFIG,
    }  # fmt: skip
    train(None, train_dir, output_dir, stage=1, max_train_steps=2, **parts)
    pipe = SODECPipeline.from_pretrained(output_dir)
    assert len(pipe.compress(PIL.Image.open(VALIDATION_IMAGE))[0]) > 0
    with pytest.raises(SystemExit):
        train_sodec.parse_args(train_argv(tiny_pipeline_dir, train_dir, output_dir, stage=1, **parts))


def test_bf16_mixed_precision_keeps_trained_weights_in_fp32(tiny_pipeline_dir, train_dir, tmp_path):
    from safetensors.torch import load_file

    output_dir = tmp_path / "bf16"
    train(tiny_pipeline_dir, train_dir, output_dir, stage=3, max_train_steps=2, mixed_precision="bf16")
    records, _ = train_records(output_dir)
    assert all(np.isfinite(r["train/loss"]) for r in records.values())
    unet = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in unet.values()} == {torch.float32}  # released from the fp32 base


def test_perceptual_loss_run_loads_lpips_once(tiny_pipeline_dir, train_dir, tmp_path, monkeypatch):
    """--perceptual_loss lpips with --lpips_weights: the loss adds k_P·LPIPS, and the LPIPS is loaded once
    (``parse_args`` loads it to fail at once where its weights are missing; ``main`` uses that one)."""
    from sodec_pipeline.metrics import LPIPS
    from sodec_training import losses

    torch.manual_seed(0)
    state = LPIPS("alex").state_dict()
    state = {k: v.abs() if k.startswith("lin") else v for k, v in state.items()}  # a distance: ≥ 0
    weights = tmp_path / "lpips_alex.pth"
    torch.save(state, weights)
    loads, load_lpips = [], losses.load_lpips

    def counted_load_lpips(*args, **kwargs):
        loads.append(args)
        return load_lpips(*args, **kwargs)

    monkeypatch.setattr(losses, "load_lpips", counted_load_lpips)

    output_dir = tmp_path / "lpips"
    train(
        tiny_pipeline_dir, train_dir, output_dir, stage=3, max_train_steps=2, perceptual_loss="lpips",
        lpips_weights=weights, lpips_net="alex", perceptual_weight=0.5,
    )  # fmt: skip
    assert len(loads) == 1
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
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
        "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
    ]  # fmt: skip
    argv = train_argv(
        tiny_pipeline_dir, train_dir, output_dir, stage="all", stage_steps="1,1,1,1", train_batch_size=1,
        checkpointing_steps=2,
    )  # fmt: skip
    command = [*launcher, str(SCRIPT), *argv]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "MULTI_CPU  Backend: gloo" in log and "Num processes: 2" in log
    assert "Total train batch size (w. parallel, distributed & accumulation) = 2" in log
    assert (output_dir / "checkpoint-2" / "random_states_1.pkl").is_file()
    records, _ = train_records(output_dir)
    assert sorted(records) == [1, 2, 3, 4]
    assert len(SODECPipeline.from_pretrained(output_dir).compress(PIL.Image.open(VALIDATION_IMAGE))[0]) > 0


def test_overfitting_one_image_lowers_rate_and_distortion(tiny_pipeline_dir, tmp_path):
    """Stage 3 (everything trained, λ annealed) on one 64×64 crop for 200 steps."""
    one_image_dir = tmp_path / "one_image"
    one_image_dir.mkdir()
    shutil.copy(ASSETS / "bsds_crop0_96x64.png", one_image_dir / "x.png")
    output_dir = tmp_path / "overfit"
    train(
        tiny_pipeline_dir, one_image_dir, output_dir, stage=3, max_train_steps=200, center_crop=True,
        random_flip=False, train_batch_size=1, learning_rate=1e-3, lambda_rate_start=0.1, lambda_rate_end=1.0,
    )  # fmt: skip
    records, _ = train_records(output_dir)
    first = [records[s] for s in range(1, 11)]
    last = [records[s] for s in range(191, 201)]

    def mean(rs, key):
        return sum(r[key] for r in rs) / len(rs)

    assert mean(last, "train/bpp") < 0.5 * mean(first, "train/bpp")
    assert mean(last, "train/mse") < 0.9 * mean(first, "train/mse")
    assert mean(last, "train/align") < 0.5 * mean(first, "train/align")


# ---------------------------------------------------------------------------------------------- the time budget
def test_max_train_minutes_stops_checkpoints_and_releases(tiny_pipeline_dir, train_dir, tmp_path):
    """--max_train_minutes: the run stops at the first step past the limit, saves a checkpoint of that step and
    writes the release; the cosine decay follows the clock (the learning rate is 0 once time is up)."""
    out = tmp_path / "timed"
    train(
        tiny_pipeline_dir, train_dir, out, stage=1, max_train_steps=1000, train_batch_size=2,
        max_train_minutes=0.0001, lr_scheduler="cosine", learning_rate=1e-3,
    )  # fmt: skip
    records, _ = train_records(out)
    assert sorted(records) == [1]
    assert (out / "checkpoint-1").is_dir() and (out / "model_index.json").is_file()
    assert records[1]["train/lr"] == pytest.approx(0.0, abs=1e-12)
    clock_file = out / "checkpoint-1" / "training_clock.json"
    assert json.loads(clock_file.read_text())["minutes_trained"] >= 0.0001


def test_a_resumed_run_continues_the_clock(tiny_pipeline_dir, train_dir, tmp_path):
    """The minutes a checkpoint records count towards --max_train_minutes and the decay after a resume: a run
    resumed past its time budget stops after one step with the learning rate decayed."""
    out = tmp_path / "timed"
    flags = {
        "stage": 1, "train_batch_size": 2, "lr_scheduler": "cosine", "learning_rate": 1e-3, "lr_warmup_steps": 0,
        "checkpointing_steps": 1,
    }  # fmt: skip
    train(tiny_pipeline_dir, train_dir, out, **flags, max_train_steps=1)
    (out / "checkpoint-1" / "training_clock.json").write_text(json.dumps({"minutes_trained": 30.0}))
    resume = {"resume_from_checkpoint": "latest", "max_train_steps": 4, "max_train_minutes": 20}
    train(tiny_pipeline_dir, train_dir, out, **flags, **resume)
    records, _ = train_records(out)
    assert max(records) == 2  # without the recorded 30 minutes it would have run to step 4
    assert records[2]["train/lr"] == pytest.approx(0.0, abs=1e-12)
    assert json.loads((out / "checkpoint-2" / "training_clock.json").read_text())["minutes_trained"] >= 30.0


# ---------------------------------------------------------------------------------------------- 🤗 datasets
def test_training_from_a_local_imagefolder_and_a_parquet_dataset(tiny_pipeline_dir, tmp_path):
    datasets = pytest.importorskip("datasets")
    imagefolder = make_imagefolder(tmp_path / "imagefolder")
    flags = {"stage": 1, "train_batch_size": 1}

    output_dir = tmp_path / "imagefolder_run"
    train(tiny_pipeline_dir, None, output_dir, dataset_name=imagefolder, **flags, max_train_steps=2)
    records, _ = train_records(output_dir)
    assert sorted(records) == [1, 2]
    assert (output_dir / "model_index.json").is_file()

    # The same images through --train_data_dir: the same batches, so the same losses.
    folder_dir = tmp_path / "folder_run"
    train(tiny_pipeline_dir, imagefolder, folder_dir, **flags, max_train_steps=2)
    folder_records, _ = train_records(folder_dir)
    assert_same_records(folder_records, records, [1, 2], keys=["train/loss"])

    # A parquet file (images stored as bytes) and --max_train_samples: one epoch is then 2 images, 2 steps.
    parquet = tmp_path / "images.parquet"
    paths = sorted(str(p) for p in imagefolder.glob("*.png"))
    table = datasets.Dataset.from_dict({"img": paths}).cast_column("img", datasets.Image(decode=False))
    table = table.map(lambda item: {"img": {"bytes": Path(item["img"]["path"]).read_bytes(), "path": None}})
    table.to_parquet(str(parquet))
    output_dir = tmp_path / "parquet_run"
    train(
        tiny_pipeline_dir, None, output_dir, dataset_name=parquet, **flags, image_column="img", max_train_samples=2,
        num_train_epochs=1,
    )  # fmt: skip
    records, _ = train_records(output_dir)
    assert sorted(records) == [1, 2]


# ---------------------------------------------------------------------------------------------- EMA
def test_use_ema_releases_the_ema_weights_and_resumes(tiny_pipeline_dir, train_dir, tmp_path):
    from safetensors.torch import load_file

    flags = {
        "stage": 1, "max_train_steps": 4, "train_batch_size": 1, "use_ema": True, "ema_decay": 0.9,
        "checkpointing_steps": 2,
    }  # fmt: skip
    weights = Path("compression_vae", "diffusion_pytorch_model.safetensors")
    output_dir = tmp_path / "ema"
    train(tiny_pipeline_dir, train_dir, output_dir, **flags)
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

    resumed_dir = copy_checkpoint(output_dir, 2, tmp_path / "ema_resumed")
    train(tiny_pipeline_dir, train_dir, resumed_dir, **flags, resume_from_checkpoint="latest")
    uninterrupted, _ = train_records(output_dir)
    resumed, _ = train_records(resumed_dir)
    assert sorted(resumed) == [3, 4]
    assert_same_records(resumed, uninterrupted, [3, 4], keys=["train/loss"])
    resumed_released = load_file(resumed_dir / weights)
    for name in codec:
        torch.testing.assert_close(resumed_released[name], released[name], rtol=1e-5, atol=1e-7)
