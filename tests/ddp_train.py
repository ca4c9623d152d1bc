"""A DDP training with the trackbridge stack: 2 CPU processes, gloo (run by tests/test_ddp.py).

Lightning's DDP launcher runs this file again for rank 1, so it must be a
script. Each rank writes what it knows to ``<report_dir>/rank<N>.json``, and
rank 1 attaches an artifact to the MLflow run by the id rank zero broadcast.

    python tests/ddp_train.py RUNS_ROOT TRACKING_URI EXPERIMENT REPORT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl

from trackbridge import TrackingConfig, build_callbacks
from trackbridge.reference import build_reference

EPOCHS = 2


class RankReport(pl.Callback):
    """Writes, per rank, the epochs it ran and the MLflow run id its stack knows."""

    def __init__(self, report_dir: Path, tracking_uri: str, stack: list) -> None:
        self.stack = stack
        self.report_dir = report_dir
        self.tracking_uri = tracking_uri
        self.epochs: list[int] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epochs.append(trainer.current_epoch + 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        parts = [part for cb in trainer.callbacks for part in (getattr(cb, "parts", None) or [cb])]  # the composite's
        mirror = next((cb for cb in parts if type(cb).__name__ == "MLflowMirror"), None)
        mlflow_run_id = getattr(mirror, "mlflow_run_id", None)
        rank = trainer.global_rank
        attached = None
        if rank != 0 and mlflow_run_id:
            # What the broadcast is for: a rank other than zero attaches its own artifact.
            from mlflow import MlflowClient

            attached = f"ranks/rank{rank}.json"
            MlflowClient(self.tracking_uri).log_dict(mlflow_run_id, {"rank": rank}, attached)
        report = {
            "global_rank": rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "backend": getattr(trainer.strategy, "process_group_backend", None),
            "epochs": self.epochs,
            "mlflow_run_id": mlflow_run_id,
            "run_id": self.stack.run_id,
            "attached": attached,
        }
        (self.report_dir / f"rank{rank}.json").write_text(json.dumps(report))


def main(runs_root: str, tracking_uri: str, experiment: str, report_dir: str) -> None:
    config = TrackingConfig(
        task="classification",
        runs_root=runs_root,
        tracking_uri=tracking_uri,
        experiment=experiment,
        early_stopping_patience=0,
        hyperparameters={"max_epochs": EPOCHS, "devices": 2},
    )
    stack = build_callbacks(config)  # each rank builds it; only rank zero writes
    pl.seed_everything(0, verbose=False)
    module, data = build_reference("classification", seed=0, steps_per_epoch=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=EPOCHS,
        callbacks=[*stack, RankReport(Path(report_dir), tracking_uri, stack)],
        logger=False,
        default_root_dir=stack.run_dir.path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=data)


if __name__ == "__main__":
    main(*sys.argv[1:5])
