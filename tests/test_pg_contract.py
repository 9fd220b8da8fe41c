"""The end-to-end CLI contract on both stores, and PostgreSQL as a shared store.

The scenario is the public acceptance check (../shared/contract/check_seeds.py): the two
seeds, a re-encoded repeat, a one-word correction, an idle rescan. It runs through the
real console script against SQLite and against PostgreSQL, the URL coming from the
config file or from MONITOR_DATABASE_URL.
"""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest
from conftest import Monitor, seed, validate_atom, write_config
from pgserver import PASSWORD, free_port

MEC_TITLE = ("A meeting of the Working Group on Military-Economic Cooperation under the Chairman of the "
             "CSTO Interstate Commission on Military-Economic Cooperation was held on 17-18 April 2024")
PRESS_TITLE = ("The CSTO Secretariat hosted consultations of the heads of press services (information units) "
               "of the foreign ministries of the CSTO member states")
MEC_START = "The meeting was held in the city of Moscow"
PRESS_START = "On 10 December 2024, in the CSTO Secretariat"


def norm(s: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", s or ""))).strip()


def scan_and_read(mon: Monitor) -> list[dict[str, str]]:
    """Scan, then read the feed file the scan keeps current (`monitor feed` is checked last)."""
    mon("scan")
    return validate_atom((mon.folder / "feed.atom").read_bytes())


def one(entries: list[dict[str, str]], start: str) -> dict[str, str]:
    hits = [e for e in entries if start in norm(e["content"])]
    assert len(hits) == 1, f"{start[:40]!r} is in {len(hits)} entries"
    return hits[0]


def test_seed_contract(store_url: str, tmp_path: Path, exe: str) -> None:
    mon = Monitor(exe, write_config(tmp_path, database_url=store_url))
    seed0, seed4 = seed("000"), seed("004")

    mon.drop_file("first.txt", seed0)
    first = scan_and_read(mon)
    assert len(first) == 5  # 4 briefs, 1 article
    mec = one(first, MEC_START)
    assert norm(mec["title"]) == MEC_TITLE
    assert mec["published"][:10] == "2024-04-18"

    mon.drop_file("second.txt", seed4)
    second = scan_and_read(mon)
    assert len(second) == 6  # its 4 briefs are repeats
    press = one(second, PRESS_START)
    assert norm(press["title"]) == PRESS_TITLE
    assert press["published"][:10] == "2024-12-10"
    assert {e["id"] for e in first} <= {e["id"] for e in second}

    again = b"\xef\xbb\xbf" + seed0.decode("utf-8").replace("\n", "\r\n\r\n").encode("utf-8")
    mon.drop_file("again.txt", again)
    repeat = scan_and_read(mon)
    assert [(e["id"], e["updated"]) for e in repeat] == [(e["id"], e["updated"]) for e in second]

    fixed = seed4.decode("utf-8").replace("discussed in detail a wide range", "discussed at length a wide range")
    mon.drop_file("correction.txt", fixed.encode("utf-8"))
    corrected = scan_and_read(mon)
    assert len(corrected) == 6
    revised = one(corrected, PRESS_START)
    assert revised["id"] == press["id"]
    assert revised["updated"] > press["updated"]
    assert "discussed at length" in norm(revised["content"])

    idle = scan_and_read(mon)
    assert [(e["id"], e["updated"]) for e in idle] == [(e["id"], e["updated"]) for e in corrected]
    assert mon.feed() == (mon.folder / "feed.atom").read_bytes()


def test_environment_url_overrides_the_config(pg_url: str, tmp_path: Path, exe: str) -> None:
    # The config names a SQLite file; MONITOR_DATABASE_URL wins and the file is never created.
    mon = Monitor(exe, write_config(tmp_path), env={"MONITOR_DATABASE_URL": pg_url})
    mon.drop_file("first.txt", seed("000"))
    assert "stories new 5" in mon("scan").stdout
    assert "stories stored: 5" in mon("status").stdout
    assert not (tmp_path / "monitor.db").exists()
    # and the same database seen through a config that names it directly
    other = tmp_path / "other"
    other.mkdir()
    direct = Monitor(exe, write_config(other, database_url=pg_url))
    assert "stories stored: 5" in direct("status").stdout


def test_every_instance_serves_the_same_feed(pg_url: str, tmp_path: Path, exe: str) -> None:
    """Two instances (own config, own feed file) on one drop folder and one database."""
    drop = tmp_path / "shared-drop"
    drop.mkdir()
    instances = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        instances.append(Monitor(exe, write_config(folder, database_url=pg_url, drop={"folder": str(drop)})))
    a, b = instances
    a.drop = b.drop = drop
    a.drop_file("first.txt", seed("000"))
    a("scan")
    b.drop_file("second.txt", seed("004"))
    out = b("scan").stdout
    assert "stories new 1" in out  # b did not re-ingest what a had
    assert "files read 1" in out
    feed_a, feed_b = a.feed(), b.feed()
    assert feed_a == feed_b
    assert len(validate_atom(feed_a)) == 6
    # The feed file b wrote is current; a's is refreshed by a's next pass, which itself
    # finds nothing new, because the store changed after a wrote it.
    assert (b.folder / "feed.atom").read_bytes() == feed_b
    assert "stories new 0, revised 0" in a("scan").stdout
    assert (a.folder / "feed.atom").read_bytes() == feed_a


def test_db_upgrade_and_current(pg_url: str, tmp_path: Path, exe: str) -> None:
    from monitor.storage.migrate import head

    mon = Monitor(exe, write_config(tmp_path, database_url=pg_url))
    assert mon("db", "current").stdout.strip() == f"schema revision: None (newest: {head()})"
    assert mon("db", "upgrade").stdout.strip() == f"schema revision: {head()} (newest: {head()})"
    assert mon("db", "upgrade").stdout.strip() == f"schema revision: {head()} (newest: {head()})"


def test_instances_upgrading_at_once_do_not_collide(pg_url: str, tmp_path: Path, exe: str) -> None:
    from monitor.storage.migrate import head

    config = write_config(tmp_path, database_url=pg_url)
    procs = [subprocess.Popen([exe, "--config", str(config), "db", "upgrade"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for code, out, err in results:
        assert code == 0, err
        assert out.strip() == f"schema revision: {head()} (newest: {head()})"
    # exactly one of them applied the migrations
    applied = [err for _, _, err in results if "database schema upgraded from empty" in err]
    assert len(applied) == 1


@pytest.mark.parametrize("how", ["config", "environment"])
def test_unreachable_database_exits_3_with_one_masked_line(how: str, tmp_path: Path, exe: str) -> None:
    url = f"postgresql+psycopg://monitor:{PASSWORD}@127.0.0.1:{free_port()}/monitor"
    if how == "config":
        mon = Monitor(exe, write_config(tmp_path, database_url=url))
    else:
        mon = Monitor(exe, write_config(tmp_path), env={"MONITOR_DATABASE_URL": url})
    proc = mon("scan", check=False)
    assert proc.returncode == 3
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("monitor: store error: database unreachable:")
    assert "Traceback" not in proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout


def test_wrong_password_exits_3_and_never_shows_it(pg_url: str, tmp_path: Path, exe: str) -> None:
    wrong = pg_url.replace(PASSWORD, "not-the-" + PASSWORD)
    proc = Monitor(exe, write_config(tmp_path, database_url=wrong))("scan", check=False)
    assert proc.returncode == 3
    assert "password authentication failed" in proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1
