"""Rotated-box IoU against hand-computed cases, and the rotated AP built on it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trackbridge.reference.coco_map import CocoMeanAveragePrecision
from trackbridge.metrics.rotated_iou import rbox_corners, rotated_iou, rotated_iou_matrix
from trackbridge.reference.rotated_map import RotatedMeanAveragePrecision

SQRT2 = math.sqrt(2.0)


def test_rotated_iou_identical_boxes_is_one() -> None:
    assert rotated_iou([3.0, 4.0, 5.0, 2.0, 0.7], [3.0, 4.0, 5.0, 2.0, 0.7]) == pytest.approx(1.0)


def test_rotated_iou_disjoint_boxes_is_zero() -> None:
    assert rotated_iou([0.0, 0.0, 2.0, 2.0, 0.3], [10.0, 10.0, 2.0, 2.0, 1.1]) == 0.0


def test_rotated_iou_boxes_sharing_only_an_edge_is_zero() -> None:
    # [0, 2] x [0, 2] and [2, 4] x [0, 2]: the intersection is a segment, of area 0.
    assert rotated_iou([1.0, 1.0, 2.0, 2.0, 0.0], [3.0, 1.0, 2.0, 2.0, 0.0]) == pytest.approx(0.0)


def test_rotated_iou_axis_aligned_overlap() -> None:
    # [0, 2] x [0, 2] and [1, 3] x [0, 2]: intersection 2, union 4 + 4 - 2 = 6.
    assert rotated_iou([1.0, 1.0, 2.0, 2.0, 0.0], [2.0, 1.0, 2.0, 2.0, 0.0]) == pytest.approx(1 / 3)


def test_rotated_iou_axis_aligned_overlap_in_both_directions() -> None:
    # [0, 4] x [0, 2] and [2, 5] x [1, 4]: intersection 2 x 1 = 2, union 8 + 9 - 2 = 15.
    assert rotated_iou([2.0, 1.0, 4.0, 2.0, 0.0], [3.5, 2.5, 3.0, 3.0, 0.0]) == pytest.approx(2 / 15)


def test_rotated_iou_small_box_inside_large_is_area_ratio() -> None:
    # Containment: IoU = small area / large area, whatever the small box's angle.
    assert rotated_iou([0.0, 0.0, 1.0, 1.0, 0.3], [0.0, 0.0, 4.0, 4.0, 0.0]) == pytest.approx(1 / 16)


def test_rotated_iou_45_degree_square_vs_itself_shifted() -> None:
    # A square of side sqrt(2) turned 45 degrees is the diamond |x| + |y| <= 1 (area 2).
    # Shifted by 1 along x, the overlap is the diamond with corners (0,0), (.5,.5), (1,0),
    # (.5,-.5): a square of side sqrt(0.5), area 0.5. IoU = 0.5 / (2 + 2 - 0.5) = 1/7.
    diamond = [0.0, 0.0, SQRT2, SQRT2, math.pi / 4]
    shifted = [1.0, 0.0, SQRT2, SQRT2, math.pi / 4]
    assert rotated_iou(diamond, shifted) == pytest.approx(1 / 7)


def test_rotated_iou_45_degree_square_vs_upright_square_is_octagon() -> None:
    # Two 2x2 squares on one centre, one turned 45 degrees: they overlap in a regular
    # octagon of area 8 (sqrt 2 - 1), so IoU = 8(sqrt2 - 1) / (8 - 8(sqrt2 - 1)) = 1/sqrt2.
    assert rotated_iou([0.0, 0.0, 2.0, 2.0, math.pi / 4], [0.0, 0.0, 2.0, 2.0, 0.0]) == pytest.approx(
        1 / SQRT2
    )


def test_rotated_iou_rectangle_vs_its_quarter_turn_is_a_cross() -> None:
    # 4x2 and the same turned 90 degrees: the overlap is the central 2x2 square.
    assert rotated_iou([0.0, 0.0, 4.0, 2.0, 0.0], [0.0, 0.0, 4.0, 2.0, math.pi / 2]) == pytest.approx(
        4 / 12
    )


def test_rotated_iou_quarter_turn_equals_swapped_sides() -> None:
    quarter_turned, upright = [1.0, 2.0, 4.0, 2.0, math.pi / 2], [1.0, 2.0, 2.0, 4.0, 0.0]
    assert rotated_iou(quarter_turned, upright) == pytest.approx(1.0)


def test_rotated_iou_half_turn_is_the_same_box() -> None:
    box = [5.0, 5.0, 6.0, 2.0, 0.4]
    assert rotated_iou(box, [5.0, 5.0, 6.0, 2.0, 0.4 + math.pi]) == pytest.approx(1.0)


def test_rotated_iou_is_symmetric() -> None:
    a, b = [0.0, 0.0, 5.0, 2.0, 0.2], [1.0, 0.5, 3.0, 3.0, 1.0]
    assert rotated_iou(a, b) == pytest.approx(rotated_iou(b, a))


def test_rotated_iou_degenerate_and_negative_sides_give_zero() -> None:
    assert rotated_iou([0.0, 0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 2.0, 2.0, 0.0]) == 0.0
    # A negative width would otherwise draw a mirrored copy of the same rectangle.
    assert rotated_iou([0.0, 0.0, -2.0, 2.0, 0.0], [0.0, 0.0, 2.0, 2.0, 0.0]) == 0.0


def test_rotated_iou_matrix_shape_and_values() -> None:
    a = [[1.0, 1.0, 2.0, 2.0, 0.0], [0.0, 0.0, SQRT2, SQRT2, math.pi / 4]]
    b = [[1.0, 1.0, 2.0, 2.0, 0.0], [2.0, 1.0, 2.0, 2.0, 0.0], [9.0, 9.0, 1.0, 1.0, 0.0]]
    iou = rotated_iou_matrix(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 1 / 3, 0.0], atol=1e-12)
    assert rotated_iou_matrix(np.zeros((0, 5)), b).shape == (0, 3)
    assert rotated_iou_matrix(torch.tensor(a), torch.zeros(0, 5)).shape == (2, 0)


def test_rbox_corners_quarter_turn() -> None:
    # theta turns the w-side from +x towards +y: a quarter turn lays it along y.
    corners = rbox_corners([0.0, 0.0, 4.0, 2.0, math.pi / 2])
    np.testing.assert_allclose(np.sort(corners[:, 0]), [-1, -1, 1, 1], atol=1e-12)
    np.testing.assert_allclose(np.sort(corners[:, 1]), [-2, -2, 2, 2], atol=1e-12)


def _rotated(boxes: list[list[float]]) -> torch.Tensor:
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 5)


def _no_detections() -> dict[str, torch.Tensor]:
    empty = torch.zeros(0)
    return {"boxes": torch.zeros(0, 5), "scores": empty, "labels": empty.long()}


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (1,), generator=gen))


def test_rotated_map_perfect_predictions_score_one() -> None:
    metric = RotatedMeanAveragePrecision()
    boxes = _rotated([[10, 10, 8, 3, 0.5], [20, 20, 6, 2, 2.0]])
    labels = torch.tensor([0, 1])
    metric.update(
        [{"boxes": boxes, "scores": torch.tensor([0.9, 0.8]), "labels": labels}],
        [{"boxes": boxes, "labels": labels}],
    )
    assert float(metric.compute()["map"]) == pytest.approx(1.0)


def test_rotated_map_false_positive_ranked_first_halves_precision() -> None:
    # One ground truth; a wrong box at 0.9 then the right one at 0.8: precision 1/2 at
    # recall 1, and the monotone envelope makes that 1/2 at every recall point.
    metric = RotatedMeanAveragePrecision()
    truth = _rotated([[10, 10, 8, 3, 0.5]])
    preds = _rotated([[25, 25, 8, 3, 0.5], [10, 10, 8, 3, 0.5]])
    metric.update(
        [{"boxes": preds, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}],
        [{"boxes": truth, "labels": torch.tensor([0])}],
    )
    result = metric.compute()
    assert float(result["map"]) == pytest.approx(0.5)
    assert float(result["map_50"]) == pytest.approx(0.5)


def test_rotated_map_without_predictions_is_zero_and_without_truth_is_minus_one() -> None:
    metric = RotatedMeanAveragePrecision()
    truth = {"boxes": _rotated([[5, 5, 4, 2, 0]]), "labels": torch.tensor([0])}
    metric.update([_no_detections()], [truth])
    assert float(metric.compute()["map"]) == 0.0
    metric = RotatedMeanAveragePrecision()
    nothing = {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.long)}
    metric.update([_no_detections()], [nothing])
    assert float(metric.compute()["map"]) == -1.0


def test_rotated_map_matches_pycocotools_on_upright_boxes() -> None:
    # With theta = 0 the rotated AP must reproduce COCO's own numbers for the same boxes.
    gen = torch.Generator().manual_seed(0)
    images = []  # (detections xywh, scores, labels, truth xywh, labels) per image
    for _ in range(16):
        n_gt, n_dt = _randint(gen, 1, 4), _randint(gen, 0, 6)
        scale, offset = torch.tensor([20.0, 20.0, 8.0, 8.0]), torch.tensor([0.0, 0.0, 4.0, 4.0])
        gt = torch.rand(n_gt, 4, generator=gen) * scale + offset
        gt_labels = torch.randint(0, 2, (n_gt,), generator=gen)
        # Detections: jittered copies of the truth (a few with the wrong class), so IoUs
        # spread over every threshold and matching decisions actually differ between them.
        source = torch.randint(0, n_gt, (n_dt,), generator=gen)
        dt = (gt[source] + torch.randn(n_dt, 4, generator=gen) * 0.5).abs()
        dt[:, 2:] += 0.5
        flip = torch.rand(n_dt, generator=gen) < 0.2
        dt_labels = torch.where(flip, 1 - gt_labels[source], gt_labels[source])
        images.append((dt, torch.rand(n_dt, generator=gen), dt_labels, gt, gt_labels))

    def xyxy(b: torch.Tensor) -> torch.Tensor:  # (x, y, w, h) -> xyxy
        return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)

    def rotated(b: torch.Tensor) -> torch.Tensor:  # (x, y, w, h) -> (cx, cy, w, h, 0)
        return torch.cat([b[:, :2] + b[:, 2:] / 2, b[:, 2:], torch.zeros(len(b), 1)], dim=1)

    coco, ours = CocoMeanAveragePrecision("bbox"), RotatedMeanAveragePrecision()
    for dt, scores, dt_labels, gt, gt_labels in images:
        for metric, convert in ((coco, xyxy), (ours, rotated)):
            metric.update(
                [{"boxes": convert(dt), "scores": scores, "labels": dt_labels}],
                [{"boxes": convert(gt), "labels": gt_labels}],
            )
    expected, got = coco.compute(), ours.compute()
    assert 0.1 < float(expected["map"]) < 0.9  # a case where matching actually matters
    for key in ("map", "map_50", "map_75"):
        assert float(got[key]) == pytest.approx(float(expected[key]), abs=1e-5), key


def _sync_case() -> list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """Ten images of rotated boxes with noisy detections, as (prediction, target) dicts."""
    gen = torch.Generator().manual_seed(1)
    images = []
    for _ in range(10):
        n_gt, n_dt = _randint(gen, 1, 4), _randint(gen, 0, 5)
        scale, offset = torch.tensor([20, 20, 6, 3, 3.14]), torch.tensor([5, 5, 4, 2, 0])
        gt = torch.rand(n_gt, 5, generator=gen) * scale + offset
        dt = gt[torch.randint(0, n_gt, (n_dt,), generator=gen)]
        dt = dt + torch.randn(n_dt, 5, generator=gen) * 0.3
        dt[:, 2:4] = dt[:, 2:4].abs() + 0.5
        pred = {
            "boxes": dt,
            "scores": torch.rand(n_dt, generator=gen),
            "labels": torch.randint(0, 2, (n_dt,), generator=gen),
        }
        target = {"boxes": gt, "labels": torch.randint(0, 2, (n_gt,), generator=gen)}
        images.append((pred, target))
    return images


def _sync_worker(rank: int, port: int, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        images = _sync_case()
        metric = RotatedMeanAveragePrecision()
        for pred, target in images[:3] if rank == 0 else images[3:]:  # uneven on purpose
            metric.update([pred], [target])
        torch.save({k: float(v) for k, v in metric.compute().items()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_rotated_map_gathers_images_across_two_processes(tmp_path: Path) -> None:
    # Two gloo processes each see part of the images; after torchmetrics' sync both must
    # report exactly the single-process value over all of them.
    import socket

    import torch.multiprocessing as mp

    reference = RotatedMeanAveragePrecision()
    for pred, target in _sync_case():
        reference.update([pred], [target])
    expected = {k: float(v) for k, v in reference.compute().items()}
    assert expected["map_50"] > 0.1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_sync_worker, args=(port, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        assert torch.load(tmp_path / f"rank{rank}.pt") == pytest.approx(expected)
