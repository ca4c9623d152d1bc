"""A zygote for short trainings that a test kills at random moments (tests/test_kill_guarantee.py).

Imports torch, Lightning and trackbridge once, then for every line
``RUNS_ROOT RUN_ID`` read on stdin forks a child that trains the tiny
regressor (60 epochs of 4 batches) and prints the pid. The child writes
``epoch <n> <time.time()>`` to ``<run dir>.epochs`` (unbuffered) the moment
trackbridge's ``on_train_epoch_end`` has returned for epoch ``n``: a callback
placed after the stack's own, which Lightning calls next.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lightning.pytorch as pl  # noqa: E402

from tiny import TinyRegressor, tiny_loaders, tiny_trainer  # noqa: E402
from trackbridge import TrackingConfig, build_callbacks  # noqa: E402


class EpochMarks(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with open(self.path, "a", buffering=1) as fh:
            fh.write(f"epoch {trainer.current_epoch + 1} {time.time():.6f}\n")


def train(runs_root: str, run_id: str) -> None:
    stack = build_callbacks(TrackingConfig(task="regression", runs_root=runs_root, run_id=run_id, mlflow=False,
                                           early_stopping_patience=0, system_metrics_interval_s=0))
    train_loader, val_loader = tiny_loaders(n=32, batch_size=8)
    trainer = tiny_trainer([*stack, EpochMarks(os.path.join(runs_root, run_id + ".epochs"))], max_epochs=60,
                           logger=stack.logger, log_every_n_steps=1)
    trainer.fit(TinyRegressor(), train_loader, val_loader)


def main() -> None:
    for line in sys.stdin:
        runs_root, run_id = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                train(runs_root, run_id)
            finally:
                os._exit(0)
        print(pid, flush=True)
        # reap the children the test killed, without blocking on the ones still training
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


if __name__ == "__main__":
    main()
