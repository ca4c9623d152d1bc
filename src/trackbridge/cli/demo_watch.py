"""The demo's run to watch: a classifier that trains for a minute or two beside the quick runs.

The quick runs finish in seconds; a newcomer who opens the dashboard should also find a run
still training — its charts moving, its gallery filling epoch by epoch. :class:`WatchRun`
trains it in a child process (a fresh interpreter: ``sys.executable -c``), paced by a sleep
after every training batch, while the demo trains the others. The child has a process group
of its own, so a Ctrl-C at the terminal reaches the demo alone, which hands the child exactly
one SIGINT (Lightning then stops it gracefully: the run is recorded ``stopped``) and waits
for it. The child also stops itself the same way if the demo disappears.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..record.ids import new_run_id

WATCH_TASK = "classification"
WATCH_SEED = 2
_BOOT = "import sys; from trackbridge.cli.demo_watch import child_main; child_main(sys.argv[1])"


def demo_config(task: str, seed: int, epochs: int, root: Path, tracking_uri: str, **fields: Any) -> Any:
    """The TrackingConfig of a demo run."""
    from ..config import TrackingConfig

    return TrackingConfig(
        task=task,
        runs_root=root,
        early_stopping_patience=0,
        hyperparameters={"seed": seed, "max_epochs": epochs, "demo": True, **fields.pop("hyperparameters", {})},
        tracking_uri=tracking_uri,
        **fields,
    )


def demo_trainer(stack: Any, epochs: int, *, show_bar: bool, callbacks: tuple = ()) -> Any:
    """The Trainer of a demo run (CPU, the stack, no Lightning logger)."""
    import lightning.pytorch as pl

    return pl.Trainer(
        max_epochs=epochs,
        callbacks=[*stack, *callbacks],
        logger=False,
        default_root_dir=stack.run_dir.path,
        enable_model_summary=False,
        enable_progress_bar=show_bar,
        log_every_n_steps=5,
        accelerator="cpu",
        devices=1,
    )


class WatchRun:
    """The classifier to watch, trained in a child process; :attr:`run_id` is known before it starts."""

    def __init__(self, root: Path, tracking_uri: str, epochs: int, pace_s: float, log_path: Path) -> None:
        self.root = root
        self.tracking_uri = tracking_uri
        self.epochs = epochs
        self.pace_s = pace_s
        self.log_path = log_path
        self.run_id = new_run_id()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = {
            "root": str(self.root), "tracking_uri": self.tracking_uri, "epochs": self.epochs, "pace_s": self.pace_s,
            "run_id": self.run_id, "parent_pid": os.getpid(),
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, json.dumps(args)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, process_group=0,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def run_json(self) -> dict[str, Any]:
        """Its run.json (empty before the child created the run)."""
        from ..record.run_dir import RunDirectory, RunNotFoundError

        try:
            return RunDirectory(self.root, self.run_id).read_run()
        except (RunNotFoundError, OSError, ValueError):
            return {}

    def wait(self) -> int | None:
        return self.proc.wait() if self.proc is not None else None

    def stop(self, timeout: float = 60.0) -> None:
        """One SIGINT (a graceful stop, recorded ``stopped``), then wait; SIGKILL what does not end."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def pace_callback(seconds: float) -> Any:
    """A Lightning callback that sleeps after every training batch: slower, without using the CPU."""
    import lightning.pytorch as pl

    class Pace(pl.Callback):
        def on_train_batch_end(self, *args: Any) -> None:
            time.sleep(seconds)

    return Pace()


def child_main(argv_json: str) -> None:
    """The child process: train the watched classifier (the demo's other runs train meanwhile)."""
    import lightning.pytorch as pl

    from ..callbacks.stack import build_callbacks
    from ..reference import build_reference

    args = json.loads(argv_json)
    _stop_with_parent(int(args["parent_pid"]))
    config = demo_config(
        WATCH_TASK, WATCH_SEED, args["epochs"], Path(args["root"]), args["tracking_uri"],
        run_id=args["run_id"], hyperparameters={"pace_s": args["pace_s"], "watch": True},
    )
    stack = build_callbacks(config)
    pl.seed_everything(WATCH_SEED, verbose=False)
    module, data = build_reference(WATCH_TASK, seed=WATCH_SEED)
    trainer = demo_trainer(stack, args["epochs"], show_bar=False, callbacks=(pace_callback(args["pace_s"]),))
    trainer.fit(module, datamodule=data)


def _stop_with_parent(parent_pid: int) -> None:
    """A SIGINT to this process (Lightning's graceful stop) once the demo is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="trackbridge-demo-parent", daemon=True).start()
