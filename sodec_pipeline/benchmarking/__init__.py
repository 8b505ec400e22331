"""Latency and memory benchmark of SODEC decoding against an N-step DDIM decode (``sodec benchmark``)."""

from .benchmark import STAGES, decode_by_stage, format_table, make_ddim_scheduler, run_benchmark, summarize_times

__all__ = ["STAGES", "decode_by_stage", "format_table", "make_ddim_scheduler", "run_benchmark", "summarize_times"]
