"""Base of the reference models judged by mAP over per-image detections (boxes or masks)."""

from __future__ import annotations

from typing import Any

import torch

from .base import ReferenceModule


class MeanAPModule(ReferenceModule):
    """Validation by a per-image mAP metric, logged as ``map_key`` and ``<map_key>_50``.

    Batches are ``(images, dense training target, per-image target dicts)``. Subclasses
    define :meth:`loss` and :meth:`decode`, and set ``self.val_map`` (a metric whose
    ``compute()`` returns ``map``/``map_50``).
    """

    map_key: str = "val_mAP"

    def decode(self, raw: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Predictions of one batch: a dict per image, in the layout ``val_map`` reads."""
        raise NotImplementedError

    def validation_step(self, batch: tuple[Any, ...], batch_idx: int) -> None:
        images, dense, targets = batch
        raw = self(images)
        self.log_val("val_loss", self.loss(raw, dense))
        self.val_map.update(self.decode(raw), targets)

    def on_validation_epoch_end(self) -> None:
        # compute() gathers every process's images first, so all ranks log the same value.
        result = self.val_map.compute()
        self.val_map.reset()
        self.log_val(self.map_key, result["map"])
        self.log_val(f"{self.map_key}_50", result["map_50"])
