"""The worker's policy on a fake writer, in milliseconds: refusals, outages, Retry-After, deadlines, abandon, replay.

The fake implements the worker's :class:`~trackbridge.mirror.worker.RunWriterLike`
protocol and fails on cue; the real writer is exercised against real
``mlflow server`` processes in the other test_mirror_* files.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Mapping, Sequence

import pytest

from trackbridge import RunDirectory
from trackbridge.mirror.conventions import ExperimentRef
from trackbridge.mirror.cursor import initial_cursor
from trackbridge.mirror.errors import FailureKind, MirrorFailure
from trackbridge.mirror.mapping import Point
from trackbridge.mirror.worker import MirrorWorker, RunWriterLike, WorkerState
from trackbridge.mirror.writer import RunLink, RunSpec

URI = "http://mlflow.test:5000"
T0 = "2026-11-29T17:46:05Z"


def refused(status: int = 403, code: str = "PERMISSION_DENIED") -> MirrorFailure:
    return MirrorFailure(FailureKind.REFUSED, "log-batch is not allowed for you", status=status, code=code)


def unreachable() -> MirrorFailure:
    return MirrorFailure(FailureKind.UNREACHABLE, f"connection refused by {URI}")


class FakeWriter:
    """A RunWriterLike that records what it is given and fails as scripted (per operation, in order)."""

    def __init__(self, run_dir: RunDirectory, params: Mapping[str, str] | None = None) -> None:
        self.run_dir = run_dir
        self.spec = RunSpec(tracking_uri=URI, experiment=ExperimentRef("e", None), local_run_id=run_dir.run_id,
                            run_name=run_dir.run_id)
        self.link: RunLink | None = None
        self.present_params = dict(params or {})
        self.points: list[Point] = []
        self.params: dict[str, str] = {}
        self.uploads: list[str] = []
        self.status: list[str] = []
        self.calls: list[tuple[str, float]] = []
        self._script: dict[str, list[Any]] = {}
        self.blocked = threading.Event()  # set: a blocking call may return

    def script(self, operation: str, *outcomes: Any) -> None:
        """Outcomes of the next calls: a MirrorFailure is raised, "block" waits for ``blocked``."""
        self._script.setdefault(operation, []).extend(outcomes)

    def _call(self, operation: str) -> None:
        self.calls.append((operation, time.monotonic()))
        outcomes = self._script.get(operation)
        if outcomes:
            outcome = outcomes.pop(0)
            if outcome == "block":
                self.blocked.wait(10)
            elif isinstance(outcome, MirrorFailure):
                raise outcome

    def connect(self, *, search: bool = True, running: bool = True) -> RunLink:
        self._call("connect")
        self.link = RunLink(run_id="mlflow-run", experiment_id="1", experiment="e", url=f"{URI}/#/x",
                            artifact_uri="mlflow-artifacts:/1/x", created=True, adopted=False, status="RUNNING",
                            params=self.present_params)
        return self.link

    def log_points(self, points: Sequence[Point]) -> None:
        self._call("points")
        self.points += points

    def log_params(self, params: Mapping[str, str]) -> None:
        self._call("params")
        self.params.update(params)

    def log_inputs(self, datasets: Sequence[Mapping[str, Any]]) -> None:
        self._call("inputs")

    def upload(self, relpath: str) -> bool:
        self._call("upload")
        self.uploads.append(relpath)
        return True

    def upload_media(self, entry: Mapping[str, Any]) -> bool:
        self._call("media")
        return True

    def terminate(self, status: str, end_ms: int | None, error: str | None = None) -> None:
        self._call("status")
        self.status.append(status)

    def cleanup(self) -> None:
        pass


def _check_protocol(writer: FakeWriter) -> RunWriterLike:
    return writer  # a type checker holds the fake to the worker's protocol here


@pytest.fixture
def run_dir(runs_root) -> RunDirectory:
    run_dir = RunDirectory(runs_root, "w1")
    run_dir.create({"task": "regression", "mlflow": initial_cursor(URI, "e")})
    return run_dir


def make_worker(writer: FakeWriter, said: list[str], **kwargs: Any) -> MirrorWorker:
    options = dict(linger_s=0.01, retry_first_s=0.02, max_backoff_s=0.1, cursor_interval_s=0.01)
    options.update(kwargs)
    worker = MirrorWorker(_check_protocol(writer), announce=said.append, **options)
    worker.start()
    return worker


def epoch(n: int, **metrics: float) -> dict[str, Any]:
    return {"epoch": n, "loss": 1.0 / n, **metrics, "time": T0}


def step_line(n: int) -> dict[str, Any]:
    return {"step": n, "time": T0, "loss_step": float(n)}


def cursor(run_dir: RunDirectory) -> dict[str, Any]:
    return run_dir.read_run()["mlflow"]


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_worker_refused_points_hold_the_watermark_and_are_counted_once_said(run_dir):
    writer, said = FakeWriter(run_dir), []
    writer.script("points", refused())
    worker = make_worker(writer, said)
    wait_for(lambda: worker.link is not None)
    for n in (1, 2):
        worker.log_epoch(epoch(n))
    wait_for(lambda: worker.stats.points_rejected == 4)
    worker.log_epoch(epoch(3))  # accepted by MLflow, but the watermark may not pass the refused epoch 1
    wait_for(lambda: worker.stats.points_sent == 2)
    writer.script("points", refused())
    worker.log_epoch(epoch(4))
    wait_for(lambda: worker.stats.points_rejected == 6)
    worker.end_run("FINISHED", None, [], None, timeout=1.0)
    started = time.monotonic()

    assert worker.close() is False  # something was not delivered
    assert time.monotonic() - started < 0.5
    stored = cursor(run_dir)
    assert stored["last_epoch_mirrored"] in (None, 0)  # never up to epoch 1, the first refused
    assert stored["refused"]["points"] == 6 and stored["refused"]["operations"] == ["points"]
    assert "HTTP 403 PERMISSION_DENIED: log-batch is not allowed for you" in stored["refused"]["message"]
    assert stored["status_mirrored"] == "FINISHED"
    refusals = [m for m in said if "refused" in m]
    assert len(refusals) == 1, said  # said once, with MLflow's message and the way out
    assert "HTTP 403 PERMISSION_DENIED" in refusals[0] and "trackbridge sync w1" in refusals[0]
    assert [p.step for p in writer.points] == [3, 3]


def test_worker_abandons_a_call_still_running_at_the_deadline(run_dir):
    run_dir.best_ckpt.parent.mkdir(exist_ok=True)
    run_dir.best_ckpt.write_bytes(b"weights")
    writer, said = FakeWriter(run_dir), []
    writer.script("upload", "block")
    worker = make_worker(writer, said)
    worker.log_epoch(epoch(1))
    wait_for(lambda: worker.stats.points_sent == 2)
    worker.end_run("FINISHED", None, ["checkpoints/best.ckpt"], ("m", "champion", None), timeout=0.2)
    started = time.monotonic()
    delivered = worker.close()
    took = time.monotonic() - started
    writer.blocked.set()

    assert delivered is False and worker.state is WorkerState.ABANDONED
    assert took < 1.0, took  # the deadline (0.2 s) plus the grace of 0.5 s
    stored = cursor(run_dir)
    assert stored["artifacts_pending"] == ["checkpoints/best.ckpt"]
    assert stored["registration_pending"] == {"name": "m", "alias": "champion"}
    assert stored["last_epoch_mirrored"] == 1 and stored["status_mirrored"] == "RUNNING"
    assert any("did not reach" in m and "trackbridge sync w1" in m for m in said)


def test_worker_deadline_with_mlflow_down_the_whole_run(run_dir):
    writer, said = FakeWriter(run_dir), []
    writer.script("connect", *[unreachable()] * 1000)
    worker = make_worker(writer, said)
    for n in (1, 2, 3):
        worker.log_epoch(epoch(n))
    wait_for(lambda: len(writer.calls) >= 3)  # backing off: 20, 40, 80 ms
    worker.end_run("FINISHED", None, ["metrics.json"], None, timeout=0.3)
    started = time.monotonic()

    assert worker.close() is False
    assert time.monotonic() - started < 0.8
    assert worker.state is WorkerState.CLOSED and worker.stats.outages == 1
    unreachable_said = [m for m in said if "is unreachable" in m]
    assert len(unreachable_said) == 1 and f"connection refused by {URI}" in unreachable_said[0]
    assert any("did not reach" in m for m in said)
    stored = cursor(run_dir)
    assert stored["run_id"] is None and stored["artifacts_pending"] == ["metrics.json"]
    assert stored["tracking_uri"] == URI  # known before any connection, for sync


def test_worker_backs_off_as_retry_after_asks_and_names_the_status(run_dir):
    writer, said = FakeWriter(run_dir), []
    writer.script("points", MirrorFailure(FailureKind.RETRYABLE, "slow down", status=429,
                                          code="REQUEST_LIMIT_EXCEEDED", retry_after_s=0.3),
                  MirrorFailure(FailureKind.RETRYABLE, "boom", status=500, code="INTERNAL_ERROR"))
    worker = make_worker(writer, said)
    worker.log_epoch(epoch(1))
    wait_for(lambda: worker.stats.points_sent == 2)
    tries = [t for op, t in writer.calls if op == "points"]
    worker.close(1.0)

    assert len(tries) == 3
    assert tries[1] - tries[0] >= 0.3  # Retry-After, not the 20 ms backoff
    assert any("answered HTTP 429 REQUEST_LIMIT_EXCEEDED: slow down" in m and "Retry-After" in m for m in said)
    assert any("answered HTTP 500 INTERNAL_ERROR: boom" in m for m in said)
    assert any("reachable again" in m for m in said)
    assert worker.stats.outages == 1 and cursor(run_dir)["last_epoch_mirrored"] == 1


def test_worker_replays_what_the_cursor_lacks_and_sends_no_point_twice(run_dir):
    run_dir.write_metrics([epoch(1), epoch(2), epoch(3)])
    run_dir.steps_jsonl.write_text("".join(json.dumps(step_line(n)) + "\n" for n in range(1, 11)))
    run_dir.update_run(lambda run: run["mlflow"].update(run_id="mlflow-run", last_epoch_mirrored=1,
                                                       last_step_line_mirrored=3))  # steps 1-4 are there
    writer, said = FakeWriter(run_dir), []
    worker = make_worker(writer, said)  # started: the record so far is history
    worker.log_epoch(epoch(3, extra=9.0))  # the record holds epoch 3: a re-run is not sent again
    for line in (step_line(5), step_line(12)):  # new lines, as the record writer hands them over ...
        with open(run_dir.steps_jsonl, "a") as fh:  # ... once written: a user's step 5 again, then step 12
            fh.write(json.dumps(line) + "\n")
        worker.log_step(line)
    worker.log_epoch(epoch(4))
    worker.end_run("FINISHED", None, [], None, timeout=1.0)

    assert worker.close() is True
    sent = [(p.key, p.step, p.value) for p in writer.points]
    assert sorted(step for key, step, _ in sent if key == "loss_step") == [5, 5, 6, 7, 8, 9, 10, 12]
    assert sorted(step for key, step, _ in sent if key == "loss") == [2, 3, 4]
    assert ("extra", 3, 9.0) not in sent
    stored = cursor(run_dir)
    assert (stored["last_epoch_mirrored"], stored["last_step_line_mirrored"]) == (4, 11)


def test_worker_logs_new_params_only_and_warns_once_about_a_change(run_dir, caplog):
    writer, said = FakeWriter(run_dir, params={"lr": "0.1"}), []
    worker = make_worker(writer, said)
    worker.log_params({"lr": 0.2, "model": {"width": 8}})
    worker.log_params({"lr": 0.3, "seed": 1})
    worker.close(1.0)

    assert writer.params == {"model.width": "8", "seed": "1"}
    assert caplog.text.count("param 'lr'") == 1
    assert cursor(run_dir)["params_mirrored"] is True


def test_worker_states_and_the_bounded_wait_for_the_run_id(run_dir):
    writer, said = FakeWriter(run_dir), []
    writer.script("connect", "block")
    worker = MirrorWorker(writer, announce=said.append, linger_s=0.01)
    assert worker.state is WorkerState.NEW
    worker.start()
    started = time.monotonic()
    assert worker.wait_for_run_id(0.05) is None and time.monotonic() - started < 0.5
    assert worker.state is WorkerState.CONNECTING
    writer.blocked.set()
    assert worker.wait_for_run_id(2.0) == "mlflow-run"
    assert worker.state is WorkerState.UP
    assert worker.close(1.0) is True and worker.state is WorkerState.CLOSED
