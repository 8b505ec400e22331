"""Unit tests of training/: ``train_sodec.py``'s arguments and the pieces in ``training/sodec_training/`` (stages
and λ schedule, data, losses, checkpoints, learning rate, model card), without a training run. The runs are in
test_training_runs.py."""

import argparse

import pytest
import torch
from training_runs import front_matter, make_imagefolder, make_train_images, torch_threads, train_argv


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def train_sodec():
    import train_sodec

    return train_sodec


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return make_train_images(tmp_path_factory.mktemp("train_images"))


# ---------------------------------------------------------------------------------------------- stages and λ
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
    from sodec_training.schedules import TrainingPlan, build_plan
    from sodec_training.stages import Stage

    stages = [Stage.CODEC, Stage.DECODER, Stage.JOINT, Stage.ADVERSARIAL]
    plan = build_plan(
        stages, [2, 2, 4, 2], lambda_rate_start=0.01, lambda_rate_end=0.1, lambda_schedule="linear",
        lambda_anneal_fraction=0.5,
    )  # fmt: skip
    assert [plan.stage_at(s)[0] for s in range(10)] == [1, 1, 2, 2, 3, 3, 3, 3, 4, 4]
    assert plan.stage_at(9)[0] is Stage.ADVERSARIAL and plan.stage_at(100) == (Stage.ADVERSARIAL, 2, 2)
    assert [plan.rate_weight(s) for s in range(10)] == pytest.approx(
        [0.01, 0.01, 0, 0, 0.01, 0.055, 0.1, 0.1, 0.1, 0.1]
    )
    assert sum(steps for _, steps in plan.stages) == 10
    single = build_plan([Stage.JOINT], [5], lambda_rate_start=0.5, lambda_rate_end=0.5)
    assert single.stages == [(Stage.JOINT, 5)] and single.rate_weight(4) == 0.5
    assert TrainingPlan([(0, 3)], 0.1, 0.2).stages == [(Stage.AUTOENCODER, 3)]  # numbers become stages
    assert TrainingPlan([(0, 3)], 0.1, 0.2).rate_weight(1) == 0.0
    with pytest.raises(ValueError, match="unknown stage 5"):
        TrainingPlan([(5, 3)], 0.1, 0.2)
    with pytest.raises(ValueError, match="2 stage"):
        build_plan(stages[:2], [1, 1, 1], lambda_rate_start=0.1, lambda_rate_end=0.1)


def test_stage_flags_give_the_stages_and_the_logged_configuration(train_sodec):
    """--stage and --stage_steps: args.stages (what runs), the total steps of --stage all; the trackers' configuration
    records --stage as given, without what parse_args derives or loads, or the Hub token."""
    from sodec_training.stages import STAGE_CHOICES, Stage, stage_sequence
    from sodec_training.trackers import tracker_config

    assert STAGE_CHOICES == ("0", "1", "2", "3", "4", "all")
    assert stage_sequence("all", [5, 5, 5]) == (Stage.CODEC, Stage.DECODER, Stage.JOINT)
    assert stage_sequence("2") == (Stage.DECODER,)
    args = train_sodec.parse_args(train_argv("base", "data", "out", stage="all", stage_steps="1,2,3,4"))
    assert args.stages == (Stage.CODEC, Stage.DECODER, Stage.JOINT, Stage.ADVERSARIAL)
    assert args.stage_steps == [1, 2, 3, 4] and args.max_train_steps == 10
    args = train_sodec.parse_args(train_argv("base", "data", "out", stage=0, hub_token="secret"))
    assert args.stages == (Stage.AUTOENCODER,) and args.distortion_loss.lpips is None
    config = tracker_config(args)
    assert config["stage"] == "0" and config["resolution"] == 64
    assert not {"stages", "distortion_loss", "hub_token", "command_line"} & set(config)
    for argv in (train_argv("base", "data", "out", stage=1, stage_steps="1,2,3"), train_argv("b", "d", "o")):
        with pytest.raises(SystemExit):  # --stage_steps with one stage; --stage all (the default) without them
            train_sodec.parse_args(argv)


def test_entropy_model_flags_are_checked(train_sodec):
    """--entropy_model is one of the codec's entropy models (default: the loaded codec's config decides); the sizes of
    a converted context model go with --entropy_model checkerboard only."""
    args = train_sodec.parse_args(train_argv("base", "data", "out", stage=1))
    assert args.entropy_model is None
    args = train_sodec.parse_args(train_argv("base", "data", "out", stage=1, entropy_model="checkerboard"))
    assert args.entropy_model == "checkerboard" and args.context_channels is None
    for flags in ({"entropy_model": "autoregressive"}, {"context_channels": 8}, {"entropy_parameters_channels": 8}):
        with pytest.raises(SystemExit):
            train_sodec.parse_args(train_argv("base", "data", "out", stage=1, **flags))


