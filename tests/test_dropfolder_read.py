"""dropfolder.read on real files: the whole file, a change under it refused, and memory
in proportion to the file rather than to the size limit."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from monitor import dropfolder
from monitor.config import DropSettings

LIMIT = DropSettings().max_bytes  # the default limit, which every file is read under


def _listed(path: Path) -> dropfolder.Entry:
    [entry] = [e for e in dropfolder.list_entries(path.parent) if e.where == str(path)]
    return entry


def test_a_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    data = "Бюллетень\n".encode() * 1000 + b"end"
    path.write_bytes(data)
    assert dropfolder.read(_listed(path), LIMIT) == data


def test_an_empty_file_is_read_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert dropfolder.read(_listed(path), LIMIT) == b""


@pytest.mark.parametrize("change", [b"appended", b"", b"x"], ids=["grown", "truncated", "one byte more"])
def test_a_file_changed_after_its_listing_is_refused(tmp_path: Path, change: bytes) -> None:
    path = tmp_path / "b.txt"
    path.write_bytes(b"first text\n" * 50)
    entry = _listed(path)
    stat = path.stat()
    if change:
        with path.open("ab") as fh:
            fh.write(change)
    else:
        path.write_bytes(b"short")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same mtime: only the size tells
    with pytest.raises(dropfolder.FileChanged):
        dropfolder.read(entry, LIMIT)


def test_reading_allocates_for_the_file_not_for_the_limit(tmp_path: Path) -> None:
    # read(limit + 1) allocated the whole limit (10 MB by default) for every file, then shrank it.
    path = tmp_path / "small.txt"
    path.write_bytes(b"a brief of a few words\n" * 200)  # 4.6 KB
    entry = _listed(path)
    tracemalloc.start()
    try:
        dropfolder.read(entry, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert LIMIT >= 10_000_000 and peak < 1_000_000, peak
