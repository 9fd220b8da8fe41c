"""The image and the compose stack, built and run for real where a Docker daemon is reachable.

Builds the local base (docker/make-base.sh), the image (`monitor:latest`, as `docker compose
build` names it) and, for the stack, stand-ins for the two Docker Hub images
(tests/container/). Skips, saying why, where no daemon answers. Run it alone with
`make container-test`; a first run takes about three minutes, later ones reuse the images.
"""

from __future__ import annotations

import ast
import email
import email.message
import json
import os
import secrets
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Monitor, drop_seeds, validate_atom, write_config
from ports import free_port
from servicekit import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
STANDINS = Path(__file__).resolve().parent / "container"
IMAGE = "monitor:latest"
BUILD_SECONDS = 600
# Characters that break a URL or need encoding in one: the password never goes in a URL.
PG_PASSWORD = "dev?pass@word%2F:#&x"


def docker(*args: str, timeout: float = 120, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def daemon_missing() -> str | None:
    if not shutil.which("docker"):
        return "no docker command on PATH"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["?"])[-1]
        return f"no Docker daemon reachable: {last}"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    reason = daemon_missing()
    if reason:
        pytest.skip(reason)
    base = subprocess.run([str(ROOT / "docker" / "make-base.sh")], capture_output=True, text=True,
                          timeout=BUILD_SECONDS, stdin=subprocess.DEVNULL)
    assert base.returncode == 0, f"docker/make-base.sh failed:\n{base.stdout}{base.stderr}"
    docker("build", "-q", "-t", IMAGE, str(ROOT), timeout=BUILD_SECONDS)
    return IMAGE


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def try_get(url: str) -> tuple[int, bytes] | None:
    try:
        return get(url)
    except OSError:
        return None


def healthy(base: str) -> dict[str, Any] | None:
    answer = try_get(base + "healthz")
    if answer is None or answer[0] != 200:
        return None
    health = json.loads(answer[1])
    return health if health["status"] == "ok" and health["last_scan"] else None


def feed_entries(base: str, count: int) -> list[dict[str, str]] | None:
    answer = try_get(base + "feed.atom")
    if answer is None or answer[0] != 200:
        return None
    entries = validate_atom(answer[1])
    return entries if len(entries) == count else None


@pytest.fixture(scope="module")
def expected(exe: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """The seeds' entries from the console script on this machine: what every container must serve."""
    monitor = Monitor(exe, write_config(tmp_path_factory.mktemp("local")))
    drop_seeds(monitor.drop)
    monitor("scan")
    entries = validate_atom(monitor.feed())
    assert entries
    return entries


@pytest.fixture
def container() -> Iterator[list[str]]:
    """Names to remove after the test, with their anonymous volumes."""
    names: list[str] = []
    yield names
    for name in names:
        docker("rm", "-f", "-v", name, check=False)


def run_detached(names: list[str], *args: str) -> str:
    name = f"monitor-test-{secrets.token_hex(4)}"
    names.append(name)
    docker("run", "-d", "--name", name, "--health-interval=1s", "--health-start-period=2s", *args)
    return name


def health_status(name: str) -> str:
    return docker("inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()


def test_docker_run_serves_the_feed_and_keeps_digests(image: str, expected: list[dict[str, str]],
                                                      tmp_path: Path, container: list[str]) -> None:
    drop = tmp_path / "drop"
    drop.mkdir(mode=0o755)
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    name = run_detached(container, "-p", f"127.0.0.1:{port}:8080", "-v", f"{drop}:/app/drop:ro", image)
    health = wait_for(lambda: healthy(base), 60, "/healthz of the container", step=0.5)
    assert health["store"]["ok"] and health["store"]["stories"] == 0
    # Dropped while it runs: picked up and served.
    drop_seeds(drop)
    entries = wait_for(lambda: feed_entries(base, len(expected)), 60, "the seeds on the feed", step=0.5)
    assert sorted(e["title"] for e in entries) == sorted(e["title"] for e in expected)
    assert all(e["link"].startswith("http://127.0.0.1:8080/stories/") for e in entries)
    page = get(base)
    assert page[0] == 200 and entries[0]["title"].encode()[:20] in page[1]
    wait_for(lambda: health_status(name) == "healthy", 30, "Docker's health check to pass", step=0.5)

    # No SMTP server configured in the image: the digest goes to the Maildir in the state volume.
    docker("exec", name, "monitor", "digest")
    mail = docker("exec", name, "sh", "-c", "cat /app/state/outbox/new/*").stdout
    assert "Subject: CSTO bulletins: " in mail and "To: " in mail
    assert healthy(base)


def test_healthcheck_follows_the_configured_port(image: str, tmp_path: Path, container: list[str]) -> None:
    config = tmp_path / "config"
    config.mkdir()
    text = (ROOT / "config" / "docker.toml").read_text().replace("port = 8080", "port = 9090")
    (config / "docker.toml").write_text(text)
    config.chmod(0o755)
    name = run_detached(container, "-v", f"{config}:/app/alt:ro", "-e", "MONITOR_CONFIG=/app/alt/docker.toml", image)
    wait_for(lambda: health_status(name) == "healthy", 60, "the health check on port 9090", step=0.5)


def test_image_holds_the_locked_environment_and_no_build_leftovers(image: str) -> None:
    listing = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                     "ls -A /app; echo --; find / -xdev \\( -name '*.egg-info' -o -name build -path '*/app/*' \\)"
                     " -print 2>/dev/null; echo --; pip freeze --all").stdout
    app, leftovers, freeze = listing.split("--\n")
    assert set(app.split()) == {"config", "docker", "drop", "state"}
    assert leftovers.strip() == ""
    pins = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines()
                if line and not line.startswith((" ", "#")))
    installed = dict(line.lower().replace("_", "-").split("==") for line in freeze.split() if "==" in line)
    for package, version in installed.items():
        if package not in ("pip", "monitor"):
            assert pins.get(package) == version, f"{package} {version} is not the locked version"
    assert {"psycopg", "sqlalchemy", "setuptools"} <= set(installed)
    assert "pytest" not in installed, "the test tools stay out of the image"


