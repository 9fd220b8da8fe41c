"""End to end through the real console script (`monitor scan|feed|status`) on real SQLite files.

The last tests drive monitor.scan in-process with the real store, only to count what the
operating system is asked to open: an idle pass must not open a single bulletin.
"""

from __future__ import annotations

import builtins
import datetime as dt
import html
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, Monitor, drop_file, seed, validate_atom, write_config

from monitor.bulletin import find_date
from monitor.config import load_settings
from monitor.scan import scan_and_publish
from monitor.storage import Storage

SUMMARY = re.compile(r"files read (\d+), stories new (\d+), revised (\d+), unchanged (\d+), "
                     r"files skipped (\d+), rejected (\d+)")
FIELDS = ("read", "new", "revised", "unchanged", "skipped", "rejected")


def scan(monitor: Monitor, log: list[str] | None = None) -> dict[str, int]:
    """Run `monitor scan`; it must exit 0 and print one summary line. Its log goes to `log`."""
    proc = monitor("scan")
    if log is not None:
        log.append(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    m = SUMMARY.fullmatch(lines[0])
    assert m, lines[0]
    return dict(zip(FIELDS, map(int, m.groups()), strict=True))


def counts(read: int = 0, new: int = 0, revised: int = 0, unchanged: int = 0, skipped: int = 0,
           rejected: int = 0) -> dict[str, int]:
    return {"read": read, "new": new, "revised": revised, "unchanged": unchanged, "skipped": skipped,
            "rejected": rejected}


def feed_file(monitor: Monitor) -> Path:
    return monitor.folder / "feed.atom"


def entries(data: bytes) -> list[dict[str, Any]]:
    """Validated entries, each with its paragraphs as the reader will show them, and the
    correction note a revised story opens with ("" if none)."""
    found: list[dict[str, Any]] = []
    for entry in validate_atom(data):
        note = re.match(r'<p class="correction">.*?</p>', entry["content"], re.DOTALL)
        text = entry["content"][note.end():] if note else entry["content"]
        paragraphs = [html.unescape(p) for p in re.findall(r"<p>(.*?)</p>", text, re.DOTALL)]
        assert "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs) == text
        found.append({**entry, "paragraphs": paragraphs, "note": note.group(0) if note else ""})
    return found


def with_text(found: list[dict[str, Any]], start: str) -> dict[str, Any]:
    hits = [e for e in found if e["paragraphs"][0].startswith(start)]
    assert len(hits) == 1, f"{start!r} is in {len(hits)} entries"
    return hits[0]


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every name in the folder, hidden ones too, with size, mtime and mode."""
    result = {}
    for de in os.scandir(folder):
        st = de.stat(follow_symlinks=False)
        result[de.name] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return result


def status(monitor: Monitor) -> str:
    return monitor("status").stdout


# -- the seeds ---------------------------------------------------------------------


def test_seeds_hidden_and_temporary_files_and_idle_rescan(monitor: Monitor) -> None:
    # a producer's temporary files and hidden files carry news that must not be read
    monitor.drop_file(".hidden.txt", b"On 1 May 2024, a hidden brief that nobody should read.\n")
    monitor.drop_file("incoming.tmp", b"On 2 May 2024, a temporary brief that nobody should read.\n")
    monitor.drop_file("incoming.part", b"On 3 May 2024, a partial brief that nobody should read.\n")
    monitor.drop_file("000.txt", seed("000"), age=60)
    before = snapshot(monitor.drop)

    assert scan(monitor) == counts(read=1, new=5)
    first = entries(feed_file(monitor).read_bytes())
    assert len(first) == 5
    article = with_text(first, "The meeting was held in the city of Moscow")
    assert article["title"] == ("A meeting of the Working Group on Military-Economic Cooperation under the Chairman "
                                "of the CSTO Interstate Commission on Military-Economic Cooperation was held on "
                                "17-18 April 2024")
    assert article["published"].startswith("2024-04-18")
    assert len(article["paragraphs"]) == 6
    assert not any("18.04.2024" in p for p in article["paragraphs"])
    # two briefs that share their opening are two stories
    masadykov = with_text(first, "On December 11, 2024, Taalatbek Masadykov")
    afghanistan = with_text(first, "On December 11, 2024, the 40th meeting")
    assert masadykov["id"] != afghanistan["id"]
    assert masadykov["published"].startswith("2024-12-11")
    assert with_text(first, "On 20 December, a joint training")["published"].startswith("2024-12-20")
    assert not any("nobody should read" in p for e in first for p in e["paragraphs"])

    assert snapshot(monitor.drop) == before  # nothing moved, renamed, deleted or touched
    monitor.drop_file("004.txt", seed("004"), age=45)
    before = snapshot(monitor.drop)
    assert scan(monitor) == counts(read=1, new=1, unchanged=4)
    stored = feed_file(monitor).read_bytes()
    second = entries(stored)
    assert len(second) == 6
    press = with_text(second, "On 10 December 2024, in the CSTO Secretariat")
    assert press["title"] == ("The CSTO Secretariat hosted consultations of the heads of press services "
                              "(information units) of the foreign ministries of the CSTO member states")
    assert press["published"].startswith("2024-12-10")
    assert len(press["paragraphs"]) == 6
    assert second[0]["id"] == press["id"]  # newest updated first
    assert {(e["id"], e["updated"]) for e in first} <= {(e["id"], e["updated"]) for e in second}
    times = [dt.datetime.fromisoformat(e["updated"]) for e in second]
    assert times == sorted(times, reverse=True)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", e["updated"]) for e in second)
    assert any("." in e["updated"] for e in second)  # sub-second precision
    assert all(e["link"].startswith("http://127.0.0.1:8080/") for e in second)

    # `monitor feed` prints the same bytes as the feed file, every time
    printed = monitor.feed()
    assert printed == stored
    assert monitor.feed() == printed

    # an idle pass reads nothing and changes nothing
    mtime = feed_file(monitor).stat().st_mtime_ns
    assert scan(monitor) == counts()
    assert feed_file(monitor).stat().st_mtime_ns == mtime
    assert feed_file(monitor).read_bytes() == stored
    assert "stories stored: 6" in status(monitor)

    assert snapshot(monitor.drop) == before  # nothing moved, renamed, deleted or touched


# -- every sample in tests/data through the console script ---------------------------


def expected_samples() -> tuple[list[dict[str, Any]], dict[str, str]]:
    items, rejects = [], {}
    for want_file in sorted(DATA.glob("*.json")):
        want = json.loads(want_file.read_text(encoding="utf-8"))
        sample = next(p for p in DATA.iterdir() if p.stem == want_file.stem and p.suffix != ".json")
        if "rejected" in want:
            rejects[sample.name] = want["rejected"]
        else:
            items += [{**item, "file": sample.name} for item in want["items"]]
    return items, rejects


def test_samples_rejects_and_retries(tmp_path: Path, exe: str) -> None:
    monitor = Monitor(exe, write_config(tmp_path, drop={"max_bytes": 100_000}))
    for n, sample in enumerate(sorted(p for p in DATA.iterdir() if p.suffix in (".txt", ".bin"))):
        monitor.drop_file(sample.name, sample.read_bytes(), age=300 - n)
    monitor.drop_file("huge.txt", b"On 5 May 2024, a brief. " * 5000)  # 120 KB > max_bytes
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"On 6 May 2024, a brief outside the drop folder that a link points at.\n")
    (monitor.drop / "link.txt").symlink_to(outside)
    os.mkfifo(monitor.drop / "pipe.txt")  # opening a FIFO would block the scan
    (monitor.drop / "subfolder").mkdir()
    items, rejects = expected_samples()
    rejects |= {"huge.txt": "too large", "link.txt": "symbolic link", "pipe.txt": "not a regular file",
                "subfolder": "a directory"}
    before = snapshot(monitor.drop)

    log: list[str] = []
    got = scan(monitor, log)  # exit 0 although some files are bad, and the good ones are in
    assert got["rejected"] == len(rejects)
    for name, reason in rejects.items():
        assert re.search(rf"WARNING .*{re.escape(name)}: rejected: {re.escape(reason)}", log[0]), name
    assert got["read"] == len(before) - 4  # all but the link, the FIFO, the folder and the too large file
    found = entries(feed_file(monitor).read_bytes())

    distinct = {tuple(item["paragraphs"]) for item in items}
    assert len(found) == len(distinct) == got["new"]
    for item in items:
        hits = [e for e in found if e["paragraphs"] == item["paragraphs"]]
        assert len(hits) == 1, (item["file"], item["paragraphs"][0][:40])
        entry = hits[0]
        assert entry["published"][:10] == (item["published"] or ""), item["file"]
        if item["title"]:
            assert entry["title"] == item["title"]
        else:  # a brief: its opening words after its dateline, cut on a word boundary
            opening = entry["title"].removesuffix("\u2026")
            text = item["paragraphs"][0]
            at = text.find(opening[1:]) - 1
            assert at == 0 or (at > 0 and find_date(text[:at])), (opening, text)
            assert text.endswith(opening[1:]) or text[at + len(opening)] in " ,;:-"

    # markup in a bulletin is text: escaped in the feed, never an element
    hostile = with_text(found, "On 1 December 2024, <script>")
    assert "<script>alert(1)</script> & <b>bold</b> ]]> said" in hostile["paragraphs"][0]
    assert "&lt;script&gt;" in hostile["content"] and "<script" not in hostile["content"]
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f]", feed_file(monitor).read_text(encoding="utf-8"))

    text = status(monitor)
    assert f"files rejected: {len(rejects)}" in text
    for name, reason in rejects.items():
        assert re.search(rf"^  {re.escape(name)}: {re.escape(reason)}", text, re.MULTILINE), (name, text)

    # rejected files are not retried until they change; the rest is not read again either
    assert scan(monitor) == counts()
    # a rejected file that changes is read again
    monitor.drop_file("reject_empty.txt", b"On 7 May 2024, the empty file became a bulletin.\n", age=10)
    assert scan(monitor) == counts(read=1, new=1)
    text = status(monitor)
    assert f"files rejected: {len(rejects) - 1}" in text
    assert "reject_empty.txt" not in text
    assert snapshot(monitor.drop) == {**before, "reject_empty.txt": snapshot(monitor.drop)["reject_empty.txt"]}


def test_half_written_file_is_left_for_later_then_read_whole(tmp_path: Path, exe: str) -> None:
    monitor = Monitor(exe, write_config(tmp_path, feed={"max_entries": 4}))
    whole = seed("004")
    monitor.drop_file("copying.txt", whole[: len(whole) // 2], age=0)  # being copied right now
    assert scan(monitor) == counts(skipped=1)
    assert entries(feed_file(monitor).read_bytes()) == []
    assert "stories stored: 0" in status(monitor)

    monitor.drop_file("copying.txt", whole, age=30)  # the copy finished a while ago
    assert scan(monitor) == counts(read=1, new=5)
    found = entries(feed_file(monitor).read_bytes())
    assert len(found) == 4  # [feed] max_entries
    assert "stories stored: 5" in status(monitor)
    storage = Storage.open(load_settings(monitor.config).state.database_url)
    try:
        (press,) = [s for s in storage.stories_page(10) if s.paragraphs[0].startswith(
            "On 10 December 2024, in the CSTO Secretariat")]  # the last item, whole
    finally:
        storage.close()
    assert len(press.paragraphs) == 6
    assert press.paragraphs[-1].startswith("The press secretary, Assistant Chief of the CSTO Joint Staff")


def test_very_long_paragraph(monitor: Monitor) -> None:
    long = "On 5 May 2024, " + " ".join(f"word{n}" for n in range(30_000)) + "."
    assert len(long) > 200_000
    monitor.drop_file("long.txt", (long + "\nA second, short brief about something else entirely.\n").encode())
    assert scan(monitor) == counts(read=1, new=2)
    story = with_text(entries(feed_file(monitor).read_bytes()), "On 5 May 2024, word0 word1")
    assert story["paragraphs"] == [long]
    assert story["published"].startswith("2024-05-05")


# -- revisions ---------------------------------------------------------------------

BRIEF = ("On 5 March 2025, the CSTO Secretary General met the Ambassador of Serbia to discuss cooperation "
         "in humanitarian demining and the training of specialsts.")
OTHER = ("On 6 March 2025, the Council of Foreign Ministers adopted a statement on the situation on the "
         "external borders of the member states.")
RUSSIAN = "20 декабря 2024 года в Москве состоялось заседание Совета министров иностранных дел ОДКБ."
TITLE = "Meeting with the Ambasador of Serbia"  # a typo, fixed in a later bulletin
FIXED_TITLE = "Meeting with the Ambassador of Serbia"


def test_revisions_keep_the_id_and_move_updated_forward(monitor: Monitor) -> None:
    ages = iter(range(1000, 0, -10))  # every bulletin newer than the one before

    def step(name: str, data: bytes, want: dict[str, int], age: int | None = None) -> list[dict[str, Any]]:
        monitor.drop_file(name, data, age=next(ages) if age is None else age)
        assert scan(monitor) == want, name
        return entries(feed_file(monitor).read_bytes())

    def serbia(found: list[dict[str, Any]]) -> dict[str, Any]:
        return with_text(found, "On 5 March 2025, the CSTO Secretary General")

    monitor.drop_file("ru.txt", RUSSIAN.encode("cp1251"), age=next(ages))
    found = step("a.txt", f"{BRIEF}\n{OTHER}\n".encode(), counts(read=2, new=3))
    original = serbia(found)
    other_id = with_text(found, "On 6 March 2025")["id"]
    history = [original]

    def revised(found: list[dict[str, Any]], expect: list[str]) -> dict[str, Any]:
        entry = serbia(found)
        assert len(found) == 3
        assert entry["id"] == original["id"]
        assert entry["paragraphs"] == expect
        assert dt.datetime.fromisoformat(entry["updated"]) > dt.datetime.fromisoformat(history[-1]["updated"])
        assert found[0]["id"] == original["id"]  # the revised story is now the newest
        assert with_text(found, "On 6 March 2025")["id"] == other_id
        history.append(entry)
        return entry

    # a word changed
    worded = BRIEF.replace("to discuss", "to review")
    revised(step("b.txt", f"{worded}\n{OTHER}\n".encode(), counts(read=1, revised=1, unchanged=1)), [worded])
    # a typo fixed
    fixed = worded.replace("specialsts", "specialists")
    revised(step("c.txt", f"{fixed}\n".encode(), counts(read=1, revised=1)), [fixed])
    # the brief published in full: an article whose first body paragraph is the brief
    body = [fixed, "The parties agreed to hold consultations in Belgrade next month on the same subjects."]
    article = "\n".join([TITLE, "05.03.2025", *body]) + "\n"
    entry = revised(step("d.txt", article.encode(), counts(read=1, revised=1)), body)
    assert entry["title"] == TITLE
    assert entry["published"].startswith("2025-03-05")
    # a paragraph added
    body = [*body, "A memorandum on training deminers is to be signed in the autumn."]
    longer = "\n".join([TITLE, "05.03.2025", *body]) + "\n"
    revised(step("e.txt", longer.encode(), counts(read=1, revised=1)), body)
    # the title's typo fixed, the body as it was
    longer = longer.replace(TITLE, FIXED_TITLE)
    assert revised(step("f.txt", longer.encode(), counts(read=1, revised=1)), body)["title"] == FIXED_TITLE
    settled = feed_file(monitor).read_bytes()

    # a late copy of the first bulletin, under a new name and newer: old texts, no flip back
    found = step("a-late-copy.txt", f"{BRIEF}\n{OTHER}\n".encode(), counts(read=1, unchanged=2))
    assert (serbia(found)["paragraphs"], serbia(found)["title"]) == (body, FIXED_TITLE)
    # the same story again under another name, with a BOM, CRLF and blank lines; Russian in UTF-8
    again = "\ufeff" + "\r\n\r\n".join([FIXED_TITLE + " ", "05.03.2025", *body])
    monitor.drop_file("ru-utf8.txt", RUSSIAN.encode(), age=next(ages))
    step("e-again.txt", again.encode(), counts(read=2, unchanged=2))
    # a text never seen before, but from a bulletin older than all the others: kept out of the feed
    stale = BRIEF.replace("to discuss", "to consider")
    found = step("stale.txt", stale.encode(), counts(read=1, unchanged=1), age=5000)
    assert (serbia(found)["paragraphs"], serbia(found)["title"]) == (body, FIXED_TITLE)
    assert feed_file(monitor).read_bytes() == settled  # nothing changed, so not even re-rendered
    assert "stories stored: 3" in status(monitor)


def test_a_correction_without_a_full_date_keeps_the_storys_date(monitor: Monitor) -> None:
    """A year-less correction in a bulletin with no full date: the entry keeps `published`."""
    text = ("On 20 December, a joint training session was held between the duty shifts of the CSTO Crisis "
            "Response Center and the command posts of the member states.")
    monitor.drop_file("a.txt", f"{text}\nOn 19 December 2024, the CSTO Secretariat hosted consultations.\n".encode(),
                      age=100)
    assert scan(monitor) == counts(read=1, new=2)
    first = with_text(entries(feed_file(monitor).read_bytes()), "On 20 December")
    assert first["published"].startswith("2024-12-20")
    monitor.drop_file("b.txt", text.replace("joint training", "joint staff training").encode(), age=50)
    assert scan(monitor) == counts(read=1, revised=1)
    entry = with_text(entries(feed_file(monitor).read_bytes()), "On 20 December")
    assert entry["id"] == first["id"] and "staff training" in entry["paragraphs"][0]
    assert entry["published"].startswith("2024-12-20")


def test_formula_siblings_are_each_an_entry(monitor: Monitor) -> None:
    """Two bulletins of one formula, one slot apart, and a glued Russian date line."""
    meeting = ("On 21 January 2024, the CSTO Secretary General held a working meeting with the Ambassador of the "
               "Republic of {} to the Russian Federation, at which the parties discussed cooperation.")
    ru = ("Заседание Комитета секретарей советов безопасности\n18.01.202418 января 2024 года в Минске "
          "состоялось заседание Комитета секретарей советов безопасности.\nСовещание в Москве\n"
          "19.01.202419 января 2024 года в Москве прошло совещание руководителей пресс-служб.\n")
    monitor.drop_file("a.txt", meeting.format("Nicaragua").encode(), age=100)
    monitor.drop_file("b.txt", meeting.format("Cambodia").encode(), age=50)
    monitor.drop_file("c.txt", ru.encode("cp1251"), age=40)
    assert scan(monitor) == counts(read=3, new=4)
    found = entries(feed_file(monitor).read_bytes())
    assert {e["title"] for e in found} >= {"Заседание Комитета секретарей советов безопасности", "Совещание в Москве"}
    assert with_text(found, "18 января")["published"].startswith("2024-01-18")


# -- the store cannot be used: non-zero -------------------------------------------------


def test_unusable_store_exits_3(tmp_path: Path, exe: str) -> None:
    monitor = Monitor(exe, write_config(tmp_path, database_url="sqlite:////dev/null/cannot/monitor.db"))
    monitor.drop_file("a.txt", b"On 5 May 2024, a brief.\n")
    proc = monitor("scan", check=False)
    assert proc.returncode == 3
    assert proc.stderr.strip().startswith("monitor: store error:")
    assert "Traceback" not in proc.stderr


# -- in process: what an idle pass opens ------------------------------------------------


class OpenCounter:
    """Counts os.open / builtins.open calls on paths inside one folder."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = str(folder.resolve())
        self.paths: list[str] = []
        real_os_open, real_open = os.open, builtins.open

        def os_open(path: Any, *args: Any, **kwargs: Any) -> int:
            self._note(path)
            return real_os_open(path, *args, **kwargs)

        def open_(file: Any, *args: Any, **kwargs: Any) -> Any:
            self._note(file)
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)

    def _note(self, path: Any) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            full = os.path.abspath(os.fsdecode(path))
            if full.startswith(self.folder + os.sep):
                self.paths.append(os.path.basename(full))


