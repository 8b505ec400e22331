"""Encode and decode latency of a SODEC pipeline, decode broken down by stage, peak memory, and the same
decode as an N-step DDIM baseline on the same networks — all measured in one run.

What is measured (``run_benchmark``), in this order, on one image of the requested size:

1. **encode**: ``pipe.compress(image)`` — ``warmup`` untimed runs, then ``repeats`` timed runs.
2. **decode**: ``pipe.decompress(stream, output_type="pt")`` end to end.
3. **decode by stage**: :func:`decode_by_stage`, the same ``decompress`` with the benchmark's
   :class:`StageTimer` as its ``stage_timer``, which times each stage of the pipeline's
   ``DECODE_STAGES``: ``parse`` (header, CRC) · ``entropy_decoding`` (ẑ, P, ŷ by rANS) · ``hs_ts``
   (H_s, T_s → ŷ_t) · ``d_a`` (fidelity decoder → x̂_f) · ``vit`` (resize/normalise + the frozen ViT) ·
   ``f_p`` (guidance projection → c_g) · ``unet`` (the UNet step and the scheduler) · ``vae_decode``
   (SD VAE decoder) · ``colour_correction`` (x̂_f's block means into x̂) · ``postprocess`` (crop, clamp).
4. **baseline**: the same staged decode by a pipeline that shares every network but whose scheduler takes
   ``baseline_steps`` DDIM steps (:func:`make_ddim_scheduler`: the same β schedule,
   ``timestep_spacing="trailing"``, ``set_alpha_to_one=True``), starting from the same ŷ_t taken as x_t
   at t = 999, with the same guidance c_g. Only the ``unet`` stage differs from 3.

2, 3 and 4 run interleaved: ``warmup`` untimed rounds, then ``repeats`` timed rounds, each round one run
of each, so that a change in the load of a shared machine affects the three alike.

On CUDA every stage boundary calls ``torch.cuda.synchronize()``. Peak memory per phase: on CUDA
``torch.cuda.max_memory_allocated`` (reset before each phase); on CPU the peak resident set size (VmHWM,
reset before each phase through /proc/self/clear_refs; where that is not allowed, the process's lifetime
``ru_maxrss`` and a note). Both include the model's weights.

The *floor* is the sum of the medians of the network stages (``hs_ts``, ``d_a``, ``vit``, ``f_p``,
``unet``, ``vae_decode``) plus entropy decoding: one forward pass of each network, nothing else. The *compute
floor* of each stage (:mod:`sodec_pipeline.benchmarking.compute_floor`) is its FLOPs at the rate of a large
matrix product in its dtype on the same device and threads; the result says how many times that each stage takes.
"""

import os
import platform
import resource
import statistics
import time
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..hardware import physical_core_count
from ..pipelines.coding import DECODE_STAGES
from .compute_floor import stage_floors


STAGES = DECODE_STAGES
STAGE_LABELS = {
    "parse": "parse + CRC",
    "entropy_decoding": "entropy decoding (ẑ, P, ŷ)",
    "hs_ts": "H_s / T_s → ŷ_t",
    "d_a": "D_a fidelity decoder",
    "vit": "ViT (image encoder)",
    "f_p": "F_p guidance projection",
    "unet": "UNet step(s)",
    "vae_decode": "VAE decode",
    "colour_correction": "colour correction",
    "postprocess": "crop / clamp",
}
FLOOR_STAGES = ("entropy_decoding", "hs_ts", "d_a", "vit", "f_p", "unet", "vae_decode")
SCHEMA = "sodec-benchmark/1"


# ---------------------------------------------------------------------- timing
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Accumulates wall-clock seconds per stage of one run, synchronising CUDA at each boundary."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        _synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def summarize_times(times: Sequence[float]) -> dict:
    """Median and spread of repeated timings, in seconds."""
    values = sorted(float(t) for t in times)
    q25, q75 = np.percentile(values, [25, 75]) if values else (float("nan"), float("nan"))
    median = statistics.median(values)
    return {
        "median_s": median,
        "min_s": values[0],
        "max_s": values[-1],
        "mean_s": statistics.fmean(values),
        "std_s": statistics.stdev(values) if len(values) > 1 else 0.0,
        "iqr_s": float(q75 - q25),
        "spread_pct": 100.0 * (values[-1] - values[0]) / median if median > 0 else 0.0,
        "runs_s": [float(t) for t in times],
    }


