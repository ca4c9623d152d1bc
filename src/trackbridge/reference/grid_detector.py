"""The one-stage, CenterNet-style detector behind both detection tasks.

Each object is owned by the stride-4 grid cell that holds its centre. Per cell the head
predicts an objectness logit, a few geometry numbers (what a subclass decodes into a box)
and class logits. Decoding keeps cells that beat their neighbours: no anchors, no NMS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics import Metric

from .mean_ap_module import MeanAPModule
from .nets import grid_backbone

STRIDE = 4


class GridDetector(MeanAPModule):
    """Shared network, loss, decoding and validation; subclasses define the box geometry.

    Target grids and head outputs are laid out as channels
    ``[objectness, *geometry (geometry_channels), class index | class logits]``; the first
    four geometry channels are always the centre offset in the cell and log width/height in
    cells (see :func:`encode_grid`). Subclasses add channels after them, decode boxes in
    :meth:`cell_boxes` and pick their metric in :meth:`make_map`.
    """

    geometry_channels: int = 4

    def __init__(
        self,
        num_classes: int = 2,
        width: int = 32,
        lr: float = 3e-3,
        pos_weight: float = 4.0,
        max_detections: int = 20,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = grid_backbone(3, width)
        self.head = nn.Conv2d(2 * width, 1 + self.geometry_channels + num_classes, 1)
        self.add_stage_metrics("map", self.make_map)

    def make_map(self) -> Metric:
        """A new evaluation metric; its ``compute()`` returns ``map`` and ``map_50``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw head output, (batch, 1 + geometry_channels + num_classes, H/4, W/4)."""
        return self.head(self.backbone(x))

    def geometry_loss(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        """L1 loss on centre offsets and log sizes of the cells holding objects.

        Subclasses with more geometry channels add their own terms to this one.
        """
        centre = F.l1_loss(torch.sigmoid(pred[:, :2]), true[:, :2])
        return centre + F.l1_loss(pred[:, 2:4], true[:, 2:4])

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

    def cell_centre_size(
        self, raw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted centre x, y and width, height in pixels, each (batch, H/4, W/4)."""
        gh, gw = raw.shape[-2:]
        gy, gx = torch.meshgrid(
            torch.arange(gh, device=raw.device), torch.arange(gw, device=raw.device), indexing="ij"
        )
        cx = (gx + torch.sigmoid(raw[:, 1])) * STRIDE
        cy = (gy + torch.sigmoid(raw[:, 2])) * STRIDE
        # The clamp keeps an untrained network's exp() finite.
        w = raw[:, 3].clamp(max=4).exp() * STRIDE
        h = raw[:, 4].clamp(max=4).exp() * STRIDE
        return cx, cy, w, h


def centre_cell(cx: float, cy: float, grid_size: int) -> tuple[int, int, float, float]:
    """(row, column) of the cell owning centre (cx, cy) in pixels, and the offset inside it."""
    x, y = cx / STRIDE, cy / STRIDE
    i, j = min(int(y), grid_size - 1), min(int(x), grid_size - 1)
    return i, j, x - j, y - i


def encode_grid(
    objects: Iterable[tuple[Sequence[float], int]], size: int, geometry_channels: int
) -> torch.Tensor:
    """Target grid of one image, (2 + geometry_channels, size/4, size/4).

    Each object is ``((cx, cy, w, h, *extra), label)`` in pixels. Its owning cell holds
    objectness 1, the centre offset in the cell, log width/height in cells, ``extra`` as
    given, and the class index: the layout :class:`GridDetector` learns.
    """
    g = size // STRIDE
    grid = torch.zeros(2 + geometry_channels, g, g)
    for (cx, cy, w, h, *extra), label in objects:
        i, j, off_x, off_y = centre_cell(cx, cy, g)
        log_w, log_h = math.log(w / STRIDE), math.log(h / STRIDE)
        grid[:, i, j] = torch.tensor([1.0, off_x, off_y, log_w, log_h, *extra, label])
    return grid