# -- the compose stack ---------------------------------------------------------------

def compose_command() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]):
            probe = subprocess.run([*command, "version"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
            if probe.returncode == 0:
                return command
    return None


def received(log: str) -> list[email.message.Message]:
    """The messages the SMTP stand-in printed (one repr'd bytes line each, after the log prefix)."""
    lines = [line.split("| ", 1)[-1] for line in log.splitlines()]
    found, current = [], None
    for line in lines:
        if "MESSAGE FOLLOWS" in line:
            current = []
        elif "END MESSAGE" in line and current is not None:
            found.append(email.message_from_bytes(b"\n".join(current)))
            current = None
        elif current is not None:
            current.append(ast.literal_eval(line))
    return found


def plain_text(message: email.message.Message) -> str:
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_compose_stack_with_postgres(image: str, expected: list[dict[str, str]], tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    busy = [p for p in (8080, 8081, 8082, 8025) if port_busy(p)]
    if busy:
        pytest.skip(f"the compose file publishes fixed ports and {busy} are taken on 127.0.0.1")
    for standin in ("postgres", "mailpit"):
        docker("build", "-q", "-t", f"monitor-test-{standin}:latest", str(STANDINS / standin), timeout=BUILD_SECONDS)
    # The compose file in a folder of its own, so its ./drop is not the checkout's.
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    drop = tmp_path / "drop"
    drop.mkdir(mode=0o755)
    project = f"monitortest{secrets.token_hex(3)}"
    compose = [*command, "-p", project, "-f", str(tmp_path / "docker-compose.yml"),
               "-f", str(STANDINS / "compose.override.yml"), "--profile", "postgres"]
    env = {**os.environ, "POSTGRES_PASSWORD": PG_PASSWORD}

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*compose, *args], capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"compose {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        return proc

    try:
        run("up", "-d")
        bases = {port: f"http://127.0.0.1:{port}/" for port in (8080, 8081, 8082)}
        for port, base in bases.items():
            wait_for(lambda base=base: healthy(base), 120, f"/healthz on {port}", step=0.5)
        drop_seeds(drop)
        served = {port: wait_for(lambda base=base: feed_entries(base, len(expected)), 90, f"the seeds on {port}",
                                 step=0.5)
                  for port, base in bases.items()}
        titles = sorted(e["title"] for e in expected)
        for port, entries in served.items():
            assert sorted(e["title"] for e in entries) == titles, port
            # Each instance links to the address it is published on.
            assert all(e["link"].startswith(f"{bases[port]}stories/") for e in entries), port
        # The two PostgreSQL instances share one store: the same stories with the same ids.
        assert sorted(e["id"] for e in served[8081]) == sorted(e["id"] for e in served[8082])
        for service in ("monitor", "monitor-pg-1"):
            run("exec", "-T", service, "monitor", "digest", timeout=60)
        mails = wait_for(lambda: len(m := received(run("logs", "--no-color", "mailpit").stdout)) >= 2 and m,
                         30, "both digests at the mailbox", step=0.5)
        # Each digest links to the instance that sent it.
        links = sorted(text.split("/stories/")[0].rsplit("http", 1)[1] for text in map(plain_text, mails))
        assert links == ["://127.0.0.1:8080", "://127.0.0.1:8081"]
        assert all(m["Subject"].startswith("CSTO bulletins: ") for m in mails)
    finally:
        subprocess.run([*compose, "down", "-v", "--remove-orphans", "-t", "15"], capture_output=True, timeout=180,
                       env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
