# The monitor service: `monitor run` with config/docker.toml.
#   docker/make-base.sh               once: the local base image (Debian bookworm, Python 3.11)
#   docker build -t monitor .
#   docker run -p 127.0.0.1:8080:8080 -v "$PWD/drop:/app/drop:ro" -v monitor-state:/app/state monitor
ARG BASE=monitor-base:bookworm

# Build stage: the virtualenv, from the lock file. The source tree, build/ and *.egg-info
# stay here; the image below gets only the installed environment.
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock ./
# The lock pins everything, setuptools for the build included; a constraint (-c) installs
# only what the service needs: runtime and the postgres extra, not the test tools.
RUN python3 -m venv /opt/monitor \
    && /opt/monitor/bin/pip install -q -c requirements.lock setuptools
COPY pyproject.toml setup.py README.md ./
COPY monitor ./monitor
RUN /opt/monitor/bin/pip install -q --no-build-isolation --use-pep517 -c requirements.lock ".[postgres]"

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/monitor/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY --from=build /opt/monitor /opt/monitor

WORKDIR /app
COPY config ./config
COPY docker/healthcheck.py ./docker/healthcheck.py

# Not root: the service only needs to read drop/ and write state/.
RUN useradd --system --uid 10001 --home-dir /app monitor \
    && mkdir -p /app/drop /app/state \
    && chown monitor:monitor /app/drop /app/state
USER monitor

# Digests go to the Maildir /app/state/outbox; compose points MONITOR_CONFIG at a config
# with an SMTP server (config/compose*.toml).
ENV MONITOR_CONFIG=/app/config/docker.toml
VOLUME ["/app/drop", "/app/state"]
EXPOSE 8080

# /healthz answers 503 when the store is unreachable or scans have stopped succeeding;
# the script asks the port of the config in force, not a fixed one.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]

# SIGTERM (docker stop) ends the current file's transaction and exits 0 within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["monitor"]
CMD ["run"]