# ---------------------------------------------------------------------- memory
def _process_status_kib(field: str) -> Optional[int]:
    """A KiB figure of this process from /proc/self/status (``VmHWM``, ``VmRSS``); None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory of a phase: CUDA allocator peak, or the CPU process's peak RSS (VmHWM)."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.notes: List[str] = []
        self.can_reset_rss = self.device.type != "cuda" and self._try_reset_rss()
        if self.device.type != "cuda" and not self.can_reset_rss:
            self.notes.append(
                "the peak RSS could not be reset per phase (/proc/self/clear_refs not writable): every figure is the "
                "process's lifetime peak (ru_maxrss)"
            )

    @property
    def kind(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated"
        return "peak RSS (VmHWM, reset per phase)" if self.can_reset_rss else "peak RSS (ru_maxrss, process lifetime)"

    @staticmethod
    def _try_reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return PeakMemory._vm_hwm_kib() is not None
        except OSError:
            return False

    @staticmethod
    def _vm_hwm_kib() -> Optional[int]:
        return _process_status_kib("VmHWM")

    @staticmethod
    def current_rss_mib() -> Optional[float]:
        rss = _process_status_kib("VmRSS")
        if rss is not None:
            return rss / 1024.0
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2**20
        except ImportError:
            return None

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.can_reset_rss:
            self._try_reset_rss()

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.can_reset_rss:
            return self._vm_hwm_kib() / 1024.0
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ---------------------------------------------------------------------- the decodes
def make_ddim_scheduler(pipe, num_steps: int, device=None):
    """The N-step baseline scheduler: DDIM on the pipeline's own β schedule, ``trailing`` spacing and
    ``set_alpha_to_one=True`` (so the first step is at t = 999 and the last lands on x0), η = 0."""
    from diffusers import DDIMScheduler

    cfg = pipe.scheduler.config
    scheduler = DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        timestep_spacing="trailing",
        set_alpha_to_one=True,
        clip_sample=False,
        steps_offset=0,
    )
    scheduler.set_timesteps(num_steps, device=device)
    return scheduler


def with_scheduler(pipe, scheduler):
    """A pipeline of ``pipe``'s class with the same networks (shared, not copied) and ``scheduler``."""
    options = {k: v for k, v in pipe.config.items() if not k.startswith("_") and k not in pipe.components}
    other = type(pipe)(**{**pipe.components, "scheduler": scheduler}, **options)
    other.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    return other


@torch.no_grad()
def decode_by_stage(pipe, stream: bytes, timer: StageTimer, scheduler=None) -> torch.Tensor:
    """``pipe.decompress(stream, output_type="pt").images[0]`` with ``timer`` around each stage; with a
    ``scheduler`` (see :func:`make_ddim_scheduler`) the one step is replaced by its steps."""
    decoder = pipe if scheduler is None else with_scheduler(pipe, scheduler)
    return decoder.decompress(stream, output_type="pt", stage_timer=timer).images[0]


