"""The released codec's CDF tables: rebuilt only where the networks they tabulate changed.

A codec's tables (``_quantized_cdf``, ``_offset``, ``_cdf_length``, ``scale_table`` of each entropy layer) are
saved with its weights, so that every machine codes with the same integers. Rebuilding them from unchanged
networks is not a no-op: the density is computed in float32, and another thread count or machine moves a few
entries of the integer CDF by one (seen: 30 of the 128 × 66 entries of ``sodec-small``'s ẑ table after a
diffusion-path fine-tune on one core). The streams would still decode, but their ẑ bytes, and so the files,
would differ from the base model's for no reason. A run that froze the entropy models keeps the base's tables.
"""

from typing import Dict

import torch

from sodec_pipeline.codec.entropy_layers import TABLE_BUFFERS, EntropyBottleneck, GaussianConditional


def entropy_layer_keys(codec: torch.nn.Module):
    """The state-dict keys of ``codec``'s entropy layers, split into (table buffers, the rest: the networks and
    quantiles that the tables are built from)."""
    layers = {name for name, m in codec.named_modules() if isinstance(m, (EntropyBottleneck, GaussianConditional))}
    tables, networks = [], []
    for key in codec.state_dict():
        owner, _, leaf = key.rpartition(".")
        if owner in layers:
            (tables if leaf in TABLE_BUFFERS else networks).append(key)
    return tables, networks


def refresh_entropy_tables(codec: torch.nn.Module, base_state: Dict[str, torch.Tensor]) -> bool:
    """Gives ``codec`` (a ``CompressionVAE``) current CDF tables: the base's (``base_state``, the state dict of the
    codec it started from) when its entropy layers' networks are the base's bit for bit and the base had tables,
    else tables rebuilt from its networks. Returns whether they were rebuilt."""
    tables, networks = entropy_layer_keys(codec)
    state = codec.state_dict()
    unchanged = all(
        key in base_state
        and base_state[key].shape == state[key].shape
        and torch.equal(base_state[key].cpu(), state[key].detach().cpu())
        for key in networks
    )
    base_has_tables = all(
        key in base_state and base_state[key].numel() > 0 for key in tables if "scale_table" not in key
    )
    if unchanged and base_has_tables:
        codec.load_state_dict({**state, **{key: base_state[key] for key in tables if key in base_state}})
        return False
    codec.update(force=True)
    return True
