"""A training that lasts long enough to be watched: the tiny regressor with a sleep per batch.

Run as a script by the browser and demo tests (a real training process, apart
from the server and the browser):

    python tests/slow_training.py RUNS_ROOT RUN_ID [--epochs N] [--sleep S] [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny import TinyRegressor, tiny_loaders, tiny_trainer  # noqa: E402

from trackbridge import TrackingConfig, build_callbacks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs_root")
    parser.add_argument("run_id")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds per training batch")
    parser.add_argument("--tracking-uri", default=None, help="mirror to this MLflow server (default: no mirror)")
    parser.add_argument("--pending", type=float, default=0.0, help="seconds between build_callbacks and fit (data preparation)")
    parser.add_argument("--steps-every", type=int, default=2, help="log_every_n_steps")
    args = parser.parse_args()
    config = TrackingConfig(
        task="regression",
        run_id=args.run_id,
        runs_root=args.runs_root,
        early_stopping_patience=0,
        mlflow=args.tracking_uri is not None,
        tracking_uri=args.tracking_uri,
        progress_interval_s=0.5,
        hyperparameters={"max_epochs": args.epochs, "sleep_s": args.sleep},
    )
    stack = build_callbacks(config)
    time.sleep(args.pending)  # the run is pending meanwhile: its heartbeat beats
    train, val = tiny_loaders(n=64, batch_size=8)  # 8 batches per epoch
    trainer = tiny_trainer(stack, max_epochs=args.epochs, logger=stack.logger, log_every_n_steps=args.steps_every)
    trainer.fit(TinyRegressor(sleep_s=args.sleep), train, val)


if __name__ == "__main__":
    main()
