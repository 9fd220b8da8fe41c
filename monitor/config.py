"""Typed, frozen settings built from a TOML file and the environment.

Every key has a default, so an empty file (or no file at all) is a working
configuration. Relative paths are resolved against the folder of the config file,
or against the working directory when the embedded defaults are used.

The sections are named tuples rather than frozen dataclasses: every command, `monitor
scan` over an unchanged folder first, makes them at start-up, and as dataclasses (with
`dataclasses` and the `inspect` it imports) they were about a fifth of that command's
instructions. A secret is left out of its section's repr, so it cannot reach a log line.
"""

from __future__ import annotations

import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, NamedTuple

from monitor.crontab import check_crontab
from monitor.errors import ConfigError

DEFAULT_CONFIG = Path("config/monitor.toml")
ENV_CONFIG = "MONITOR_CONFIG"
ENV_DATABASE_URL = "MONITOR_DATABASE_URL"
ENV_SMTP_PASSWORD = "MONITOR_SMTP_PASSWORD"
ENV_UNSUBSCRIBE_SECRET = "MONITOR_UNSUBSCRIBE_SECRET"
CADENCES = ("immediate", "daily", "weekly")
DEFAULT_SCHEDULES = {"daily": "0 8 * * *", "weekly": "0 8 * * 1"}


def _repr_without(section: Any, secret: str) -> str:
    shown = ", ".join(f"{key}={value!r}" for key, value in zip(section._fields, section, strict=True) if key != secret)
    return f"{type(section).__name__}({shown})"


class DropSettings(NamedTuple):
    folder: Path = Path("drop")
    settle_seconds: float = 5.0
    max_bytes: int = 10_000_000


class StateSettings(NamedTuple):
    database_url: str = "sqlite:///state/monitor.db"


class FeedSettings(NamedTuple):
    title: str = "Bulletins"
    # Left empty, it follows [http] host and port (see _default_base_url).
    base_url: str = ""
    path: Path = Path("state/feed.atom")
    max_entries: int = 100
    author: str = "monitor"
    hub: str = ""  # a WebSub hub: advertised in the feed and pinged after each change of it
    # Corrections as entries of the main feed too, for readers with one subscription.
    corrections_in_main: bool = False


class HttpSettings(NamedTuple):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080


class ScheduleSettings(NamedTuple):
    scan_seconds: float = 30.0
    misfire_grace_seconds: float = 60.0


class DigestSettings(NamedTuple):
    # On by default: without [smtp] host the digest goes to the Maildir under state/,
    # so a fresh install shows the whole path; no mail leaves the machine unconfigured.
    enabled: bool = True
    schedule: str = "0 8 * * *"
    timezone: str = "UTC"
    recipients: tuple[str, ...] = ()
    sender: str = "monitor@localhost"
    subject: str = "Bulletins"
    max_stories: int = 50
    outbox: Path = Path("state/outbox")
    retry_seconds: float = 300.0
    # Signs the one-click unsubscribe links; only ever from the environment.
    unsubscribe_secret: str = ""

    def __repr__(self) -> str:
        return _repr_without(self, "unsubscribe_secret")


class SmtpSettings(NamedTuple):
    host: str = ""
    port: int = 587
    security: str = "starttls"
    username: str = ""
    timeout: float = 30.0
    # Only ever from the environment; kept out of repr so it cannot reach a log line.
    password: str = ""

    def __repr__(self) -> str:
        return _repr_without(self, "password")


class SubscriberSettings(NamedTuple):
    """One `[[subscribers]]` entry: who gets what, through which channel, how often."""

    name: str
    email: str = ""
    # The name of the environment variable holding the Apprise URL (or NAME_FILE naming a file
    # that holds it): the URL carries tokens, so it never sits in the config file.
    apprise_env: str = ""
    topics: tuple[str, ...] = ()  # empty: everything
    cadence: str = "daily"
    schedule: str = ""  # a crontab line; empty: the cadence's default
    timezone: str = "UTC"
    apprise_url: str = ""  # resolved from the environment

    def __repr__(self) -> str:
        return _repr_without(self, "apprise_url")

    @property
    def channel(self) -> str:
        return "apprise" if self.apprise_env else "email"

    @property
    def crontab(self) -> str:
        return self.schedule or DEFAULT_SCHEDULES.get(self.cadence, "")