# ---------------------------------------------------------------------------------------------- data
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


def test_random_scale_resizes_each_image_by_a_drawn_factor(train_dir):
    from sodec_training.data import ImageFolderCrops

    plain = ImageFolderCrops(train_dir, 64, random_flip=False, center_crop=True, seed=3)
    halved = ImageFolderCrops(train_dir, 64, random_flip=False, center_crop=True, seed=3, random_scale=(0.5, 0.5))
    doubled = ImageFolderCrops(train_dir, 64, random_flip=False, center_crop=True, seed=3, random_scale=(2.0, 2.0))
    a, h, d = plain[0]["pixel_values"], halved[0]["pixel_values"], doubled[0]["pixel_values"]
    assert a.shape == h.shape == d.shape == (3, 64, 64)

    def energy(x):  # mean absolute horizontal gradient: more detail per pixel when scaled down
        return (x[..., 1:] - x[..., :-1]).abs().mean().item()

    assert energy(d) < energy(a) < energy(h)
    drawn = ImageFolderCrops(train_dir, 64, random_flip=False, seed=3, random_scale=(0.5, 2.0))
    assert torch.equal(drawn[4]["pixel_values"], drawn[4]["pixel_values"])  # the factor depends on (seed, key)
    assert len({drawn[k]["pixel_values"].sum().item() for k in range(0, 30, 3)}) > 1
    with pytest.raises(ValueError, match="random_scale"):
        ImageFolderCrops(train_dir, 64, random_scale=(2.0, 0.5))


@pytest.fixture(scope="module")
def imagefolder_dataset(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("imagefolder"))


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


# ---------------------------------------------------------------------------------------------- losses and metrics
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


def test_lpips_flags_fail_with_a_clear_message(train_sodec, tmp_path, capsys, monkeypatch):
    from sodec_pipeline.metrics import weights

    cases = [
        ({"lpips_weights": tmp_path / "nowhere.pth"}, "does not exist"),
        ({"lpips_net": "squeeze"}, "use --lpips_net alex or --lpips_net vgg"),
        ({}, weights.INSTALL_COMMAND),  # a machine without any weights: the command that installs them
    ]
    for flags, expected in cases:
        if not flags:
            monkeypatch.setattr(weights, "_backbone", lambda net: (None, ""))
        with pytest.raises(SystemExit):
            train_sodec.parse_args(train_argv("base", "data", "out", stage=1, perceptual_loss="lpips", **flags))
        assert expected in capsys.readouterr().err


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


def test_realism_weighs_the_perceptual_and_gan_losses_of_each_image(train_sodec):
    """--realism_control: each image's LPIPS/DISTS/texture and GAN terms weighed by its realism β in the total (β = 0:
    MSE and colour alone; β = 1 everywhere: the plain objective); the logged terms stay unweighted; β drawn 1 for
    --realism_full_fraction of the images, uniform otherwise; the flags are checked."""
    from sodec_pipeline.metrics import DISTS
    from sodec_training.losses import DistortionLoss, generator_adversarial_loss
    from sodec_training.training_step import draw_realism

    torch.manual_seed(0)
    dists = DISTS().eval().requires_grad_(False)
    loss = DistortionLoss(
        mse_weight=2.0,
        dists_weight=0.5,
        dists_model=dists,
        colour_weight=3.0,
        texture_weight=0.1,
        chroma_weight=0.2,
        grain_weight=0.3,
    )
    x, x_hat = torch.rand(2, 3, 32, 48), torch.rand(2, 3, 32, 48)
    plain = loss(x_hat, x)
    torch.testing.assert_close(loss(x_hat, x, torch.ones(2))["distortion"], plain["distortion"])
    zero = loss(x_hat, x, torch.zeros(2))
    fidelity_terms = 2.0 * plain["mse"] + 3.0 * plain["colour"] + 0.2 * plain["chroma"] + 0.3 * plain["grain"]
    assert plain["chroma"] > 0 and plain["grain"] > 0  # the chroma and grain terms count whatever β
    torch.testing.assert_close(zero["distortion"], fidelity_terms)
    assert zero["dists"] == plain["dists"] and zero["texture"] == plain["texture"]
    first_only = loss(x_hat, x, torch.tensor([1.0, 0.0]))["distortion"]
    alone = loss(x_hat[:1], x[:1])
    expected = fidelity_terms + (0.5 * alone["dists"] + 0.1 * alone["texture"]) / 2
    torch.testing.assert_close(first_only, expected)
    logits = torch.randn(2, 1, 4, 6)
    torch.testing.assert_close(generator_adversarial_loss(logits, torch.ones(2)), generator_adversarial_loss(logits))
    assert generator_adversarial_loss(logits, torch.zeros(2)) == 0
    drawn = draw_realism(0.25, 4000, torch.Generator().manual_seed(0), "cpu")
    assert 0 <= drawn.min() and drawn.max() <= 1
    assert (drawn == 1).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert (drawn < 0.5).float().mean().item() == pytest.approx(0.375, abs=0.03)
    for flags in (dict(stage=1, realism_control=True), dict(stage=2, realism_control=True, realism_full_fraction=2)):
        with pytest.raises(SystemExit):
            train_sodec.parse_args(train_argv("base", "data", "out", **flags))


