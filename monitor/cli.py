"""The `monitor` command: argument parsing, exit codes and messages."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from monitor import __version__
from monitor.config import Settings, config_path, load_settings
from monitor.errors import ConfigError, MonitorError, StorageError

if TYPE_CHECKING:
    from monitor.models import ScanReport
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
    sub.add_parser("status", help="stories stored, last scan, rejected files")
    digest = sub.add_parser("digest", help="build and send the pending email digest now")
    digest.add_argument("--dry-run", action="store_true",
                        help="show what would be sent (recipients, the plain text), change nothing")
    digest.add_argument("--raw", action="store_true", help="with --dry-run: the whole raw messages")
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "current"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        path = config_path(args.config)
        settings = load_settings(path, require_drop=args.command in ("run", "scan"))
        return COMMANDS[args.command](settings, args)
    except ConfigError as exc:
        print(f"monitor: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StorageError as exc:
        print(f"monitor: store error: {exc}", file=sys.stderr)
        return EXIT_STORE
    except MonitorError as exc:
        print(f"monitor: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _storage(settings: Settings) -> Storage:
    # Imported here so `monitor --help` and config errors do not pay for SQLAlchemy.
    from monitor.storage import Storage

    return Storage.open(settings.state.database_url)


def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    baseline = getattr(args, "baseline", False)
    report = None if baseline else _idle_scan(settings)
    if report is not None:
        print(report.summary())
        return EXIT_OK
    from monitor.scan import scan_and_publish

    storage = _storage(settings)
    try:
        report = scan_and_publish(settings, storage)
        if baseline:
            _baseline(settings, storage)
    finally:
        storage.close()
    from monitor.notify import websub

    websub.drain()  # the hub's ping for a changed feed, retried before the command ends
    print(report.summary())
    return EXIT_OK


def _idle_scan(settings: Settings) -> ScanReport | None:
    """The pass over an unchanged folder, answered without SQLAlchemy when the store allows
    (see monitor.storage.ledger); None when the full pass must run."""
    from monitor.idle import idle_pass
    from monitor.storage.ledger import Ledger

    ledger = Ledger.open(settings.state.database_url)
    if ledger is None:
        return None
    try:
        return idle_pass(settings, ledger)
    finally:
        ledger.close()


def _baseline(settings: Settings, storage: Storage) -> None:
    try:
        from monitor.digest import baseline
    except ImportError:  # the digest is not part of this build
        return
    count = baseline(settings, storage)
    print(f"baseline: {count} stories marked as already mailed")


def cmd_feed(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.feed import render

    storage = _storage(settings)
    try:
        data = render(settings.feed, storage.latest_stories(settings.feed.max_entries))
    finally:
        storage.close()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return EXIT_OK


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    storage = _storage(settings)
    try:
        count = storage.story_count()
        last = storage.last_scan()
        rejected = storage.rejected_files()
        pending = storage.pending_messages()
        problems = _delivery_problems(settings, storage)
        unsubscribed = storage.unsubscribed()
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
        print(f"  {name}: {reason}")
    print(f"digests pending: {len(pending)}")
    for message in pending:
        print(f"  {message.channel} {message.message_key} to {message.subscriber}: {message.new_count} new, "
              f"{message.revised_count} revised, {message.attempts} attempts")
    print(f"delivery problems: {len(problems)}")
    for line in problems:
        print(f"  {line}")
    if unsubscribed:
        print(f"unsubscribed: {', '.join(sorted(unsubscribed))}")
    return EXIT_OK


def _delivery_problems(settings: Settings, storage: Storage) -> list[str]:
    from monitor.digest import delivery_problems

    return delivery_problems(settings, storage)


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.storage import Storage
    from monitor.storage.migrate import current, head

    storage = Storage.open(settings.state.database_url, upgrade=args.action == "upgrade")
    try:
        print(f"schema revision: {current(storage.engine)} (newest: {head()})")
    finally:
        storage.close()
    return EXIT_OK


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.service import run

    return run(settings)


def cmd_digest(settings: Settings, args: argparse.Namespace) -> int:
    from monitor.digest import run_digest_command

    return run_digest_command(settings, dry_run=args.dry_run, raw=args.raw)


COMMANDS = {"scan": cmd_scan, "feed": cmd_feed, "status": cmd_status, "db": cmd_db,
            "run": cmd_run, "digest": cmd_digest}


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
