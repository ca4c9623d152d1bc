"""The MLflow calls trackbridge makes, each one bounded and each failure one :class:`~.errors.MirrorFailure`.

Two implementations of the same methods:

- :class:`RestBackend`, for an ``http(s)://`` tracking server: MLflow's REST
  API through :func:`mlflow.utils.rest_utils.http_request` (so MLflow's
  authentication, TLS settings and request headers apply), with the retry
  count, backoff and timeouts passed explicitly on every request. MLflow's
  ``MLFLOW_HTTP_REQUEST_*`` variables are neither read nor set: the user's
  own ``mlflow.*`` calls in the same process keep MLflow's defaults (seven
  retries, about four minutes for a dead server), while the mirror's calls
  fail fast and the worker or sync decide when to try again. Metric points go
  out as JSON built directly from :class:`~.mapping.Point` tuples, without
  MLflow's protobuf round trip (a few ms of the training process's GIL per
  thousand points). Artifacts of a server that serves them
  (``mlflow-artifacts:``) are uploaded with the same bounds.
- :class:`ClientBackend`, for every other URI (the embedded SQLite store, a
  database URI): an ``MlflowClient``, in process, with nothing to bound.

Readers outside the mirror (the web layer's MLflow event source) use
:func:`open_backend` too: it answers ``get_run``, ``get_metric_history``,
``search_runs`` and ``search_experiments`` as ``MlflowClient`` does.

Only :class:`~.writer.RunWriter` calls the write methods (``log_batch``,
``log_artifact``, ``update_run``, ...); the registry calls the registry ones.
"""

from __future__ import annotations

import functools
import mimetypes
import os
import posixpath
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence, TypeVar

from .errors import MirrorFailure, classify, failure_for_status, is_mlflow_error
from .mapping import Point
from .uri import embedded_root, is_http_uri

T = TypeVar("T")


class HttpPolicy(NamedTuple):
    """Bounds of one MLflow HTTP request made by trackbridge.

    ``max_retries`` retries happen inside the request (urllib3, honouring
    ``Retry-After``); the worker keeps it at 0 and does its own backoff, so a
    call never outlives the flush deadline by much.
    """

    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    upload_read_timeout_s: float = 60.0
    max_retries: int = 0
    backoff_factor: float = 0.0

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout_s, self.read_timeout_s)


WORKER_POLICY = HttpPolicy()
SYNC_POLICY = HttpPolicy(read_timeout_s=30.0, upload_read_timeout_s=300.0)

# HTTP statuses urllib3 may retry inside one request when max_retries > 0.
_RETRY_CODES = (408, 429, 500, 502, 503, 504)


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """Turn MLflow's errors raised inside ``method`` into one :class:`MirrorFailure` (bugs pass through)."""

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except MirrorFailure:
            raise
        except Exception as exc:
            if not is_mlflow_error(exc):
                raise
            raise classify(exc, self.tracking_uri) from exc

    return call


def open_backend(tracking_uri: str, policy: HttpPolicy = WORKER_POLICY) -> "RestBackend | ClientBackend":
    """The backend for ``tracking_uri``: REST for a tracking server, an in-process client otherwise."""
    if is_http_uri(tracking_uri):
        return RestBackend(tracking_uri, policy)
    return ClientBackend(tracking_uri)


def _tags(items: Iterable[tuple[str, str]] | Mapping[str, str]) -> list[dict[str, str]]:
    pairs = items.items() if isinstance(items, Mapping) else items
    return [{"key": str(k), "value": str(v)} for k, v in pairs]


def _search_body(**fields: Any) -> dict[str, Any]:
    """A search request: the fields that are set (MLflow's REST API wants no nulls)."""
    return {key: value for key, value in fields.items() if value}


def _view(view_type: Any) -> str:
    from mlflow.entities import ViewType

    return ViewType.to_string(view_type or ViewType.ACTIVE_ONLY).upper()


