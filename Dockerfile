# One image for every crewq role: `docker run IMAGE api|worker|dispatcher|migrate|keys ...`.
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    CREWQ_CREWS_PATH=/app/crews \
    CREWAI_DISABLE_TELEMETRY=true \
    CREWAI_TRACING_ENABLED=false \
    CREWAI_DISABLE_VERSION_CHECK=true

RUN pip install --no-cache-dir "uv==0.13.9" \
    && useradd --create-home --uid 10001 crewq

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. No lock file is committed;
# a local uv.lock, if there is one, is used.
COPY pyproject.toml uv.lock* ./
RUN uv sync --no-dev --no-install-project

COPY . .
RUN uv sync --no-dev

ENV PATH="/app/.venv/bin:$PATH"
USER crewq
EXPOSE 8000

ENTRYPOINT ["/app/.venv/bin/crewq"]
CMD ["api"]
