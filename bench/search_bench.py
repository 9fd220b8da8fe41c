"""Search and topics: indexing cost at ingest, and query times on a store of 1,000,000 stories.

    .venv/bin/python bench/search_bench.py                 # 1,000,000 stories (builds a store once, minutes)
    .venv/bin/python bench/search_bench.py --stories 100000 --ingest-files 500

* Ingest with the index vs without it: the same `monitor scan` of the same bulletins into
  fresh stores, in a subprocess each, the second with the index write (the one call in
  ingest._apply) replaced by a no-op; best of `--rounds`, alternating.
* Queries: a store of N synthetic stories (about 45 words each from a Zipf vocabulary,
  one in ten in Russian, inflected) is built with sqlite3 and indexed by the migration's
  own `reindex_all`; then `Storage.search` (the first page of 20, what /search runs) is
  timed for the typical queries, and the most common word of the corpus as the stress case.
* Topic feed vs main feed: `topics.topic_feed` (newest_matching(max_entries) + render) vs
  `Publisher.main_feed`.

Run from bench/run.py (`--only search`) as part of the table, or alone. Not part of the tests.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import hashlib
import json
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench import gen  # noqa: E402
from bench.rounds import alternating, remove_store  # noqa: E402

PYTHON = sys.executable
BATCH = 50_000
EN_COMMON = ("the", "of", "and", "in", "to", "on", "a", "with", "for", "was")
EN_WORDS = ("meeting", "meetings", "council", "staff", "joint", "exercises", "exercise", "security", "defence",
            "training", "delegation", "cooperation", "ministers", "session", "border", "forces", "agreement")
RU_COMMON = ("в", "и", "на", "по", "с", "о", "года")
RU_WORDS = ("заседание", "заседания", "заседании", "заседаний", "совет", "совета", "министров", "учения",
            "учений", "безопасности", "делегация", "делегации", "сотрудничество", "подготовки", "границы")
RARE_NAMES = ("Masadykov", "Ordabayev", "Serdyukov", "Сердюков", "Сердюкова")
# (label, query): the typical set; the stress case is added from the corpus.
QUERIES = [
    ("a rare name", "Masadykov"),
    ("a common word", "council"),
    ("a phrase", '"joint staff"'),
    ("an OR", "Serdyukov OR Сердюков"),
    ("a Russian word form", "заседание"),
    ("two words", "border delegation"),
    ("an exclusion", "training -exercises"),
]


# -- the big store -----------------------------------------------------------------------


def story_rows(stories: int, seed: int = 5) -> Iterator[tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]:
    """Batches of (stories rows, versions rows) of the synthetic corpus."""
    rng = random.Random(seed)
    vocab = gen._vocabulary(rng, 30_000)
    cumulative = list(_cumulative([1 / (rank + 10) for rank in range(len(vocab))]))  # Zipf-like
    epoch = dt.datetime(2020, 1, 1)
    for start in range(1, stories + 1, BATCH):
        story_batch, version_batch = [], []
        for i in range(start, min(start + BATCH, stories + 1)):
            text = _text(rng, vocab, cumulative, i)
            text_hash = hashlib.sha256(text.encode()).hexdigest()
            when = epoch + dt.timedelta(seconds=i)
            story_batch.append((i, f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, text_hash)}", when, when, text_hash))
            # headline and seq (migration 0005): a brief's opening words; the timeline is the ids
            version_batch.append((i, i, text_hash, "brief", None, text[:60], json.dumps([text], ensure_ascii=False),
                                  dt.date(2020, 1, 1), i, f"{i:08d}.txt", when, i))
        yield story_batch, version_batch


def build_postgres(url: str, stories: int) -> float:
    """The same corpus in a PostgreSQL database (empty, at `url`); the seconds indexing took."""
    import psycopg
    from sqlalchemy import make_url

    from monitor.storage import Storage
    from monitor.storage.search import reindex_all

    Storage.open(url).close()
    parts = make_url(url)
    with psycopg.connect(host=parts.host, port=parts.port, user=parts.username, password=parts.password,
                         dbname=parts.database) as conn, conn.cursor() as cur:
        for story_batch, version_batch in story_rows(stories):
            cur.executemany("INSERT INTO stories (id, uid, first_seen, updated, current_hash) "
                            "VALUES (%s, %s, %s, %s, %s)", story_batch)
            cur.executemany("INSERT INTO versions (id, story_id, text_hash, kind, title, headline, paragraphs, "
                            "published, key_mtime_ns, key_path, seen_at, seq) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", version_batch)
    storage = Storage.open(url)
    t0 = time.perf_counter()
    with storage.engine.begin() as sa_conn:
        reindex_all(sa_conn)
        sa_conn.exec_driver_sql("ANALYZE")
    seconds = time.perf_counter() - t0
    storage.close()
    return seconds


def build(db: Path, stories: int, seed: int = 5) -> float:
    """A SQLite store of `stories` stories with the monitor's schema, indexed; the seconds indexing took."""
    from monitor.storage import Storage
    from monitor.storage.search import reindex_all

    db.parent.mkdir(parents=True, exist_ok=True)
    Storage.open(f"sqlite:///{db}").close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    stamp = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DateTime on SQLite
    for story_batch, version_batch in story_rows(stories, seed):
        conn.executemany("INSERT INTO stories (id, uid, first_seen, updated, current_hash) VALUES (?, ?, ?, ?, ?)",
                         [(i, uid, a.strftime(stamp), b.strftime(stamp), h) for i, uid, a, b, h in story_batch])
        conn.executemany("INSERT INTO versions (id, story_id, text_hash, kind, title, headline, paragraphs, "
                         "published, key_mtime_ns, key_path, seen_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(*row[:7], row[7].isoformat(), row[8], row[9], row[10].strftime(stamp), row[11])
                          for row in version_batch])
    conn.execute("COMMIT")
    conn.close()
    storage = Storage.open(f"sqlite:///{db}")
    t0 = time.perf_counter()
    with storage.engine.begin() as sa_conn:
        reindex_all(sa_conn)
    seconds = time.perf_counter() - t0
    storage.close()
    return seconds


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def _text(rng: random.Random, vocab: list[str], cumulative: list[float], i: int) -> str:
    russian = i % 10 == 0
    common, words = (RU_COMMON, RU_WORDS) if russian else (EN_COMMON, EN_WORDS)
    top = cumulative[-1]
    picked = []
    for _ in range(45):
        r = rng.random()
        if r < 0.35:
            picked.append(common[int(rng.random() * len(common))])
        elif r < 0.45:
            picked.append(words[int(rng.random() * len(words))])
        else:
            picked.append(vocab[bisect.bisect(cumulative, rng.random() * top)])
    if i % 20_000 == 7:
        picked[int(rng.random() * len(picked))] = RARE_NAMES[(i // 20_000) % len(RARE_NAMES)]
    if not russian and i % 50 == 3:
        at = int(rng.random() * (len(picked) - 1))
        picked[at:at + 2] = ["joint", "staff"]
    return f"On 1 January 2020, {' '.join(picked)}."


def most_common_word(db: Path) -> str:
    """The most frequent indexed token (FTS5's own vocabulary table)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab USING fts5vocab(main, search_fts, row)")
        return conn.execute("SELECT term FROM temp.vocab ORDER BY doc DESC LIMIT 1").fetchone()[0]
    finally:
        conn.close()


# -- timing --------------------------------------------------------------------------------


def time_queries(url: str, runs: int, stress: str) -> dict[str, object]:
    """Per query: median and p95 ms of Storage.search (first page) and the count; the feed times."""
    from monitor import query, topics
    from monitor.config import Settings, TopicSettings
    from monitor.publish import Publisher
    from monitor.storage import Storage

    storage = Storage.open(url)
    out: dict[str, object] = {"stress_word": stress}
    cases = [*QUERIES, ("stress: the most common word", stress)]
    per_query = {}
    every: list[float] = []
    for label, text in cases:
        parsed = query.parse(text)
        storage.search(parsed)  # warm the cache pages for this query
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            results = storage.search(parsed)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        per_query[label] = {"query": text, "median_ms": statistics.median(times), "p95_ms": _p95(times),
                            "matches": f"{results.total}{'+' if results.capped else ''}"}
        if not label.startswith("stress"):
            every += times
    every.sort()
    out["queries"] = per_query
    out["typical"] = {"median_ms": statistics.median(every), "p95_ms": _p95(every)}
    settings = Settings(source="<defaults>")
    out["main_feed_ms"] = _best(runs, Publisher(settings, storage).main_feed)
    topic = TopicSettings(name="council", query="council")
    out["topic_feed_ms"] = _best(runs, lambda: topics.topic_feed(settings, storage, "topics/council.atom", topic))
    out["stories"] = storage.story_count()
    storage.close()
    return out


def _p95(sorted_times: list[float]) -> float:
    return sorted_times[min(len(sorted_times) - 1, round(0.95 * (len(sorted_times) - 1)))]


def _best(runs: int, fn: object) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t0) * 1000)
    return best


# -- ingest with and without the index -------------------------------------------------------------


def scan_seconds(config: Path, *, index: bool) -> tuple[float, float]:
    """One scan pass into a fresh store, in its own process (see `_scan` below): (wall, CPU) seconds."""
    done = subprocess.run([PYTHON, __file__, "_scan", str(config), "index" if index else "no-index"],
                          check=True, capture_output=True, text=True)
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def _scan(config: Path, index: bool) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    from monitor import prepare
    from monitor.config import load_settings
    from monitor.scan import scan_and_publish
    from monitor.storage import Storage, ingest

    if not index:
        ingest.index_versions = lambda *args: None  # type: ignore[assignment]
        # ...and the helper that prepares files ahead makes no stems either.
        prepare.helper_command = lambda: [sys.executable, "-c", "import monitor.prepare as p; "
                                          "p.index_text = lambda *args: ''; p.main()"]
    settings = load_settings(config)
    db = Path(settings.state.database_url.removeprefix("sqlite:///"))
    remove_store(db)
    storage = Storage.open(settings.state.database_url)
    t0, c0 = time.perf_counter(), time.process_time()
    scan_and_publish(settings, storage)
    # The CPU of the helper that prepares files ahead (monitor/prepare.py, reaped by the
    # scan) counts too: the stems are made there.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(time.perf_counter() - t0, time.process_time() - c0 + children.ru_utime + children.ru_stime)
    storage.close()


def ingest_overhead(work: Path, files: int, rounds: int) -> dict[str, Any]:
    folder = work / "ingest-index"
    (folder / "drop").mkdir(parents=True, exist_ok=True)
    gen.write(folder / "drop", files)
    config = folder / "monitor.toml"
    config.write_text(f'[drop]\nfolder = "drop"\nsettle_seconds = 0\n[state]\ndatabase_url = '
                      f'"sqlite:///{folder}/m.db"\n[feed]\npath = "feed.atom"\n[http]\nenabled = false\n',
                      encoding="utf-8")
    pairs = alternating(rounds, lambda: scan_seconds(config, index=True), lambda: scan_seconds(config, index=False))
    with_index, without = [w for w, _ in pairs], [o for _, o in pairs]
    # CPU time decides the ratio: on a shared machine the wall clock mostly measures the neighbours.
    return {"with_s": statistics.median(w for w, _ in with_index),
            "without_s": statistics.median(w for w, _ in without),
            "with_cpu_s": statistics.median(c for _, c in with_index),
            "without_cpu_s": statistics.median(c for _, c in without),
            "cpu_ratios": [w[1] / o[1] for w, o in zip(with_index, without, strict=True)],
            "wall_ratios": [w[0] / o[0] for w, o in zip(with_index, without, strict=True)],
            "files": files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=int, default=1_000_000)
    parser.add_argument("--ingest-files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40, help="timed runs per query")
    parser.add_argument("--store", type=Path, help="build (once) and keep the big store here")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--postgres", metavar="URL", help="instead: build and time the corpus in this empty database")
    args = parser.parse_args()
    if args.postgres:
        indexed = build_postgres(args.postgres, args.stories)
        out = time_queries(args.postgres, args.runs, "1")
        print(json.dumps({"index_seconds": indexed, **out}, indent=2, ensure_ascii=False))
        return
    work = Path(tempfile.mkdtemp(prefix="monitor-search-bench-"))
    try:
        print(json.dumps(run(work, args.stories, args.ingest_files, args.rounds, args.runs, args.store,
                             skip_ingest=args.skip_ingest), indent=2, ensure_ascii=False))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, stories: int, ingest_files: int, rounds: int, runs: int, store: Path | None = None, *,
        skip_ingest: bool = False) -> dict[str, object]:
    result: dict[str, object] = {}
    if not skip_ingest:
        result["ingest"] = ingest_overhead(work, ingest_files, rounds)
    db = store or work / "search.db"
    if not db.exists():
        t0 = time.perf_counter()
        result["index_seconds"] = build(db, stories)
        result["build_seconds"] = time.perf_counter() - t0
    result.update(time_queries(f"sqlite:///{db}", runs, most_common_word(db)))
    result["db_megabytes"] = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 1e6
    return result


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_scan":
        _scan(Path(sys.argv[2]), sys.argv[3] == "index")
    else:
        main()