class RestBackend:
    """MLflow's REST API with explicit, bounded retries (see the module docstring)."""

    def __init__(self, tracking_uri: str, policy: HttpPolicy = WORKER_POLICY) -> None:
        self.tracking_uri = tracking_uri.rstrip("/")
        self.policy = policy

    # -- one request ---------------------------------------------------------
    def _request(self, host: str, endpoint: str, method: str, *, upload: bool = False, **kwargs: Any) -> Any:
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        policy = self.policy
        timeout = (policy.connect_timeout_s, policy.upload_read_timeout_s) if upload else policy.timeout
        response = http_request(
            get_default_host_creds(host), endpoint, method,
            max_retries=policy.max_retries, backoff_factor=policy.backoff_factor, backoff_jitter=0.0,
            retry_codes=_RETRY_CODES, timeout=timeout, raise_on_status=False, respect_retry_after_header=True,
            **kwargs,
        )
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise failure_for_status(
                response.status_code, body, retry_after=response.headers.get("Retry-After"),
                fallback=response.text,
            )
        return response

    def _call(self, request: type, body: Mapping[str, Any], registry: bool = False) -> Any:
        """Call the endpoint of MLflow request message ``request``; returns its parsed response message."""
        from mlflow.utils.proto_json_utils import parse_dict

        endpoint, method = _endpoints(registry)[request]
        payload = {"params": dict(body)} if method == "GET" else {"json": dict(body)}
        response = self._request(self.tracking_uri, endpoint, method, **payload)
        message = request.Response()
        text = response.text.strip()
        if text:
            parse_dict(js_dict=response.json(), message=message)
        return message

    # -- experiments -----------------------------------------------------------
    @_translated
    def get_experiment_by_name(self, name: str) -> Any:
        from mlflow.entities import Experiment
        from mlflow.protos.service_pb2 import GetExperimentByName

        try:
            return Experiment.from_proto(self._call(GetExperimentByName, {"experiment_name": name}).experiment)
        except MirrorFailure as failure:
            if failure.status == 404 or failure.code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    @_translated
    def get_experiment(self, experiment_id: str) -> Any:
        from mlflow.entities import Experiment
        from mlflow.protos.service_pb2 import GetExperiment

        return Experiment.from_proto(self._call(GetExperiment, {"experiment_id": experiment_id}).experiment)

    @_translated
    def create_experiment(self, name: str, artifact_location: str | None = None,
                          tags: Mapping[str, str] | None = None) -> str:
        from mlflow.protos.service_pb2 import CreateExperiment

        body: dict[str, Any] = {"name": name, "tags": _tags(tags or {})}
        if artifact_location:
            body["artifact_location"] = artifact_location
        return self._call(CreateExperiment, body).experiment_id

    @_translated
    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        from mlflow.protos.service_pb2 import SetExperimentTag

        self._call(SetExperimentTag, {"experiment_id": experiment_id, "key": key, "value": value})

    @_translated
    def restore_experiment(self, experiment_id: str) -> None:
        from mlflow.protos.service_pb2 import RestoreExperiment

        self._call(RestoreExperiment, {"experiment_id": experiment_id})

    @_translated
    def search_experiments(self, view_type: Any = None, max_results: int = 1000, filter_string: str | None = None,
                           order_by: list[str] | None = None, page_token: str | None = None) -> Any:
        from mlflow.entities import Experiment
        from mlflow.protos.service_pb2 import SearchExperiments
        from mlflow.store.entities.paged_list import PagedList

        body = _search_body(view_type=_view(view_type), max_results=max_results, filter=filter_string,
                            order_by=order_by, page_token=page_token)
        message = self._call(SearchExperiments, body)
        return PagedList([Experiment.from_proto(e) for e in message.experiments], message.next_page_token or None)

    # -- runs ----------------------------------------------------------------
    @_translated
    def get_run(self, run_id: str) -> Any:
        from mlflow.entities import Run
        from mlflow.protos.service_pb2 import GetRun

        return Run.from_proto(self._call(GetRun, {"run_id": run_id, "run_uuid": run_id}).run)

    @_translated
    def search_runs(self, experiment_ids: Sequence[str], filter_string: str = "", run_view_type: Any = None,
                    max_results: int = 1000, order_by: list[str] | None = None, page_token: str | None = None) -> Any:
        from mlflow.entities import Run
        from mlflow.protos.service_pb2 import SearchRuns
        from mlflow.store.entities.paged_list import PagedList

        body = _search_body(experiment_ids=[str(e) for e in experiment_ids], filter=filter_string,
                            run_view_type=_view(run_view_type), max_results=max_results, order_by=order_by,
                            page_token=page_token)
        message = self._call(SearchRuns, body)
        return PagedList([Run.from_proto(r) for r in message.runs], message.next_page_token or None)

    @_translated
    def create_run(self, experiment_id: str, start_ms: int | None, tags: Mapping[str, str],
                   run_name: str | None) -> Any:
        from mlflow.entities import Run
        from mlflow.protos.service_pb2 import CreateRun

        body: dict[str, Any] = {"experiment_id": experiment_id, "tags": _tags(tags)}
        if start_ms is not None:
            body["start_time"] = start_ms
        if run_name:
            body["run_name"] = run_name
        if tags.get("mlflow.user"):
            body["user_id"] = tags["mlflow.user"]
        return Run.from_proto(self._call(CreateRun, body).run)

    @_translated
    def update_run(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        from mlflow.protos.service_pb2 import UpdateRun

        body: dict[str, Any] = {"run_id": run_id, "run_uuid": run_id, "status": status}
        if end_ms is not None:
            body["end_time"] = end_ms
        self._call(UpdateRun, body)

    @_translated
    def log_batch(self, run_id: str, metrics: Sequence[Point] = (), params: Iterable[tuple[str, str]] = (),
                  tags: Iterable[tuple[str, str]] = ()) -> None:
        from mlflow.protos.service_pb2 import LogBatch

        self._call(LogBatch, {
            "run_id": run_id,
            "metrics": [{"key": p.key, "value": p.value, "timestamp": p.timestamp, "step": p.step} for p in metrics],
            "params": _tags(params),
            "tags": _tags(tags),
        })

    @_translated
    def log_inputs(self, run_id: str, datasets: Sequence[Mapping[str, Any]]) -> None:
        """``datasets``: :func:`~.datasets.dataset_input` dicts (``dataset`` and its ``tags``)."""
        from mlflow.protos.service_pb2 import LogInputs

        self._call(LogInputs, {"run_id": run_id, "datasets": [dict(d) for d in datasets]})

    @_translated
    def get_metric_history(self, run_id: str, key: str) -> list[Any]:
        from mlflow.entities import Metric
        from mlflow.protos.service_pb2 import GetMetricHistory

        history: list[Any] = []
        token = None
        while True:
            body = {"run_id": run_id, "run_uuid": run_id, "metric_key": key}
            if token:
                body["page_token"] = token
            message = self._call(GetMetricHistory, body)
            history += [Metric.from_proto(m) for m in message.metrics]
            token = message.next_page_token
            if not token:
                return history

    # -- artifacts -------------------------------------------------------------
    @_translated
    def log_artifact(self, run_id: str, artifact_uri: str, local_path: str, artifact_path: str | None) -> None:
        """Upload one file to ``artifact_path/`` of the run (bounded when the server serves artifacts)."""
        base = self._artifact_base(artifact_uri)
        if base is None:  # an artifact store the client writes to itself (s3://, gs://, a shared disk)
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri).log_artifact(local_path, artifact_path)
            return
        name = os.path.basename(local_path)
        endpoint = posixpath.join("/", *([artifact_path] if artifact_path else []), name)
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(local_path, "rb") as data:
            self._request(base, endpoint, "PUT", upload=True, data=data, extra_headers={"Content-Type": mime})

    @_translated
    def list_artifacts(self, run_id: str, path: str | None = None) -> list[Any]:
        from mlflow.entities import FileInfo
        from mlflow.protos.service_pb2 import ListArtifacts

        body = {"run_id": run_id, "run_uuid": run_id, **({"path": path} if path else {})}
        message = self._call(ListArtifacts, body)
        return [FileInfo.from_proto(f) for f in message.files]

    @_translated
    def read_artifact(self, run_id: str, artifact_uri: str, path: str) -> bytes:
        """The bytes of artifact ``path`` of the run (bounded when the server serves artifacts)."""
        base = self._artifact_base(artifact_uri)
        if base is None:
            return _read_from_repository(artifact_uri, path, self.tracking_uri)
        return self._request(base, posixpath.join("/", path), "GET").content

    def _artifact_base(self, artifact_uri: str) -> str | None:
        if artifact_uri.startswith("mlflow-artifacts:"):
            from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

            return MlflowArtifactsRepository.resolve_uri(artifact_uri, self.tracking_uri)
        if is_http_uri(artifact_uri):
            return artifact_uri.rstrip("/")
        return None

    # -- model registry ------------------------------------------------------
    @_translated
    def create_registered_model(self, name: str) -> None:
        from mlflow.protos.model_registry_pb2 import CreateRegisteredModel

        try:
            self._call(CreateRegisteredModel, {"name": name}, registry=True)
        except MirrorFailure as failure:
            if failure.code != "RESOURCE_ALREADY_EXISTS":
                raise

    @_translated
    def create_model_version(self, name: str, source: str, run_id: str, tags: Mapping[str, str]) -> Any:
        from mlflow.entities.model_registry import ModelVersion
        from mlflow.protos.model_registry_pb2 import CreateModelVersion

        body = {"name": name, "source": source, "run_id": run_id, "tags": _tags(tags)}
        return ModelVersion.from_proto(self._call(CreateModelVersion, body, registry=True).model_version)

    @_translated
    def get_alias_version(self, name: str, alias: str) -> Any:
        """The model version ``alias`` points to, or None."""
        from mlflow.entities.model_registry import ModelVersion
        from mlflow.protos.model_registry_pb2 import GetModelVersionByAlias

        try:
            message = self._call(GetModelVersionByAlias, {"name": name, "alias": alias}, registry=True)
        except MirrorFailure as failure:
            if failure.status == 404 or failure.code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return ModelVersion.from_proto(message.model_version)

    @_translated
    def set_alias(self, name: str, alias: str, version: str) -> None:
        from mlflow.protos.model_registry_pb2 import SetRegisteredModelAlias

        self._call(SetRegisteredModelAlias, {"name": name, "alias": alias, "version": str(version)}, registry=True)


