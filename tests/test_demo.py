"""``trackbridge demo``: train + register end to end, and serve on one port until Ctrl-C, with nothing left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests
from click.testing import CliRunner

from conftest import free_port, run_cli
from trackbridge.cli import main

from browser import chromium, open_page

SLOW_TRAINING = Path(__file__).with_name("slow_training.py")
URL_LINE = re.compile(r"^\s*(Dashboard|MLflow UI):\s+(\S+)\s*$")


class DemoProcess:
    """``trackbridge demo`` in its own session, as a terminal runs it: Ctrl-C goes to its whole group."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trackbridge", "demo", *args],
            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n{self.output[-4000:]}")

    def urls(self) -> dict[str, str]:
        self.wait_for_line(r"MLflow UI:", 120)
        return {m.group(1): m.group(2) for line in list(self.lines) if (m := URL_LINE.match(line))}

    def ctrl_c(self, timeout: float = 60) -> int:
        """SIGINT to the demo's process group, like Ctrl-C in its terminal; its exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return left


def _runs(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/run.json"))]


def test_demo_refuses_doing_nothing() -> None:
    result = CliRunner().invoke(main, ["demo", "--no-serve", "--no-train"])
    assert result.exit_code == 2
    assert "leave nothing to do" in result.output


def test_demo_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("demo", "--no-train", "--port", str(port), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr


@pytest.mark.slow
def test_demo_no_serve_trains_mirrors_and_registers_the_best_classifier(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    result = run_cli(
        "demo", "--no-serve", "--epochs", "2", "--watch-epochs", "0",
        "--task", "classification", "--task", "classification", "--task", "regression",
        cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = _runs(tmp_path / "runs")
    assert sorted(r["task"] for r in runs) == ["classification", "classification", "regression"]
    assert all(r["status"] == "completed" and r["epochs_done"] == 2 for r in runs)
    assert sorted(r["hyperparameters"]["seed"] for r in runs if r["task"] == "classification") == [0, 1]

    # The embedded default store, with every epoch of every run mirrored.
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    for run in runs:
        metrics = json.loads((tmp_path / "runs" / run["run_id"] / "metrics.json").read_text())["epochs"]
        history = client.get_metric_history(run["mlflow"]["run_id"], run["monitor"])
        assert [(m.step, m.value) for m in history] == [(r["epoch"], r[run["monitor"]]) for r in metrics]

    # The better of the two classifiers holds the champion alias.
    best = max((r for r in runs if r["task"] == "classification"), key=lambda r: r["best_score"])
    version = client.get_model_version_by_alias("demo-classifier", "champion")
    assert version.tags["trackbridge.run_id"] == best["run_id"]
    assert "models:/demo-classifier@champion" in result.stdout


@pytest.mark.slow
def test_demo_serves_dashboard_and_mlflow_on_one_port_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    token = "demo-token"
    demo = DemoProcess(
        tmp_path, "--port", str(port), "--epochs", "2", "--task", "regression", "--watch-epochs", "0",
        env={"TRACKBRIDGE_TOKEN": token},
    )
    try:
        urls = demo.urls()
        base = f"http://127.0.0.1:{port}"
        # With a token set, the printed dashboard URL carries it (the page exchanges it for a cookie).
        assert urls == {"Dashboard": f"{base}/trackbridge/?token={token}", "MLflow UI": f"{base}/"}
        for url in urls.values():
            assert requests.get(url, timeout=10).status_code == 200, url
        assert requests.get(f"{base}/trackbridge/", timeout=10).status_code == 401
        assert requests.get(f"{base}/health", timeout=10).status_code == 200
        auth = {"Authorization": f"Bearer {token}"}
        server_processes = _descendants(demo.proc.pid)
        assert server_processes, "the server should be a child of the demo"

        demo.wait_for_line(r"serving until Ctrl-C", 180)
        runs = requests.get(f"{base}/api/runs", headers=auth, timeout=10).json()["runs"]
        assert [(r["task"], r["status"]) for r in runs] == [("regression", "completed")]
        run = runs[0]
        # run.json links to this server's MLflow UI, and MLflow's REST API on the same port knows the run.
        assert run["mlflow_url"].startswith(f"{base}/#/experiments/")
        mlflow_run = requests.get(
            f"{base}/api/2.0/mlflow/runs/get", params={"run_id": run["mlflow_url"].rsplit("/", 1)[1]}, timeout=10
        ).json()["run"]
        assert mlflow_run["info"]["run_name"] == run["run_id"]
        assert mlflow_run["info"]["status"] == "FINISHED"

        # The page under the plugin's prefix finds the API at /api (relative URLs) in a real browser.
        with chromium() as browser:
            page = open_page(browser, urls["Dashboard"])
            page.wait_for_selector(f"tr[data-run-id='{run['run_id']}'] a.run-link", timeout=15_000).click()
            # the link needs no token: the cookie the page set goes along (issue 11: no token in URLs)
            page.wait_for_url(f"{base}/trackbridge/runs/{run['run_id']}")
            page.wait_for_function("() => document.querySelector('#chart-loss').dataset.points == 2", timeout=15_000)
            assert page.text_content("#run-status") == "completed"
            assert page.get_attribute("#run-mlflow", "href") == run["mlflow_url"]
            assert page.problems == []

            # A run that trains now, watched live through the MLflow server's port (SSE there).
            train = subprocess.Popen(
                [sys.executable, str(SLOW_TRAINING), str(tmp_path / "runs"), "live-1", "--epochs", "4", "--sleep", "0.15"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 90
                while not any(r["run_id"] == "live-1" and r["status"] == "running" for r in _runs(tmp_path / "runs")):
                    assert time.monotonic() < deadline, "the live run did not start"
                    time.sleep(0.2)
                live = open_page(browser, f"{base}/trackbridge/runs/live-1?token={token}")
                live.evaluate("window.__sameDocument = true")
                live.wait_for_function("() => document.querySelector('#stat-batch').textContent.startsWith('batch ')", timeout=30_000)
                live.wait_for_function("() => document.querySelector('#run-status').textContent === 'completed'", timeout=60_000)
                assert live.get_attribute("#chart-loss", "data-points") == "4"
                assert live.evaluate("window.__sameDocument") is True
                assert live.problems == []
            finally:
                train.kill()
                train.wait(timeout=10)

        assert demo.ctrl_c() == 0, demo.output[-3000:]
        assert _alive(server_processes) == []
        assert "server stopped" in demo.output
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # the port is free again
    finally:
        demo.kill()


@pytest.mark.slow
def test_demo_ctrl_c_while_training_records_the_run_as_stopped(tmp_path: Path) -> None:
    """Ctrl-C during a run: Lightning stops it gracefully, the demo exits 130 and leaves no process.

    (--no-serve keeps this test short; the server's shutdown is the same code as in the test above.)
    """
    demo = DemoProcess(tmp_path, "--no-serve", "--epochs", "100", "--task", "classification", "--watch-epochs", "0")
    try:
        demo.wait_for_line(r"\[1/1\] classification", 120)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            runs = _runs(tmp_path / "runs")
            if runs and runs[0]["status"] == "running" and runs[0]["epochs_done"] >= 1:
                break
            time.sleep(0.2)
        children = _descendants(demo.proc.pid)
        assert demo.ctrl_c() == 130, demo.output[-3000:]
        run = _runs(tmp_path / "runs")[0]
        assert run["status"] == "stopped" and 1 <= run["epochs_done"] < 100
        assert _alive(children) == []
        assert "interrupted; stopping" in demo.output
    finally:
        demo.kill()


@pytest.mark.slow
def test_demo_watch_run_trains_beside_the_others_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """The run to watch (issue 12): still training, gallery filling epoch by epoch, when the quick runs are done.

    Ctrl-C then stops it gracefully (recorded stopped) and leaves no process behind: not the
    watched run's process, not its render process.
    """
    demo = DemoProcess(tmp_path, "--no-serve", "--epochs", "1", "--task", "regression",
                       "--watch-epochs", "60", "--pace", "0.05")
    try:
        line = demo.wait_for_line(r"^\[watch\] classification .* run \S+,", 120)
        watched = re.search(r" run (\S+),", line).group(1)
        runs_root = tmp_path / "runs"

        def watched_and_done() -> bool:
            runs = {r["run_id"]: r for r in _runs(runs_root)}
            quick = [r for r in runs.values() if r["run_id"] != watched]
            watch = runs.get(watched, {})
            media = runs_root / watched / "media.jsonl"
            figures = media.read_text().count('"confusion_matrix"') if media.exists() else 0
            return (len(quick) == 1 and quick[0]["status"] == "completed"
                    and watch.get("status") == "running" and figures >= 2)

        deadline = time.monotonic() + 180
        while not watched_and_done():
            assert time.monotonic() < deadline, demo.output[-3000:]
            time.sleep(0.3)
        demo.wait_for_line(r"waiting for the watched run", 30)
        children = _descendants(demo.proc.pid)
        assert any("demo_watch" in " ".join(p.cmdline()) for p in children)
        assert demo.ctrl_c() == 130, demo.output[-3000:]
        run = json.loads((runs_root / watched / "run.json").read_text())
        assert run["status"] == "stopped" and 2 <= run["epochs_done"] < 60
        assert _alive(children) == []
        assert f"watched run {watched} stopped" in demo.output
    finally:
        demo.kill()