def test_rate_weight_per_image_follows_its_quantisation_step(train_sodec):
    """--lambda_step_exponent γ: λ·Δᵢ^γ per image (a larger Δ, a coarser level, weighs its rate more); the Δᵢ of
    --quantization_step_range are log-uniform in [LOW, HIGH] from the run's own generator."""
    from sodec_training.training_step import draw_quantization_steps, image_rate_weights

    steps = torch.tensor([0.5, 1.0, 2.0])
    assert image_rate_weights(0.03, steps, 0.0) == 0.03
    assert image_rate_weights(0.03, None, 2.0) == 0.03
    torch.testing.assert_close(image_rate_weights(0.03, steps, 2.0), torch.tensor([0.0075, 0.03, 0.12]))
    assert draw_quantization_steps(None, 4, torch.Generator(), "cpu") is None
    drawn = draw_quantization_steps((0.5, 2.0), 1000, torch.Generator().manual_seed(0), "cpu")
    assert drawn.shape == (1000,) and 0.5 <= drawn.min() and drawn.max() <= 2.0
    assert (drawn < 1.0).float().mean().item() == pytest.approx(0.5, abs=0.05)  # log-uniform: median √(0.5·2)
    with pytest.raises(SystemExit):
        train_sodec.parse_args(train_argv("base", "data", "out", quantization_step_range=(2, 1)))


def test_lr_decay_follows_steps_or_minutes_whichever_runs_out_first():
    """build_lr_scheduler with --max_train_minutes: warm-up by steps, then cosine over the larger of the step
    and time fractions."""
    from sodec_training.schedules import build_lr_scheduler

    clock = {"minutes": 0.0}
    args = argparse.Namespace(lr_scheduler="cosine", max_train_minutes=10.0, lr_warmup_steps=2, max_train_steps=100)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_lr_scheduler(args, optimizer, 1, lambda: clock["minutes"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)  # warm-up step 0 of 2
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)  # step 2: warm-up done, no time spent
    clock["minutes"] = 5.0  # half the time: the clock leads the steps (2 of 100)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    args.lr_scheduler = "constant"
    constant = build_lr_scheduler(args, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 1, lambda: 9.0)
    assert constant.get_last_lr() == [1.0]


# ---------------------------------------------------------------------------------------------- checkpoints
def fake_checkpoint(path, args, without=()):
    """A folder holding (one byte of) every file of a complete checkpoint but those named in ``without``."""
    from sodec_training.checkpoints import missing_checkpoint_files

    path.mkdir(parents=True)
    for name in missing_checkpoint_files(path, args):
        if name not in without:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(b"x")


