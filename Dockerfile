# trackbridge image: the package, its CLI and the MLflow server plugin
# (`mlflow server --app-name trackbridge`). compose.yaml runs it as the tracking
# server and as training containers.
#
#   docker build -t trackbridge .
#   docker run --rm trackbridge trackbridge --help
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

# torch first, from PyTorch's CPU index: the 2.13.0 CPU build the project is
# tested with. torch from PyPI would be the CUDA build with several GB of NVIDIA
# libraries. For GPU trainings pass one of PyTorch's CUDA indexes, e.g.
#   docker compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# The package with the team extra (PostgreSQL driver, S3 client). pip keeps the
# torch above: it satisfies the package's torch requirement.
WORKDIR /opt/trackbridge
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[team]" \
    && python -c "import trackbridge, mlflow, psycopg, boto3"

# Not root. /data/runs is where compose mounts the shared `runs` volume; made
# here so that a new volume is created owned by this user.
RUN useradd --create-home --uid 1000 trackbridge \
    && mkdir -p /data/runs \
    && chown trackbridge /data/runs
USER trackbridge
WORKDIR /home/trackbridge
ENV TRACKBRIDGE_RUNS_ROOT=/data/runs

EXPOSE 5000
CMD ["trackbridge", "--help"]
