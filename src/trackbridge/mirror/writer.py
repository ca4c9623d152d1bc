"""RunWriter: the one writer of a run's MLflow side — every metric, param, tag, artifact, image and status.

Two drivers use it and nothing else writes to an MLflow run: the live
:class:`~.worker.MirrorWorker` (which decides *when*: queue, linger, backoff,
deadline) and :class:`~.sync.SyncJob` (which decides *what*: the diff between
the local record and MLflow). The registry uploads its model through
:meth:`RunWriter.upload_dir` and registers the version itself.

Each method is one MLflow request (an upload of a folder, one per file) and
raises :class:`~.errors.MirrorFailure` when MLflow does not take it; the
callers decide what that means. What the run is called and where it goes is
a :class:`RunSpec`, read from run.json; :meth:`RunWriter.connect` finds,
adopts or creates the MLflow run and returns a :class:`RunLink`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple, Sequence

from ..mlflow_tags import (
    ERROR_TAG, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, LOGGED_IMAGES_TAG, MAX_TAG_VALUE_LENGTH, RUN_ID_TAG,
)
from ..record.run_dir import RunDirectory
from .backend import WORKER_POLICY, Backend, HttpPolicy, open_backend
from .conventions import DEFAULT_EXPERIMENT, ExperimentRef
from .cursor import cursor_of
from .datasets import dataset_inputs
from .errors import MirrorFailure
from .mapping import Point, iso_to_ms, param_batches, run_params, run_tags
from .uri import embedded_root, mlflow_ui_url, resolve_tracking_uri

log = logging.getLogger("trackbridge.mirror")

UPLOAD_DIR = ".mlflow-upload"  # hard-link snapshots of files being uploaded, converted images


class RunSpec(NamedTuple):
    """What names and describes a local run in MLflow (DESIGN §6)."""

    tracking_uri: str
    experiment: ExperimentRef
    local_run_id: str
    run_name: str
    tags: Mapping[str, str] = MappingProxyType({})
    params: Mapping[str, str] = MappingProxyType({})
    start_ms: int | None = None
    known_run_id: str | None = None  # the cursor's MLflow run, tried first
    adopted: bool = False  # known_run_id belongs to someone else (MLFLOW_RUN_ID, mlflow.start_run())
    module_class: str | None = None

    @classmethod
    def from_run(
        cls,
        run: Mapping[str, Any],
        *,
        version: str,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        extra_params: Mapping[str, Any] | None = None,
        module_class: str | None = None,
    ) -> "RunSpec":
        """The spec of a run.json record; ``tracking_uri`` / ``experiment`` override what the cursor says."""
        cursor = cursor_of(run)
        config = run.get("config") or {}
        uri = tracking_uri or cursor["tracking_uri"] or resolve_tracking_uri(config.get("tracking_uri"))
        if experiment:
            ref = ExperimentRef(experiment, None)
        elif cursor["experiment"] or cursor["experiment_id"]:
            ref = ExperimentRef(cursor["experiment"], None if cursor["experiment"] else cursor["experiment_id"])
        else:
            ref = ExperimentRef(config.get("experiment") or DEFAULT_EXPERIMENT, None)
        same_server = cursor["tracking_uri"] in (None, uri)
        started = run.get("started_at") or run.get("created_at")
        return cls(
            tracking_uri=uri,
            experiment=ref,
            local_run_id=str(run["run_id"]),
            run_name=str(config.get("run_name") or run["run_id"]),
            tags=run_tags(run, version, cursor["context_tags"]),
            params=run_params(run, extra_params),
            start_ms=iso_to_ms(started) if started else None,
            known_run_id=cursor["run_id"] if same_server else None,
            adopted=bool(cursor["adopted"]) and same_server,
            module_class=module_class or cursor["module_class"],
        )


class RunLink(NamedTuple):
    """The MLflow run a local run is mirrored into, as :meth:`RunWriter.connect` found it."""

    run_id: str
    experiment_id: str
    experiment: str | None
    url: str
    artifact_uri: str
    created: bool
    adopted: bool
    status: str
    params: Mapping[str, str]  # what MLflow holds already (a param cannot change once set)


class RunWriter:
    """Writes one local run into its MLflow run; see the module docstring."""

    def __init__(self, run_dir: RunDirectory, spec: RunSpec, *, policy: HttpPolicy = WORKER_POLICY,
                 backend: Backend | None = None) -> None:
        self.run_dir = run_dir
        self.spec = spec
        self.policy = policy
        self._backend = backend
        self.link: RunLink | None = None
        self._images_tagged = False

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = open_backend(self.spec.tracking_uri, self.policy)
        return self._backend

    @property
    def run_id(self) -> str:
        if self.link is None:
            raise RuntimeError("RunWriter.connect() first")
        return self.link.run_id

    # -- the run ---------------------------------------------------------------
    def connect(self, *, search: bool = True, running: bool = True) -> RunLink:
        """Find (by the cursor's id, else by the ``trackbridge.run_id`` tag), adopt, or create the MLflow run.

        ``search``: look for a run tagged with the local run id before
        creating one (an earlier create whose answer was lost, or a run
        mirrored from another copy of the record). ``running``: a run found
        again is set RUNNING (a live resume), unless it is adopted.
        """
        spec, backend = self.spec, self.backend
        run = self._existing(spec.known_run_id) if spec.known_run_id else None
        adopted = spec.adopted and run is not None
        if spec.adopted and run is None:
            log.warning("MLflow run %s to adopt is not in %s; a new run is created", spec.known_run_id,
                        spec.tracking_uri)
        if run is not None:
            experiment_id = run.info.experiment_id
            experiment = self._tag_experiment(backend.get_experiment(experiment_id))
        else:
            experiment_id, experiment = self._experiment()
            if search:
                run = self._find_by_tag(experiment_id)
        created = run is None
        tags = dict(spec.tags)
        if adopted:  # the owner's source, user and name stay
            tags = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
        if run is None:
            run = backend.create_run(experiment_id, spec.start_ms, tags, spec.run_name)
        else:
            if running and not adopted and run.info.status != "RUNNING":
                backend.update_run(run.info.run_id, "RUNNING")
            missing = {k: v for k, v in tags.items() if run.data.tags.get(k) != v}
            for batch in param_batches(missing):
                backend.log_batch(run.info.run_id, tags=batch)
        self.link = RunLink(
            run_id=run.info.run_id,
            experiment_id=experiment_id,
            experiment=experiment,
            url=mlflow_ui_url(spec.tracking_uri, experiment_id, run.info.run_id),
            artifact_uri=run.info.artifact_uri,
            created=created,
            adopted=adopted,
            status=run.info.status,
            params=dict(run.data.params),
        )
        return self.link

    def _existing(self, run_id: str) -> Any:
        try:
            run = self.backend.get_run(run_id)
        except MirrorFailure as failure:
            if failure.status == 404 or failure.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return None if run.info.lifecycle_stage == "deleted" else run

    def _find_by_tag(self, experiment_id: str) -> Any:
        found = self.backend.search_runs(
            [experiment_id], f"tags.`{RUN_ID_TAG}` = '{self.spec.local_run_id}'",
            max_results=1, order_by=["attributes.start_time DESC"],
        )
        return found[0] if found else None

    def _experiment(self) -> tuple[str, str | None]:
        """The experiment's id and name: looked up, restored if deleted, created if new; tagged as model training."""
        ref, backend = self.spec.experiment, self.backend
        if ref.id is not None:
            return ref.id, self._tag_experiment(backend.get_experiment(ref.id))
        name = ref.name or DEFAULT_EXPERIMENT
        experiment = backend.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                backend.restore_experiment(experiment.experiment_id)
            self._tag_experiment(experiment)
            return experiment.experiment_id, name
        root = embedded_root(self.spec.tracking_uri)
        # the embedded layout keeps artifacts next to the database, not in MLflow's ./mlruns
        location = (root / "artifacts" / _slug(name)).as_uri() if root is not None else None
        try:
            return backend.create_experiment(name, location, {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}), name
        except MirrorFailure as failure:
            experiment = backend.get_experiment_by_name(name)  # created by another process meanwhile
            if experiment is None:
                raise failure
            self._tag_experiment(experiment)
            return experiment.experiment_id, name

    def _tag_experiment(self, experiment: Any) -> str | None:
        """Mark an experiment as model training for MLflow 3's UI, unless it already says what it is."""
        if not experiment.tags.get(EXPERIMENT_KIND_TAG):
            self.backend.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.name

    # -- what a run holds ------------------------------------------------------
    def log_points(self, points: Sequence[Point]) -> None:
        """One log_batch request (the caller cuts batches within MLflow's limits)."""
        self.backend.log_batch(self.run_id, metrics=points)

    def log_params(self, params: Mapping[str, str]) -> None:
        for batch in param_batches(params):
            self.backend.log_batch(self.run_id, params=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for batch in param_batches({k: v[:MAX_TAG_VALUE_LENGTH] for k, v in tags.items()}):
            self.backend.log_batch(self.run_id, tags=batch)

    def log_inputs(self, datasets: Sequence[Mapping[str, Any]]) -> None:
        """The run's datasets (:mod:`.datasets` descriptors) as MLflow dataset inputs."""
        if datasets:
            self.backend.log_inputs(self.run_id, dataset_inputs(datasets))

    def upload(self, relpath: str) -> bool:
        """Upload ``run_dir/relpath`` to the same relative path of the run; False if the file is gone.

        The file is read through a hard link taken now, so an atomic rewrite
        of it during the upload cannot mix two versions.
        """
        try:
            snapshot = _snapshot(self.run_dir.path, relpath, self._workdir())
        except FileNotFoundError:
            return False
        try:
            self.upload_file(snapshot, os.path.dirname(relpath) or None)
        finally:
            snapshot.unlink(missing_ok=True)
        return True

    def upload_file(self, local_path: Path, artifact_dir: str | None) -> None:
        link = self.link
        assert link is not None, "RunWriter.connect() first"
        self.backend.log_artifact(link.run_id, link.artifact_uri, str(local_path), artifact_dir)

    def upload_dir(self, local_dir: Path, artifact_dir: str) -> None:
        """Every file under ``local_dir`` to ``artifact_dir/``, keeping the folder structure (a model)."""
        for root, _, names in os.walk(local_dir):
            relative = Path(root).relative_to(local_dir).as_posix()
            target = artifact_dir if relative == "." else f"{artifact_dir}/{relative}"
            for name in sorted(names):
                self.upload_file(Path(root) / name, target)

    def upload_media(self, entry: Mapping[str, Any]) -> bool:
        """One media.jsonl entry in MLflow's step-aware image layout (:mod:`.media`); False if the image is gone."""
        from .media import IMAGES_DIR, media_files

        workdir = self._workdir() / "media" / uuid.uuid4().hex
        try:
            try:
                files = media_files(self.run_dir.path, entry, workdir)
            except FileNotFoundError:
                return False
            for path in files:
                self.upload_file(path, IMAGES_DIR)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not self._images_tagged:
            self.backend.log_batch(self.run_id, tags=[(LOGGED_IMAGES_TAG, "True")])
            self._images_tagged = True
        return True

    def terminate(self, status: str, end_ms: int | None, error: str | None = None) -> None:
        """The run's final status (and the error of a failed run as a tag); an adopted run's status is its owner's."""
        if error:
            self.backend.log_batch(self.run_id, tags=[(ERROR_TAG, error[:MAX_TAG_VALUE_LENGTH])])
        if self.link is not None and not self.link.adopted:
            self.backend.update_run(self.run_id, status, end_ms)

    def cleanup(self) -> None:
        shutil.rmtree(self.run_dir.path / UPLOAD_DIR, ignore_errors=True)

    def _workdir(self) -> Path:
        return self.run_dir.path / UPLOAD_DIR


def _snapshot(root: Path, relpath: str, workdir: Path) -> Path:
    """A hard link to ``root/relpath`` that a later atomic rewrite of the file cannot change."""
    source = root / relpath
    snapshot = workdir / relpath
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.unlink(missing_ok=True)
    try:
        os.link(source, snapshot)
    except FileNotFoundError:
        raise
    except OSError:  # no hard links here (another filesystem): copy instead
        shutil.copy2(source, snapshot)
    return snapshot


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "experiment"


def spec_for(run_dir: RunDirectory, **kwargs: Any) -> RunSpec:
    """The :class:`RunSpec` of ``run_dir`` as its run.json says (``kwargs`` as :meth:`RunSpec.from_run`)."""
    from .. import __version__

    return RunSpec.from_run(run_dir.read_run(), version=__version__, **kwargs)
