"""The two ModelCheckpoints of the stack: best.ckpt by the task monitor, last.ckpt every epoch.

One ``ModelCheckpoint(save_top_k=1, save_last=True)`` refreshes last.ckpt only
in epochs where the best improved (Lightning 2.6), while the contract says
last.ckpt is the most recent epoch; a second, unmonitored ModelCheckpoint
writes it every epoch.
"""

from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint


def best_checkpoint(dirpath: str | os.PathLike[str], monitor: str, mode: str) -> ModelCheckpoint:
    return ModelCheckpoint(
        dirpath=dirpath,
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=False,
        auto_insert_metric_name=False,
        enable_version_counter=False,
        verbose=True,
    )


def last_checkpoint(dirpath: str | os.PathLike[str]) -> ModelCheckpoint:
    return ModelCheckpoint(
        dirpath=dirpath,
        filename="last",
        monitor=None,
        save_top_k=1,
        save_last=False,
        enable_version_counter=False,
    )
