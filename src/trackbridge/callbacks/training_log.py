"""TrainingLogFile: Python logging, Lightning's messages, warnings and memory → logs/training.log."""

from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path

import lightning.pytorch as pl
import psutil
import torch

from ..record.jsonl import JsonlAppender
from ..record.run_dir import RunDirectory
from .guard import tracking_hook
from .record_writer import DiskOutage
from .session import RunSession

log = logging.getLogger("trackbridge")

# Lightning's loggers do not propagate to the root logger, so each gets the handler.
_LOGGER_NAMES = ("", "lightning.pytorch", "lightning.fabric", "py.warnings")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Lines kept in memory while the disk refuses them (the oldest go first).
MAX_KEPT_LINES = 10_000


class TrainingLogFile(pl.Callback):
    """Copy logging to ``log_path`` during fit (global rank zero only).

    The epoch lines (the record and the process's memory) are formatted and
    written by the run's writer thread. A write the disk refuses never
    raises into the training and never floods the console: see
    :class:`TrainingLogHandler`.
    """

    def __init__(
        self, log_path: str | os.PathLike[str], level: int = logging.INFO, *, session: RunSession | None = None
    ) -> None:
        self.log_path = Path(log_path)
        self.level = level
        self.session = session or RunSession(RunDirectory.from_file(self.log_path), beats=False)
        self._handler: TrainingLogHandler | None = None
        self._levels: dict[str, int] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handler"], state["_levels"] = None, {}
        return state

    @tracking_hook
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.session.setup(trainer)
        if not trainer.is_global_zero or self._handler is not None:
            return
        if self.session.run_dir is not None:
            self.log_path = self.session.run_dir.training_log
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = TrainingLogHandler(self.log_path, self.session.outage)
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

    @tracking_hook
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.session.epoch_started(trainer)

    @tracking_hook
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._handler is None:
            return
        record = self.session.epoch_record(trainer)
        if record is None:
            return
        root = trainer.strategy.root_device
        self.session.in_background(lambda: _log_epoch(record, root))

    @tracking_hook
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._handler is not None:
            log.error("training ended with %s", type(exception).__name__, exc_info=exception)

    @tracking_hook
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._handler is None or stage != "fit":
            return
        self.session.flush()  # the epoch lines still queued in the writer
        for name in _LOGGER_NAMES:
            logging.getLogger(name).removeHandler(self._handler)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._levels.clear()
        self._handler.close()
        self._handler = None


def _log_epoch(record: dict, root: torch.device) -> None:
    shown = ", ".join(
        f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items() if k != "time"
    )
    log.info("epoch %d: %s", record["epoch"], shown)
    log.info("epoch %d memory: %s", record["epoch"], memory_summary(root))


def memory_summary(root: torch.device) -> str:
    """CUDA peak allocated on a GPU run, process RSS otherwise."""
    if root.type == "cuda" and torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated(root) / 2**20
        torch.cuda.reset_peak_memory_stats(root)
        return f"cuda peak allocated {peak:.1f} MiB on {root}"
    rss = psutil.Process().memory_info().rss / 2**20
    return f"process rss {rss:.1f} MiB"


class TrainingLogHandler(logging.Handler):
    """A file handler that survives a full disk.

    logging's own FileHandler prints a "--- Logging error ---" traceback to
    stderr for every record it cannot write; on a full disk that is one per
    log line, for the rest of the run. This one reports the outage once
    (through the run's :class:`DiskOutage`), keeps the lines in memory, and
    writes them first when the disk takes them again.
    """

    def __init__(self, path: Path, outage: DiskOutage) -> None:
        super().__init__()
        self.path = path
        self.outage = outage
        self._kept: deque[str] = deque(maxlen=MAX_KEPT_LINES)
        self._what = f"{path.parent.name}/{path.name}"
        self._appender = JsonlAppender(path)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted: logging's own report
            self.handleError(record)
            return
        self._kept.append(line)
        try:
            # whole lines or nothing: a refused write is cut back, and the kept lines go out whole next time
            self._appender.append_lines(self._kept)
        except OSError as exc:
            self.outage.failed(self._what, exc)
            return
        self._kept.clear()
        self.outage.succeeded(self._what)