# ---------------------------------------------------------------------- the benchmark
def synthetic_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A deterministic photo-like test image (smooth colour field plus fine texture), (3, H, W) in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 32), max(2, width // 32), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    texture = 0.08 * torch.randn(1, 3, height, width, generator=generator)
    return (smooth + texture).clamp(0, 1)[0]


def count_parameters(pipe) -> Dict[str, int]:
    counts = {}
    for name in ("compression_vae", "fidelity_guidance", "image_encoder", "unet", "vae"):
        module = getattr(pipe, name)
        counts[name] = int(sum(p.numel() for p in module.parameters()))
    counts["total"] = sum(counts.values())
    return counts


def environment(device: torch.device) -> dict:
    import diffusers
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "physical_cores": physical_core_count(),
        "torch_num_threads": torch.get_num_threads(),
        "cpu_model": _cpu_model(),
    }
    if hasattr(os, "getloadavg"):
        env["load_average_start"] = list(os.getloadavg())
    if hasattr(os, "nice"):
        env["niceness"] = os.nice(0)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def run_benchmark(
    pipe,
    height: int,
    width: int,
    warmup: int = 1,
    repeats: int = 5,
    baseline_steps: int = 4,
    image: Optional[torch.Tensor] = None,
    log=None,
) -> dict:
    """Runs the measurements described in the module docstring; returns the JSON-ready result."""
    if repeats < 1 or warmup < 0 or baseline_steps < 1:
        raise ValueError("repeats and baseline_steps must be ≥ 1 and warmup ≥ 0")
    log = log or (lambda message: None)
    wall_start, cpu_start = time.perf_counter(), _process_cpu_seconds()
    device = pipe._execution_device
    memory = PeakMemory(device)
    notes = list(memory.notes)
    result = _describe_setup(pipe, device, warmup, repeats, baseline_steps)
    image = synthetic_image(height, width) if image is None else image
    if tuple(image.shape[-2:]) != (height, width):
        raise ValueError(f"the image is {image.shape[-1]}x{image.shape[-2]}, not {width}x{height} (W×H)")
    result["size"] = [height, width]
    mem = {"kind": memory.kind, "unit": "MiB"}
    mem["after_load"] = (
        torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else PeakMemory.current_rss_mib()
    )

    # 1. encode
    log(f"encode: {warmup} warm-up + {repeats} timed runs")
    memory.reset()
    _timed_runs(lambda: pipe.compress(image), warmup, device)
    encode_times, streams = _timed_runs(lambda: pipe.compress(image), repeats, device)
    mem["encode_peak"] = memory.peak_mib()
    stream = streams[0]
    result["bitstream"] = {"bytes": len(stream), "bpp": 8.0 * len(stream) / (height * width)}
    result["encode"] = summarize_times(encode_times)

    # 2.–4. the three decodes, interleaved run by run
    scheduler = make_ddim_scheduler(pipe, baseline_steps, device=device)
    totals, stages, peaks = _measure_decodes(
        pipe, with_scheduler(pipe, scheduler), stream, warmup, repeats, memory, log
    )
    mem["decode_peak"] = max(peaks["decode"], peaks["staged"])
    mem["baseline_decode_peak"] = peaks["baseline"]
    result.update(_summarize_decodes(totals, stages, scheduler, baseline_steps))
    if pipe.scheduler.config.timestep != int(scheduler.timesteps[0]):
        notes.append(
            f"the pipeline's one step is at t={pipe.scheduler.config.timestep}, the DDIM baseline starts at "
            f"t={int(scheduler.timesteps[0])}"
        )

    # the comparison and the floors
    _add_speedup_and_floor(result)
    log("compute floor: FLOPs per stage, a large matrix product's rate per dtype")
    medians = {stage: stats["median_s"] for stage, stats in result["decode_stages"].items()}
    result["compute_floor"] = stage_floors(pipe, stream, medians)
    result["memory"] = mem
    _add_load_and_utilisation(result["environment"], device, wall_start, cpu_start)
    result["notes"] = notes
    return result


def _describe_setup(pipe, device: torch.device, warmup: int, repeats: int, baseline_steps: int) -> dict:
    """The result's header: schema, device, dtype, environment, parameter counts and weight size, the runs."""
    result = {"schema": SCHEMA, "device": str(device), "dtype": str(pipe.dtype).replace("torch.", "")}
    result["environment"] = environment(device)
    result["parameters"] = count_parameters(pipe)
    result["weights_mib"] = sum(
        p.numel() * p.element_size() for name in ("compression_vae", "fidelity_guidance", "image_encoder", "unet", "vae")
        for p in getattr(pipe, name).parameters()
    ) / 2**20  # fmt: skip
    result["warmup"], result["repeats"], result["baseline_steps"] = warmup, repeats, baseline_steps
    return result


def _timed_runs(fn, runs: int, device: torch.device):
    """``fn()`` ``runs`` times: the wall time of each run (device synchronised) and the last value."""
    times, value = [], None
    for _ in range(runs):
        _synchronize(device)
        start = time.perf_counter()
        value = fn()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times, value


