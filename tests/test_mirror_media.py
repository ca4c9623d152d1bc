"""media.jsonl → MLflow's step-aware image layout (issue 12), live and by sync, on a real server.

The media record is written here as the training side writes it (images
under media/, one media.jsonl line each, a data JSON beside figures); the
mirror must put each key at each step where MLflow's Images tab reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from trackbridge import RunDirectory
from trackbridge.mirror.cursor import initial_cursor
from trackbridge.mirror.media import image_stem, media_index
from trackbridge.mirror.sync import sync_run
from trackbridge.mirror.worker import MirrorWorker
from trackbridge.mirror.writer import RunWriter, spec_for

from conftest import wait_until
from fault_proxy import FaultProxy
from mirror_helpers import artifact_paths

pytestmark = pytest.mark.slow

# What MLflow's log_image(key=..., step=...) writes under images/ (its UI parses these names).
MLFLOW_IMAGE_NAME = re.compile(
    r"^images/(?P<key>[A-Za-z0-9_\-. ~]+)\+step\+(?P<step>\d+)\+timestamp\+(?P<ts>\d+)\+(?P<uuid>[0-9a-f-]{36})"
    r"(?P<kind>\.png|\+compressed\.webp|\.json)$"
)


def write_media(run_dir: RunDirectory, key: str, step: int, *, figure: bool, fmt: str = "PNG") -> dict:
    """One image of the media record, as the training side writes it; returns its media.jsonl entry."""
    media = run_dir.path / "media"
    media.mkdir(exist_ok=True)
    rng = np.random.default_rng(step)
    name = f"{key.replace('/', '_')}-{step:04d}.{fmt.lower()}"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(media / name, format=fmt)
    data = None
    if figure:
        data = f"media/{name}.json"
        (run_dir.path / data).write_text(json.dumps({"labels": ["a", "b"], "matrix": [[step, 1], [0, step]]}))
    entry = {"key": key, "step": step, "epoch": step, "kind": "figure" if figure else "image",
             "path": f"media/{name}", "width": 64, "height": 48, "caption": None,
             "time": f"2026-11-29T17:46:0{step}Z", "data": data}
    with open(run_dir.path / "media.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    return entry


def images_of(client: MlflowClient, run_id: str) -> set[str]:
    return {p for p in artifact_paths(client, run_id, "images")}


def test_media_reach_mlflows_image_layout_live_and_by_sync_and_a_second_sync_uploads_nothing(
        runs_root, mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.url)
    with FaultProxy(mlflow_server.url) as proxy:
        run_dir = RunDirectory(runs_root, "media-1")
        run_dir.create({"task": "classification", "status": "completed",
                        "mlflow": initial_cursor(proxy.url, "media-test")})
        worker = MirrorWorker(RunWriter(run_dir, spec_for(run_dir)), linger_s=0.05)
        worker.start()
        entries = []
        for step in (1, 2, 3):
            if step == 3:
                proxy.fail(503)  # MLflow goes away before the last epoch's images
            for key, figure, fmt in (("confusion_matrix", True, "PNG"), ("val/predictions", False, "JPEG")):
                entries.append(write_media(run_dir, key, step, figure=figure, fmt=fmt))
                worker.log_media(entries[-1])
            if step < 3:
                wait_until(lambda: worker.stats.media >= 2 * step, 30, f"the images of step {step}")
        worker.end_run("FINISHED", None, [], None, timeout=1.0)
        assert worker.close() is False
        run_id = worker.mlflow_run_id
        live = images_of(client, run_id)
        assert run_dir.read_run()["mlflow"]["last_media_mirrored"] == 3  # lines 0..3 delivered live
        assert len(live) == 2 * 2 * 2 + 2  # 2 keys at steps 1-2: png + thumbnail each, a data JSON per figure

        proxy.heal()
        synced = sync_run(run_dir)
        assert synced.media_uploaded == 2
        puts = proxy.count("mlflow-artifacts", None)
        assert not sync_run(run_dir).changed  # a second sync uploads nothing
        assert proxy.count("mlflow-artifacts", None) == puts

    listing = images_of(client, run_id)
    assert all(MLFLOW_IMAGE_NAME.match(path) for path in listing), listing
    held = {(m["key"].replace("~", "/"), int(m["step"])) for m in map(MLFLOW_IMAGE_NAME.match, listing)}
    assert held == {(key, step) for key in ("confusion_matrix", "val/predictions") for step in (1, 2, 3)}
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"] == "True"
    # MLflow's own log_image writes the same shape of names
    own = client.create_run(client.get_experiment_by_name("media-test").experiment_id).info.run_id
    client.log_image(own, np.zeros((8, 8, 3), dtype=np.uint8), key="val/predictions", step=3)
    assert all(MLFLOW_IMAGE_NAME.match(path) for path in images_of(client, own))
    # the PNG is the record's file, byte for byte; the JPEG became a PNG of the same pixels
    first = entries[0]
    png = client.download_artifacts(run_id, f"images/{image_stem(first)}.png", str(tmp_path))
    assert Path(png).read_bytes() == (run_dir.path / first["path"]).read_bytes()
    jpeg = entries[1]
    converted = client.download_artifacts(run_id, f"images/{image_stem(jpeg)}.png", str(tmp_path))
    assert np.array_equal(np.asarray(Image.open(converted)), np.asarray(Image.open(run_dir.path / jpeg["path"])))
    data = client.download_artifacts(run_id, f"images/{image_stem(first)}.json", str(tmp_path))
    assert json.loads(Path(data).read_text()) == json.loads((run_dir.path / first["data"]).read_text())

    # a server that reads the run from MLflow alone rebuilds the same index
    index = media_index(sorted(listing))
    assert [(e["key"], e["step"], e["time"], e["kind"]) for e in index] == sorted(
        [(e["key"], e["step"], e["time"], e["kind"]) for e in entries], key=lambda t: (t[2], t[0], t[1]))
    assert all(e["thumbnail"].endswith("+compressed.webp") for e in index)


def test_media_index_is_a_pure_function_of_the_listing():
    listing = [
        "images/confusion_matrix+step+2+timestamp+1795974365000+0b7e7a1a-0d1e-5d3c-9c7e-2b1f3a4c5d6e.png",
        "images/confusion_matrix+step+2+timestamp+1795974365000+0b7e7a1a-0d1e-5d3c-9c7e-2b1f3a4c5d6e"
        "+compressed.webp",
        "images/confusion_matrix+step+2+timestamp+1795974365000+0b7e7a1a-0d1e-5d3c-9c7e-2b1f3a4c5d6e.json",
        "images/val~pred%step%1%timestamp%1795974300000%0b7e7a1a-0d1e-5d3c-9c7e-2b1f3a4c5d6f.png",  # MLflow 2's
        "images/notes.txt",  # not MLflow's layout: ignored
    ]
    assert media_index(listing) == [
        {"key": "val/pred", "step": 1, "epoch": None, "kind": "image", "path": listing[3], "width": None,
         "height": None, "caption": None, "time": "2026-11-29T17:45:00Z", "data": None, "thumbnail": None},
        {"key": "confusion_matrix", "step": 2, "epoch": None, "kind": "figure", "path": listing[0], "width": None,
         "height": None, "caption": None, "time": "2026-11-29T17:46:05Z", "data": listing[2],
         "thumbnail": listing[1]},
    ]
