"""``--gradient_checkpointing``: every network that gradients pass through in training recomputes its
activations in the backward pass (codec, D_a, F_p, the frozen ViT, the UNet, the VAE decoder), and the
gradients are those of the plain backward pass."""

import sys
from pathlib import Path

import torch


REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "training"))


def _stage3_gradients(pipe, x):
    from sodec_training.losses import DistortionLoss
    from sodec_training.modeling import SODECTrainingModel

    torch.manual_seed(0)
    model = SODECTrainingModel(pipe, DistortionLoss(1.0)).set_train_mode()
    torch.manual_seed(1)  # the entropy bottleneck's training noise
    out = model(x, stage=3, rate_weight=0.01, alignment_weight=1.0)
    out["loss"].backward()
    return out["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _tiny_pipeline():
    from sodec_pipeline.pipelines import build_pipeline_from_config
    from sodec_training.modeling import add_unet_lora

    pipe = build_pipeline_from_config("sodec-tiny", seed=0)
    add_unet_lora(pipe.unet, 4, None, ["to_q", "to_k", "to_v", "to_out.0"])
    pipe.vae.requires_grad_(False)
    pipe.image_encoder.requires_grad_(False)
    return pipe


NETWORKS = {  # a block inside each network gradients pass through in stage 3
    "E": lambda p: p.compression_vae.analysis_transform.conv_block1,
    "H_a": lambda p: p.compression_vae.hyper_analysis.conv1,
    "P": lambda p: p.compression_vae.hyper_synthesis_scale.conv1,
    "H_s": lambda p: p.compression_vae.latent_synthesis.conv1,
    "T_s": lambda p: p.compression_vae.latent_transform.conv_in,
    "D_a": lambda p: p.fidelity_guidance.fidelity_decoder.resblock_0,
    "F_p": lambda p: p.fidelity_guidance.guidance_projection.layers[0]["attention"],
    "ViT": lambda p: p.image_encoder.encoder.layers[0].layer_norm1,  # (transformers checkpoints forward, not __call__)
    "UNet": lambda p: p.unet.down_blocks[0].resnets[0],
    "VAE decoder": lambda p: p.vae.decoder.up_blocks[0].resnets[0],
}


def _count_forward_calls(pipe):
    counts = dict.fromkeys(NETWORKS, 0)
    for name, block in NETWORKS.items():
        block(pipe).register_forward_pre_hook(lambda *_, name=name: counts.__setitem__(name, counts[name] + 1))
    return counts


def test_gradient_checkpointing_covers_every_network_and_keeps_the_gradients():
    """Checkpointed blocks start twice (forward, and again in the backward pass: a pre-hook, as the
    recomputation stops early once it has what the backward pass needs); the gradients are the
    same as without checkpointing."""
    from sodec_training.modeling import enable_gradient_checkpointing

    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pipe = _tiny_pipeline()
    plain_counts = _count_forward_calls(pipe)
    plain_loss, plain_grads = _stage3_gradients(pipe, x)
    assert plain_counts == dict.fromkeys(NETWORKS, 1)

    pipe = _tiny_pipeline()
    enable_gradient_checkpointing(pipe)
    counts = _count_forward_calls(pipe)
    loss, grads = _stage3_gradients(pipe, x)
    assert pipe.image_encoder.training  # transformers checkpoints only in training mode
    assert counts == dict.fromkeys(NETWORKS, 2)

    torch.testing.assert_close(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-4, atol=1e-6, msg=name)