class TopicSettings(NamedTuple):
    """A named saved search, `[[topics]]` in the file (monitor/topics.py)."""

    name: str = ""
    query: str = ""


class Settings(NamedTuple):
    source: str  # the config file, or "<defaults>"
    drop: DropSettings = DropSettings()
    state: StateSettings = StateSettings()
    feed: FeedSettings = FeedSettings()
    http: HttpSettings = HttpSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    digest: DigestSettings = DigestSettings()
    smtp: SmtpSettings = SmtpSettings()
    subscribers: tuple[SubscriberSettings, ...] = ()
    topics: tuple[TopicSettings, ...] = ()


# Lists of tables (`[[name]]` in TOML): the class of one element. `[[subscribers]]` is a list
# too, built apart (_build_subscribers) because an entry is named by its name, not its number.
LISTS: dict[str, type] = {"topics": TopicSettings}
SECTIONS: dict[str, type] = {
    name: hint for name, hint in typing.get_type_hints(Settings).items()
    if name not in ("source", "subscribers") and name not in LISTS
}
TOPIC_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
NOT_IN_FILE = {("smtp", "password"), ("digest", "unsubscribe_secret"), ("subscribers", "apprise_url")}
# The backends whose SQL the store speaks (monitor.storage.sql); a URL naming another one
# is a config error, not a driver import error from deep inside SQLAlchemy.
DATABASES = ("sqlite", "postgresql")
CHOICES = {("smtp", "security"): ("starttls", "tls", "none"), ("subscribers", "cadence"): CADENCES}


def config_path(cli_value: str | None) -> Path | None:
    """The file to read: --config, else $MONITOR_CONFIG, else config/monitor.toml if present."""
    if cli_value:
        return Path(cli_value)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_settings(path: Path | None, *, require_drop: bool = True) -> Settings:
    """Read, validate and resolve the settings; raise ConfigError naming file and key."""
    if path is None:
        source, base, data = "<defaults>", Path.cwd(), {}
    else:
        source, base = str(path), path.resolve().parent
        data = _read_toml(path)
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name == "subscribers":
            continue
        if name in LISTS:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(source, f"[[{name}]]", "must be a list of tables ([[" + name + "]] sections)")
            continue
        if name not in SECTIONS:
            raise ConfigError(source, f"[{name}]", "unknown section")
        if not isinstance(value, dict):
            raise ConfigError(source, f"[{name}]", "must be a table")
    for name, cls in SECTIONS.items():
        sections[name] = _build_section(source, base, name, cls, data.get(name, {}))
    for name, cls in LISTS.items():
        sections[name] = tuple(_build_section(source, base, name, cls, raw, label=f"[[{name}]] #{i}")
                               for i, raw in enumerate(data.get(name, []), start=1))
    if not sections["feed"].base_url:
        sections["feed"] = sections["feed"]._replace(base_url=_default_base_url(sections["http"]))
    subscribers = _build_subscribers(source, base, data.get("subscribers", []))
    settings = Settings(source=source, subscribers=subscribers, **sections)
    settings = _apply_environment(settings)
    _check(settings, require_drop)
    return settings


