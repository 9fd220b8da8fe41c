"""The Dockerfile and docker-compose.yml agree with the CLI and the configs (no docker daemon)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from monitor.cli import build_parser
from monitor.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
APP = PurePosixPath("/app")  # WORKDIR in the image: the checkout's root


def dockerfile() -> dict[str, list[str]]:
    """Instruction -> arguments (continuation lines joined), in order of appearance."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def exec_form(value: str) -> list[str]:
    return json.loads(value) if value.startswith("[") else shlex.split(value)


@pytest.fixture(scope="module")
def docker() -> dict[str, list[str]]:
    return dockerfile()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def image_config(docker: dict[str, list[str]]) -> Path:
    env = dict(item.split("=", 1) for item in " ".join(docker["ENV"]).split() if "=" in item)
    container = PurePosixPath(env["MONITOR_CONFIG"])
    return ROOT / container.relative_to(APP)


@pytest.fixture(scope="module")
def settings(docker: dict[str, list[str]]) -> Settings:
    return load_settings(image_config(docker), require_drop=False)


def in_container(path: Path) -> PurePosixPath:
    return APP / path.resolve().relative_to(ROOT).as_posix()


def monitors(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name.startswith("monitor")}


def test_image_runs_monitor_run_with_the_docker_config(docker: dict[str, list[str]], settings: Settings) -> None:
    assert docker["FROM"] == ["python:3.11-slim"]
    argv = exec_form(docker["ENTRYPOINT"][-1]) + exec_form(docker["CMD"][-1])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert argv[0] in project["scripts"]
    assert build_parser().parse_args(argv[1:]).command == "run"
    assert any(re.fullmatch(r'pip install "?\.(\[postgres\])?"?', r) for r in docker["RUN"])
    assert "postgres" in project["optional-dependencies"]
    for copy in docker["COPY"]:
        *sources, _ = copy.split()
        assert all((ROOT / s).exists() for s in sources), copy
    assert docker["WORKDIR"] == [str(APP)]
    assert image_config(docker).is_file()
    assert settings.http.host == "0.0.0.0" and docker["EXPOSE"] == [str(settings.http.port)]


def test_image_healthcheck_and_volumes_match_the_config(docker: dict[str, list[str]], settings: Settings) -> None:
    check = docker["HEALTHCHECK"][0]
    url = re.search(r"http://[^'\" ]+", check).group(0)
    assert urlsplit(url).port == settings.http.port and urlsplit(url).path == "/healthz"
    volumes = set(exec_form(docker["VOLUME"][0]))
    assert volumes == {str(in_container(settings.drop.folder)), str(in_container(settings.feed.path.parent))}
    assert docker["USER"] and docker["USER"] != ["root"]


def test_state_lives_in_the_state_volume(settings: Settings) -> None:
    state = in_container(settings.feed.path.parent)
    db = Path(settings.state.database_url.removeprefix("sqlite:///"))
    assert in_container(db).parent == state
    assert in_container(settings.digest.outbox).parent == state
    assert in_container(settings.drop.folder) == APP / "drop"


def test_compose_monitor_services(compose: dict[str, Any], docker: dict[str, list[str]], settings: Settings) -> None:
    default = load_settings(ROOT / "config" / "monitor.toml", require_drop=False)
    env = dict(item.split("=", 1) for item in " ".join(docker["ENV"]).split() if "=" in item)
    host_ports = []
    for name, service in monitors(compose).items():
        assert service["build"] == "."
        argv = exec_form(docker["ENTRYPOINT"][-1]) + service["command"]
        assert build_parser().parse_args(argv[1:]).command == "run", name
        assert service["environment"]["MONITOR_CONFIG"] == env["MONITOR_CONFIG"]
        (published,) = service["ports"]
        host_ip, host_port, container_port = published.split(":")
        assert host_ip == "127.0.0.1", "published on the host's loopback only"
        assert int(container_port) == settings.http.port, name
        host_ports.append(int(host_port))
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


def test_mailpit_receives_the_digest(compose: dict[str, Any], settings: Settings) -> None:
    mailpit = compose["services"]["mailpit"]
    assert mailpit["image"].split(":")[0] == "axllent/mailpit"
    assert "127.0.0.1:8025:8025" in mailpit["ports"] and "1025" in mailpit["expose"]
    assert settings.digest.enabled and settings.digest.recipients
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.security) == ("mailpit", 1025, "none")
    assert "mailpit" in compose["services"]["monitor"]["depends_on"]


def test_postgres_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    pg = services["postgres"]
    assert pg["profiles"] == ["postgres"] and pg["healthcheck"]["test"]
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in pg["volumes"])
    user, db = pg["environment"]["POSTGRES_USER"], pg["environment"]["POSTGRES_DB"]
    assert pg["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    scaled = {n: s for n, s in monitors(compose).items() if s.get("profiles") == ["postgres"]}
    assert len(scaled) == 2
    for service in scaled.values():
        url = service["environment"]["MONITOR_DATABASE_URL"]
        parts = urlsplit(url)
        assert parts.scheme == "postgresql+psycopg" and parts.hostname == "postgres" and parts.path == f"/{db}"
        assert parts.username == user and "${POSTGRES_PASSWORD" in url, "the password only from the environment"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    states = {v.split(":")[0] for s in scaled.values() for v in s["volumes"] if v.endswith("/app/state")}
    assert len(states) == 2 and states <= set(compose["volumes"])


def test_secrets_stay_out_of_git_and_the_image() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".git", ".venv", "state", "drop"} <= set(ignored)