def _measure_decodes(pipe, baseline_pipe, stream: bytes, warmup: int, repeats: int, memory: "PeakMemory", log):
    """``pipe.decompress``, the staged one-step decode and the staged DDIM decode, round robin, so that a change
    in the machine's load hits all three alike. Returns per kind the timed runs' totals, their stage times, and
    the peak memory."""
    device = pipe._execution_device
    decodes = {
        "decode": lambda timer: pipe.decompress(stream, output_type="pt"),
        "staged": lambda timer: decode_by_stage(pipe, stream, timer),
        "baseline": lambda timer: decode_by_stage(baseline_pipe, stream, timer),
    }
    totals = {kind: [] for kind in decodes}
    stages = {kind: [] for kind in decodes}
    peaks = dict.fromkeys(decodes, 0.0)
    baseline_steps = len(baseline_pipe.scheduler.timesteps)
    for i in range(warmup + repeats):
        phase = "warm-up" if i < warmup else "timed"
        log(
            f"decode round {i + 1}/{warmup + repeats} ({phase}): pipe.decompress, staged one-step, staged DDIM {baseline_steps}"
        )
        for kind, fn in decodes.items():
            timer = StageTimer(device)
            memory.reset()
            _synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                fn(timer)
            _synchronize(device)
            elapsed = time.perf_counter() - start
            peaks[kind] = max(peaks[kind], memory.peak_mib())
            if i >= warmup:
                totals[kind].append(elapsed)
                stages[kind].append(dict(timer.seconds))
    return totals, stages, peaks


def _summarize_decodes(totals: dict, stages: dict, scheduler, baseline_steps: int) -> dict:
    """Medians and spreads of the decodes and of each stage (the stages that ran: the colour correction runs
    only when configured), and the DDIM baseline's."""
    timed = [s for s in STAGES if s in stages["staged"][0]]
    summary = {"decode": summarize_times(totals["decode"])}
    summary["decode_stages"] = {s: summarize_times([r[s] for r in stages["staged"]]) for s in timed}
    summary["decode_staged_total"] = summarize_times(totals["staged"])
    summary["decode_stage_sum_median_s"] = sum(summary["decode_stages"][s]["median_s"] for s in timed)
    base_runs = stages["baseline"]
    summary["baseline"] = {
        "scheduler": "DDIMScheduler",
        "steps": baseline_steps,
        "timesteps": [int(t) for t in scheduler.timesteps],
        "config": {k: v for k, v in scheduler.config.items() if not k.startswith("_") and k != "trained_betas"},
        "decode": summarize_times(totals["baseline"]),
        "decode_stages": {s: summarize_times([r[s] for r in base_runs]) for s in timed},
        "unet_per_step_median_s": statistics.median(r["unet"] for r in base_runs) / baseline_steps,
    }
    return summary


def _add_speedup_and_floor(result: dict) -> None:
    """The one-step decode against DDIM (end to end, staged, UNet), the extrapolation to N steps, and the floor."""
    one_step_unet = result["decode_stages"]["unet"]["median_s"]
    result["speedup"] = {
        "decode_end_to_end": result["baseline"]["decode"]["median_s"] / result["decode"]["median_s"],
        "decode_staged": result["baseline"]["decode"]["median_s"] / result["decode_staged_total"]["median_s"],
        "unet": result["baseline"]["decode_stages"]["unet"]["median_s"] / one_step_unet,
    }
    fixed = result["decode_staged_total"]["median_s"] - one_step_unet
    result["baseline"]["extrapolation"] = {
        "rule": "decode(N) ≈ decode(1 step) + (N − 1) · UNet step (the other stages do not depend on N)",
        "non_unet_median_s": fixed,
        "unet_step_median_s": one_step_unet,
        "predicted_decode_s": {str(n): fixed + n * one_step_unet for n in (1, 4, 20, 50)},
    }
    result["floor"] = {
        "stages": list(FLOOR_STAGES),
        "median_s": sum(result["decode_stages"][s]["median_s"] for s in FLOOR_STAGES),
        "definition": "one forward pass of each decoder network plus entropy decoding (sum of the stage medians)",
    }


def _add_load_and_utilisation(env: dict, device: torch.device, wall_start: float, cpu_start: float) -> None:
    """The load average at the end, the measurement's wall and CPU seconds, and (CPU) the share of its threads."""
    if hasattr(os, "getloadavg"):
        env["load_average_end"] = list(os.getloadavg())
    wall = time.perf_counter() - wall_start
    cpu = _process_cpu_seconds() - cpu_start
    env["measurement_wall_s"] = wall
    env["measurement_process_cpu_s"] = cpu
    if device.type == "cpu":
        # Below ~100 %, this process did not get all of its threads' cores (other processes, or waits).
        env["cpu_utilisation_pct_of_threads"] = 100.0 * cpu / (wall * torch.get_num_threads())


