"""Hostile files and hostile text, through the real console script.

Every bad entry in the drop folder gets a clear log line and, where it applies, a
record that `monitor status` lists with its reason; the scan goes on and exits 0.
Markup, `]]>`, control characters and bidi overrides in a bulletin are text to show.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import Monitor, seed, validate_atom, write_config
from lxml import etree, html

from monitor import dropfolder
from monitor.config import load_settings
from monitor.models import ScanReport
from monitor.scan import _one
from monitor.storage import Storage

BRIEF = ("On 11 December 2024, the Joint Staff held consultations of representatives of the ministries on the "
         "organisation of joint training activities for the command and control bodies in the coming year.\n")


def _summary(stdout: str) -> dict[str, int]:
    parts = stdout.strip().splitlines()[-1].replace("stories ", "").replace("files ", "").split(", ")
    return {" ".join(p.split()[:-1]): int(p.split()[-1]) for p in parts}


def test_hostile_entries_are_logged_recorded_and_skipped(tmp_path: Path, exe: str) -> None:
    mon = Monitor(exe, write_config(tmp_path, drop={"max_bytes": 4000}))
    mon.drop_file("too big.txt", (BRIEF * 40).encode())
    outside = tmp_path / "outside.txt"
    outside.write_text("On 1 December 2024, a secret outside the drop folder must never be read by the monitor.\n")
    (mon.drop / "link.txt").symlink_to(outside)
    (mon.drop / "subfolder").mkdir()
    (mon.drop / "subfolder" / "inner.txt").write_text(BRIEF)
    mon.drop_file("bulletin with spaces.txt", seed("000"))
    mon.drop_file("бюллетень №4 — копия.txt", seed("004"))
    odd = os.fsencode(mon.drop) + b"/latin1 \xe9t\xe9.txt"  # a name that is not UTF-8 at all
    with open(odd, "wb") as fh:
        fh.write(BRIEF.encode())
    os.utime(odd, (time.time() - 60, time.time() - 60))
    for name in ("subfolder", "link.txt"):
        t = time.time() - 60
        os.utime(mon.drop / name, (t, t), follow_symlinks=False)

    done = mon("scan")
    counts = _summary(done.stdout)
    assert counts["rejected"] == 3, done.stdout
    assert counts["new"] == 7, done.stdout  # the seeds' 6 stories and the brief under the Latin-1 name
    log = done.stderr
    assert "too big.txt: rejected: too large: " in log and "max_bytes is 4000" in log
    assert "link.txt: rejected: symbolic link: not followed" in log
    assert "subfolder: rejected: a directory" in log
    assert "Traceback" not in log

    status = mon("status").stdout
    assert "files rejected: 3" in status
    assert "  too big.txt: too large" in status
    assert "  link.txt: symbolic link: not followed" in status
    assert "  subfolder: a directory" in status
    assert "spaces" not in status.split("files rejected")[1]

    feed = mon.feed()
    entries = validate_atom(feed)
    assert len(entries) == 7
    assert b"secret outside" not in feed  # the link was not followed
    assert b"inner.txt" not in feed and feed.count(b"joint training activities for the command") == 1

    again = mon("scan")  # nothing changed: no file is read again, rejected ones included
    assert _summary(again.stdout)["read"] == 0 and _summary(again.stdout)["rejected"] == 0


def test_a_file_that_vanishes_between_listing_and_reading(tmp_path: Path) -> None:
    config = write_config(tmp_path, drop={"settle_seconds": 0})
    settings = load_settings(config)
    path = tmp_path / "drop" / "gone.txt"
    path.write_text(BRIEF)
    os.utime(path, (time.time() - 60, time.time() - 60))
    storage = Storage.open(settings.state.database_url)
    try:
        [entry] = dropfolder.list_entries(settings.drop.folder)
        path.unlink()  # the producer took it back after the listing
        from monitor.scan import utcnow

        report, wrote = _one(settings, storage, entry, ScanReport(), utcnow)
        assert (report.skipped, report.rejected, report.files_read, wrote) == (1, 0, 0, False)
        assert storage.file_states() == {}  # no record: a later pass sees whether it comes back
    finally:
        storage.close()


def test_files_vanishing_during_a_real_scan(tmp_path: Path, exe: str) -> None:
    """Delete files while `monitor scan` works through them: it must finish cleanly."""
    mon = Monitor(exe, write_config(tmp_path))
    names = [f"{n:03d}.txt" for n in range(150)]
    for n, name in enumerate(names):
        mon.drop_file(name, f"On 11 December 2024, item {n} of many: {BRIEF}".encode(), age=300 - n)
    stop = threading.Event()

    def remove() -> None:
        for name in reversed(names[50:]):
            if stop.is_set():
                return
            (mon.drop / name).unlink(missing_ok=True)
            time.sleep(0.005)

    thread = threading.Thread(target=remove)
    proc = subprocess.Popen([exe, "--config", str(mon.config), "scan"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.6)  # into the scan: past start-up, while it reads
    thread.start()
    out, err = proc.communicate(timeout=120)
    stop.set()
    thread.join()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    counts = _summary(out)
    assert counts["rejected"] == 0
    remaining = len(os.listdir(mon.drop))
    again = _summary(mon("scan").stdout)
    assert again["read"] == 0 and again["new"] == 0  # every file that stayed was ingested in the first pass
    assert counts["read"] >= remaining >= 50


# Tests run as root, and root reads any file. Dropping the two capabilities that let it
# (setpriv, util-linux) makes the kernel apply the file's mode bits to the scan again.
UNPRIVILEGED = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_an_unreadable_file_is_rejected_with_its_reason(tmp_path: Path, exe: str) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to scan without root's right to read any file")
    mon = Monitor(exe, write_config(tmp_path))
    locked = mon.drop_file("locked.txt", BRIEF.encode())
    mon.drop_file("open.txt", seed("004"))
    os.chmod(locked, 0)
    if os.geteuid() != 0 and os.access(locked, os.R_OK):
        pytest.skip("this user can read a mode-000 file")
    probe = subprocess.run([*UNPRIVILEGED, "cat", str(locked)], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("dropping CAP_DAC_OVERRIDE did not take effect here")

    def scan() -> tuple[dict[str, int], str]:
        done = subprocess.run([*UNPRIVILEGED, exe, "--config", str(mon.config), "scan"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return _summary(done.stdout), done.stderr

    counts, log = scan()
    assert "locked.txt: rejected: permission denied" in log
    assert counts["rejected"] == 1 and counts["new"] == 5, counts
    assert "  locked.txt: permission denied" in mon("status").stdout

    # Still unreadable: recorded once, not rejected (nor logged) again at every pass.
    counts, log = scan()
    assert counts == _summary("files read 0, stories new 0, revised 0, unchanged 0, files skipped 0, rejected 0")
    assert "permission denied" not in log

    # Readable again (chmod changes neither size nor mtime): read at the next pass, no touch needed.
    os.chmod(locked, 0o644)
    counts, log = scan()
    assert counts["read"] == 1 and counts["new"] == 1 and counts["rejected"] == 0, counts
    assert "locked.txt" not in mon("status").stdout


HOSTILE = ("On 12 December 2024, the <script>alert('x')</script> committee & partners met; "
           "the minutes end with ]]> and a bell \x07 and \x1b[31mcolour\x1b[0m and a right-to-left "
           "\u202eoverride\u202c and isolate \u2066text\u2069 in the <b>final</b> report of the meeting.\n"
           "A title with <i>markup</i> & ]]> in it\n"
           "12.12.2024\n"
           "The body says <img src=x onerror=alert(1)> and &amp; and ]]> plainly, as text to show.\n")


def test_hostile_text_is_shown_as_text(monitor: Monitor) -> None:
    monitor.drop_file("hostile.txt", HOSTILE.encode())
    assert _summary(monitor("scan").stdout)["new"] == 2
    feed = monitor.feed()
    etree.fromstring(feed)  # well-formed in spite of ]]> and control characters
    entries = validate_atom(feed)
    by_title = {e["title"]: e for e in entries}
    article = by_title["A title with <i>markup</i> & ]]> in it"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in article["content"]  # escaped inside type="html"
    assert "&amp;amp;" in article["content"]
    brief = next(e for e in entries if "On 12 December" in e["content"])
    shown = html.fromstring(brief["content"]).text_content()
    assert "<script>alert('x')</script>" in shown and "]]>" in shown
    assert not any(c in shown for c in "\x07\x1b\u202e\u202c\u2066\u2069")
    for doc in (html.fromstring(e["content"]) for e in entries):
        assert not doc.xpath("//script|//img|//b|//i")  # no live markup once the feed is read


def test_hostile_text_in_the_page_and_the_digest(monitor: Monitor) -> None:
    try:
        from monitor import page
    except ImportError:
        pytest.skip("monitor.page is not part of this build")
    monitor.drop_file("hostile.txt", HOSTILE.encode())
    monitor("scan")
    settings = load_settings(monitor.config)
    storage = Storage.open(settings.state.database_url)
    links = page.Links(feed="feed.atom", corrections="corrections.atom")
    try:
        stories = storage.latest_stories(10)
        histories = [storage.history(s.uid) for s in stories]
    finally:
        storage.close()
    documents = [page.listing(settings.feed.title, stories, links)] + [
        page.history(settings.feed.title, story, versions, links) for story, versions in filter(None, histories)]
    for text in documents:
        doc = html.fromstring(text)
        assert not doc.xpath("//body//script|//body//img|//body//*[@onerror]")
        assert "\u202e" not in text and "\x07" not in text
    assert "<script>alert('x')</script>" in html.fromstring(documents[0]).text_content()

    digest = monitor("digest", "--dry-run", "--raw", check=False)  # the whole message, both parts
    if digest.returncode != 0 or not digest.stdout.strip():
        pytest.skip(f"no digest to inspect (exit {digest.returncode}): {digest.stderr.strip()[-300:]}")
    message = email.message_from_string(digest.stdout, policy=email.policy.default)
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None and "<script>alert('x')</script>" in plain.get_content()
    if rich is not None:
        doc = html.fromstring(rich.get_content())
        assert not doc.xpath("//script|//img|//*[@onerror]")
        assert "<script>alert('x')</script>" in doc.text_content()