def _default_base_url(http: HttpSettings) -> str:
    """Where the service listens, as a URL readers can use: a wildcard address (all
    interfaces) is reached on loopback from this machine."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(http.host, http.host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{http.port}/"


def base_url_port(url: str) -> int | None:
    """The port a base URL names, its scheme's default if none; None if it names none."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), "(file)", "no such file") from None
    except OSError as exc:
        raise ConfigError(str(path), "(file)", exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", str(exc)) from None


def _build_section(source: str, base: Path, name: str, cls: type[Any], raw: dict[str, Any],
                   label: str | None = None) -> Any:
    hints = typing.get_type_hints(cls)
    known = set(cls._fields)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{label or f'[{name}]'} {key}"
        secret = (name.split(" ", 1)[0], key) in NOT_IN_FILE
        if key not in known or secret:
            hint = " (set it in the environment)" if secret else ""
            raise ConfigError(source, where, f"unknown key{hint}")
        values[key] = _coerce(source, where, hints[key], value, base)
        allowed = CHOICES.get((name.split(" ", 1)[0], key))
        if allowed and values[key] not in allowed:
            raise ConfigError(source, where, f"must be one of {', '.join(allowed)}")
    for key, default in cls._field_defaults.items():
        if key not in values and hints[key] is Path:
            values[key] = base / default
    if name == "state":
        values["database_url"] = resolve_database_url(values.get("database_url", StateSettings().database_url), base)
    return cls(**values)


def _build_subscribers(source: str, base: Path, raw: Any) -> tuple[SubscriberSettings, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        raise ConfigError(source, "[[subscribers]]", "must be an array of tables")
    out = []
    for n, entry in enumerate(raw, 1):
        if not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise ConfigError(source, f"[[subscribers]] #{n} name", "missing: every subscriber needs a name")
        out.append(_build_section(source, base, f"subscribers {entry['name']}", SubscriberSettings, entry))
    return tuple(out)


def _coerce(source: str, where: str, hint: Any, value: Any, base: Path) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(source, where, f"expected {expected}, got {type(value).__name__} {value!r}")

    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        if value < 0:
            raise ConfigError(source, where, "must not be negative")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        if value < 0:
            raise ConfigError(source, where, "must not be negative")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise bad("a path string")
        return base / Path(value).expanduser()
    if typing.get_origin(hint) is tuple or isinstance(hint, types.GenericAlias):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return tuple(value)
    raise AssertionError(f"unsupported setting type {hint!r}")  # pragma: no cover


def resolve_database_url(url: str, base: Path) -> str:
    """Make a relative SQLite path absolute against `base`; other URLs pass through."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        rest = url[len(prefix):]
        return prefix + str((base / rest).resolve())
    return url


def _apply_environment(settings: Settings) -> Settings:
    url = os.environ.get(ENV_DATABASE_URL)
    if url:
        base = Path.cwd()
        state = settings.state._replace(database_url=resolve_database_url(url, base))
        settings = settings._replace(state=state)
    password = os.environ.get(ENV_SMTP_PASSWORD, "")
    if password:
        settings = settings._replace(smtp=settings.smtp._replace(password=password))
    secret = os.environ.get(ENV_UNSUBSCRIBE_SECRET, "")
    if secret:
        settings = settings._replace(digest=settings.digest._replace(unsubscribe_secret=secret))
    subscribers = tuple(_with_apprise_url(settings.source, s) for s in settings.subscribers)
    return settings._replace(subscribers=subscribers)


def _with_apprise_url(source: str, sub: SubscriberSettings) -> SubscriberSettings:
    """The Apprise URL from $NAME, else from the file $NAME_FILE names; the value is never shown."""
    if not sub.apprise_env:
        return sub
    where = f"[[subscribers]] {sub.name}: apprise_env"
    url = os.environ.get(sub.apprise_env, "").strip()
    file_var = f"{sub.apprise_env}_FILE"
    if not url and os.environ.get(file_var):
        try:
            url = Path(os.environ[file_var]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(source, where, f"cannot read the file ${file_var} names: {exc.strerror}") from None
    if not url:
        raise ConfigError(source, where, f"${sub.apprise_env} (or ${file_var}) is not set in the environment")
    if "://" not in url:
        raise ConfigError(source, where, f"${sub.apprise_env} does not hold an Apprise URL (scheme://...)")
    return sub._replace(apprise_url=url)


def _check(settings: Settings, require_drop: bool) -> None:
    """Every check, for every command: a config is valid or invalid whatever the command."""
    src = settings.source
    _check_database(settings)
    if require_drop and not settings.drop.folder.is_dir():
        raise ConfigError(src, "[drop] folder", f"no such folder: {settings.drop.folder}")
    if not settings.feed.base_url.startswith(("http://", "https://")):
        raise ConfigError(src, "[feed] base_url", "must be an http:// or https:// URL")
    if not settings.feed.base_url.endswith("/"):
        raise ConfigError(src, "[feed] base_url", "must end with '/'")
    if settings.feed.max_entries < 1:
        raise ConfigError(src, "[feed] max_entries", "must be at least 1")
    if not 0 < settings.http.port < 65536:
        raise ConfigError(src, "[http] port", "must be between 1 and 65535")
    if settings.schedule.scan_seconds <= 0:
        raise ConfigError(src, "[schedule] scan_seconds", "must be positive")
    if _unknown_zone(settings.digest.timezone):
        raise ConfigError(src, "[digest] timezone", f"unknown time zone {settings.digest.timezone!r}")
    try:
        check_crontab(settings.digest.schedule)
    except ValueError as exc:
        raise ConfigError(src, "[digest] schedule", f"not a crontab line: {exc}") from None
    if settings.drop.max_bytes < 1:
        raise ConfigError(src, "[drop] max_bytes", "must be at least 1")
    _check_outside_drop(settings)
    if settings.digest.max_stories < 1:
        raise ConfigError(src, "[digest] max_stories", "must be at least 1")
    if settings.feed.hub and not settings.feed.hub.startswith(("http://", "https://")):
        raise ConfigError(src, "[feed] hub", "must be an http:// or https:// URL")
    _check_topics(settings)
    _check_subscribers(settings)


def _unknown_zone(name: str) -> bool:
    """Whether `name` is not an IANA time zone. UTC, the default, is known without importing
    zoneinfo (about 2 ms of an idle `monitor scan`): tzdata, a dependency, always has it."""
    if name == "UTC":
        return False
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return True
    return False


def _check_subscribers(settings: Settings) -> None:
    seen: set[str] = set()
    topics = {t.name for t in settings.topics}
    for sub in settings.subscribers:
        where = f"[[subscribers]] {sub.name}"
        if sub.name in seen:
            raise ConfigError(settings.source, f"{where}: name", "two subscribers with this name")
        seen.add(sub.name)
        if bool(sub.email) == bool(sub.apprise_env):
            raise ConfigError(settings.source, where, "needs exactly one of email or apprise_env")
        if sub.email and ("@" not in sub.email or any(c.isspace() or c in "<>," for c in sub.email)):
            raise ConfigError(settings.source, f"{where}: email", f"not an address: {sub.email!r}")
        if _unknown_zone(sub.timezone):
            raise ConfigError(settings.source, f"{where}: timezone", f"unknown time zone {sub.timezone!r}")
        unknown = [name for name in sub.topics if name not in topics]
        if unknown:
            raise ConfigError(settings.source, f"{where}: topics",
                              f"unknown topic {unknown[0]!r} (not the name of any [[topics]] entry)")
        if sub.cadence == "immediate" and sub.schedule:
            raise ConfigError(settings.source, f"{where}: schedule", "not used with cadence \"immediate\"")


def _check_topics(settings: Settings) -> None:
    """A topic needs a name that is safe in a URL and a file name, and a query with words."""
    seen: set[str] = set()
    for i, topic in enumerate(settings.topics, start=1):
        where = f"[[topics]] #{i}"
        if not topic.name:
            raise ConfigError(settings.source, f"{where} name", "missing")
        if not TOPIC_NAME.fullmatch(topic.name):
            raise ConfigError(settings.source, f"{where} name", f"{topic.name!r}: use a-z, 0-9, '-' and '_' "
                              "(at most 64, starting with a letter or digit)")
        if topic.name in seen:
            raise ConfigError(settings.source, f"{where} name", f"{topic.name!r} is already a topic")
        seen.add(topic.name)
        from monitor.query import parse  # only with topics: the idle scan's imports stay as they were

        if parse(topic.query, stemmer=str).empty:
            problem = "missing" if not topic.query.strip() else f"{topic.query!r} has no word to search for"
            raise ConfigError(settings.source, f"{where} query", problem)


def _check_database(settings: Settings) -> None:
    url = settings.state.database_url
    where = ENV_DATABASE_URL if os.environ.get(ENV_DATABASE_URL) else "[state] database_url"
    scheme, sep, _ = url.partition("://")
    backend = scheme.partition("+")[0].lower()
    if not sep or backend not in DATABASES:
        shown = repr(backend) if sep else "(not a URL)"
        raise ConfigError(settings.source, where, f"unsupported database {shown}: use sqlite:///PATH "
                                                  "or postgresql+psycopg://USER@HOST/NAME")


def _check_outside_drop(settings: Settings) -> None:
    """What the monitor writes must not land in the drop folder: the folder is never
    modified, and the files would come back as bulletins on the next pass."""
    drop = settings.drop.folder.resolve()
    sqlite_prefix = "sqlite:///"
    url = settings.state.database_url
    written = {"[feed] path": settings.feed.path, "[digest] outbox": settings.digest.outbox}
    if url.startswith(sqlite_prefix) and not url.endswith(":memory:"):
        written["[state] database_url"] = Path(url.removeprefix(sqlite_prefix))
    for key, path in written.items():
        if path.resolve().is_relative_to(drop):
            raise ConfigError(settings.source, key, f"{path} is inside the drop folder {drop}")
