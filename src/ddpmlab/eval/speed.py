"""What a model costs: sampling images per second on a warm model, peak memory, training wall-clock."""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from ddpmlab.config import Config
from ddpmlab.methods import DDPM, LDM, images_seen, sample_images, sampling_nfe
from ddpmlab.rng import model_device
from ddpmlab.samplers import SamplingSettings
from ddpmlab.store.metrics_csv import read_metrics

CUDA_PEAK = "cuda max_memory_allocated (tensors on the GPU, since the timed runs began)"
CPU_PEAK = "process peak RSS (getrusage ru_maxrss: the whole process so far, data and features included)"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the work's end; nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_peak_rss_bytes() -> int:
    """The process's peak resident set size so far, in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_memory(device: torch.device) -> dict:
    """{"peak_memory_bytes": int, "peak_memory_kind": what was measured}: GPU tensors on CUDA, process RSS on CPU."""
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)), "peak_memory_kind": CUDA_PEAK}
    return {"peak_memory_bytes": process_peak_rss_bytes(), "peak_memory_kind": CPU_PEAK}


SHARED_LOAD = 0.5  # 1-minute load average beyond torch's threads above which other work shared the CPU


def other_load() -> float | None:
    """The 1-minute load average beyond torch's own CPU threads, right now: about 0 when this process had the CPU
    to itself, above SHARED_LOAD when other work shared it; None where the system gives no load average."""
    load = machine_load()
    return None if load["load_average_1min"] is None else load["load_average_1min"] - load["torch_threads"]


def machine_load() -> dict:
    """Torch's CPU threads, the core count and the 1-minute load average, read right after timing: the timing
    itself adds about torch_threads to the load, so a load well above that means other work shared the CPU."""
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def sampling_speed(model, schedule, shape, sampling: SamplingSettings | None = None, *, repeats: int = 3,
                   device=None, labels: torch.Tensor | None = None) -> dict:
    """Images per second of drawing a batch of `shape` through ddpmlab.methods.sample_images: the median of
    `repeats` timed batches.

    `model` is a network of `load_trained`, or any diffusion backbone with its `schedule`. A diffusion model is
    sampled by `sampling` (default SamplingSettings()); a single-pass network (schedule None) draws in one pass and
    reads none of it. One short untimed batch (2 steps of the same sampler, same shape) warms the model first; GPU
    work is synchronised before each clock read. Returns images_per_s, seconds_per_batch (median), seconds (each
    repeat), batch_size, sampler, steps, repeats, device, peak memory (see `peak_memory`) and `machine_load()`.
    """
    device = torch.device(device) if device is not None else model_device(model)
    if schedule is None:
        net, warm_up, timed, name, steps = model, None, None, model.SECTION, None  # the method: vae, dcgan, ...
    else:
        net = model if isinstance(model, (DDPM, LDM)) else DDPM(model, schedule, image_shape=tuple(shape[1:]))
        timed = (sampling or SamplingSettings()).resolved(schedule.T)
        warm_up = timed.with_(steps=min(2, schedule.T))
        name, steps = timed.sampler, timed.steps
    generator = torch.Generator().manual_seed(0)
    sample_images(net, shape[0], generator, warm_up, labels)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample_images(net, shape[0], generator, timed, labels)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"images_per_s": shape[0] / median, "seconds_per_batch": median, "seconds": seconds,
            "batch_size": shape[0], "sampler": name, "steps": steps,
            "nfe": 1 if schedule is None else sampling_nfe(net, timed), "repeats": repeats,
            "device": str(device), **peak_memory(device), **machine_load()}


def training_cost(run_dir: str | Path, config: Config) -> dict:
    """Training cost read from RUN_DIR/metrics.csv: steps, wall-clock seconds, images seen (methods.images_seen of
    the run's `config`: each stage's steps times its batch), images per second.

    train_images_per_s: images seen / wall-clock (validation, grids and checkpoints included);
    train_step_images_per_s: the median of the logged windows' throughput (the training steps alone);
    train_other_load: the median of the rows' `other_load` (other work on the CPU while training; None for a run
    that did not log it) and train_cpu_shared whether it is above SHARED_LOAD (None: not known).
    Empty when the run has no metrics.csv.
    """
    path = Path(run_dir) / "metrics.csv"
    rows = read_metrics(path) if path.is_file() else []
    if not rows:
        return {}
    last = rows[-1]
    throughput = [r["images_per_s"] for r in rows if r["images_per_s"] is not None]
    loads = [r["other_load"] for r in rows if r.get("other_load") is not None]
    load = statistics.median(loads) if loads else None
    images = images_seen(config, last["step"])
    return {"train_steps": last["step"], "train_wall_s": last["wall_s"], "train_images": images,
            "train_images_per_s": images / last["wall_s"] if last["wall_s"] else None,
            "train_step_images_per_s": statistics.median(throughput) if throughput else None,
            "train_other_load": load, "train_cpu_shared": None if load is None else load > SHARED_LOAD}


def feature_speed(extractor, images: torch.Tensor, batch_size: int, repeats: int = 3) -> dict:
    """Images per second of `extractor.extract(images, batch_size)`: the median of `repeats` timed passes
    after one untimed batch. Returns images_per_s, seconds (each pass), images, batch_size, extractor id, device
    and `machine_load()`."""
    extractor.extract(images[:batch_size], batch_size=batch_size, progress=False)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        extractor.extract(images, batch_size=batch_size, progress=False)
        synchronize(extractor.device)
        seconds.append(time.perf_counter() - start)
    return {"images_per_s": len(images) / statistics.median(seconds), "seconds": seconds, "images": len(images),
            "batch_size": batch_size, "extractor": extractor.extractor_id, "device": str(extractor.device),
            **machine_load()}
