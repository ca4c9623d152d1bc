"""A reference-task training with the whole stack, paced so that it can be watched: figures every epoch.

Run as a script by the media-process and dashboard tests (a real training process, apart
from the server and the browser):

    python tests/paced_training.py RUNS_ROOT RUN_ID [--task T] [--epochs N] [--pace S]
        [--steps-per-epoch K] [--system-interval S] [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning.pytorch as pl
import torch

from trackbridge import TrackingConfig, build_callbacks
from trackbridge.reference import build_reference


class Pace(pl.Callback):
    """Sleep after every training batch: a slower training, without using the CPU."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs_root")
    parser.add_argument("run_id")
    parser.add_argument("--task", default="classification")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds of sleep per training batch")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system-interval", type=float, default=0.0, help="system_metrics_interval_s")
    parser.add_argument("--tracking-uri", default=None, help="mirror to this MLflow server (default: no mirror)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # tiny models on a shared machine
    config = TrackingConfig(
        task=args.task,
        run_id=args.run_id,
        runs_root=args.runs_root,
        early_stopping_patience=0,
        mlflow=args.tracking_uri is not None,
        tracking_uri=args.tracking_uri,
        progress_interval_s=0.5,
        system_metrics_interval_s=args.system_interval,
        hyperparameters={"max_epochs": args.epochs, "pace_s": args.pace, "seed": args.seed},
    )
    stack = build_callbacks(config)
    pl.seed_everything(args.seed, verbose=False)
    module, data = build_reference(args.task, seed=args.seed, steps_per_epoch=args.steps_per_epoch)
    trainer = pl.Trainer(
        max_epochs=args.epochs, callbacks=[*stack, Pace(args.pace)], logger=stack.logger, accelerator="cpu",
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=data)


if __name__ == "__main__":
    main()
