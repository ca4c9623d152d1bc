"""The dashboard page: relative URLs under any prefix, the token, its assets, and a live run in Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from flask import Flask

from conftest import ARTIFACTS, REPO, free_port, wait_for_http, wait_until
from trackbridge.web.app import create_app, mount
from trackbridge.web.dashboard import STATIC_DIR, create_dashboard_blueprint
from trackbridge.web.settings import WebSettings

from browser import chromium, open_page

SLOW_TRAINING = Path(__file__).with_name("slow_training.py")


class _Refs(HTMLParser):
    """Every URL a page loads or links to, and its data attributes on <body>."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            value = values.get(name)
            if value and not value.startswith("data:"):
                self.refs.append(value)
        if tag == "body":
            self.body = {k: v or "" for k, v in values.items()}


def _refs(html: str) -> _Refs:
    parser = _Refs()
    parser.feed(html)
    return parser


def _mlflow_like_app(runs_root: Path) -> Flask:
    """An app like MLflow's: the API at /api, the page under /trackbridge (the plugin's mount)."""
    app = Flask("not-trackbridge")
    return mount(app, WebSettings.resolve(runs_root), page_prefix="/trackbridge")


def _make_run(runs_root: Path, run_id: str = "run-1") -> None:
    from trackbridge import RunDirectory

    RunDirectory(runs_root, run_id).create({"task": "classification", "monitor": "val_accuracy", "mode": "max"})


# -- relative URLs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mount_point", "script_name", "page_paths"),
    [
        ("serve", "", ("/", "/runs/run-1", "/compare?runs=run-1")),
        ("mlflow", "", ("/trackbridge/", "/trackbridge/runs/run-1", "/trackbridge/compare?runs=run-1")),
        ("serve", "/behind/proxy", ("/", "/runs/run-1", "/compare?runs=run-1")),
    ],
    ids=["trackbridge-serve", "mlflow-plugin-prefix", "reverse-proxy-script-name"],
)
def test_dashboard_urls_resolve_from_every_mount(
    runs_root: Path, mount_point: str, script_name: str, page_paths: tuple[str, ...]
) -> None:
    _make_run(runs_root)
    app = create_app(runs_root) if mount_point == "serve" else _mlflow_like_app(runs_root)
    client = app.test_client()
    environ = {"SCRIPT_NAME": script_name} if script_name else {}
    for path in page_paths:
        page_url = f"http://localhost{script_name}{path}"
        response = client.get(path, environ_base=environ)
        assert response.status_code == 200, (path, response.data[:200])
        assert response.mimetype == "text/html"
        page = _refs(response.get_data(as_text=True))
        # Relative everywhere: no URL of the page starts at the host's root.
        for ref in [*page.refs, page.body["data-api"], page.body["data-root"]]:
            assert not ref.startswith(("/", "http:", "https:")), (path, ref)
        api = urljoin(page_url, page.body["data-api"])
        assert urlsplit(api).path == f"{script_name}/api", (path, api)
        root = urljoin(page_url, page.body["data-root"])
        assert urlsplit(root).path == f"{script_name}{page_paths[0]}"
        # ...and each one leads somewhere that answers, the API's runs list included.
        for ref in [*page.refs, page.body["data-api"] + "/runs"]:
            target = urlsplit(urljoin(page_url, ref)).path
            assert target.startswith(script_name)
            answer = client.get(target[len(script_name):], environ_base=environ)
            assert answer.status_code == 200, (path, ref, target, answer.status_code)
        runs = client.get(urlsplit(api).path[len(script_name):] + "/runs").get_json()
        assert [r["run_id"] for r in runs["runs"]] == ["run-1"]


def test_dashboard_run_page_names_its_run(runs_root: Path) -> None:
    response = create_app(runs_root).test_client().get("/runs/exp-42")
    page = _refs(response.get_data(as_text=True))
    assert page.body["data-view"] == "run"
    assert page.body["data-run-id"] == "exp-42"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("bad", ["..", "a" * 200, "-x", "a b", "%2e%2e"])
def test_dashboard_run_page_refuses_bad_ids_with_json(runs_root: Path, bad: str) -> None:
    response = create_app(runs_root).test_client().get(f"/runs/{bad}")
    assert response.status_code in (400, 404)
    assert "error" in response.get_json()


@pytest.mark.parametrize("path", ["/assets/../dashboard.py", "/assets/%2e%2e/dashboard.py", "/assets/nope.js", "/assets//etc/passwd"])
def test_dashboard_assets_stay_inside_static(runs_root: Path, path: str) -> None:
    # (Werkzeug first redirects a doubled slash to the single-slash path.)
    response = create_app(runs_root).test_client().get(path, follow_redirects=True)
    assert response.status_code == 404
    assert b"import" not in response.data and b"root:" not in response.data


