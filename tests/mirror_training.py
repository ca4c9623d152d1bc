"""A training process for the mirror's crash tests: the tiny regressor on shuffled data, every step logged.

    python tests/mirror_training.py RUNS_ROOT RUN_ID --tracking-uri URI [--epochs N] [--sleep S] [--resume]

Each epoch is 8 batches in a new random order (the global RNG, so a resumed
process sees other batches than the one it replaces); every step goes to
steps.jsonl. ``--resume`` continues RUN_ID from its last.ckpt.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from torch.utils.data import DataLoader  # noqa: E402

from tiny import TinyRegressor, tiny_loaders, tiny_trainer  # noqa: E402

from trackbridge import TrackingConfig, build_callbacks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs_root")
    parser.add_argument("run_id")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sleep", type=float, default=0.1, help="seconds per training batch")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    stack = build_callbacks(TrackingConfig(
        task="regression", run_id=args.run_id, runs_root=args.runs_root, early_stopping_patience=0,
        tracking_uri=args.tracking_uri, resume=args.resume, flush_timeout_s=10,
    ))
    train, val = tiny_loaders(n=64, batch_size=8)
    train = DataLoader(train.dataset, batch_size=8, shuffle=True)
    trainer = tiny_trainer(stack, max_epochs=args.epochs, log_every_n_steps=1)
    trainer.fit(TinyRegressor(sleep_s=args.sleep), train, val,
                ckpt_path=stack.run_dir.last_ckpt if args.resume else None)


if __name__ == "__main__":
    main()
