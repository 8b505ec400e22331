#!/usr/bin/env python
"""The three decoder networks of the shipped sodec-small's diffusion decode (the VAE decoder, the one-step UNet
call, D_a) in torch eager float32 channels-last as ``sodec decompress`` runs them on the CPU, against ONNX Runtime
(CPU execution provider, graph optimisation level all), OpenVINO (CPU, f32 precision hint) and torch.compile
(inductor), on one thread (issue 31).

Each network runs on the inputs it was given in a real decode of one photo: the decode is run once with recorders
on the networks, and each timed run is the network's calls of that decode (its tiles: 12 of each at 768×512), in
order. The runtimes alternate round by round in one process (``--warmup`` untimed rounds, then ``--runs`` timed
ones), so that a change of the machine's load touches them alike. Per network and runtime: the median of the
timed runs; the median over the rounds of its time ÷ eager's in the same round; the largest difference of the
outputs from eager's and their PSNR (the VAE decoder's and D_a's outputs on the [0, 1] pixel scale, peak 1; the
UNet's ε with the peak of eager's range max − min); the one-off cost (ONNX export + session; OpenVINO's convert +
compile of the ONNX file the ONNX Runtime export wrote, or of its own export when ``ort`` is not run; the first
call's compile). ``decode`` times a whole ``pipe.decompress`` of the photo: eager, and with the three networks in
each other runtime (torch.compile's one-off cost: the first decode, compile included, less a steady one).

Run in parts of a few minutes each, then merge the parts' JSON into one table:

    for part in vae unet fidelity decode; do
        flock /tmp/core1.lock taskset -c 1 env OMP_NUM_THREADS=1 python benchmarks/decoder_runtimes.py \\
            kodak/kodim23.png --networks $part --out decoder-runtimes/$part.json
    done
    python benchmarks/decoder_runtimes.py --merge decoder-runtimes/{vae,unet,fidelity,decode}.json \\
        --out decoder-runtimes/all.json

``--runtimes`` picks a subset of eager,ort,openvino,compile (eager always runs: it is the reference).
torch.compile's cache is a fresh temporary folder per process (``TORCHINDUCTOR_CACHE_DIR``), so its one-off
cost is a cold start's; ``compile (warm cache)`` compiles again after ``torch._dynamo.reset()`` with the
on-disk cache of the first, as a second ``sodec decompress`` on the same machine would.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


NETWORKS = ("vae", "unet", "fidelity", "decode")
RUNTIMES = ("eager", "ort", "openvino", "compile")
LABELS = {
    "vae": "VAE decoder",
    "unet": "UNet (one step)",
    "fidelity": "D_a (fidelity decoder)",
    "decode": "whole decode",
}


# ---------------------------------------------------------------------- the networks as modules of tensors
class VAEDecoder(torch.nn.Module):
    """``vae.decode(z).sample`` (z already divided by the scaling factor, as ``decode_vae`` calls it)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return type(self.vae).decode(self.vae, z).sample  # the class's method, past any attribute set on the instance