@functools.lru_cache(maxsize=2)
def _read_from_repository(artifact_uri: str, path: str, tracking_uri: str) -> bytes:
    """One artifact read through MLflow's artifact repository for ``artifact_uri`` (a local folder, s3://, ...)."""
    import tempfile

    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="trackbridge-artifact-") as tmp:
        local = repository.download_artifacts(path, tmp)
        with open(local, "rb") as fh:
            return fh.read()


def _endpoints(registry: bool) -> dict[type, tuple[str, str]]:
    """MLflow's own table: request message class → (path, HTTP method), read from its service protos."""
    from mlflow.utils.rest_utils import _REST_API_PATH_PREFIX, extract_api_info_for_service

    if registry:
        from mlflow.protos.model_registry_pb2 import ModelRegistryService as service
    else:
        from mlflow.protos.service_pb2 import MlflowService as service
    return extract_api_info_for_service(service, _REST_API_PATH_PREFIX)


class ClientBackend:
    """The same methods over an in-process ``MlflowClient`` (SQLite or a database URI): no HTTP to bound."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        root = embedded_root(tracking_uri)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not its folder
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @_translated
    def get_experiment_by_name(self, name: str) -> Any:
        return self.client.get_experiment_by_name(name)

    @_translated
    def get_experiment(self, experiment_id: str) -> Any:
        return self.client.get_experiment(experiment_id)

    @_translated
    def create_experiment(self, name: str, artifact_location: str | None = None,
                          tags: Mapping[str, str] | None = None) -> str:
        return self.client.create_experiment(name, artifact_location=artifact_location, tags=dict(tags or {}))

    @_translated
    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.client.set_experiment_tag(experiment_id, key, value)

    @_translated
    def restore_experiment(self, experiment_id: str) -> None:
        self.client.restore_experiment(experiment_id)

    @_translated
    def search_experiments(self, view_type: Any = None, max_results: int = 1000, filter_string: str | None = None,
                           order_by: list[str] | None = None, page_token: str | None = None) -> Any:
        from mlflow.entities import ViewType

        return self.client.search_experiments(view_type or ViewType.ACTIVE_ONLY, max_results, filter_string,
                                              order_by, page_token)

    @_translated
    def get_run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    @_translated
    def search_runs(self, experiment_ids: Sequence[str], filter_string: str = "", run_view_type: Any = None,
                    max_results: int = 1000, order_by: list[str] | None = None, page_token: str | None = None) -> Any:
        from mlflow.entities import ViewType

        return self.client.search_runs(list(experiment_ids), filter_string, run_view_type or ViewType.ACTIVE_ONLY,
                                       max_results, order_by, page_token)

    @_translated
    def create_run(self, experiment_id: str, start_ms: int | None, tags: Mapping[str, str],
                   run_name: str | None) -> Any:
        return self.client.create_run(experiment_id, start_time=start_ms, tags=dict(tags), run_name=run_name)

    @_translated
    def update_run(self, run_id: str, status: str, end_ms: int | None = None) -> None:
        if status == "RUNNING":
            self.client.update_run(run_id, status=status)
        else:
            self.client.set_terminated(run_id, status=status, end_time=end_ms)

    @_translated
    def log_batch(self, run_id: str, metrics: Sequence[Point] = (), params: Iterable[tuple[str, str]] = (),
                  tags: Iterable[tuple[str, str]] = ()) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self.client.log_batch(
            run_id,
            metrics=[Metric(p.key, p.value, p.timestamp, p.step) for p in metrics],
            params=[Param(k, v) for k, v in params],
            tags=[RunTag(k, v) for k, v in tags],
        )

    @_translated
    def log_inputs(self, run_id: str, datasets: Sequence[Mapping[str, Any]]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        self.client.log_inputs(run_id, [
            DatasetInput(Dataset(**d["dataset"]), [InputTag(t["key"], t["value"]) for t in d.get("tags", [])])
            for d in datasets
        ])

    @_translated
    def get_metric_history(self, run_id: str, key: str) -> list[Any]:
        return list(self.client.get_metric_history(run_id, key))

    @_translated
    def log_artifact(self, run_id: str, artifact_uri: str, local_path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, local_path, artifact_path)

    @_translated
    def list_artifacts(self, run_id: str, path: str | None = None) -> list[Any]:
        return list(self.client.list_artifacts(run_id, path))

    @_translated
    def read_artifact(self, run_id: str, artifact_uri: str, path: str) -> bytes:
        return _read_from_repository(artifact_uri, path, self.tracking_uri)

    @_translated
    def create_registered_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    @_translated
    def create_model_version(self, name: str, source: str, run_id: str, tags: Mapping[str, str]) -> Any:
        return self.client.create_model_version(name, source, run_id=run_id, tags=dict(tags))

    @_translated
    def get_alias_version(self, name: str, alias: str) -> Any:
        alias_version = self.client.get_registered_model(name).aliases.get(alias)
        return None if alias_version is None else self.client.get_model_version(name, alias_version)

    @_translated
    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)


Backend = RestBackend | ClientBackend

__all__ = ["Backend", "ClientBackend", "HttpPolicy", "RestBackend", "SYNC_POLICY", "WORKER_POLICY", "open_backend"]
