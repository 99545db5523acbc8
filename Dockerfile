# syntax=docker/dockerfile:1
#
# The load image: loadgate's core (the load engine and its CLI) and the reference SyncBridge
# service, without Airflow. A load pod runs the command the local backend runs:
#
#   loadgate run-stage --plan s3://…/RUN/plan.yaml --stage api \
#       --target URL --out s3://…/RUN/stages/api/shard-0 [--shard I/N] ...
#
# and docker-compose.yaml runs the reference service from it (`syncbridge serve ...`).
#
#   docker build -t loadgate:0.1.0 .
#
# It runs as the non-root user 10001 (the load pods' runAsUser) on a read-only root filesystem:
# it writes only under /tmp (HOME), the results volume /var/lib/loadgate (the working
# directory) and, for the reference service, /data.

# --- build: the package and its dependencies into a virtual environment ------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler for the C extensions that have no wheel for every platform (hdrhistogram on arm64);
# this stage is thrown away, the final image has none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md requirements.txt ./
COPY include/ include/
# Only the core: pyproject.toml's dependencies (no Airflow), at the versions requirements.txt
# pins for the tested environment (-c: a constraint, nothing in it is installed by itself).
RUN /opt/venv/bin/pip install -c requirements.txt . \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -c "import loadgate.cli, syncbridge.cli"

# --- the image --------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="loadgate" \
      org.opencontainers.image.description="loadgate load engine (loadgate run-stage) and the reference SyncBridge service" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 loadgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin loadgate \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/loadgate /data

COPY --from=build /opt/venv /opt/venv
# The pods of a run read the plan from the run root (plan.yaml, the copy the DAG's prepare task
# validated and wrote), not from this image, so the image and the Airflow image cannot disagree
# on it. The shipped plans are the installed packages' data (loadgate.extensions.plan_files).
RUN loadgate run-stage --help > /dev/null \
    && syncbridge --help > /dev/null

USER 10001:10001
WORKDIR /var/lib/loadgate
VOLUME ["/var/lib/loadgate"]

ENTRYPOINT ["loadgate"]
CMD ["--help"]
