"""The floors the benchmarks are measured against, each run as its own fresh process.

    python bench/floors.py ingest FOLDER DB   read every file, insert its distinct
                                              paragraphs into SQLite with executemany
    python bench/floors.py scandir FOLDER     os.scandir + stat of every entry

Only the standard library is imported, so the interpreter's start-up is all the
overhead a floor has.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys


def ingest(folder: str, db: str) -> int:
    """The least work an ingest can do: read, split lines, insert new paragraphs.

    One transaction per file, like the monitor (a crash must leave whole files), with
    the same journal settings (WAL, synchronous NORMAL); a paragraph already stored is
    skipped by its primary key, like an exact repeat.
    """
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS paragraphs (hash BLOB PRIMARY KEY, text TEXT NOT NULL)")
    entries = sorted(os.scandir(folder), key=lambda e: (e.stat().st_mtime_ns, e.name))
    for entry in entries:
        with open(entry.path, "rb") as fh:
            text = fh.read().decode("utf-8-sig")
        lines = {line.strip() for line in text.splitlines()}
        rows = [(hashlib.sha256(line.encode()).digest(), line) for line in lines if line]
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO paragraphs (hash, text) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
    count = conn.execute("SELECT count(*) FROM paragraphs").fetchone()[0]
    conn.close()
    return count


def scandir(folder: str) -> int:
    count = 0
    with os.scandir(folder) as it:
        for entry in it:
            entry.stat(follow_symlinks=False)
            count += 1
    return count


if __name__ == "__main__":
    if sys.argv[1] == "ingest":
        print(ingest(sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "scandir":
        print(scandir(sys.argv[2]))
    else:
        sys.exit(f"unknown floor {sys.argv[1]!r}")
