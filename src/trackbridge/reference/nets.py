"""Tiny convolutional networks shared by the image tasks; small enough to train on a CPU in seconds."""

from __future__ import annotations

from torch import nn


def conv(c_in: int, c_out: int, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution + ReLU that keeps the size (divided by ``stride``)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.ReLU(inplace=True),
    )


def grid_backbone(c_in: int = 3, width: int = 32) -> nn.Sequential:
    """Image -> features on a stride-4 grid; the receptive field (~40 px) spans a whole object."""
    return nn.Sequential(
        conv(c_in, width // 2),
        conv(width // 2, width, stride=2),
        conv(width, width),
        conv(width, 2 * width, stride=2),
        conv(2 * width, 2 * width, dilation=2),
    )


def dense_fcn(c_in: int = 3, width: int = 16, c_out: int = 3) -> nn.Sequential:
    """Image -> per-pixel logits at full resolution; dilations widen the view without pooling."""
    return nn.Sequential(
        conv(c_in, width),
        conv(width, width, dilation=2),
        conv(width, width, dilation=4),
        nn.Conv2d(width, c_out, 1),
    )
