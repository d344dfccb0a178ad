# One image for every crewq role. The entrypoint is `crewq`; the command picks the role:
#   docker run IMAGE api | worker | dispatcher | migrate | doctor
#   docker run IMAGE keys create --tenant acme
# No `# syntax=` line: it would make BuildKit fetch a frontend image from a registry, and
# nothing here needs more than the builder's own Dockerfile syntax (the legacy builder too).
#
# PYTHON_IMAGE: the base of both stages. Where no registry can be reached, build one from
# Debian's packages (deploy/docker/build-base-images.sh) and pass it with --build-arg.
ARG PYTHON_IMAGE=python:3.12-slim

# --- builder: crewq and its dependencies installed into one virtual environment, /opt/crewq.
# Nothing else of this stage (uv, pip's caches, the sources) reaches the image.
FROM ${PYTHON_IMAGE} AS builder

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/crewq

RUN pip install --no-cache-dir "uv==0.13.9"

WORKDIR /src
# Dependencies first, in a layer of their own, so that a change of crewq's code does not
# reinstall them. No lock file is committed; a local uv.lock, if there is one, is honoured.
# --no-default-groups: none of the dependency groups (dev, and `embedded`, the Postgres and
# Redis only `crewq dev` starts). --no-install-package uv: crewai-cli requires uv for a
# command crewq never runs; the image has no package manager.
# The Python client (client/) is a member of the uv workspace that crewq depends on (the
# `crewq jobs|webhooks` verbs): its pyproject is needed to resolve, its code to install.
COPY pyproject.toml README.md uv.lock* ./
COPY client/pyproject.toml client/README.md ./client/
RUN uv sync --no-default-groups --no-install-package uv --no-install-workspace
COPY client ./client
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY schemas ./schemas
COPY crewq ./crewq
# Not editable: the environment holds crewq itself, not a link back to /src.
RUN uv sync --no-default-groups --no-install-package uv --no-editable

# --- the image: Python, that environment and the example crews. No compiler, no uv, no
# sources, no tests; a non-root user.
FROM ${PYTHON_IMAGE}

RUN groupadd --gid 10001 crewq \
    && useradd --uid 10001 --gid crewq --create-home --home-dir /home/crewq \
       --shell /usr/sbin/nologin crewq

COPY --from=builder /opt/crewq /opt/crewq
COPY crews /app/crews

# The .pyc files were compiled in the builder; writing more would fail on a read-only root.
# CREWQ_METRICS_PORT: every role answers /metrics there (the API never on its public port);
# workers and dispatchers /health and /livez too, which the API answers on CREWQ_API_PORT.
# CrewAI makes no network calls of its own.
ENV PATH="/opt/crewq/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/crewq \
    CREWQ_CREWS_PATH=/app/crews \
    CREWQ_API_HOST=0.0.0.0 \
    CREWQ_API_PORT=8000 \
    CREWQ_METRICS_PORT=9100 \
    CREWAI_DISABLE_TELEMETRY=true \
    CREWAI_TRACING_ENABLED=false \
    CREWAI_DISABLE_VERSION_CHECK=true

WORKDIR /app
USER 10001:10001
EXPOSE 8000 9100

# GET /health on the role's port (`crewq healthcheck`): the API's database ping, or a
# worker's or dispatcher's registration heartbeat. Workers build each crew once before they
# are ready, hence the start period.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["crewq", "healthcheck"]

# SIGTERM (Docker's default stop signal) drains: a worker finishes or hands back its jobs.
ENTRYPOINT ["crewq"]
CMD ["api"]