class UNetStep(torch.nn.Module):
    """``unet(x, t, encoder_hidden_states=c_g).sample``, as ``denoise`` calls it."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return type(self.unet).forward(self.unet, sample, timestep, encoder_hidden_states=encoder_hidden_states).sample


class FidelityDecoder(torch.nn.Module):
    """``fidelity_guidance.decode(ŷ)``: D_a, as ``decode_fidelity`` calls it."""

    def __init__(self, fidelity_guidance):
        super().__init__()
        self.fidelity_guidance = fidelity_guidance

    def forward(self, y_hat):
        return type(self.fidelity_guidance).decode(self.fidelity_guidance, y_hat)


def capture_calls(pipe, stream):
    """One diffusion decode of ``stream`` with recorders on the three networks: per network, the input tuples of
    its calls in order (the tiles), and the decoded image."""
    calls = {"vae": [], "unet": [], "fidelity": []}
    vae_decode, fidelity_decode = pipe.vae.decode, pipe.fidelity_guidance.decode

    def record_vae(z, *args, **kwargs):
        calls["vae"].append((z.detach().clone(),))
        return vae_decode(z, *args, **kwargs)

    def record_fidelity(y_hat):
        calls["fidelity"].append((y_hat.detach().clone(),))
        return fidelity_decode(y_hat)

    def record_unet(_module, args, kwargs):
        sample, timestep = args
        calls["unet"].append((sample.detach().clone(), timestep.detach().clone(), kwargs["encoder_hidden_states"]))

    pipe.vae.decode, pipe.fidelity_guidance.decode = record_vae, record_fidelity
    handle = pipe.unet.register_forward_pre_hook(record_unet, with_kwargs=True)
    try:
        image = pipe.decompress(stream, output_type="pt").images
    finally:
        handle.remove()
        del pipe.vae.decode, pipe.fidelity_guidance.decode  # the instance attributes: back to the methods
    return calls, image


# ---------------------------------------------------------------------- runtimes: each returns (run, one-off seconds)
def eager_runner(module):
    return module, 0.0


def onnx_export(module, example, path: Path) -> str:
    """Exports ``module`` to ``path`` (opset 18 with the torch.export-based exporter, else the legacy one at 17);
    returns which exporter wrote it."""
    names = [f"input{i}" for i in range(len(example))]
    try:
        torch.onnx.export(module, example, str(path), input_names=names, output_names=["output"], opset_version=18,
                          dynamo=True, external_data=False)  # fmt: skip
        return "dynamo"
    except Exception as e:  # noqa: BLE001 - any failure of the new exporter: try the legacy one
        print(f"  torch.onnx.export(dynamo=True) failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); legacy")
        torch.onnx.export(module, example, str(path), input_names=names, output_names=["output"], opset_version=17,
                          dynamo=False)  # fmt: skip
        return "legacy"


def ort_runner(module, example, workdir: Path, info: dict):
    import onnxruntime as ort

    start = time.perf_counter()
    path = workdir / f"{type(module).__name__}.onnx"
    info["exporter"] = onnx_export(module, example, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    seconds = time.perf_counter() - start
    names = [i.name for i in session.get_inputs()]
    info["providers"] = session.get_providers()

    def run(*tensors):
        feed = {n: t.contiguous().numpy() for n, t in zip(names, tensors)}
        return torch.from_numpy(session.run(None, feed)[0])

    return run, seconds


def openvino_runner(module, example, workdir: Path, info: dict):
    import openvino as ov

    start = time.perf_counter()
    path = workdir / f"{type(module).__name__}.onnx"
    if not path.exists():
        info["exporter"] = onnx_export(module, example, path)
    core = ov.Core()
    model = ov.convert_model(str(path))
    config = {
        "INFERENCE_NUM_THREADS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
    }
    compiled = core.compile_model(model, "CPU", config)
    seconds = time.perf_counter() - start
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    info["inference_precision"] = precision.to_string() if hasattr(precision, "to_string") else str(precision)
    info["inference_num_threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    request = compiled.create_infer_request()

    def run(*tensors):
        request.infer([t.contiguous().numpy() for t in tensors])
        return torch.from_numpy(request.get_output_tensor(0).data.copy())

    return run, seconds


def compile_runner(module, example, info: dict):
    compiled = torch.compile(module)
    start = time.perf_counter()
    compiled(*example)
    return compiled, time.perf_counter() - start


# ---------------------------------------------------------------------- measuring
def run_all(run, inputs):
    with torch.no_grad():
        return [run(*args) for args in inputs]


def interleaved(runs_by_name, inputs, warmup: int, runs: int):
    """Times each of ``runs_by_name`` on all ``inputs``, alternating them round by round (so that a change of
    the machine's load over the minutes touches all alike): per name, the seconds of each timed round and the
    outputs of the last."""
    seconds = {name: [] for name in runs_by_name}
    outputs = {}
    for round_ in range(warmup + runs):
        for name, run in runs_by_name.items():
            start = time.perf_counter()
            outputs[name] = run_all(run, inputs)
            if round_ >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds, outputs


def compare(network: str, outputs, reference):
    out = torch.cat([o.float().reshape(-1) for o in outputs])
    ref = torch.cat([r.float().reshape(-1) for r in reference])
    if network == "vae":  # [-1, 1] → the [0, 1] pixel scale, as decode_vae maps it
        out, ref = (out + 1) / 2, (ref + 1) / 2
    peak = 1.0 if network in ("vae", "fidelity", "decode") else (ref.max() - ref.min()).item()
    mse = torch.mean((out.double() - ref.double()) ** 2).item()
    return {
        "max_abs_diff": (out - ref).abs().max().item(),
        "psnr_db": math.inf if mse == 0 else 10 * math.log10(peak**2 / mse),
        "psnr_peak": peak,
    }


def summarise(network, seconds, outputs, one_off, infos, extra=None):
    eager = statistics.median(seconds["eager"])
    rows = []
    for runtime, times in seconds.items():
        median = statistics.median(times)
        row = {"network": network, "runtime": runtime, "median_s": median, "min_s": min(times), "seconds": times,
               "ratio_to_eager": median / eager, "one_off_s": one_off[runtime],
               "paired_ratio_to_eager": statistics.median(t / e for t, e in zip(times, seconds["eager"]))}  # fmt: skip
        row.update(compare(network, outputs[runtime], outputs["eager"]))
        row.update(infos.get(runtime, {}))
        row.update((extra or {}).get(runtime, {}))
        rows.append(row)
        print("  " + json.dumps({k: v for k, v in row.items() if k != "seconds"}), flush=True)
    return rows


def measure_network(pipe, network, inputs, runtimes, args, workdir):
    module = {"vae": VAEDecoder(pipe.vae), "unet": UNetStep(pipe.unet), "fidelity": FidelityDecoder(pipe.fidelity_guidance)}[network]  # fmt: skip
    module.eval()
    example = inputs[0]
    runners, one_off, infos, rows = {}, {}, {}, []
    for runtime in ("eager",) + tuple(r for r in runtimes if r != "eager"):
        info = infos.setdefault(runtime, {"calls": len(inputs), "input_shapes": [list(t.shape) for t in example]})
        print(f"{LABELS[network]}: {runtime}", flush=True)
        try:
            with torch.no_grad():
                if runtime == "eager":
                    runners[runtime], one_off[runtime] = eager_runner(module)
                elif runtime == "ort":
                    runners[runtime], one_off[runtime] = ort_runner(module, example, workdir, info)
                elif runtime == "openvino":
                    runners[runtime], one_off[runtime] = openvino_runner(module, example, workdir, info)
                else:
                    runners[runtime], one_off[runtime] = compile_runner(module, example, info)
        except Exception as e:  # noqa: BLE001 - a runtime that cannot run this network: say why, go on
            rows.append({"network": network, "runtime": runtime, "error": f"{type(e).__name__}: {e}"[:2000]})
            print(f"  failed: {rows[-1]['error'][:300]}", flush=True)
    print(f"{LABELS[network]}: timing {', '.join(runners)} in {args.runs} alternating rounds", flush=True)
    seconds, outputs = interleaved(runners, inputs, args.warmup, args.runs)
    if "compile" in runners:  # the compile again, from the on-disk cache the first one left
        torch._dynamo.reset()
        start = time.perf_counter()
        with torch.no_grad():
            torch.compile(module)(*example)
        infos["compile"]["one_off_warm_cache_s"] = time.perf_counter() - start
        torch._dynamo.reset()
    return summarise(network, seconds, outputs, one_off, infos) + rows


@contextlib.contextmanager
def networks_replaced(pipe, vae, unet, fidelity):
    """``pipe`` calling ``vae``, ``unet`` and ``fidelity`` (modules of tensors, as above) where it calls its
    networks."""
    pipe.vae.decode = lambda z, *a, **k: SimpleNamespace(sample=vae(z))
    pipe.unet.forward = lambda sample, timestep, encoder_hidden_states, **k: SimpleNamespace(
        sample=unet(sample, timestep, encoder_hidden_states)
    )
    pipe.fidelity_guidance.decode = fidelity
    try:
        yield
    finally:
        del pipe.vae.decode, pipe.unet.forward, pipe.fidelity_guidance.decode


def measure_decode(pipe, stream, calls, runtimes, args, workdir):
    """Whole ``pipe.decompress`` of the photo, eager and with the three networks in each other runtime,
    alternating. ONNX Runtime's and OpenVINO's one-off cost is the three networks' export and set-up;
    torch.compile's is its first decode (compile included) less a steady compiled decode."""
    modules = (VAEDecoder(pipe.vae), UNetStep(pipe.unet), FidelityDecoder(pipe.fidelity_guidance))
    examples = (calls["vae"][0], calls["unet"][0], calls["fidelity"][0])

    def decoding(networks=None):
        def decode():
            if networks is None:
                return pipe.decompress(stream, output_type="pt").images
            with networks_replaced(pipe, *networks):
                return pipe.decompress(stream, output_type="pt").images

        return decode

    runners, one_off, extra = {"eager": decoding()}, {"eager": 0.0}, {}
    for runtime in (r for r in runtimes if r != "eager"):
        print(f"whole decode: {runtime}", flush=True)
        with torch.no_grad():
            if runtime == "compile":
                eager_first = time.perf_counter()
                runners["eager"]()
                eager_first = time.perf_counter() - eager_first
                runners[runtime] = decoding([torch.compile(m) for m in modules])
                start = time.perf_counter()
                runners[runtime]()
                first = time.perf_counter() - start
                extra[runtime] = {"first_decode_s": first, "eager_decode_before_s": eager_first}
                continue
            make = ort_runner if runtime == "ort" else openvino_runner
            made = [make(m, x, workdir, {}) for m, x in zip(modules, examples)]
            runners[runtime] = decoding([run for run, _ in made])
            one_off[runtime] = sum(seconds for _, seconds in made)
    print(f"whole decode: timing {', '.join(runners)} in {args.runs} alternating rounds", flush=True)
    seconds, outputs = interleaved(runners, [()], args.warmup, args.runs)
    if "compile" in extra:
        compiled = extra["compile"]
        compiled["first_decode_ratio_to_eager"] = compiled["first_decode_s"] / statistics.median(seconds["eager"])
        one_off["compile"] = compiled["first_decode_s"] - statistics.median(seconds["compile"])
    return summarise("decode", seconds, outputs, one_off, {}, extra)


# ---------------------------------------------------------------------- the report
def versions():
    found = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for name in ("onnxruntime", "openvino", "onnx", "onnxscript", "diffusers"):
        try:
            found[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - not installed
            found[name] = None
    return found


def table(rows) -> str:
    lines = [
        "| network | runtime | median s | min s | time ÷ eager (median of rounds) | max abs diff | PSNR vs eager (dB) | one-off s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for network in NETWORKS:
        for runtime in RUNTIMES:
            for row in (r for r in rows if r["network"] == network and r["runtime"] == runtime):
                if "error" in row:
                    lines.append(f"| {LABELS[network]} | {runtime} | failed: {row['error'][:120]} | | | | | |")
                    continue
                one_off = f"{row['one_off_s']:.2f}"
                if "one_off_warm_cache_s" in row:
                    one_off += f" (warm cache {row['one_off_warm_cache_s']:.2f})"
                if "first_decode_s" in row:
                    one_off += f" (first decode {row['first_decode_s']:.2f} s = {row['first_decode_ratio_to_eager']:.2f}× eager)"  # fmt: skip
                psnr = "identical" if math.isinf(row["psnr_db"]) else f"{row['psnr_db']:.1f}"
                lines.append(
                    f"| {LABELS[network]} | {runtime} | {row['median_s']:.3f} | {row['min_s']:.3f} | {row['paired_ratio_to_eager']:.2f} | "
                    f"{row['max_abs_diff']:.1e} | {psnr} | {one_off} |"
                )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", help="a photo, cropped to 768×512 at its centre")
    parser.add_argument("--model", default="sodec-small")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--merge", nargs="+", type=Path, help="merge these parts' JSON (no measuring)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        rows = [row for part in parts for row in part["rows"]]
        merged = {"parts": [{k: v for k, v in p.items() if k != "rows"} for p in parts], "rows": rows}
        args.out.write_text(json.dumps(merged, indent=1) + "\n")
        print(table(rows))
        return
    if args.image is None:
        parser.error("an image is needed unless --merge")
    networks, runtimes = args.networks.split(","), args.runtimes.split(",")
    if set(networks) - set(NETWORKS) or set(runtimes) - set(RUNTIMES):
        parser.error(f"--networks from {','.join(NETWORKS)}; --runtimes from {','.join(RUNTIMES)}")
    workdir = Path(tempfile.mkdtemp(prefix="decoder-runtimes-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(workdir / "inductor")  # a cold compile cache for this process
    torch.set_num_threads(1)

    from sodec_pipeline.cli.model_loading import load_pipeline
    from sodec_pipeline.evaluation.evaluate import load_image

    pipe = load_pipeline(args.model, device="cpu", dtype="float32")  # as `sodec decompress` loads it on the CPU
    image = load_image(Path(args.image))
    top, left = (image.shape[0] - 512) // 2, (image.shape[1] - 768) // 2
    if top < 0 or left < 0:
        raise SystemExit(f"{args.image}: {image.shape[1]}×{image.shape[0]}, smaller than 768×512")
    image = np.ascontiguousarray(image[top : top + 512, left : left + 768])
    (stream,) = pipe.compress(image)
    calls, _ = capture_calls(pipe, stream)
    rows = []
    for network in networks:
        if network == "decode":
            rows += measure_decode(pipe, stream, calls, runtimes, args, workdir)
        else:
            rows += measure_network(pipe, network, calls[network], runtimes, args, workdir)
    result = {
        "args": vars(args) | {"out": str(args.out), "merge": None},
        "image_size": [768, 512],
        "stream_bytes": len(stream),
        "torch_threads": torch.get_num_threads(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "versions": versions(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