def test_dashboard_token_guards_page_and_assets_and_moves_to_a_cookie(runs_root: Path) -> None:
    """The page opened with ?token= sets an HttpOnly, SameSite=Strict cookie; no URL of the page holds the token.

    (Before issue 11 the page put ?token= on every asset and API URL; the cookie replaces that.)
    """
    client = create_app(runs_root, token="s3cret").test_client()
    for path in ("/", "/runs/run-1", "/assets/dashboard.js", "/api/runs"):
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert "token" in refused.get_json()["error"]
        assert client.get(path, query_string={"token": "wrong"}).status_code == 401
    page = client.get("/runs/run-1", query_string={"token": "s3cret"})
    assert page.status_code == 200
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith("trackbridge_token=s3cret;")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    html = page.get_data(as_text=True)
    assert "s3cret" not in html  # not in any URL of the page, nor anywhere else in it
    assets = [ref for ref in _refs(html).refs if "assets/" in ref]
    assert assets
    for ref in assets:  # the test client keeps the cookie, as a browser does
        assert client.get("/" + ref.lstrip("./")).status_code == 200, ref
    assert client.get("/api/runs").status_code == 200
    assert client.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_dashboard_vendors_its_chart_library_with_license() -> None:
    vendor = STATIC_DIR / "vendor" / "uplot"
    script = (vendor / "uPlot.iife.min.js").read_text()
    assert script.startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "MIT License" in (vendor / "LICENSE").read_text()
    assert (vendor / "uPlot.min.css").stat().st_size > 0
    # Offline: nothing the page loads comes from another host.
    own = [*STATIC_DIR.glob("*.js"), *STATIC_DIR.glob("*.css")]
    assert {p.name for p in own} >= {"dashboard.js", "dashboard.css", "gallery.js", "system.js", "compare.js"}
    for asset in own:
        assert not re.search(r"https?://", asset.read_text()), asset


def test_dashboard_modules_import_only_their_siblings(runs_root: Path) -> None:
    """The page's ES modules import each other by relative URL; each import is an asset the server serves."""
    client = create_app(runs_root).test_client()
    for module in STATIC_DIR.glob("*.js"):
        text = module.read_text()
        assert "<script" not in text and "eval(" not in text and "innerHTML" not in text, module.name
        for target in re.findall(r'^import [^;]*? from "([^"]+)";', text, flags=re.M):
            assert target.startswith("./") and target.endswith(".js"), (module.name, target)
            reply = client.get("/assets/" + target[2:])
            assert reply.status_code == 200 and "javascript" in reply.content_type, (module.name, target)


def test_dashboard_blueprint_refuses_relative_api_path() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        create_dashboard_blueprint("api")


# -- a live run in a real browser ----------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _failed_run(runs_root: Path) -> str:
    """A run that failed in epoch 3, written with the record's own API."""
    from trackbridge import RunDirectory, RunStatus

    run_dir = RunDirectory(runs_root, "failed-1")
    run_dir.create({"task": "classification", "monitor": "val_accuracy", "mode": "max", "max_epochs": 5})
    run_dir.set_status(RunStatus.RUNNING)
    run_dir.write_metrics([
        {"epoch": 1, "train_loss": 2.1, "val_loss": 1.9, "val_accuracy": 0.31, "lr": 0.001},
        {"epoch": 2, "train_loss": 1.4, "val_loss": None, "val_accuracy": 0.52, "lr": 0.001},
    ])
    run_dir.set_status(RunStatus.FAILED, error="RuntimeError: CUDA out of memory", epochs_done=2)
    return run_dir.run_id


