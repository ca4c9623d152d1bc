"""RunStatusUpdater: the run's lifecycle → run.json (status, times, best, pid, heartbeat)."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import lightning.pytorch as pl

from ..record.liveness import process_start_time
from ..record.run_dir import RunDirectory
from ..record.status import RunStatus
from ..tasks import is_better
from .heartbeat import Heartbeat
from .run_state import epoch_record, final_metrics, mark_epoch_start, run_outcome


class RunStatusUpdater(pl.Callback):
    """Keep ``run_json_path`` up to date: ``pending → running → completed | failed | stopped``.

    ``best_epoch`` (int) and ``best_score`` (float) follow the monitor of the
    run (``monitor``/``mode`` arguments, else run.json's, else the Trainer's
    first ModelCheckpoint), updated every epoch so a reader sees progress.
    """

    def __init__(
        self,
        run_json_path: str | os.PathLike[str],
        *,
        monitor: str | None = None,
        mode: str | None = None,
        heartbeat_interval_s: float = 15.0,
    ) -> None:
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"`mode` can be min, max, got {mode!r}")
        if heartbeat_interval_s <= 0 or heartbeat_interval_s > 30:
            raise ValueError(f"`heartbeat_interval_s` must be in (0, 30], got {heartbeat_interval_s}")
        self.run_json_path = Path(run_json_path)
        self.run_dir = RunDirectory.from_file(self.run_json_path)
        self.monitor = monitor
        self.mode = mode
        self._heartbeat = Heartbeat(self.run_dir, heartbeat_interval_s)
        self._resolved: tuple[str | None, str] = (monitor, mode or "min")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero or stage != "fit":
            return
        if not self.run_dir.exists():  # used on its own, without build_callbacks
            monitor, mode = self._resolve_monitor(trainer)
            self.run_dir.create({"monitor": monitor, "mode": mode})

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        pid = os.getpid()
        self.run_dir.set_status(
            RunStatus.RUNNING,
            pid=pid,
            pid_started_at=process_start_time(pid),
            host=socket.gethostname(),
            max_epochs=trainer.max_epochs,
        )
        self._resolved = self._resolve_monitor(trainer)
        self._heartbeat.start()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mark_epoch_start(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = epoch_record(trainer)
        monitor, mode = self._resolved

        def apply(run: dict) -> None:
            run["epochs_done"] = record["epoch"]
            score = record.get(monitor)
            if score is not None and math.isfinite(score) and is_better(score, run.get("best_score"), mode):
                run["best_epoch"], run["best_score"] = record["epoch"], score

        self.run_dir.update_run(apply)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._heartbeat.stop()
        status, _ = run_outcome(trainer)
        final = final_metrics(trainer)
        self.run_dir.set_status(status, final_metrics=final)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not trainer.is_global_zero:
            return
        self._heartbeat.stop()
        status, error = run_outcome(trainer, exception)
        if self.run_dir.exists():
            self.run_dir.set_status(status, error=error, final_metrics=final_metrics(trainer))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._heartbeat.stop()

    def _resolve_monitor(self, trainer: pl.Trainer) -> tuple[str | None, str]:
        """Arguments first, then run.json (what build_callbacks stored), then the ModelCheckpoint."""
        stored = self.run_dir.read_run() if self.run_dir.exists() else {}
        checkpoint = trainer.checkpoint_callback
        monitor = self.monitor or stored.get("monitor") or getattr(checkpoint, "monitor", None)
        mode = self.mode or stored.get("mode") or getattr(checkpoint, "mode", None) or "min"
        return monitor, mode
