"""A small real training for the web tests: run as ``python tests/web_training.py --run-id ...``.

A linear regressor under the whole trackbridge stack, sleeping after every
batch so the run lasts long enough for clients to watch it live (and to stop
it). Not a test module: the tests start it in a subprocess.
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from trackbridge import TrackingConfig, build_callbacks

from tiny import TinyRegressor  # tests/ is this script's sys.path[0]




class SleepAfterBatch(pl.Callback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs-root", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--progress-interval", type=float, default=1.0)
    parser.add_argument("--test-after", type=float, default=None,
                        help="after fit, wait this many seconds, then run trainer.test() in the same process")
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(args.batches * 8, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    train = DataLoader(TensorDataset(x, y), batch_size=8)
    val = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
    config = TrackingConfig(
        task="regression",
        run_id=args.run_id,
        runs_root=args.runs_root,
        early_stopping_patience=0,
        hyperparameters={"max_epochs": args.epochs},
        mlflow=args.tracking_uri is not None,
        tracking_uri=args.tracking_uri,
        progress_interval_s=args.progress_interval,
    )
    stack = build_callbacks(config)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        callbacks=[*stack, SleepAfterBatch(args.sleep)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    module = TinyRegressor()
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    if args.test_after is not None:
        time.sleep(args.test_after)
        trainer.test(module, dataloaders=val)


if __name__ == "__main__":
    main()