def _points(page, chart: str = "chart-loss") -> int:
    return int(page.get_attribute(f"#{chart}", "data-points"))


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.slow
def test_dashboard_follows_a_live_run_and_stops_it_in_chromium(tmp_path: Path, mlflow_server) -> None:
    """A training process, `trackbridge serve` with a token, Chromium: live points, Stop, MLflow link.

    The token is in the URL the page is opened with only: the page exchanges it for an HttpOnly,
    SameSite=Strict cookie and removes it from the address bar and the history; every API call and
    the SSE stream then authenticate with the cookie, and no URL the page requests holds the token.
    """
    runs_root = tmp_path / "runs"
    run_id = "live-1"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    token = "t0ken"
    serve_log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "trackbridge", "serve", "--port", str(port), "--runs-root", str(runs_root)],
        stdout=serve_log, stderr=subprocess.STDOUT, env={**os.environ, "TRACKBRIDGE_TOKEN": token},
    )
    train_log = open(tmp_path / "train.log", "wb")
    train = subprocess.Popen(
        [sys.executable, str(SLOW_TRAINING), str(runs_root), run_id,
         "--epochs", "40", "--sleep", "0.15", "--tracking-uri", mlflow_server.url],
        stdout=train_log, stderr=subprocess.STDOUT,
    )
    run_json = runs_root / run_id / "run.json"
    try:
        wait_for_http(f"{base}/health?token={token}", timeout=60, proc=serve)
        wait_until(lambda: _read_json(run_json).get("status") == "running", 90, "the training to start")
        with chromium() as browser:
            page = open_page(browser, f"{base}/runs/{run_id}?token={token}", viewport={"width": 1280, "height": 820})
            page.evaluate("window.__sameDocument = true")  # gone if the page reloads
            assert "token" not in page.url and page.url.endswith(f"/runs/{run_id}")
            # the new tab's about:blank and this page: the token URL was replaced, not pushed
            assert page.evaluate("history.length") == 2
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script of the page can read it
            page.wait_for_function("() => document.querySelector('#chart-loss').dataset.points >= 1", timeout=30_000)
            first = _points(page)
            page.wait_for_function(
                f"() => document.querySelector('#chart-loss').dataset.points >= {first + 2}", timeout=30_000
            )
            assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
            assert _points(page, "chart-monitor") == _points(page, "chart-lr") >= first + 2
            assert re.fullmatch(r"\d+ / 40", page.inner_text("#stat-epoch"))
            assert page.text_content("#run-status") == "running"
            assert page.text_content("#stat-best-metric") == "val_mae"
            page.wait_for_function("() => document.querySelector('#stat-batch').textContent.startsWith('batch ')", timeout=10_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-run.png"))

            page.click("#stop")
            page.wait_for_function("() => document.querySelector('#run-status').textContent === 'stopped'", timeout=30_000)
            assert train.wait(timeout=60) == 0
            run = _read_json(run_json)
            assert run["status"] == "stopped"
            # Every epoch of the record is one point: history and live events never doubled one.
            epochs = [r["epoch"] for r in _read_json(runs_root / run_id / "metrics.json")["epochs"]]
            page.wait_for_function(
                f"() => document.querySelector('#chart-loss').dataset.points == {len(epochs)}", timeout=10_000
            )
            assert epochs == list(range(1, len(epochs) + 1))
            assert page.is_disabled("#stop")
            assert page.evaluate("window.__sameDocument") is True
            requested = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
            assert any("/stream" in url for url in requested) and any("/metrics" in url for url in requested)
            assert not [url for url in requested if token in url]

            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=str(ARTIFACTS / "dashboard-run-phone.png"), full_page=True)

            # A failed run's page: its error, its history (a NaN written as null is a gap, not an
            # error), no stream and no Stop.
            failed_page = open_page(browser, f"{base}/runs/{_failed_run(runs_root)}?token={token}")
            failed_page.wait_for_function("() => document.querySelector('#chart-loss').dataset.points == 2", timeout=15_000)
            assert failed_page.text_content("#run-status") == "failed"
            assert failed_page.text_content("#run-error") == "RuntimeError: CUDA out of memory"
            assert failed_page.is_visible("#run-error") and failed_page.is_disabled("#stop")

            # The runs list: the run, a link to its page, and a link to its MLflow run.
            runs_page = open_page(browser, f"{base}/?token={token}", viewport={"width": 1280, "height": 600})
            row = runs_page.wait_for_selector(f"tr[data-run-id='{run_id}'][data-status='stopped']", timeout=15_000)
            assert row.query_selector("a.run-link").get_attribute("href") == f"./runs/{run_id}"  # the cookie goes along
            mlflow_link = row.query_selector("a.mlflow-link").get_attribute("href")
            assert mlflow_link == run["mlflow"]["url"]
            assert mlflow_link.startswith(mlflow_server.url + "/#/experiments/")
            runs_page.screenshot(path=str(ARTIFACTS / "dashboard-runs.png"))
            assert page.problems == [] and runs_page.problems == [] and failed_page.problems == []

            # The MLflow UI run page answers, and shows this run (MLflow's page, not ours: its
            # console is not checked).
            assert requests.get(mlflow_link, timeout=10).status_code == 200
            mlflow_run_id = mlflow_link.rsplit("/", 1)[1]
            got = requests.get(f"{mlflow_server.url}/api/2.0/mlflow/runs/get", params={"run_id": mlflow_run_id}, timeout=10)
            assert got.status_code == 200
            assert got.json()["run"]["info"]["run_name"] == run_id
            mlflow_page = browser.new_page()
            mlflow_page.goto(mlflow_link)
            mlflow_page.wait_for_selector(f"text={run_id}", timeout=60_000)
    finally:
        _stop_process(train)
        _stop_process(serve)
        serve_log.close()
        train_log.close()
    # The README shows screenshots taken from `trackbridge demo` (docs/dashboard*.png), refreshed by hand.
    assert (ARTIFACTS / "dashboard-run.png").stat().st_size > 10_000


def test_dashboard_docs_screenshot_exists() -> None:
    """The README shows the run page, its gallery and the compare view (taken from `trackbridge demo`)."""
    readme = (REPO / "README.md").read_text()
    for name in ("dashboard.png", "dashboard-gallery.png", "dashboard-compare.png"):
        shot = REPO / "docs" / name
        assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](docs/{name})" in readme, name
