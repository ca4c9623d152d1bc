"""SystemMetricsSampler: CPU, memory, disk, network and GPU samples → system.jsonl, MLflow, ``system`` events.

One thread samples every ``interval_s`` seconds while the run trains, with
MLflow's own metric names (``cpu_utilization_percentage``,
``system_memory_usage_megabytes``, ``gpu_0_utilization_percentage``, ...) and
its step convention (a 0-based sample index, continued by a resumed run), so
the MLflow UI's System metrics tab shows them; the MLflow mirror logs each as
``system/<name>``. GPU figures come from NVML (``nvidia-ml-py``), imported
only when a CUDA device is there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

import lightning.pytorch as pl
import psutil

from ..events.types import EventType, make_event
from ..record.clock import utc_now_iso
from ..record.jsonl import last_record
from .guard import tracking_hook
from .session import RunSession

log = logging.getLogger("trackbridge")

_MB = 1e6


class SystemProbe:
    """Reads one sample of the machine (psutil, and NVML when a GPU is present)."""

    def __init__(self, disk_path: str | os.PathLike[str]) -> None:
        self.disk_path = os.fspath(disk_path)
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)  # primes the counter: the first real reading covers one interval
        self._disk0 = psutil.disk_io_counters()
        self._net0 = psutil.net_io_counters()
        self._nvml = _nvml_devices()

    def sample(self) -> dict[str, float]:
        memory = psutil.virtual_memory()
        values: dict[str, float] = {
            "cpu_utilization_percentage": psutil.cpu_percent(interval=None),
            "system_memory_usage_megabytes": round(memory.used / _MB, 1),
            "system_memory_usage_percentage": round(memory.used / memory.total * 100, 1),
            "process_memory_rss_megabytes": round(self._process.memory_info().rss / _MB, 1),
        }
        try:
            usage = psutil.disk_usage(self.disk_path)
            values["disk_usage_megabytes"] = round(usage.used / _MB, 1)
            values["disk_available_megabytes"] = round(usage.free / _MB, 1)
        except OSError:
            pass
        disk = psutil.disk_io_counters()
        if disk is not None and self._disk0 is not None:
            values["disk_read_megabytes"] = round((disk.read_bytes - self._disk0.read_bytes) / _MB, 3)
            values["disk_write_megabytes"] = round((disk.write_bytes - self._disk0.write_bytes) / _MB, 3)
        net = psutil.net_io_counters()
        if net is not None and self._net0 is not None:
            values["network_receive_megabytes"] = round((net.bytes_recv - self._net0.bytes_recv) / _MB, 3)
            values["network_transmit_megabytes"] = round((net.bytes_sent - self._net0.bytes_sent) / _MB, 3)
        for index, read in enumerate(self._nvml):
            values.update(read(index))
        return values


def _nvml_devices() -> list[Callable[[int], dict[str, float]]]:
    """One reader per NVIDIA GPU, or none (no CUDA device, or no NVML library)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception as exc:  # no driver, no library: CPU figures only
        log.debug("no GPU system metrics: %s", exc)
        return []

    def reader(handle: Any) -> Callable[[int], dict[str, float]]:
        def read(i: int) -> dict[str, float]:
            values: dict[str, float] = {}
            try:
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                values[f"gpu_{i}_memory_usage_megabytes"] = round(memory.used / _MB, 1)
                values[f"gpu_{i}_memory_usage_percentage"] = round(memory.used / memory.total * 100, 1)
                values[f"gpu_{i}_utilization_percentage"] = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                values[f"gpu_{i}_power_usage_watts"] = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000
                values[f"gpu_{i}_temperature_celsius"] = float(
                    pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
                )
            except pynvml.NVMLError as exc:  # a counter this GPU does not have
                log.debug("GPU %d: %s", i, exc)
            return values

        return read

    return [reader(handle) for handle in handles]


class SystemMetricsSampler(pl.Callback):
    """Samples the machine every ``interval_s`` seconds from ``on_train_start`` to the end of fit."""

    def __init__(self, session: RunSession, interval_s: float = 10.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"`interval_s` must be > 0 (leave the sampler out to turn it off), got {interval_s}")
        self.session = session
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"session": self.session, "interval_s": self.interval_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["session"], state["interval_s"])  # type: ignore[misc]

    @tracking_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.session.writer is None or self._thread is not None:
            return
        run_dir = self.session.run_dir
        assert run_dir is not None
        last = last_record(run_dir.system_jsonl, lambda line: isinstance(line, dict) and isinstance(line.get("step"), int))
        first_step = last["step"] + 1 if last is not None else 0
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(run_dir.runs_root, first_step),
            name=f"trackbridge-system-{run_dir.run_id}", daemon=True,
        )
        self._thread.start()

    @tracking_hook
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._halt()

    @tracking_hook
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._halt()

    @tracking_hook
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._halt()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, disk_path: Any, step: int) -> None:
        probe = SystemProbe(disk_path)
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            try:
                self._record(step, probe.sample())
            except Exception as exc:  # a failing probe never touches the training
                self.session.errors.record(type(self).__name__, "sample", exc)
            step += 1

    def _record(self, step: int, values: dict[str, float]) -> None:
        writer = self.session.writer
        if writer is None:
            return
        line = {"step": step, "time": utc_now_iso(), **values}
        writer.append("system.jsonl", line, listener="system")
        self.session.events.put(make_event(0, EventType.SYSTEM, self.session.run_id, step=step, metrics=values))
