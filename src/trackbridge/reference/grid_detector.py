"""The one-stage, CenterNet-style detector behind both detection tasks.

Each object is owned by the stride-4 grid cell that holds its centre. Per cell the head
predicts an objectness logit, a few geometry numbers (what a subclass decodes into a box)
and class logits. Decoding keeps cells that beat their neighbours: no anchors, no NMS.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import ReferenceModule
from .nets import grid_backbone

STRIDE = 4


class GridDetector(ReferenceModule):
    """Shared network, loss, decoding and validation; subclasses define the box geometry.

    Target grids and head outputs are laid out as channels
    ``[objectness, *geometry (geometry_channels), class index | class logits]``.
    Subclasses set ``self.val_map`` (a metric whose ``compute()`` returns ``map``/``map_50``).
    """

    geometry_channels: int = 4

    def _build_network(self, num_classes: int, width: int) -> None:
        self.backbone = grid_backbone(3, width)
        self.head = nn.Conv2d(2 * width, 1 + self.geometry_channels + num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head output, (batch, 1 + geometry_channels + num_classes, H/4, W/4)."""
        return self.head(self.backbone(x))

    def geometry_loss(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """Loss between predicted and target geometry channels of the cells holding objects."""
        raise NotImplementedError

    def cell_boxes(self, raw: torch.Tensor) -> torch.Tensor:
        """The box every cell would predict, (batch, H/4, W/4, box size) in pixels."""
        raise NotImplementedError

    def loss(self, raw: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Objectness BCE over all cells; geometry and class only where an object is."""
        pos = grid[:, 0] > 0.5
        # Few cells hold an object; weighting positives keeps objectness from collapsing to 0.
        obj_loss = F.binary_cross_entropy_with_logits(
            raw[:, 0], grid[:, 0], pos_weight=raw.new_tensor(self.hparams.pos_weight)
        )
        pred = raw.permute(0, 2, 3, 1)[pos]  # (num_objects, channels)
        true = grid.permute(0, 2, 3, 1)[pos]
        if len(pred) == 0:
            return obj_loss
        g = 1 + self.geometry_channels
        geometry = self.geometry_loss(pred[:, 1:g], true[:, 1:g])
        return obj_loss + geometry + F.cross_entropy(pred[:, g:], true[:, g].long())

    @torch.no_grad()
    def decode(self, raw: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image: ``boxes``, ``scores``, ``labels`` of at most ``max_detections``, best first."""
        cls_score, labels = raw[:, 1 + self.geometry_channels :].softmax(dim=1).max(dim=1)
        score = torch.sigmoid(raw[:, 0]) * cls_score
        # A cell counts only if it beats its 8 neighbours: the cheap NMS of CenterNet.
        score = torch.where(score == F.max_pool2d(score, 3, stride=1, padding=1), score, 0.0)
        boxes = self.cell_boxes(raw)
        out = []
        for b in range(raw.shape[0]):
            s = score[b].flatten()
            top = s.topk(min(self.hparams.max_detections, s.numel())).indices
            top = top[s[top] > 0]
            out.append(
                {
                    "boxes": boxes[b].reshape(-1, boxes.shape[-1])[top],
                    "scores": s[top],
                    "labels": labels[b].flatten()[top],
                }
            )
        return out

    def cell_centres(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted object centres in pixels, each (batch, H/4, W/4), from channels 1-2."""
        gh, gw = raw.shape[-2:]
        gy, gx = torch.meshgrid(
            torch.arange(gh, device=raw.device), torch.arange(gw, device=raw.device), indexing="ij"
        )
        return (gx + torch.sigmoid(raw[:, 1])) * STRIDE, (gy + torch.sigmoid(raw[:, 2])) * STRIDE

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        images, grid, _ = batch
        loss = self.loss(self(images), grid)
        self.log_train_loss(loss)
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        images, grid, targets = batch
        raw = self(images)
        self.log_val("val_loss", self.loss(raw, grid))
        self.val_map.update(self.decode(raw), targets)

    def on_validation_epoch_end(self) -> None:
        # compute() gathers every process's images first, so all ranks log the same value.
        result = self.val_map.compute()
        self.val_map.reset()
        self.log_val("val_mAP", result["map"])
        self.log_val("val_mAP_50", result["map_50"])


def centre_cell(cx: float, cy: float, grid_size: int) -> tuple[int, int, float, float]:
    """(row, column) of the cell owning centre (cx, cy) in pixels, and the offset inside it."""
    x, y = cx / STRIDE, cy / STRIDE
    i, j = min(int(y), grid_size - 1), min(int(x), grid_size - 1)
    return i, j, x - j, y - i
