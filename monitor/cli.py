"""The `monitor` command: argument parsing, exit codes and messages."""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from monitor import __version__
from monitor.config import Settings, config_path, load_settings
from monitor.errors import ConfigError, MonitorError, StorageError

if TYPE_CHECKING:
    from monitor.dropfolder import Entry
    from monitor.models import ScanReport
    from monitor.prepare import Ahead
    from monitor.storage import Storage

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_STORE = 3

log = logging.getLogger("monitor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor", description="Watch a drop folder of bulletins; publish an Atom feed."
    )
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $MONITOR_CONFIG, else config/monitor.toml)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper)
    parser.add_argument("--version", action="version", version=f"monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the service: scheduled scans, instant pickup, HTTP")
    scan = sub.add_parser("scan", help="one pass over the drop folder, then rewrite the feed file")
    scan.add_argument("--baseline", action="store_true",
                      help="record what is in the folder as already mailed (no digest for the archive)")
    sub.add_parser("feed", help="print the current Atom feed (UTF-8)")
    sub.add_parser("status", help="stories stored, last scan, rejected files, topics")
    search = sub.add_parser("search", help="search every story and version (words, \"phrases\", OR, -word)")
    search.add_argument("query", nargs="+", help="the query; several arguments are joined with spaces")
    search.add_argument("--page", type=int, default=1, help="which page of results (20 per page)")
    digest = sub.add_parser("digest", help="build and send the pending email digest now")
    digest.add_argument("--dry-run", action="store_true",
                        help="show what would be sent (recipients, the plain text), change nothing")
    digest.add_argument("--raw", action="store_true", help="with --dry-run: the whole raw messages")
    sub.add_parser("rebuild", help="decide the drop folder again in a new store, then swap it in")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "current"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _guard_stdout()
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help, --version (on stdout) or a usage error: argparse is done
            sys.stdout.flush()
            return exc.code if isinstance(exc.code, int) else EXIT_OK
    except OutputClosed:
        return _quiet_stdout(EXIT_OK)
    except OutputError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return _quiet_stdout(EXIT_FAILURE)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(config_path(args.config))
        code = COMMANDS[args.command](settings, args)
        sys.stdout.flush()  # a write error shows here, not at exit as a traceback
        return code
    except OutputClosed:
        # The reader stopped reading (`monitor feed | head -1`): what it wanted it has.
        return _quiet_stdout(EXIT_OK)
    except OutputError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return _quiet_stdout(EXIT_FAILURE)
    except ConfigError as exc:
        print(f"monitor: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as exc:
        print(f"monitor: store error: {exc}", file=sys.stderr)
        return EXIT_STORE
    except MonitorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # a file of the command's own (the feed file, the Maildir) cannot be written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"monitor: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


class OutputError(MonitorError):
    """Standard output cannot be written (`monitor feed > /dev/full`)."""


class OutputClosed(MonitorError):
    """The reader of standard output is gone (a pipe closed early): not a failure. Its own
    class, so that a broken pipe elsewhere (a socket) is not taken for it."""


class _Stdout(io.RawIOBase):
    """File descriptor 1, telling a failed write on it apart from any other OSError."""

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return 1

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            return os.write(1, data)
        except BrokenPipeError:
            raise OutputClosed("the reader of the output is gone") from None
        except OSError as exc:
            raise OutputError(f"cannot write the output: {exc.strerror or exc}") from None


def _guard_stdout() -> None:
    out = sys.stdout
    try:
        real = isinstance(out, io.TextIOWrapper) and out.fileno() == 1
    except (OSError, ValueError):  # not a file (captured by a test harness): nothing to guard
        real = False
    if real and not isinstance(getattr(out.buffer, "raw", out.buffer), _Stdout):
        out.flush()
        sys.stdout = io.TextIOWrapper(io.BufferedWriter(_Stdout()), encoding=out.encoding, errors=out.errors,
                                      line_buffering=bool(out.line_buffering))


def _quiet_stdout(code: int) -> int:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit finds
    nothing left to write to the closed pipe (and prints no 'Exception ignored')."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
    return code


def _storage(settings: Settings, *, create: bool = False) -> Storage:
    """The store; a command that only reads never creates one (a mistyped path is exit 3)."""
    # Imported here so `monitor --help` and config errors do not pay for SQLAlchemy.
    from monitor.storage import Storage

    return Storage.open(settings.state.database_url, create=create)


def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.models import ScanReport

    baseline = getattr(args, "baseline", False)
    idle = None if baseline else _idle_scan(settings)
    if isinstance(idle, ScanReport):
        print(idle.summary())
        return EXIT_OK
    # The helper that prepares files ahead starts on what this listing found, before
    # SQLAlchemy is imported and the store opened (half a second for a new store): the
    # pass waited that long for its first files. The pass lists the folder again with
    # the store; a file it reads that the helper was not given, it prepares itself.
    with _head_start(settings, idle) as ahead:
        from monitor.scan import scan_and_publish

        storage = _storage(settings, create=True)
        try:
            report = scan_and_publish(settings, storage, ahead=ahead)
            if baseline:
                _baseline(settings, storage)
        finally:
            storage.close()
    from monitor.notify import websub

    websub.drain()  # the hub's ping for a changed feed, retried before the command ends
    print(report.summary())
    return EXIT_OK


def _idle_scan(settings: Settings) -> ScanReport | list[Entry] | None:
    """The pass over an unchanged folder, answered without SQLAlchemy when the store allows
    (see monitor.storage.ledger); else what the ledger's listing found to read, for the
    full pass to do; None when there is no ledger to ask."""
    from monitor.idle import idle_pass
    from monitor.storage.ledger import Ledger

    ledger = Ledger.open(settings.state.database_url)
    if ledger is None:
        return None
    try:
        return idle_pass(settings, ledger)
    finally:
        ledger.close()


def _head_start(settings: Settings, listed: list[Entry] | None) -> AbstractContextManager[Ahead | None]:
    """The helper for the files `listed` (by the ledger), or for every file of the folder
    when the store is a SQLite file not made yet; else none here (another database, or a
    store to upgrade): the pass starts one itself, once it has listed with the store."""
    from monitor import dropfolder, prepare
    from monitor.idle import utcnow
    from monitor.storage.faults import sqlite_path

    if listed is None:
        path = sqlite_path(settings.state.database_url)
        if path is None or path.exists():
            return nullcontext()
        try:
            listed = dropfolder.list_entries(settings.drop.folder)  # nothing is recorded yet
        except MonitorError:  # the folder cannot be listed: the pass meets that and says so
            return nullcontext()
    return prepare.ahead_for(settings.drop, listed, utcnow())


def _summary_on_stdout(logger: str) -> None:
    """This command prints its own summary: the INFO lines the service logs for the same
    events would say it a second time (warnings and errors still go to the log)."""
    if not logging.getLogger(logger).isEnabledFor(logging.DEBUG):
        logging.getLogger(logger).setLevel(logging.WARNING)


def _baseline(settings: Settings, storage: Storage) -> None:
    try:
        from monitor.digest import baseline
    except ImportError:  # the digest is not part of this build
        return
    _summary_on_stdout("monitor.digest")
    count = baseline(settings, storage)
    print(f"baseline: {count} stories marked as already mailed")


def cmd_feed(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.publish import Publisher

    storage = _storage(settings)
    try:
        data = Publisher(settings, storage).main_feed()
    finally:
        storage.close()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return EXIT_OK


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.dropfolder import shown

    storage = _storage(settings)
    try:
        count = storage.story_count()
        last = storage.last_scan()
        rejected = storage.rejected_files()
        pending = storage.pending_messages()
        settling = _settling(settings, storage)
        problems = _delivery_problems(settings, storage)
        unsubscribed = storage.unsubscribed()
        counts = _topic_counts(settings, storage)
    finally:
        storage.close()
    print(f"config: {settings.source}")
    print(f"stories stored: {count}")
    if last is None:
        print("last scan: never")
    else:
        print(f"last scan: {last['finished'].isoformat()} (files read {last['files_read']}, "
              f"new {last['new']}, revised {last['revised']}, unchanged {last['unchanged']}, "
              f"skipped {last['skipped']}, rejected {last['rejected']})")
    print(f"files rejected: {len(rejected)}")
    for name, reason in rejected:
        print(f"  {shown(name)}: {reason}")
    print(f"files settling: {len(settling)}")
    for name, why in settling:
        print(f"  {shown(name)}: {why}")
    print(f"digests pending: {len(pending)}")
    for message in pending:
        print(f"  {message.channel} {message.message_key} to {message.subscriber}: {message.new_count} new, "
              f"{message.revised_count} revised, {message.attempts} attempts")
    print(f"delivery problems: {len(problems)}")
    for line in problems:
        print(f"  {line}")
    if unsubscribed:
        print(f"unsubscribed: {', '.join(sorted(unsubscribed))}")
    if counts:
        print(f"topics: {len(counts)}")
    for name, text, matching in counts:
        print(f"  {name}: {matching} {'story' if matching == 1 else 'stories'} ({text})")
    return EXIT_OK


def _topic_counts(settings: Settings, storage: Storage) -> list[tuple[str, str, int]]:
    if not settings.topics:
        return []
    from monitor.topics import topic_counts

    return topic_counts(settings, storage)


def cmd_search(settings: Settings, args: argparse.Namespace) -> int:
    from monitor import query
    from monitor.feed import story_url, xml_safe
    from monitor.topics import PER_PAGE

    text = " ".join(args.query)
    parsed = query.parse(text)
    if parsed.empty:
        print("monitor: search: the query has no word to look for", file=sys.stderr)
        return EXIT_OK
    page_no = max(1, args.page)
    storage = _storage(settings)
    try:
        results = storage.search(parsed, offset=(page_no - 1) * PER_PAGE, limit=PER_PAGE)
    finally:
        storage.close()
    more = "+" if results.capped else ""
    print(f"{results.total}{more} {'story matches' if results.total == 1 else 'stories match'} "
          f"{xml_safe(text)!r}" + (f" (page {page_no})" if page_no > 1 else ""))
    for n, hit in enumerate(results.hits, start=(page_no - 1) * PER_PAGE + 1):
        story = hit.story
        when = (story.published or story.updated.date()).isoformat()
        snip = "".join(f"[{t}]" if mark else t for t, mark in query.snippet(parsed, hit.matched))
        print(f"\n{n}. {xml_safe(story.title)} ({when})")
        print(f"   {story_url(settings.feed.base_url, story.uid)}")
        earlier = "" if hit.current else " (an earlier version)"
        print(f"   {xml_safe(snip).replace(chr(13), ' ').replace(chr(10), ' ')}{earlier}")
    return EXIT_OK


def _delivery_problems(settings: Settings, storage: Storage) -> list[str]:
    from monitor.digest import delivery_problems

    return delivery_problems(settings, storage)


def _settling(settings: Settings, storage: Storage) -> list[tuple[str, str]]:
    """Files in the drop folder that a pass leaves for later until they have been still for
    `settle_seconds`: modified too recently, or in the future (seen unchanged since when)."""
    import datetime as dt

    from monitor import dropfolder

    now = dt.datetime.now(dt.UTC)
    now_ns = int(now.timestamp() * 1e9)
    settle = settings.drop.settle_seconds
    seen = storage.observations()
    out = []
    for entry in dropfolder.to_read(settings.drop.folder, storage.file_states(), storage.rejected_files()):
        info = entry.info
        if entry.problem or dropfolder.is_settled(info, now_ns, settle):
            continue
        if not dropfolder.in_future(info, now_ns):
            ago = (now_ns - info.mtime_ns) / 1e9
            out.append((info.path, f"modified {ago:.1f}s ago, read once still for {settle:g}s"))
            continue
        mtime = dt.datetime.fromtimestamp(info.mtime_ns / 1e9, dt.UTC).isoformat(timespec="seconds")
        size, mtime_ns, since = seen.get(info.path, (None, None, None))
        if since is not None and (size, mtime_ns) == (info.size, info.mtime_ns):
            when = f"unchanged since {since.isoformat(timespec='seconds')}"
        else:
            when = "not seen by a pass yet"
        out.append((info.path, f"modified in the future ({mtime}; clock skew?), {when}, "
                               f"read once unchanged for {settle:g}s"))
    return out


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.storage import Storage
    from monitor.storage.migrate import head

    upgrade = args.action == "upgrade"
    storage = Storage.open(settings.state.database_url, upgrade=upgrade, create=upgrade)
    try:
        print(f"schema revision: {storage.revision()} (newest: {head()})")
    finally:
        storage.close()
    return EXIT_OK


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.service import run

    return run(settings)


def cmd_digest(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.digest import run_digest_command

    _summary_on_stdout("monitor.digest")
    return run_digest_command(settings, dry_run=args.dry_run, raw=args.raw)


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.rebuild import rebuild

    result = rebuild(settings)
    from monitor.notify import websub

    websub.drain()  # the hub's ping for the feeds written again
    print(result.scan.summary())
    for line in result.lines():
        print(line)
    return EXIT_OK


COMMANDS = {"scan": cmd_scan, "feed": cmd_feed, "status": cmd_status, "db": cmd_db,
            "run": cmd_run, "digest": cmd_digest, "rebuild": cmd_rebuild, "search": cmd_search}


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
