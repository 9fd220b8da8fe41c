"""The Dockerfile and docker-compose.yml agree with the CLI, the configs and the lock file.

No Docker daemon needed; tests/test_container.py builds and runs them for real."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from servicekit import Service

from monitor.cli import build_parser
from monitor.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
APP = PurePosixPath("/app")  # WORKDIR of the image: config/ and docker/ as in the checkout
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
DEV_DEFAULT = "${POSTGRES_PASSWORD:-monitor-dev}"

Stage = dict[str, list[str]]


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults, and per stage: instruction -> arguments (continuations joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            stages.append({})
        elif not stages and word == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        stages[-1].setdefault(word, []).append(rest)
    return args, stages


def exec_form(value: str) -> list[str]:
    return json.loads(value) if value.startswith("[") else shlex.split(value)


def env_of(stage: Stage) -> dict[str, str]:
    return dict(item.split("=", 1) for item in " ".join(stage.get("ENV", [])).split() if "=" in item)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile()[1]


@pytest.fixture(scope="module")
def docker(stages: list[Stage]) -> Stage:
    """The final stage: the image that runs."""
    return stages[-1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def host_path(container: str) -> Path:
    return ROOT / PurePosixPath(container).relative_to(APP)


@pytest.fixture(scope="module")
def settings(docker: Stage) -> Settings:
    return load_settings(host_path(env_of(docker)["MONITOR_CONFIG"]), require_drop=False)


def in_container(path: Path) -> PurePosixPath:
    return APP / path.resolve().relative_to(ROOT).as_posix()


def monitors(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name.startswith("monitor")}


def lock_pins() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith((" ", "#")))


def test_image_builds_on_the_local_base_from_the_lock(stages: list[Stage]) -> None:
    args, _ = dockerfile()
    # Every stage starts from the base docker/make-base.sh builds: no registry needed.
    assert all(stage["FROM"][0].split()[0] == "${BASE}" for stage in stages)
    script = (ROOT / "docker" / "make-base.sh").read_text()
    assert f"MONITOR_BASE_IMAGE:-{args['BASE']}" in script and os.access(ROOT / "docker" / "make-base.sh", os.X_OK)
    installs = [r for stage in stages for r in stage.get("RUN", []) if "pip install" in r]
    assert installs and all("-c requirements.lock" in r for r in installs), "every install under the lock"
    assert any('".[postgres]"' in r for r in installs)
    # The runtime stage copies the installed venv only: the source tree and its build
    # leftovers stay in the build stage.
    final = stages[-1]
    assert not any("pip install" in r for r in final.get("RUN", []))
    assert [c for c in final["COPY"] if c.startswith("--from=")] == ["--from=build /opt/monitor /opt/monitor"]


def test_lock_pins_every_dependency() -> None:
    pins = lock_pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = list(project["project"]["dependencies"])
    for extra in ("test", "postgres"):
        wanted += project["project"]["optional-dependencies"][extra]
    wanted += project["build-system"]["requires"]
    for requirement in wanted:
        name = re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pins.values())


def test_image_runs_monitor_run_with_the_docker_config(stages: list[Stage], docker: Stage) -> None:
    argv = exec_form(docker["ENTRYPOINT"][-1]) + exec_form(docker["CMD"][-1])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert argv[0] in project["scripts"]
    assert build_parser().parse_args(argv[1:]).command == "run"
    assert "postgres" in project["optional-dependencies"]
    for stage in stages:
        for copy in stage["COPY"]:
            if not copy.startswith("--from="):
                *sources, _ = copy.split()
                assert all((ROOT / s).exists() for s in sources), copy
    assert docker["WORKDIR"] == [str(APP)]
    settings = load_settings(host_path(env_of(docker)["MONITOR_CONFIG"]), require_drop=False)
    assert settings.http.host == "0.0.0.0" and docker["EXPOSE"] == [str(settings.http.port)]


def test_plain_image_keeps_digests_in_the_state_volume(settings: Settings) -> None:
    """No SMTP host in the image's own config: `docker run` delivers to the Maildir."""
    assert settings.digest.enabled and settings.digest.recipients
    assert settings.smtp.host == ""
    assert in_container(settings.digest.outbox).parent == in_container(settings.feed.path.parent)


def test_image_healthcheck_and_volumes_match_the_config(docker: Stage, settings: Settings) -> None:
    argv = exec_form(docker["HEALTHCHECK"][0].split(" CMD ", 1)[1])
    assert argv[0] == "python" and host_path(argv[1]) == HEALTHCHECK
    assert "8080" not in docker["HEALTHCHECK"][0], "the script reads the port from the config"
    volumes = set(exec_form(docker["VOLUME"][0]))
    assert volumes == {str(in_container(settings.drop.folder)), str(in_container(settings.feed.path.parent))}
    assert docker["USER"] and docker["USER"] != ["root"]


def healthcheck(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONITOR_CONFIG": str(config)}
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=30)


