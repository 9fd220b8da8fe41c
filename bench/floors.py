"""The floors the benchmarks are measured against, each run as its own fresh process.

    python bench/floors.py ingest FOLDER DB   read every file, insert its distinct
                                              paragraphs into SQLite with executemany
    python bench/floors.py scandir FOLDER     os.scandir + stat of every entry
    python bench/floors.py replay SRC DST     write the rows a scan wrote to the store SRC
                                              into an empty copy of its schema, file by file

Only the standard library is imported, so the interpreter's start-up is all the
overhead a floor has.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import time


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


# In foreign key order; the key tables in both tiers (monitor/storage/keys.py), each row
# replayed into the tier it was read from.
KEY_TABLES = ("paragraph_keys", "band_keys", "recent_paragraph_keys", "recent_band_keys")
TABLES = ("stories", "versions", *KEY_TABLES, "files")


Rows = dict[str, dict[str, list[tuple[object, ...]]]]  # by file path, by table


def replay(src: str, dst: str) -> float:
    """The store's own writes: every row `monitor scan` wrote to SRC, written again file by
    file into DST (same schema, same journal settings), one executemany per table.

    No parsing, no decisions, no reads: what is left is what the schema's tables and
    indexes cost to write. A story's index keys go with the file that created it.
    Returns the seconds the writes took (reading SRC first is not counted).
    """
    ddl, per_file = stored_rows(src)
    return write_rows(ddl, per_file, dst)


def stored_rows(src: str) -> tuple[list[str], Rows]:
    """The schema of the store SRC (its search index left out) and its rows, by the file
    that wrote them, in scan order."""
    source = sqlite3.connect(src)
    ddl = [sql for (sql,) in source.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
        # FTS5's shadow tables are made by its CREATE VIRTUAL TABLE (the search index's rows
        # are not replayed: the floor is the story tables' writes, as before the index)
        "AND name NOT LIKE 'search_fts_%' ORDER BY type = 'index', rowid")]
    paths = [p for (p,) in source.execute("SELECT path FROM files ORDER BY mtime_ns, path")]
    per_file: Rows = {p: {} for p in paths}

    def add(table: str, path: str, row: tuple[object, ...]) -> None:
        per_file[path].setdefault(table, []).append(row)

    first_file = {}
    for row in source.execute("SELECT * FROM versions ORDER BY id"):
        add("versions", row[8], row)  # key_path: the file that carried this text first
        first_file.setdefault(row[1], row[8])
    for row in source.execute("SELECT * FROM stories ORDER BY id"):
        add("stories", first_file[row[0]], row)
    for table in KEY_TABLES:
        for row in source.execute(f"SELECT * FROM {table}"):
            add(table, first_file[row[1]], row)
    for row in source.execute("SELECT * FROM files"):
        add("files", row[1], row)
    source.close()
    return ddl, per_file


def write_rows(ddl: list[str], per_file: Rows, dst: str, group: int = 1, cache_kib: int | None = None) -> float:
    """Write `per_file` into a new store DST made with `ddl`, `group` files a transaction,
    with a page cache of `cache_kib` (None: SQLite's default); the seconds the writes took."""
    conn = sqlite3.connect(dst, isolation_level=None)
    if cache_kib is not None:
        conn.execute(f"PRAGMA cache_size = -{cache_kib}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 10000")  # as the monitor's store
    conn.execute("PRAGMA foreign_keys = ON")
    for sql in ddl:
        conn.execute(sql)
    paths = list(per_file)
    started = time.perf_counter()
    for at in range(0, len(paths), group):
        conn.execute("BEGIN IMMEDIATE")
        for path in paths[at:at + group]:
            for table in TABLES:
                rows = per_file[path].get(table)
                if not rows:
                    continue
                marks = ", ".join("?" * len(rows[0]))
                conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        conn.execute("COMMIT")
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


if __name__ == "__main__":
    if sys.argv[1] == "ingest":
        print(ingest(sys.argv[2], sys.argv[3]))
    elif sys.argv[1] == "scandir":
        print(scandir(sys.argv[2]))
    elif sys.argv[1] == "replay":
        print(replay(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown floor {sys.argv[1]!r}")
