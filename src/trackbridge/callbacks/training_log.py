"""TrainingLogFile: Python logging, Lightning's messages, warnings and memory → logs/training.log."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning.pytorch as pl
import psutil
import torch

from .run_state import epoch_record, mark_epoch_start

log = logging.getLogger("trackbridge")

# Lightning's loggers do not propagate to the root logger, so each gets the handler.
_LOGGER_NAMES = ("", "lightning.pytorch", "lightning.fabric", "py.warnings")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TrainingLogFile(pl.Callback):
    """Copy logging to ``log_path`` during fit (global rank zero only)."""

    def __init__(self, log_path: str | os.PathLike[str], level: int = logging.INFO) -> None:
        self.log_path = Path(log_path)
        self.level = level
        self._handler: logging.FileHandler | None = None
        self._levels: dict[str, int] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not trainer.is_global_zero or self._handler is not None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.log_path, encoding="utf-8")
        handler.setLevel(self.level)
        handler.setFormatter(logging.Formatter(_FORMAT))
        logging.captureWarnings(True)
        for name in _LOGGER_NAMES:
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            if logger.getEffectiveLevel() > self.level:
                self._levels[name] = logger.level
                logger.setLevel(self.level)
        self._handler = handler
        log.info("trackbridge: logging run to %s", self.log_path)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        mark_epoch_start(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._handler is None:
            return
        record = epoch_record(trainer)
        shown = ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if k != "time"
        )
        log.info("epoch %d: %s", record["epoch"], shown)
        log.info("epoch %d memory: %s", record["epoch"], memory_summary(trainer))

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._handler is not None:
            log.error("training ended with %s", type(exception).__name__, exc_info=exception)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._handler is None:
            return
        for name in _LOGGER_NAMES:
            logging.getLogger(name).removeHandler(self._handler)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._levels.clear()
        self._handler.close()
        self._handler = None


def memory_summary(trainer: pl.Trainer) -> str:
    """CUDA peak allocated on a GPU run, process RSS otherwise."""
    root = trainer.strategy.root_device
    if root.type == "cuda" and torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated(root) / 2**20
        torch.cuda.reset_peak_memory_stats(root)
        return f"cuda peak allocated {peak:.1f} MiB on {root}"
    rss = psutil.Process().memory_info().rss / 2**20
    return f"process rss {rss:.1f} MiB"
