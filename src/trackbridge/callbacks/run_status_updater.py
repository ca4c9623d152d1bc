"""RunStatusUpdater: the run's lifecycle → run.json (status, times, best, identity, stages)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..record.run_dir import RunDirectory
from ..tasks import MODES, is_better
from .guard import tracking_hook
from .session import END_FLUSH_S, RunSession, StageHooks

class RunStatusUpdater(StageHooks):
    """Keep ``run_json_path`` up to date: ``pending → running → completed | failed | stopped``.

    ``best_epoch`` (int) and ``best_score`` (float) follow the monitor of the
    run (``monitor``/``mode`` arguments, else run.json's, else the Trainer's
    first ModelCheckpoint), updated every epoch so a reader sees progress.
    A validate or test stage after fit adds its metrics to ``final_metrics``
    under the stage's name. ``session``: the stack's (made here when None).
    """

    def __init__(
        self,
        run_json_path: str | os.PathLike[str],
        *,
        monitor: str | None = None,
        mode: str | None = None,
        heartbeat_interval_s: float = 15.0,
        session: RunSession | None = None,
    ) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"`mode` can be {', '.join(MODES)}, got {mode!r}")
        if heartbeat_interval_s <= 0 or heartbeat_interval_s > 30:
            raise ValueError(f"`heartbeat_interval_s` must be in (0, 30], got {heartbeat_interval_s}")
        self.run_json_path = Path(run_json_path)
        self.monitor = monitor
        self.mode = mode
        self.session = session or RunSession(
            RunDirectory.from_file(self.run_json_path), heartbeat_interval_s=heartbeat_interval_s
        )
        self._resolved: tuple[str | None, str] = (monitor, mode or "min")

    @property
    def run_dir(self) -> RunDirectory:
        assert self.session.run_dir is not None
        return self.session.run_dir

    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.session.setup(trainer)
        if trainer.is_global_zero and stage == "fit" and not self.run_dir.exists():  # used on its own
            monitor, mode = self._resolve_monitor(trainer)
            self.session.create_run({"monitor": monitor, "mode": mode})

    @tracking_hook
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self._resolved = self._resolve_monitor(trainer)
        self.session.start_training(trainer)

    @tracking_hook
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.epoch_started(trainer)

    @tracking_hook
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        record = self.session.epoch_record(trainer)
        if record is None:
            return
        monitor, mode = self._resolved
        epoch, score = record["epoch"], record.get(monitor) if monitor else None

        def progress(run: dict[str, Any]) -> None:
            run["epochs_done"] = epoch
            if score is not None and math.isfinite(score) and is_better(score, run.get("best_score"), mode):
                run["best_epoch"], run["best_score"] = epoch, score

        self.session.update_run(progress)

    @tracking_hook
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            status, _ = self.session.outcome()
            self.session.end_training(status, final_metrics=self.session.final_metrics())
            self.session.flush(END_FLUSH_S)

    @tracking_hook
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero and self.run_dir.exists() and self.session.owner_status is not None:
            status, error = self.session.outcome(exception)
            self.session.end_training(status, error=error, final_metrics=self.session.final_metrics())
            self.session.flush(END_FLUSH_S)

    def record_stage(self, trainer: pl.Trainer, stage: str) -> None:
        if not trainer.is_global_zero or not self.run_dir.exists():
            return
        metrics = self.session.stage_record(trainer, stage)["metrics"]

        def staged(run: dict[str, Any]) -> None:
            final = run.get("final_metrics") if isinstance(run.get("final_metrics"), dict) else {}
            run["final_metrics"] = {**final, stage: metrics}

        self.session.update_run(staged)
        self.session.flush(END_FLUSH_S)

    @tracking_hook
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.session.flush(END_FLUSH_S)

    def _resolve_monitor(self, trainer: pl.Trainer) -> tuple[str | None, str]:
        """Arguments first, then run.json (what build_callbacks stored), then the ModelCheckpoint."""
        stored = self.run_dir.read_run() if self.run_dir.exists() else {}
        checkpoint = trainer.checkpoint_callback
        monitor = self.monitor or stored.get("monitor") or getattr(checkpoint, "monitor", None)
        mode = self.mode or stored.get("mode") or getattr(checkpoint, "mode", None) or "min"
        return monitor, mode
