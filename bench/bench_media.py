"""Benchmark: what the task figures cost the training thread, per epoch (issue 12).

    python bench/bench_media.py --rounds 5
    python bench/bench_media.py --rounds 3 --tasks classification,regression --steps-per-epoch 200

Every reference task trains ``--epochs`` epochs on the CPU in a fresh process, once per
variant and round, the order of the variants rotating from round to round:

  none    Lightning, no logger, no checkpoints, a timer callback: the module still
          returns its validation outputs (that costs nothing by itself)
  media   the same plus MediaRecorder (figures every epoch, defaults: 8 samples, 1024 px),
          drawn and encoded in the run's render process (the default)
  thread  the same, drawn on the media thread (``render_process=False``: the fallback,
          and how the media were drawn before the render process)

Per epoch the timer measures train-epoch start to train-epoch end (validation and the
recorder's hooks included, and whatever the media thread takes from the training thread
through the GIL). Epoch 1 is left out (warm-up; the render process starts then).

Reported per task (medians over rounds): the median epoch of each variant; the ratios
media/none and thread/none (of each round's runs; min-max for media); the milliseconds
media adds per epoch; per epoch, the wall time the training thread spends inside the
recorder's hooks, the CPU time of the media thread (what it can take from the training
thread through the GIL: pickling jobs, writing files; all the drawing in ``thread``), the
CPU time of the render process, and the training process's CPU time that media adds.
torch uses one thread in every variant; matplotlib and Pillow are imported before the
clock starts in every variant.

How to read it: with the render process the training process keeps only the hooks (about
a millisecond per epoch) and the media thread's handing over (a few ms); the drawing's
0.1-0.3 s of CPU per epoch run in another process, at a lower priority, on another core
when there is one. On a machine whose every core is busy, that CPU still has to come from
somewhere: the ratio then depends on what else runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import load_average, report, run_child  # noqa: E402

from trackbridge.reference import REFERENCE_TASKS as TASKS  # noqa: E402

VARIANTS = ("none", "media", "thread")


def child(task: str, variant: str, epochs: int, steps_per_epoch: int | None, workdir: Path) -> dict:
    """One training in this (fresh) process; returns its per-epoch timings."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import lightning.pytorch as pl
    import matplotlib.backends.backend_agg  # noqa: F401  (imported before the clock in both variants)
    import PIL.Image  # noqa: F401
    import torch

    from trackbridge.callbacks.media_recorder import MediaRecorder
    from trackbridge.reference import build_reference

    torch.set_num_threads(1)

    class EpochTimer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    pl.seed_everything(0, verbose=False)
    module, data = build_reference(task, seed=0, steps_per_epoch=steps_per_epoch)
    timer = EpochTimer()
    callbacks: list[pl.Callback] = [timer]
    recorder = None
    if variant != "none":
        recorder = MediaRecorder(workdir / "run", task, render_process=variant == "media")
        callbacks.append(recorder)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
        default_root_dir=workdir,
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.fit(module, data)
    fit_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    figures = len(recorder.media.record.entries()) if recorder else 0
    writer = recorder.media.writer if recorder else None
    return {
        "task": task,
        "variant": variant,
        "epoch_s": timer.seconds,
        "fit_s": fit_s,
        "cpu_s": cpu_s,
        "hook_s": recorder.training_thread_s if recorder else 0.0,
        "thread_cpu_s": writer.thread_cpu_s if writer else 0.0,
        "process_cpu_s": writer.drawer.process_cpu_s if writer else 0.0,
        "fell_back": writer.drawer.fell_back if writer else False,
        "figures": figures,
    }


def measure(task: str, variant: str, args: argparse.Namespace, scratch: Path) -> dict:
    child_args = [task, variant, "--epochs", str(args.epochs)]
    if args.steps_per_epoch:
        child_args += ["--steps-per-epoch", str(args.steps_per_epoch)]
    return run_child(__file__, child_args, scratch, timeout=args.timeout)


def summarize(results: list[dict], epochs: int, variants: tuple[str, ...] = VARIANTS) -> str:
    rows = [
        f"{'task':<27} {'none s/ep':>9} {'media s/ep':>10} {'ratio':>6} {'min-max':>13} {'thread':>6} "
        f"{'+ms/ep':>7} {'hook ms':>7} {'thread cpu ms':>13} {'render cpu ms':>13} {'+cpu ms':>7}"
    ]
    for task in dict.fromkeys(r["task"] for r in results):
        by_round: dict[int, dict[str, dict]] = {}
        for r in results:
            if r["task"] == task:
                by_round.setdefault(r["round"], {})[r["variant"]] = r
        medians = {v: [statistics.median(rr[v]["epoch_s"][1:]) for rr in by_round.values()] for v in variants}
        main = "media" if "media" in variants else "thread"
        ratios = [m / n for m, n in zip(medians[main], medians["none"])]
        thread_ratio = (statistics.median(t / n for t, n in zip(medians["thread"], medians["none"]))
                        if "thread" in variants else float("nan"))
        media_runs = [rr[main] for rr in by_round.values()]
        per_epoch = lambda name, runs=media_runs: statistics.median(r[name] / epochs for r in runs) * 1000  # noqa: E731
        none_s, media_s = statistics.median(medians["none"]), statistics.median(medians[main])
        extra_cpu = statistics.median((rr[main]["cpu_s"] - rr["none"]["cpu_s"]) / epochs for rr in by_round.values())
        fell_back = " (fell back!)" if any(r["fell_back"] for r in media_runs) else ""
        rows.append(
            f"{task:<27} {none_s:>9.3f} {media_s:>10.3f} {statistics.median(ratios):>6.3f} "
            f"{min(ratios):>6.3f}-{max(ratios):<6.3f} {thread_ratio:>6.2f} {(media_s - none_s) * 1000:>7.1f} "
            f"{per_epoch('hook_s'):>7.2f} {per_epoch('thread_cpu_s'):>13.1f} {per_epoch('process_cpu_s'):>13.1f} "
            f"{extra_cpu * 1000:>7.1f}{fell_back}"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="training batches per epoch [task default]")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="of none, media, thread (none is needed)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "VARIANT"), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        report(child(*args.child, args.epochs, args.steps_per_epoch, Path(args.workdir)))
        return
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; choose from {', '.join(TASKS)}")
    variants = tuple(v for v in VARIANTS if v in args.variants.split(","))
    if "none" not in variants or len(variants) < 2:
        parser.error(f"--variants needs none and one of media, thread; got {args.variants!r}")
    results = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-media-") as scratch:
        for round_no in range(args.rounds):
            shift = round_no % len(variants)
            order = variants[shift:] + variants[:shift]
            for task in tasks:
                for variant in order:
                    result = measure(task, variant, args, Path(scratch))
                    result["round"] = round_no
                    results.append(result)
                    print(f"round {round_no + 1}/{args.rounds} {task:<27} {variant:<5} "
                          f"median epoch {statistics.median(result['epoch_s'][1:]):.3f} s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    print(f"{args.rounds} rounds, {args.epochs} epochs each (epoch 1 left out), "
          f"steps per epoch: {args.steps_per_epoch or 'task default'}; "
          f"load average before {load_before}, after {load_average()}")
    print(summarize(results, args.epochs, variants))


if __name__ == "__main__":
    main()
