"""Measurement probes of the benchmark: device-synchronised timing, interleaved repeats, peak memory, the
machine's description, and a counter of a module's forward calls."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Sequence

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings include them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds `fn()` takes, including the device work it queued."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_timings(
    candidates: dict[str, Callable[[], Any]], repeats: int, device: torch.device, warmup: int = 1
) -> dict[str, list[float]]:
    """Time each candidate `repeats` times, alternating between them (A B A B ...) after `warmup` runs each.

    Alternating spreads slow drifts of a shared machine (other processes, thermal state) over all
    candidates instead of penalising whichever ran during a busy spell.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    timings: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            timings[name].append(time_call(fn, device))
    return timings


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0); False when impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    hwm, rss = _proc_status_kib("VmHWM"), _proc_status_kib("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 1024


class _RssSampler:
    """Fallback peak-RSS probe: a thread that samples this process' resident memory every millisecond."""

    def __init__(self, interval: float = 0.001):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, (_proc_status_kib("VmRSS") or 0) * 1024)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, (_proc_status_kib("VmRSS") or 0) * 1024)


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """Extra peak memory `fn()` needs (models it loads + activations), and how it was measured.

    - CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before.
    - Linux CPU: `fn` runs in a forked child whose peak RSS (VmHWM, reset at the start) is compared with
      its RSS at the start, so memory freed earlier in the parent cannot hide or inflate anything. The
      child runs single-threaded: OpenMP is not fork-safe once the parent has used its thread pool, and
      the thread count does not change how much memory weights and activations take.
    - elsewhere: a thread sampling this process' RSS.
    """
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        gc.collect()
        torch.cuda.empty_cache()
        return int(peak), "torch.cuda.max_memory_allocated"
    if hasattr(os, "fork") and sys.platform.startswith("linux") and os.path.exists("/proc/self/clear_refs"):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_end)
            message = b""
            try:
                torch.set_num_threads(1)
                gc.collect()
                if not _reset_peak_rss():
                    raise OSError("cannot reset VmHWM")
                start = _proc_status_kib("VmRSS")
                fn()
                message = str((_proc_status_kib("VmHWM") - start) * 1024).encode()
            except BaseException as error:  # noqa: BLE001  (reported to the parent, which re-raises)
                message = f"error: {type(error).__name__}: {error}".encode()
            finally:
                os.write(write_end, message)
                os.close(write_end)
                os._exit(0)
        os.close(write_end)
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
        os.close(read_end)
        os.waitpid(pid, 0)
        text = b"".join(chunks).decode()
        if text.startswith("error: ") or not text:
            raise RuntimeError(f"peak-memory probe failed in the child process: {text or 'no answer'}")
        return int(text), "peak RSS (VmHWM) of a forked child"
    gc.collect()
    base = (_proc_status_kib("VmRSS") or 0) * 1024
    with _RssSampler() as sampler:
        fn()
    return int(sampler.peak - base), "sampled RSS"


def describe_machine(device: torch.device, num_processes: int, bf16: bool) -> dict[str, Any]:
    """Where the figures come from: CPU, cores, threads, memory, GPU, library versions."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": memory_gib,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "num_processes": num_processes,
        "precision": "bf16" if bf16 else "fp32",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return info


def autocast_context(device: torch.device, bf16: bool):
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def backbone_module(model: torch.nn.Module) -> torch.nn.Module:
    """The shared encoder of a MultiTaskModel (the first nested PreTrainedModel)."""
    from modeling.export import _backbone_module

    return _backbone_module(model)


@contextmanager
def count_calls(module: torch.nn.Module):
    """Count forward calls of `module` inside the block: ``with count_calls(m) as calls: ...; calls[0]``."""
    calls = [0]

    def hook(*_):
        calls[0] += 1

    handle = module.register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()

