"""Converters from published checkpoints of other codebases into SODEC's components."""

from .hific import (
    HiFiCCheckpointError,
    HiFiCConversion,
    HiFiCConversionReport,
    convert_hific_checkpoint,
    convert_hific_state_dict,
    load_hific_checkpoint,
)


__all__ = [
    "HiFiCCheckpointError",
    "HiFiCConversion",
    "HiFiCConversionReport",
    "convert_hific_checkpoint",
    "convert_hific_state_dict",
    "load_hific_checkpoint",
]
