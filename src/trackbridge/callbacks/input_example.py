"""InputExampleRecorder: a few inputs of the first validation batch → runs/<id>/input_example.npy.

The registry infers the model signature from them (MLflow's
``infer_signature`` on the module's output) and stores them as the version's
input example, at the end of training or later with ``trackbridge register``.
The training thread only slices and copies a few samples to the CPU; the
file is written by the run's writer thread.
"""

from __future__ import annotations

import io
from typing import Any

import lightning.pytorch as pl
import torch

from ..record.jsonio import write_bytes_atomic
from .guard import tracking_hook
from .session import RunSession

INPUT_EXAMPLE = "input_example.npy"
SAMPLES = 4


class InputExampleRecorder(pl.Callback):
    """Saves ``batch[0][:4]`` of the first validation batch once per run (when it is a tensor)."""

    def __init__(self, session: RunSession, samples: int = SAMPLES) -> None:
        self.session = session
        self.samples = samples
        self._taken = False

    @tracking_hook
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        run_dir = self.session.run_dir
        if batch_idx != 0 or not trainer.is_global_zero or run_dir is None or self.session.writer is None:
            return
        path = run_dir.path / INPUT_EXAMPLE
        if self._taken or path.exists():
            return
        inputs = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            return
        self._taken = True
        example = inputs[: self.samples].detach().to("cpu", copy=True)
        self.session.in_background(lambda: write_bytes_atomic(path, _npy(example)))

    def __getstate__(self) -> dict[str, Any]:
        return {"session": self.session, "samples": self.samples}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["session"], state["samples"])  # type: ignore[misc]


def _npy(tensor: torch.Tensor) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, tensor.float().numpy(), allow_pickle=False)
    return buffer.getvalue()