def _process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------- the table
def _format_compute_floor(floor: dict) -> List[str]:
    rates = ", ".join(f"{dtype} {rate:.1f}" for dtype, rate in floor["matmul_gflop_per_s"].items())
    lines = [
        f"compute floor: each stage's FLOPs at a large torch.mm's rate ({rates} GFLOP/s)",
        f"{'':34}{'GFLOP':>12}{'floor ms':>10}{'median ms':>11}{'x floor':>9}",
    ]
    for stage, s in floor["stages"].items():
        lines.append(
            f"{'  ' + STAGE_LABELS[stage]:<34}{s['gflop']:>12.2f}{1000 * s['floor_s']:>10.1f}"
            f"{1000 * s['median_s']:>11.1f}{s['times_floor']:>9.1f}"
        )
    if floor["networks_times_floor"] is not None:
        lines.append(
            f"{'  networks, total':<34}{sum(s['gflop'] for s in floor['stages'].values()):>12.2f}"
            f"{1000 * floor['networks_floor_s']:>10.1f}{1000 * floor['networks_median_s']:>11.1f}"
            f"{floor['networks_times_floor']:>9.1f}"
        )
    return lines


def format_table(result: dict) -> str:
    """A plain-text table of the medians (ms) and spreads, for the terminal."""
    lines = []
    h, w = result["size"]
    lines.append(
        f"SODEC benchmark  {w}x{h}  {result['device']} {result['dtype']}  warm-up {result['warmup']}, "
        f"{result['repeats']} timed runs  (torch threads {result['environment']['torch_num_threads']})"
    )
    lines.append(
        f"{'':34}{'median ms':>12}{'min ms':>10}{'max ms':>10}{'share':>8}   {'DDIM ' + str(result['baseline_steps']) + ' ms':>12}"
    )

    def row(label, stats, share="", base=None):
        base_text = f"{1000 * base['median_s']:>12.1f}" if base else ""
        return f"{label:<34}{1000 * stats['median_s']:>12.1f}{1000 * stats['min_s']:>10.1f}{1000 * stats['max_s']:>10.1f}{share:>8}   {base_text}"

    lines.append(row("encode (pipe.compress)", result["encode"]))
    lines.append(row("decode (pipe.decompress)", result["decode"]))
    total = result["decode_staged_total"]["median_s"]
    for stage, stats in result["decode_stages"].items():
        share = f"{100 * stats['median_s'] / total:.1f}%" if total > 0 else ""
        lines.append(row("  " + STAGE_LABELS[stage], stats, share, result["baseline"]["decode_stages"][stage]))
    lines.append(row("decode by stage, total", result["decode_staged_total"], "100%", result["baseline"]["decode"]))
    lines.append(f"{'floor (one pass of each network)':<34}{1000 * result['floor']['median_s']:>12.1f}")
    if "compute_floor" in result:
        lines.extend(_format_compute_floor(result["compute_floor"]))
    s = result["speedup"]
    lines.append(
        f"one-step speed-up vs DDIM {result['baseline_steps']} steps: decode {s['decode_staged']:.2f}x "
        f"(end to end {s['decode_end_to_end']:.2f}x), UNet {s['unet']:.2f}x"
    )
    m = result["memory"]
    lines.append(
        f"peak memory ({m['kind']}, MiB): after load {m['after_load']:.0f}, encode {m['encode_peak']:.0f}, "
        f"decode {m['decode_peak']:.0f}, DDIM decode {m['baseline_decode_peak']:.0f}"
    )
    env = result["environment"]
    if "cpu_utilisation_pct_of_threads" in env:
        lines.append(
            f"CPU: {env['measurement_process_cpu_s']:.1f} s of process CPU time in {env['measurement_wall_s']:.1f} s "
            f"({env['cpu_utilisation_pct_of_threads']:.0f}% of {env['torch_num_threads']} threads); load average "
            f"{env.get('load_average_start', ['?'])[0]} at start, {env.get('load_average_end', ['?'])[0]} at end"
        )
    lines.append(f"bitstream: {result['bitstream']['bytes']} bytes, {result['bitstream']['bpp']:.4f} bpp")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