def test_healthcheck_asks_the_port_of_the_config(exe: str, tmp_path: Path) -> None:
    service = Service(exe, tmp_path)
    try:
        service.wait_ready()
        ok = healthcheck(service.config)
        assert (ok.returncode, ok.stdout) == (0, ""), ok
    finally:
        service.stop()
    down = healthcheck(service.config)
    assert down.returncode == 1
    assert down.stdout.startswith(f"healthcheck: http://127.0.0.1:{service.port}/healthz: ")
    assert len(down.stdout.splitlines()) == 1 and not down.stderr


def test_state_lives_in_the_state_volume(settings: Settings) -> None:
    state = in_container(settings.feed.path.parent)
    db = Path(settings.state.database_url.removeprefix("sqlite:///"))
    assert in_container(db).parent == state
    assert in_container(settings.digest.outbox).parent == state
    assert in_container(settings.drop.folder) == APP / "drop"


def test_compose_monitor_services(compose: dict[str, Any], docker: Stage, settings: Settings) -> None:
    default = load_settings(ROOT / "config" / "monitor.toml", require_drop=False)
    host_ports = []
    for name, service in monitors(compose).items():
        assert service["build"] == "."
        argv = exec_form(docker["ENTRYPOINT"][-1]) + service["command"]
        assert build_parser().parse_args(argv[1:]).command == "run", name
        (published,) = service["ports"]
        host_ip, host_port, container_port = published.split(":")
        assert host_ip == "127.0.0.1", "published on the host's loopback only"
        host_ports.append(int(host_port))
        # Each instance has its own config: the image's, with the mailpit SMTP server, and
        # listening on the port it is published on, which its links (base_url) name.
        own = load_settings(host_path(service["environment"]["MONITOR_CONFIG"]), require_drop=False)
        assert int(container_port) == own.http.port == int(host_port), name
        assert own.feed.base_url == f"http://127.0.0.1:{host_port}/", name
        assert (own.smtp.host, own.smtp.port, own.smtp.security) == ("mailpit", 1025, "none"), name
        same = own._replace(source=settings.source, smtp=settings.smtp,
                            http=own.http._replace(port=settings.http.port),
                            feed=own.feed._replace(base_url=settings.feed.base_url))
        assert same == settings, f"{name}: the rest as in the image's config"
        mounts = {}
        for volume in service["volumes"]:
            source, target, *mode = volume.split(":")
            mounts[target] = (source, mode)
        assert set(mounts) == {str(in_container(settings.drop.folder)), str(in_container(settings.feed.path.parent))}
        source, mode = mounts[str(in_container(settings.drop.folder))]
        # The host folder is the default config's drop folder: `monitor run` and compose share it.
        assert (ROOT / source).resolve() == default.drop.folder.resolve() and mode == ["ro"]
        assert not mounts[str(in_container(settings.feed.path.parent))][0].startswith((".", "/")), "a named volume"
        assert service["stop_grace_period"] == "15s"
    assert len(set(host_ports)) == len(host_ports)
    # The plain service is where the default config says the feed is.
    assert int(compose["services"]["monitor"]["ports"][0].split(":")[1]) == default.http.port
    assert urlsplit(settings.feed.base_url).port == default.http.port
    assert "profiles" not in compose["services"]["monitor"]


def test_mailpit_receives_the_digest(compose: dict[str, Any]) -> None:
    mailpit = compose["services"]["mailpit"]
    assert mailpit["image"].split(":")[0] == "axllent/mailpit"
    assert "127.0.0.1:8025:8025" in mailpit["ports"] and "1025" in mailpit["expose"]
    for service in monitors(compose).values():
        deps = service["depends_on"]
        assert "mailpit" in deps


def test_postgres_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    pg = services["postgres"]
    assert pg["profiles"] == ["postgres"] and pg["healthcheck"]["test"]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in pg["volumes"])
    user, db = pg["environment"]["POSTGRES_USER"], pg["environment"]["POSTGRES_DB"]
    # A working development default: an empty one makes PostgreSQL refuse to start.
    assert pg["environment"]["POSTGRES_PASSWORD"] == DEV_DEFAULT
    scaled = {n: s for n, s in monitors(compose).items() if s.get("profiles") == ["postgres"]}
    assert len(scaled) == 2
    for service in scaled.values():
        url = service["environment"]["MONITOR_DATABASE_URL"]
        parts = urlsplit(url)
        assert parts.scheme == "postgresql+psycopg" and parts.hostname == "postgres" and parts.path == f"/{db}"
        # The password travels apart from the URL (libpq reads PGPASSWORD), so no
        # character of it can break the URL or need encoding.
        assert parts.username == user and parts.password is None and "PASSWORD" not in url
        assert service["environment"]["PGPASSWORD"] == DEV_DEFAULT
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    states = {v.split(":")[0] for s in scaled.values() for v in s["volumes"] if v.endswith("/app/state")}
    assert len(states) == 2 and states <= set(compose["volumes"])
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^POSTGRES_PASSWORD=\S+$", example, re.MULTILINE)


def test_secrets_and_leftovers_stay_out_of_git_and_the_image() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git", ".venv", "state", "drop", "build", "*.egg-info"} <= set(ignored)
