"""Config: defaults, relative paths, the environment, and errors that name key and file (exit 2)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import write_config

from monitor.config import ENV_CONFIG, ENV_DATABASE_URL, config_path, load_settings
from monitor.errors import ConfigError


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run(exe: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in (ENV_CONFIG, ENV_DATABASE_URL)}
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**full_env, **(env or {})})


# -- load_settings -----------------------------------------------------------------


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    path = tmp_path / "monitor.toml"
    path.write_text("", encoding="utf-8")
    s = load_settings(path)
    assert s.drop.folder == tmp_path / "drop"
    assert s.drop.settle_seconds == 5
    assert s.state.database_url == f"sqlite:///{tmp_path}/state/monitor.db"
    assert s.feed.path == tmp_path / "state" / "feed.atom"
    assert s.feed.base_url == "http://127.0.0.1:8080/"
    assert s.feed.max_entries == 100
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)


def test_relative_paths_are_relative_to_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc"
    (conf / "in").mkdir(parents=True)
    path = conf / "m.toml"
    path.write_text('[drop]\nfolder = "in"\n[state]\ndatabase_url = "sqlite:///../var/m.db"\n'
                    '[feed]\npath = "out/feed.atom"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    s = load_settings(Path("etc/m.toml"))
    assert s.drop.folder.resolve() == conf / "in"
    assert s.feed.path.resolve() == conf / "out" / "feed.atom"
    assert s.state.database_url == f"sqlite:///{tmp_path}/var/m.db"


def test_absolute_and_non_sqlite_urls_pass_through(tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    path = tmp_path / "m.toml"
    path.write_text('[state]\ndatabase_url = "postgresql+psycopg://u@127.0.0.1:5/db"\n', encoding="utf-8")
    assert load_settings(path).state.database_url == "postgresql+psycopg://u@127.0.0.1:5/db"


@pytest.mark.parametrize(("body", "key", "words"), [
    ("[dorp]\nfolder = 'drop'\n", "[dorp]", "unknown section"),
    ("[drop]\nfoldr = 'drop'\n", "[drop] foldr", "unknown key"),
    ("[drop]\nsettle_seconds = 'five'\n", "[drop] settle_seconds", "expected a number"),
    ("[drop]\nmax_bytes = 1.5\n", "[drop] max_bytes", "expected an integer"),
    ("[drop]\nmax_bytes = true\n", "[drop] max_bytes", "expected an integer"),
    ("[drop]\nsettle_seconds = -1\n", "[drop] settle_seconds", "negative"),
    ("[feed]\nmax_entries = '100'\n", "[feed] max_entries", "expected an integer"),
    ("[feed]\nmax_entries = 0\n", "[feed] max_entries", "at least 1"),
    ("[feed]\nbase_url = 'ftp://x/'\n", "[feed] base_url", "http"),
    ("[feed]\nbase_url = 'http://x/feed'\n", "[feed] base_url", "end with '/'"),
    ("[http]\nenabled = 'yes'\n", "[http] enabled", "true or false"),
    ("[http]\nport = 70000\n", "[http] port", "between"),
    ("[smtp]\npassword = 'secret'\n", "[smtp] password", "environment"),
    ("drop = 'x'\n", "[drop]", "must be a table"),
    ("[drop\n", "(syntax)", ""),
    ("[digest]\nschedule = '61 8 * * *'\n", "[digest] schedule", "bad minute '61'"),
    ("[digest]\nschedule = '0 8 * * 1-9'\n", "[digest] schedule", "not a crontab line"),
    ("[digest]\nenabled = false\nschedule = 'daily'\n", "[digest] schedule", "expected 5 fields"),
    ("[state]\ndatabase_url = 'mysql://u:secret@db/x'\n", "[state] database_url", "unsupported database 'mysql'"),
    ("[state]\ndatabase_url = 'monitor.db'\n", "[state] database_url", "unsupported database (not a URL)"),
])
def test_bad_config_names_key_and_file(tmp_path: Path, body: str, key: str, words: str) -> None:
    (tmp_path / "drop").mkdir()
    path = tmp_path / "m.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert str(path) in message and key in message and words in message
    assert "\n" not in message
    assert "secret" not in message


@pytest.mark.parametrize(("body", "key"), [
    ('[feed]\npath = "drop/feed.atom"\n', "[feed] path"),
    ('[state]\ndatabase_url = "sqlite:///drop/monitor.db"\n', "[state] database_url"),
    ('[digest]\noutbox = "drop/outbox"\n', "[digest] outbox"),
    ('[drop]\nfolder = "."\n', "[feed] path"),  # the default state/ would be made inside it
])
def test_nothing_is_written_into_the_drop_folder(tmp_path: Path, body: str, key: str) -> None:
    (tmp_path / "drop").mkdir()
    path = tmp_path / "m.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match="inside the drop folder") as info:
        load_settings(path)
    assert key in str(info.value)


@pytest.mark.parametrize(("http", "base_url"), [
    ("", "http://127.0.0.1:8080/"),
    ("[http]\nport = 8093\n", "http://127.0.0.1:8093/"),
    ("[http]\nhost = '0.0.0.0'\nport = 9000\n", "http://127.0.0.1:9000/"),
    ("[http]\nhost = '::'\n", "http://[::1]:8080/"),
    ("[http]\nhost = 'feeds.example.org'\nport = 80\n", "http://feeds.example.org:80/"),
    ("[http]\nport = 8093\n[feed]\nbase_url = 'https://news.example.org/'\n", "https://news.example.org/"),
])
def test_base_url_left_unset_follows_http_host_and_port(tmp_path: Path, http: str, base_url: str) -> None:
    (tmp_path / "drop").mkdir()
    path = tmp_path / "m.toml"
    path.write_text(http, encoding="utf-8")
    assert load_settings(path).feed.base_url == base_url


def test_the_default_config_leaves_base_url_to_follow_http(tmp_path: Path) -> None:
    from conftest import ROOT

    settings = load_settings(ROOT / "config" / "monitor.toml", require_drop=False)
    assert settings.feed.base_url == f"http://{settings.http.host}:{settings.http.port}/"


def test_missing_drop_folder(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('[drop]\nfolder = "nowhere"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[drop\] folder"):
        load_settings(path)
    # callers that only inspect a config (the compose tests) may leave the folder unchecked
    assert load_settings(path, require_drop=False).drop.folder == tmp_path / "nowhere"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")


def test_config_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_CONFIG, raising=False)
    assert config_path(None) is None  # embedded defaults
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "monitor.toml").write_text("", encoding="utf-8")
    assert config_path(None) == Path("config/monitor.toml")
    monkeypatch.setenv(ENV_CONFIG, "/from/env.toml")
    assert config_path(None) == Path("/from/env.toml")
    assert config_path("cli.toml") == Path("cli.toml")


def test_database_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "drop").mkdir()
    path = tmp_path / "m.toml"
    path.write_text("", encoding="utf-8")
    monkeypatch.setenv(ENV_DATABASE_URL, "sqlite:////srv/other.db")
    assert load_settings(path).state.database_url == "sqlite:////srv/other.db"


def test_password_only_from_environment_and_never_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "drop").mkdir()
    path = tmp_path / "m.toml"
    path.write_text("", encoding="utf-8")
    monkeypatch.setenv("MONITOR_SMTP_PASSWORD", "hunter2-secret")
    s = load_settings(path)
    assert s.smtp.password == "hunter2-secret"
    assert "hunter2" not in repr(s)


# -- the console script ---------------------------------------------------------------


BAD_CONFIGS = [
    ("[dorp]\n", "[dorp]"),
    ("[drop]\nfolder = 'drop'\nsettle = 3\n", "[drop] settle"),
    ("[drop]\nfolder = 'drop'\n[feed]\nmax_entries = 'many'\n", "[feed] max_entries"),
    ("[drop]\nfolder = 'missing'\n", "[drop] folder"),
    ("[digest]\nschedule = '0 8 * *'\n", "[digest] schedule"),
    ("[state]\ndatabase_url = 'mysql://u@db/x'\n", "[state] database_url"),
]
# The same config is valid or invalid for every command: the checks live with the settings.
CLI_CASES = [(command, body, key) for command in ("scan", "status", "feed", "digest", "db")
             for body, key in BAD_CONFIGS]


@pytest.mark.parametrize(("command", "body", "key"), CLI_CASES)
def test_cli_config_error_is_one_line_exit_2_nothing_written(
        tmp_path: Path, exe: str, command: str, body: str, key: str) -> None:
    (tmp_path / "drop").mkdir()
    path = tmp_path / "m.toml"
    state = "" if "[state]" in body else '[state]\ndatabase_url = "sqlite:///state/m.db"\n'
    path.write_text(body + state, encoding="utf-8")
    before = listing(tmp_path)
    proc = run(exe, ["--config", str(path), command, *(["current"] if command == "db" else [])], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert key in lines[0] and str(path) in lines[0]
    assert proc.stdout == ""
    assert listing(tmp_path) == before  # no database, no state folder, no feed


def test_cli_missing_config_file_exit_2(tmp_path: Path, exe: str) -> None:
    proc = run(exe, ["--config", str(tmp_path / "nope.toml"), "scan"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.toml" in proc.stderr
    assert listing(tmp_path) == []


def test_cli_uses_monitor_config_without_flag_and_resolves_paths_from_its_folder(tmp_path: Path, exe: str) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "drop").mkdir()
    (conf / "m.toml").write_text('[drop]\nfolder = "drop"\nsettle_seconds = 0\n'
                                 '[state]\ndatabase_url = "sqlite:///state/m.db"\n'
                                 '[feed]\npath = "state/feed.atom"\n', encoding="utf-8")
    (conf / "drop" / "a.txt").write_bytes(b"On 5 May 2024, a brief about a meeting in Minsk.\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run(exe, ["scan"], cwd=elsewhere, env={ENV_CONFIG: str(conf / "m.toml")})
    assert proc.returncode == 0, proc.stderr
    assert "stories new 1" in proc.stdout
    assert (conf / "state" / "m.db").is_file()
    assert (conf / "state" / "feed.atom").is_file()
    assert listing(elsewhere) == []
    # --config wins over $MONITOR_CONFIG
    broken = tmp_path / "broken.toml"
    broken.write_text("[nope]\n", encoding="utf-8")
    proc = run(exe, ["--config", str(broken), "status"], cwd=elsewhere, env={ENV_CONFIG: str(conf / "m.toml")})
    assert proc.returncode == 2 and "[nope]" in proc.stderr


def test_cli_default_config_file_in_working_directory(tmp_path: Path, exe: str) -> None:
    config = write_config(tmp_path)
    (tmp_path / "config").mkdir()
    config.rename(tmp_path / "config" / "monitor.toml")
    assert run(exe, ["scan"], cwd=tmp_path).returncode == 0
    proc = run(exe, ["status"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "config: config/monitor.toml" in proc.stdout


# -- [[subscribers]] -------------------------------------------------------------------


def subscribers_config(tmp_path: Path, body: str) -> Path:
    (tmp_path / "drop").mkdir(exist_ok=True)
    path = tmp_path / "m.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_subscribers_are_read_with_their_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESK_URL", "ntfy://ntfy.example.org/s3cret-topic")
    s = load_settings(subscribers_config(tmp_path, (
        '[[topics]]\nname = "belarus"\nquery = "Minsk OR Belarus"\n'
        '[[subscribers]]\nname = "alice"\nemail = "alice@example.org"\ntopics = ["belarus"]\n'
        '[[subscribers]]\nname = "desk"\napprise_env = "DESK_URL"\ncadence = "weekly"\ntimezone = "Europe/Berlin"\n')))
    alice, desk = s.subscribers
    assert (alice.channel, alice.topics, alice.cadence, alice.crontab) == ("email", ("belarus",), "daily", "0 8 * * *")
    assert (desk.channel, desk.crontab, desk.apprise_url) == ("apprise", "0 8 * * 1", "ntfy://ntfy.example.org/s3cret-topic")
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(("body", "key", "problem"), [
    ('[[subscribers]]\nemail = "a@example.org"\n', "[[subscribers]] #1 name", "missing"),
    ('[[subscribers]]\nname = "a"\n', "[[subscribers]] a", "exactly one of email or apprise_env"),
    ('[[subscribers]]\nname = "a"\nemail = "a@example.org"\ncadence = "hourly"\n', "[subscribers a] cadence",
     "must be one of immediate, daily, weekly"),
    ('[[subscribers]]\nname = "a"\nemail = "not an address"\n', "[[subscribers]] a: email", "not an address"),
    ('[[subscribers]]\nname = "a"\nemail = "a@example.org"\n[[subscribers]]\nname = "a"\nemail = "b@example.org"\n',
     "[[subscribers]] a: name", "two subscribers"),
    ('[[subscribers]]\nname = "a"\nemail = "a@example.org"\ntimezone = "Mars/Olympus"\n',
     "[[subscribers]] a: timezone", "unknown time zone"),
    ('[[subscribers]]\nname = "a"\napprise_env = "NOT_SET_ANYWHERE"\n', "[[subscribers]] a: apprise_env",
     "$NOT_SET_ANYWHERE (or $NOT_SET_ANYWHERE_FILE) is not set"),
    ('[[subscribers]]\nname = "a"\napprise_url = "json://x/y"\n', "[subscribers a] apprise_url",
     "set it in the environment"),
    ('[[subscribers]]\nname = "a"\nemail = "a@example.org"\ntopics = ["Minsk"]\n', "[[subscribers]] a: topics",
     "unknown topic 'Minsk'"),
    ('[feed]\nhub = "ftp://hub"\n', "[feed] hub", "http"),
    ("subscribers = 3\n", "[[subscribers]]", "array of tables"),
    # Time zones other than UTC (known without asking zoneinfo) are looked up.
    ('[digest]\ntimezone = "Mars/Olympus"\n', "[digest] timezone", "unknown time zone 'Mars/Olympus'"),
])
def test_bad_subscribers_name_the_key(tmp_path: Path, body: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(subscribers_config(tmp_path, body))
    assert err.value.key == key and problem in err.value.problem


def test_a_bad_subscriber_schedule_is_exit_2(tmp_path: Path, exe: str) -> None:
    path = subscribers_config(tmp_path, '[[subscribers]]\nname = "a"\nemail = "a@example.org"\nschedule = "0 8 * *"\n')
    proc = run(exe, ["--config", str(path), "digest"], tmp_path)
    assert proc.returncode == 2 and "[[subscribers]] a: schedule" in proc.stderr and str(path) in proc.stderr
