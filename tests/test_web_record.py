"""Issue 9, the web's part, on a real `trackbridge serve`: GET never writes, dead runs are a derived view,
no file is served through a symlink, and a run in another pid namespace is judged by its heartbeat."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import wait_until
from web_clients import ServeProcess, finished_run, live_run, read_sse, read_ws

pytestmark = pytest.mark.slow

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("web-record") / "runs"
    path.mkdir()
    done = finished_run(path, "done")
    (done / "media").mkdir()
    (done / "media" / "preds").mkdir()
    (done / "media" / "preds" / "epoch_1.png").write_bytes(PNG)
    (done / "media.jsonl").write_text(json.dumps({
        "key": "preds", "step": 1, "epoch": 1, "kind": "image", "path": "media/preds/epoch_1.png",
        "width": 4, "height": 4, "caption": None, "time": "2026-01-01T00:00:00Z", "data": None}) + "\n")
    (done / "system.jsonl").write_text(
        '{"step": 0, "time": "2026-01-01T00:00:00Z", "cpu_utilization_percentage": 12.5}\n{"step": 1, "tim')
    dead = finished_run(path, "dead", status="failed")  # then made to look like a run whose process vanished
    run = json.loads((dead / "run.json").read_text())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from trackbridge.record.liveness import ProcessIdentity

    run.update(ProcessIdentity.current().as_fields(), status="running", pid=int(gone.stdout), error=None)
    (dead / "run.json").write_text(json.dumps(run))
    events = (dead / "events.jsonl").read_text().splitlines()[:-1]  # no terminal event: it died mid-run
    (dead / "events.jsonl").write_text("\n".join(events) + "\n")
    return path


@pytest.fixture(scope="module")
def server(root: Path):
    serve = ServeProcess(root, env={"TRACKBRIDGE_STALE_AFTER_S": "3"}, log=root.parent / "serve.log")
    yield serve
    serve.stop()


def _checksums(root: Path) -> dict[str, tuple[str, int]]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return found


def test_get_routes_leave_every_run_file_byte_identical_and_report_the_dead_run_failed(server: ServeProcess, root: Path) -> None:
    before = _checksums(root)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        runs = {r["run_id"]: r for r in client.get("/api/runs").json()["runs"]}
        assert runs["dead"]["status"] == "failed" and "exited without reporting" in runs["dead"]["error"]
        assert runs["done"]["status"] == "completed"
        for run_id in ("done", "dead"):
            run = client.get(f"/api/runs/{run_id}").json()
            for suffix in ("/metrics", "/media", "/system"):
                assert client.get(f"/api/runs/{run_id}{suffix}").status_code == 200
            assert client.head(f"/api/training/{run_id}/stream").status_code == 200
            stream = read_sse(client, f"{server.url}/api/training/{run_id}/stream", timeout=30)
            assert stream.error is None and stream.closed_by_server
            ws_events, _ = read_ws(server.url.replace("http", "ws") + f"/api/training/{run_id}/ws", timeout=30)
            assert ws_events == stream.events
            assert client.get(f"/runs/{run_id}").status_code == 200
        assert client.get("/api/runs/done/media/preds/epoch_1.png").content == PNG
        assert client.get("/").status_code == 200
        dead = client.get("/api/runs/dead").json()
    assert dead["status"] == "failed" and dead["status_derived"] is True and "exited without reporting" in dead["error"]
    # the dead run's stream ends with a derived training_failed, id = last + 1, that is nowhere on disk
    on_disk = [json.loads(line) for line in (root / "dead" / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in stream.events] == ["run_started", "epoch_end", "training_failed"]
    assert stream.events[-1]["id"] == on_disk[-1]["id"] + 1 and stream.events[-1]["derived"] is True
    assert stream.events[:-1] == on_disk
    assert _checksums(root) == before  # nothing written, nothing added: not even a lock file
    assert json.loads((root / "dead" / "run.json").read_text())["status"] == "running"


def test_media_and_system_routes(server: ServeProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        media = client.get("/api/runs/done/media").json()
        assert [m["path"] for m in media["media"]] == ["media/preds/epoch_1.png"]
        image = client.get("/api/runs/done/media/preds/epoch_1.png")
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.headers["cache-control"].startswith("private, max-age=") and image.headers["etag"]
        assert image.headers["x-content-type-options"] == "nosniff"
        again = client.get("/api/runs/done/media/preds/epoch_1.png", headers={"If-None-Match": image.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        samples = client.get("/api/runs/done/system").json()["samples"]
        assert samples == [{"step": 0, "time": "2026-01-01T00:00:00Z", "cpu_utilization_percentage": 12.5}]  # torn tail skipped
        for path in ("/api/runs/done/media/../run.json", "/api/runs/done/media/%2e%2e/run.json",
                     "/api/runs/done/media/preds/../../run.json", "/api/runs/done/media/nope.png",
                     "/api/runs/done/media//etc/passwd", "/api/runs/nope/media/x.png"):
            response = client.get(path)
            assert 400 <= response.status_code < 500, (path, response.status_code)
            assert b'"run_id"' not in response.content and b"root:" not in response.content


def test_symlinks_are_never_followed(server: ServeProcess, root: Path, tmp_path: Path) -> None:
    """A run.json (or a run directory, a log, a media file) that is a symlink out of the root: 4xx from every route."""
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"run_id": "linked", "status": "running", "task": "TOP-SECRET"}))
    linked = root / "linked"
    linked.mkdir()
    os.symlink(secret, linked / "run.json")
    outside = tmp_path / "outside-run"
    shutil.copytree(root / "done", outside)
    os.symlink(outside, root / "dirlink")
    os.symlink(tmp_path / "secret.json", root / "done" / "media" / "leak.json")
    routes = ["/api/runs/{id}", "/api/runs/{id}/metrics", "/api/runs/{id}/media", "/api/runs/{id}/system",
              "/api/runs/{id}/media/preds/epoch_1.png", "/api/training/{id}/stream"]
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for run_id in ("linked", "dirlink"):
                for route in routes:
                    response = client.get(route.format(id=run_id))
                    assert 400 <= response.status_code < 500, (run_id, route, response.status_code)
                    assert b"TOP-SECRET" not in response.content
                assert client.post(f"/api/runs/{run_id}/stop").status_code in (403, 404)
            listed = {r["run_id"] for r in client.get("/api/runs").json()["runs"]}
            assert "linked" not in listed and "dirlink" not in listed
            assert client.get("/api/runs/done/media/leak.json").status_code == 403
        assert not (linked / "stop-request.json").exists() and not (outside / "stop-request.json").exists()
    finally:
        (root / "dirlink").unlink()
        (root / "done" / "media" / "leak.json").unlink()
        shutil.rmtree(linked)


def test_a_run_in_another_pid_namespace_is_judged_by_its_beat(server: ServeProcess, root: Path) -> None:
    """Its pid means nothing here; while its heartbeat changes it is running, once it stops it is failed."""
    from trackbridge.record import RunDirectory

    run_dir = Path(live_run(root, "contained", pid_namespace="pid:[4026530001]", pid=1, pid_started_at=1.0))
    record = RunDirectory(root, "contained")
    beating = threading.Event()
    beating.set()

    def beat() -> None:
        while beating.is_set():
            record.update_run(heartbeat_at=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z")
            time.sleep(0.5)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        seen = _statuses(server, "contained", seconds=8)
        assert set(seen) == {"running"}, seen
    finally:
        beating.clear()
        thread.join()
    # silent now: failed within the limit (3 s) plus a beat, and still only in the derived view
    wait_until(lambda: _status(server, "contained") == "failed", 8, "the silent run reported failed")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"


def test_a_real_process_in_its_own_pid_namespace_is_reported_running(server: ServeProcess, root: Path) -> None:
    """`unshare --pid --fork --mount-proc` (root only): inside, the run's pid is 1; outside, pid 1 is init."""
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and util-linux's unshare")
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent.parent / 'src')!r})
        from trackbridge.record import RunDirectory
        from trackbridge.record.clock import utc_now_iso
        from trackbridge.record.liveness import ProcessIdentity
        run = RunDirectory({str(root)!r}, "namespaced")
        run.create({{"task": "regression"}})
        run.update_run(status="running", **ProcessIdentity.current().as_fields())
        print("pid", ProcessIdentity.current().pid, flush=True)
        for _ in range(40):
            run.update_run(heartbeat_at=utc_now_iso())
            time.sleep(0.25)
    """)
    proc = subprocess.Popen([unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        if not first.startswith("pid"):
            proc.wait(timeout=10)
            pytest.skip(f"unshare refused here: {first.strip() or proc.returncode}")
        recorded = json.loads((root / "namespaced" / "run.json").read_text())
        assert recorded["pid"] == 1 and recorded["pid_namespace"] != os.readlink("/proc/self/ns/pid")
        seen = _statuses(server, "namespaced", seconds=6)
        assert set(seen) == {"running"}, seen
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _status(server: ServeProcess, run_id: str) -> str | None:
    runs = {r["run_id"]: r for r in httpx.get(f"{server.url}/api/runs", timeout=10).json()["runs"]}
    return runs.get(run_id, {}).get("status")


def _statuses(server: ServeProcess, run_id: str, seconds: float) -> list[str | None]:
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(_status(server, run_id))
        time.sleep(0.25)
    return seen
