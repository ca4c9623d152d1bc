"""A torchmetrics base that keeps per-image detections and survives a DDP sync.

torchmetrics concatenates list states before gathering them across processes, which loses
the boundaries between images. So every field is stored as one long tensor of rows plus a
per-image row count; counts and rows are gathered in the same process order, which is all
that is needed to cut them back into images.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

ImageDict = dict[str, torch.Tensor]


class PerImageDetections(Metric):
    """Stores ``preds``/``target`` lists of dicts (one per image) in DDP-safe states.

    Subclasses name the fields they need in ``pred_fields`` / ``target_fields`` (the first
    one sets the number of objects) and read them back, image by image, with :meth:`images`.
    Boolean fields (masks) are stored as uint8, which every distributed backend can gather.
    """

    full_state_update = False

    def __init__(
        self, pred_fields: tuple[str, ...], target_fields: tuple[str, ...], **kwargs: object
    ) -> None:
        super().__init__(**kwargs)
        self.pred_fields = pred_fields
        self.target_fields = target_fields
        for side, fields in (("pred", self.pred_fields), ("target", self.target_fields)):
            for field in (*fields, "counts"):
                self.add_state(f"{side}_{field}", default=[], dist_reduce_fx="cat")

    def update(self, preds: list[ImageDict], target: list[ImageDict]) -> None:
        """Add a batch: ``preds`` and ``target`` hold one dict per image, in the same order."""
        if len(preds) != len(target):
            raise ValueError(f"got {len(preds)} prediction dicts for {len(target)} target dicts")
        if not preds:
            return
        for side, fields, dicts in (
            ("pred", self.pred_fields, preds),
            ("target", self.target_fields, target),
        ):
            for field in fields:
                # On the metric's device: a GPU run's NCCL can only gather GPU tensors.
                rows = torch.cat([_storable(d[field]).to(self.device) for d in dicts])
                getattr(self, f"{side}_{field}").append(rows)
            counts = [len(d[fields[0]]) for d in dicts]
            counts_tensor = torch.tensor(counts, dtype=torch.long, device=self.device)
            getattr(self, f"{side}_counts").append(counts_tensor)

    def images(self) -> list[tuple[ImageDict, ImageDict]]:
        """Every image seen (on all processes, once synced) as a (pred, target) pair of dicts."""
        out: dict[str, list[ImageDict]] = {}
        for side, fields in (("pred", self.pred_fields), ("target", self.target_fields)):
            state = getattr(self, f"{side}_counts")
            if not len(state):
                return []
            counts = dim_zero_cat(state).tolist()
            per_field = {
                field: torch.split(dim_zero_cat(getattr(self, f"{side}_{field}")), counts)
                for field in fields
            }
            out[side] = [
                {field: per_field[field][i] for field in fields} for i in range(len(counts))
            ]
        return list(zip(out["pred"], out["target"]))


def _storable(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t.to(torch.uint8) if t.dtype == torch.bool else t
