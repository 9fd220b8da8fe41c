# The monitor service: `monitor run` with config/docker.toml.
#   docker build -t monitor .
#   docker run -p 127.0.0.1:8080:8080 -v "$PWD/drop:/app/drop:ro" -v monitor-state:/app/state monitor
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY monitor ./monitor
# psycopg for the postgres profile (MONITOR_DATABASE_URL); SQLite needs nothing extra.
RUN pip install ".[postgres]"
COPY config ./config

# Not root: the service only needs to read drop/ and write state/.
RUN useradd --system --uid 10001 --home-dir /app monitor \
    && mkdir -p /app/drop /app/state \
    && chown monitor:monitor /app/drop /app/state
USER monitor

ENV MONITOR_CONFIG=/app/config/docker.toml
VOLUME ["/app/drop", "/app/state"]
EXPOSE 8080

# /healthz answers 503 when the store is unreachable or scans have stopped succeeding.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4); sys.exit(0)"]

# SIGTERM (docker stop) ends the current file's transaction and exits 0 within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["monitor"]
CMD ["run"]