def test_latest_checkpoint_is_the_newest_complete_one_and_pruning_keeps_it(tmp_path, caplog):
    """ "latest" skips (with a warning) a checkpoint-N lacking a file, as a run killed while saving left them before
    checkpoints were written atomically, and ignores temporary folders; pruning counts and removes complete
    checkpoints only, never the new one; the next start removes temporary folders and restores a replaced one."""
    from accelerate.state import AcceleratorState, PartialState

    from sodec_training.checkpoints import clear_temporary_checkpoints, find_checkpoint, prune_checkpoints

    PartialState()  # the checkpoints' logger needs accelerate's state
    try:
        args = argparse.Namespace(resume_from_checkpoint="latest", output_dir=str(tmp_path), unet_training="lora")
        assert find_checkpoint(args) is None
        for step in (2, 10, 9):
            fake_checkpoint(tmp_path / f"checkpoint-{step}", args)
        assert find_checkpoint(args) == str(tmp_path / "checkpoint-10")
        (tmp_path / "checkpoint-12").mkdir()
        fake_checkpoint(tmp_path / "checkpoint-11", args, without=["random_states_0.pkl"])
        (tmp_path / "checkpoint-11" / "optimizer.bin").write_bytes(b"")  # cut short
        fake_checkpoint(tmp_path / ".checkpoint-13.tmp", args)
        (tmp_path / "checkpoint-final").mkdir()
        with caplog.at_level("WARNING"):
            assert find_checkpoint(args) == str(tmp_path / "checkpoint-10")
        assert "incomplete checkpoint" in caplog.text and "checkpoint-12" in caplog.text
        assert "it lacks optimizer.bin, random_states_0.pkl" in caplog.text  # checkpoint-11
        args.unet_training = "full"  # these checkpoints hold a LoRA, not the whole UNet
        assert find_checkpoint(args) is None

        args.unet_training = "lora"
        fake_checkpoint(tmp_path / "checkpoint-14", args)
        prune_checkpoints(str(tmp_path), 2, str(tmp_path / "checkpoint-14"), args)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == [".checkpoint-13.tmp", "checkpoint-10", "checkpoint-11", "checkpoint-12", "checkpoint-14",
                         "checkpoint-final"]  # fmt: skip
        prune_checkpoints(str(tmp_path), 1, str(tmp_path / "checkpoint-14"), args)
        assert not (tmp_path / "checkpoint-10").exists() and (tmp_path / "checkpoint-14").is_dir()

        (tmp_path / "checkpoint-14").rename(tmp_path / ".checkpoint-14.old")  # killed between the two renames
        fake_checkpoint(tmp_path / ".checkpoint-11.old", args)  # killed before removing it
        fake_checkpoint(tmp_path / ".checkpoint-9.pruned", args)  # killed while pruning
        clear_temporary_checkpoints(str(tmp_path))
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == ["checkpoint-11", "checkpoint-12", "checkpoint-14", "checkpoint-final"]
        assert find_checkpoint(args) == str(tmp_path / "checkpoint-14")
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


# ---------------------------------------------------------------------------------------------- model card
def test_model_card_inherits_the_licence_and_names_only_hub_bases(train_sodec, tiny_pipeline, tmp_path, monkeypatch):
    """The release card (sodec_training.model_card): licence from the base's own card front matter (a local
    folder, the shipped sodec-small), openrail++ for an SD 2.x Hub base, none for a base without a card unless
    --license says; pipeline_tag/library_name/tags always; base_model only for a Hub id; --dataset_tag; the
    released codec's quality levels."""
    import huggingface_hub

    from sodec_training.model_card import save_training_model_card
    from sodec_training.stages import Stage

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    base = tmp_path / "sd-derived-base"
    base.mkdir()
    (base / "README.md").write_text("---\nlicense: openrail++\nlibrary_name: diffusers\n---\n# a base\n")
    plan = argparse.Namespace(stages=[(Stage.CODEC, 2)])

    def card(name, pipeline=None, **flags):
        args = train_sodec.parse_args(train_argv(pipeline, "data", "out", stage=1, **flags))
        args.num_train_images, args.num_processes = 4, 1
        out = tmp_path / name
        out.mkdir()
        save_training_model_card(args, name, str(out), {}, plan, tiny_pipeline.compression_vae)
        text = (out / "README.md").read_text()
        return front_matter(text), text

    data, text = card("local", base)
    assert data["license"] == "openrail++" and "base_model" not in data and "datasets" not in data
    assert data["pipeline_tag"] == "image-to-image" and data["library_name"] == "diffusers"
    assert {"sodec", "image-compression", "diffusers", "diffusers-training", "lora"} <= set(data["tags"])
    assert "## Quality levels" in text and f"default level {tiny_pipeline.compression_vae.default_quality}" in text
    assert "## Validation" in text and "No validation images" in text
    assert "- Stages: stage 1: 2 steps; λ from 0.01 to 0.1 (step schedule)." in text
    assert "batch 8 × 1 accumulation × 1 process(es); mixed precision no; seed 0." in text

    data, _ = card("shipped", "sodec-small")
    assert data["license"] == "other" and data["license_name"] == "bsds500-research-use"
    assert "base_model" not in data  # a shipped short name is no Hub id

    parts = {"sd_model": "stabilityai/stable-diffusion-2-1-base", "image_encoder": "openai/clip-vit-base-patch16"}
    data, text = card("parts", codec_init=base, **parts)
    assert data["license"] == "openrail++" and data["base_model"] == "stabilityai/stable-diffusion-2-1-base"
    assert f"(ViT) and `{base}` (codec)" in text

    data, text = card("hub", "someone/sodec-from-scratch")
    assert "license" not in data and data["base_model"] == "someone/sodec-from-scratch"
    assert "pass `--license`" in text

    flags = {"license": "other", "license_name": "bsds500-research-use", "dataset_tag": "someone/bsds500"}
    data, _ = card("explicit", base, **flags)
    assert data["license"] == "other" and data["license_name"] == "bsds500-research-use"
    assert data["datasets"] == ["someone/bsds500"]
