"""COCO mean average precision for boxes or masks, computed by pycocotools.

torchmetrics' ``MeanAveragePrecision`` would do the same through the same pycocotools
backend, but it refuses to start without torchvision, which is not a dependency here
(PyPI's torchvision does not import beside the CPU build of torch). So this metric hands
pycocotools the same inputs directly; the numbers are COCO's own (IoU 0.50:0.95, 101
recall points, up to 100 detections per image), and its states sync across DDP processes.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Literal

import numpy as np
import torch

from .per_image_metric import PerImageDetections


class CocoMeanAveragePrecision(PerImageDetections):
    """COCO mAP over ``update(preds, target)`` calls.

    ``iou_type="bbox"``: dicts hold ``boxes`` (N, 4) xyxy pixels and ``labels``; preds add ``scores``.
    ``iou_type="segm"``: ``masks`` (N, H, W) bool instead of boxes; all images one size.
    :meth:`compute` returns ``map``, ``map_50`` and ``map_75``; -1 when there is no
    ground truth at all, as COCO (and torchmetrics) report it.
    """

    def __init__(self, iou_type: Literal["bbox", "segm"] = "bbox", **kwargs: Any) -> None:
        if iou_type not in ("bbox", "segm"):
            raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
        geometry = "boxes" if iou_type == "bbox" else "masks"
        super().__init__((geometry, "scores", "labels"), (geometry, "labels"), **kwargs)
        self.iou_type = iou_type

    def compute(self) -> dict[str, torch.Tensor]:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        images = self.images()
        gt_anns, dt_anns = [], []
        for image_id, (pred, target) in enumerate(images, start=1):
            gt_anns += self._annotations(image_id, target, None)
            dt_anns += self._annotations(image_id, pred, pred["scores"])
        if not gt_anns:
            return _result(-1.0, -1.0, -1.0)
        if not dt_anns:
            return _result(0.0, 0.0, 0.0)
        # Annotation ids start at 1: COCOeval marks "unmatched" with id 0.
        for ann_id, ann in enumerate(gt_anns + dt_anns, start=1):
            ann["id"] = ann_id
        labels = sorted({ann["category_id"] for ann in gt_anns + dt_anns})
        # Sizes only matter to pycocotools for masks, which all share one size here.
        height, width = images[0][1]["masks"].shape[-2:] if self.iou_type == "segm" else (0, 0)
        info = {
            "images": [
                {"id": i, "height": int(height), "width": int(width)}
                for i in range(1, len(images) + 1)
            ],
            "categories": [{"id": label} for label in labels],
        }
        quiet = contextlib.redirect_stdout(io.StringIO())  # pycocotools prints progress
        with quiet:
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset = {**info, "annotations": gt_anns}
            coco_dt.dataset = {**info, "annotations": dt_anns}
            coco_gt.createIndex()
            coco_dt.createIndex()
            evaluator = COCOeval(coco_gt, coco_dt, iouType=self.iou_type)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = evaluator.stats
        return _result(float(stats[0]), float(stats[1]), float(stats[2]))

    def _annotations(
        self, image_id: int, item: dict[str, torch.Tensor], scores: torch.Tensor | None
    ) -> list[dict[str, Any]]:
        """COCO annotation dicts for one image's objects (ground truth when ``scores`` is None)."""
        labels = item["labels"].tolist()
        if self.iou_type == "bbox":
            xyxy = item["boxes"].cpu().double().numpy()
            geometry = [
                {"bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
                for x1, y1, x2, y2 in xyxy.tolist()
            ]
        else:
            from pycocotools import mask as mask_utils

            masks = item["masks"].bool().cpu().numpy()
            geometry = []
            for mask in masks:
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                geometry.append(
                    {
                        "segmentation": rle,
                        "area": float(mask_utils.area(rle)),
                        "bbox": mask_utils.toBbox(rle).tolist(),
                    }
                )
        anns = []
        for k, (label, geo) in enumerate(zip(labels, geometry)):
            ann = {"image_id": image_id, "category_id": int(label), "iscrowd": 0, **geo}
            if scores is not None:
                ann["score"] = float(scores[k])
            anns.append(ann)
        return anns


def _result(map_: float, map_50: float, map_75: float) -> dict[str, torch.Tensor]:
    return {
        "map": torch.tensor(map_, dtype=torch.float32),
        "map_50": torch.tensor(map_50, dtype=torch.float32),
        "map_75": torch.tensor(map_75, dtype=torch.float32),
    }
