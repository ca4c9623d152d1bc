"""Base of the reference models judged by mAP over per-image detections (boxes or masks)."""

from __future__ import annotations

from typing import Any

import torch

from .base import ReferenceModule, Stage


class MeanAPModule(ReferenceModule):
    """Evaluation by a per-image mAP metric, logged as ``<stage>_<map_name>`` and ``..._50``.

    Batches are ``(images, dense training target, per-image target dicts)``. Subclasses
    define :meth:`loss` and :meth:`decode`, and add a ``map`` stage metric (whose
    ``compute()`` returns ``map``/``map_50``) with :meth:`add_stage_metrics`.
    """

    map_name: str = "mAP"

    def decode(self, raw: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Predictions of one batch: a dict per image, in the layout the ``map`` metric reads."""
        raise NotImplementedError

    def evaluate(self, batch: tuple[Any, ...], stage: Stage) -> dict[str, Any]:
        images, dense, targets = batch
        raw = self(images)
        self.log_eval(stage, "loss", self.loss(raw, dense))
        preds = self.decode(raw)
        self.stage_metric(stage, "map").update(preds, targets)
        return {"images": images, "preds": preds, "target": targets}

    def on_validation_epoch_end(self) -> None:
        self.log_map("val")

    def on_test_epoch_end(self) -> None:
        self.log_map("test")

    def log_map(self, stage: Stage) -> None:
        # compute() gathers every process's images first, so all ranks log the same value.
        metric = self.stage_metric(stage, "map")
        result = metric.compute()
        metric.reset()
        self.log_eval(stage, self.map_name, result["map"])
        self.log_eval(stage, f"{self.map_name}_50", result["map_50"])
