"""TrackbridgeCallback: the stack's parts behind one Lightning callback.

Lightning calls every hook of every callback at every training step —
``on_train_batch_start``, ``on_before_backward``, ``on_after_backward``,
``on_before_optimizer_step``, ``on_before_zero_grad``, ``on_train_batch_end``
— each call wrapped in a profiler context, whether the callback overrides
the hook or not. Measured here, that is about 2–3 µs per callback and hook,
some 15 µs per callback and step: a dozen separate callbacks would cost the
training thread close to 200 µs a step before doing anything. So the
stack's parts (JSONMetricLogger, RunStatusUpdater, SSENotifier, the MLflow
mirror, ... and Lightning's own LearningRateMonitor) sit behind this one
callback, which calls, for each hook, only the parts that override it, in
the stack's order. Each part stays a plain Lightning callback that also
works on its own.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning.pytorch as pl

# Every hook of lightning.pytorch.Callback that a part may implement.
HOOKS = (
    "setup", "teardown", "on_fit_start", "on_fit_end", "on_sanity_check_start", "on_sanity_check_end",
    "on_train_batch_start", "on_train_batch_end", "on_train_epoch_start", "on_train_epoch_end",
    "on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
    "on_predict_epoch_start", "on_predict_epoch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
    "on_train_start", "on_train_end", "on_validation_start", "on_validation_end", "on_test_start", "on_test_end",
    "on_predict_start", "on_predict_end", "on_exception", "on_save_checkpoint", "on_load_checkpoint",
    "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad",
)


def overrides(part: pl.Callback, hook: str) -> bool:
    """Whether ``part``'s class implements ``hook`` (the base Callback's is a no-op)."""
    return getattr(type(part), hook, None) is not getattr(pl.Callback, hook)


class TrackbridgeCallback(pl.Callback):
    """Runs ``parts`` (callbacks) as one: a hook reaches the parts that implement it, in order."""

    def __init__(self, parts: list[pl.Callback]) -> None:
        for part in parts:
            missing = [hook for hook in HOOKS if overrides(part, hook) and hook not in _DISPATCHED]
            if missing:  # a part whose hook would never run: a bug in the stack, say it at once
                raise TypeError(f"{type(part).__name__} implements {', '.join(missing)}, which the stack does not dispatch")
        self.parts = list(parts)
        self._table: dict[str, tuple[Callable[..., Any], ...]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"parts": self.parts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["parts"])  # type: ignore[misc]

    def handlers(self, hook: str) -> tuple[Callable[..., Any], ...]:
        table = self._table
        if not table:
            table.update(
                (name, tuple(getattr(part, name) for part in self.parts if overrides(part, name))) for name in HOOKS
            )
        return table[hook]

    def part(self, kind: type) -> Any:
        """The first part that is a ``kind``, or None."""
        return next((p for p in self.parts if isinstance(p, kind)), None)

    # Only the hooks some part may implement are defined below (the others stay Lightning's no-ops).
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for handler in self.handlers("setup"):
            handler(trainer, pl_module, stage)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for handler in self.handlers("teardown"):
            handler(trainer, pl_module, stage)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_train_start"):
            handler(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_train_end"):
            handler(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_train_epoch_start"):
            handler(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_train_epoch_end"):
            handler(trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        for handler in self.handlers("on_train_batch_start"):
            handler(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for handler in self.handlers("on_train_batch_end"):
            handler(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_validation_start"):
            handler(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_validation_end"):
            handler(trainer, pl_module)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_validation_epoch_start"):
            handler(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_validation_epoch_end"):
            handler(trainer, pl_module)

    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        for handler in self.handlers("on_validation_batch_start"):
            handler(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for handler in self.handlers("on_validation_batch_end"):
            handler(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_test_start"):
            handler(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_test_end"):
            handler(trainer, pl_module)

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        for handler in self.handlers("on_test_batch_end"):
            handler(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_sanity_check_start"):
            handler(trainer, pl_module)

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_sanity_check_end"):
            handler(trainer, pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_fit_start"):
            handler(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handler in self.handlers("on_fit_end"):
            handler(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        for handler in self.handlers("on_exception"):
            handler(trainer, pl_module, exception)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        for handler in self.handlers("on_save_checkpoint"):
            handler(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        for handler in self.handlers("on_load_checkpoint"):
            handler(trainer, pl_module, checkpoint)


_DISPATCHED = frozenset(name for name in HOOKS if name in TrackbridgeCallback.__dict__)