def test_idle_pass_opens_no_bulletin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(write_config(tmp_path))
    drop = settings.drop.folder
    drop_file(drop, "000.txt", seed("000"), age=60)
    drop_file(drop, "004.txt", seed("004"), age=50)
    drop_file(drop, "empty.txt", b"", age=40)
    storage = Storage.open(settings.state.database_url)
    try:
        opened = OpenCounter(drop, monkeypatch)
        first = scan_and_publish(settings, storage)
        assert (first.files_read, first.new, first.unchanged, first.rejected) == (3, 6, 4, 1)
        assert sorted(set(opened.paths)) == ["000.txt", "004.txt", "empty.txt"]
        feed_before = (settings.feed.path.read_bytes(), settings.feed.path.stat().st_mtime_ns)

        opened.paths.clear()
        idle = scan_and_publish(settings, storage)
        assert opened.paths == []  # not one bulletin opened, the rejected one included
        assert (idle.files_read, idle.new, idle.revised, idle.unchanged, idle.rejected) == (0, 0, 0, 0, 0)
        assert (settings.feed.path.read_bytes(), settings.feed.path.stat().st_mtime_ns) == feed_before
        assert storage.story_count() == 6

        # touched (new mtime, same bytes): read again, but nothing about the stories changes
        t = time.time() - 20
        os.utime(drop / "000.txt", (t, t))
        touched = scan_and_publish(settings, storage)
        assert opened.paths == ["000.txt"]
        assert (touched.files_read, touched.new, touched.revised, touched.unchanged) == (1, 0, 0, 5)
        assert settings.feed.path.read_bytes() == feed_before[0]
    finally:
        storage.close()
