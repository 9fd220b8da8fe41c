"""Run every benchmark and print a Markdown table of figures against their floors.

    .venv/bin/python bench/run.py            # the full run (10,000 bulletins, 1,000,000 stories)
    .venv/bin/python bench/run.py --quick    # the same shape, scaled down (about a minute)

Every figure is a ratio against a floor measured in the same run on the same machine,
so the table says how close `monitor` gets to the least work the job needs, not how
fast this machine is. Not part of the unit tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench import bigstore, gen, http_bench, search_bench  # noqa: E402
from bench.rounds import alternating, remove_store, spread  # noqa: E402

PYTHON = sys.executable
MONITOR = str(Path(PYTHON).with_name("monitor"))
# Rounds of the whole-command comparisons (ingest vs its floor, growth's two stores, the
# index overhead).
ROUNDS = 5
IDLE_ROUNDS = 9  # the idle rescan takes a tenth of a second


@dataclass(frozen=True)
class Scale:
    ingest_files: int
    growth_stories: int
    growth_files: int
    rss_megabytes: int
    http: http_bench.Options


FULL = Scale(ingest_files=10_000, growth_stories=1_000_000, growth_files=1_000, rss_megabytes=200,
             http=http_bench.Options())
QUICK = Scale(ingest_files=1_000, growth_stories=100_000, growth_files=300, rss_megabytes=20,
              http=http_bench.Options(seconds=1.0, rounds=2))


@dataclass
class Row:
    name: str
    measured: str
    floor: str
    ratio: float | None  # None: no floor was measured (its tool is missing)
    target: float | None  # None: a figure that explains another, with no target of its own
    note: str = ""

    def markdown(self) -> str:
        if self.target is None or self.ratio is None:
            target = ok = "-"
        else:
            target, ok = f"< {self.target:g}", "yes" if self.ratio <= self.target else "**no**"
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        return f"| {self.name} | {self.measured} | {self.floor} | {ratio} | {target} | {ok} | {self.note} |"


def write_config(folder: Path, db: Path) -> Path:
    (folder / "drop").mkdir(parents=True, exist_ok=True)
    config = folder / "monitor.toml"
    config.write_text(
        f'[drop]\nfolder = "drop"\nsettle_seconds = 0\nmax_bytes = 50000000\n'
        f'[state]\ndatabase_url = "sqlite:///{db}"\n'
        f'[feed]\npath = "feed.atom"\nmax_entries = 100\n[http]\nenabled = false\n',
        encoding="utf-8",
    )
    return config


def _probe(cmd: list[str]) -> dict[str, Any]:
    """Run `cmd` through bench/probe.py rss: what it measured (a SystemExit if `cmd` failed)."""
    done = subprocess.run([PYTHON, str(HERE / "probe.py"), "rss", *cmd], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    if result["returncode"] != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {result['returncode']}:\n{result['stderr']}")
    return result


def run_rss(cmd: list[str]) -> tuple[float, str, int]:
    """(seconds, stdout, peak RSS in KiB) of `cmd`: the most its processes held at once (a
    long scan has a helper, monitor/prepare.py)."""
    result = _probe(cmd)
    return result["seconds"], result["stdout"], result["tree_kib"]


def scan(config: Path) -> tuple[float, str]:
    seconds, out, _ = run_rss([MONITOR, "--config", str(config), "--log-level", "WARNING", "scan"])
    return seconds, out.strip()


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of it and its children, stdout) of `cmd`, through bench/probe.py."""
    result = _probe(cmd)
    return result["seconds"], result["cpu_seconds"], result["stdout"]


def scan_cpu(config: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, summary) of one `monitor scan`."""
    seconds, cpu, out = timed([MONITOR, "--config", str(config), "--log-level", "WARNING", "scan"])
    return seconds, cpu, out.strip()


def new_stories(summary: str) -> int:
    return int(summary.split("stories new ")[1].split(",")[0])


def revised_stories(summary: str) -> int:
    return int(summary.split("revised ")[1].split(",")[0])


def copy_synced(source: Path, target: Path) -> None:
    """A copy of a store flushed to the disk, as bigstore.build flushes the original:
    otherwise the first checkpoint of the timed scan writes the whole copy back."""
    shutil.copyfile(source, target)
    with open(target, "rb+") as fh:
        os.fsync(fh.fileno())


# -- the benchmarks -------------------------------------------------------------


def bench_ingest(work: Path, scale: Scale) -> tuple[list[Row], Path]:
    folder = work / "ingest"
    config = write_config(folder, folder / "monitor.db")
    gen.write(folder / "drop", scale.ingest_files)

    def floor() -> tuple[float, float]:
        remove_store(work / "floor.db")
        return timed([PYTHON, str(HERE / "floors.py"), "ingest", str(folder / "drop"), str(work / "floor.db")])[:2]

    def ours() -> tuple[float, float, str]:
        remove_store(folder / "monitor.db")
        return scan_cpu(config)

    pairs = alternating(ROUNDS, ours, floor)
    ratios = [run[0] / floor_run[0] for run, floor_run in pairs]
    seconds, floor_seconds = median(run[0] for run, _ in pairs), median(f[0] for _, f in pairs)
    summaries = {run[2] for run, _ in pairs}
    assert len(summaries) == 1, summaries  # every round stores the same; the last one's is kept
    summary = summaries.pop()
    stories = new_stories(summary)
    row = Row(f"Ingest {scale.ingest_files:,} bulletins (`monitor scan`)",
              f"{stories / seconds:,.0f} stories/s ({seconds:.1f} s)",
              f"{stories / floor_seconds:,.0f} stories/s ({floor_seconds:.1f} s)",
              median(ratios), 3, f"{stories:,} stories; {summary.split(', ', 1)[1]}; median of {ROUNDS} "
              f"alternating rounds, ratio by round {spread(ratios)}")
    # The floor's wall time waits on the disk (a commit per file), which differs between
    # machines (3.9 s on one, 6.9 s on another whose floor took 4.1 s of CPU): the CPU time
    # of both sides, the scan's helper included, says how much work each does.
    cpu_ratios = [run[1] / floor_run[1] for run, floor_run in pairs]
    cpu, floor_cpu = median(run[1] for run, _ in pairs), median(f[1] for _, f in pairs)
    waits = median(f[0] - f[1] for _, f in pairs)
    work_row = Row(f"Ingest {scale.ingest_files:,} bulletins, CPU time (both processes)", f"{cpu:.1f} s CPU",
                   f"{floor_cpu:.1f} s CPU", median(cpu_ratios), None,
                   f"the same rounds as above; ratio by round {spread(cpu_ratios)}; the floor's wall time "
                   f"beyond its CPU time (waiting on the disk) {waits:.1f} s")
    # The same scan against the least its own store must write: where the time goes.
    _, out, _ = run_rss([PYTHON, str(HERE / "floors.py"), "replay", str(folder / "monitor.db"),
                         str(work / "replay.db")])
    replay_seconds = float(out)
    writes = Row(f"Ingest {scale.ingest_files:,} bulletins vs the store's own writes, replayed",
                 f"{seconds:.1f} s", f"{replay_seconds:.1f} s", seconds / replay_seconds, None,
                 "floor: the rows the scan wrote, one transaction and one executemany per table per file "
                 f"(bench/floors.py replay); that floor alone is {replay_seconds / floor_seconds:.1f}x "
                 "the paragraph floor above")
    return [row, work_row, writes], config


def bench_idle(work: Path, config: Path, scale: Scale) -> list[Row]:
    drop = str(config.parent / "drop")
    pairs = alternating(IDLE_ROUNDS, lambda: scan(config)[0],
                        lambda: run_rss([PYTHON, str(HERE / "floors.py"), "scandir", drop])[0])
    ratios = [whole / floor for whole, floor in pairs]
    whole, floor = median(w for w, _ in pairs), median(f for _, f in pairs)
    profiled = subprocess.run([MONITOR, "--config", str(config), "--log-level", "WARNING", "scan"], check=True,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    path = ("the full pass (SQLAlchemy imported)" if "sqlalchemy" in profiled.stderr
            else "answered from the ledger, SQLAlchemy not imported")
    probe = json.loads(subprocess.run([PYTHON, str(HERE / "probe.py"), "idle", str(config)], check=True,
                                      capture_output=True, text=True).stdout)
    inner = list(zip(probe["scan_seconds"], probe["scandir_seconds"], strict=True))
    inner_ratios = [scanned / floor for scanned, floor in inner]
    return [
        Row(f"Idle rescan of {scale.ingest_files:,} unchanged files, whole command",
            f"{whole * 1000:.0f} ms", f"{floor * 1000:.0f} ms", median(ratios), 2,
            f"fresh interpreter each, median of {IDLE_ROUNDS} alternating rounds, ratio by round {spread(ratios)}; "
            f"files opened: {probe['opened']}; {path}"),
        Row(f"Idle rescan of {scale.ingest_files:,} unchanged files, the scan itself",
            f"{median(s for s, _ in inner) * 1000:.0f} ms", f"{median(f for _, f in inner) * 1000:.0f} ms",
            median(inner_ratios), 2,
            "scan() through Storage in a warm process (the service's pass) vs scandir+stat in the same process; "
            f"median of {len(inner)} alternating rounds, ratio by round {spread(inner_ratios)}"),
    ]


def bench_growth(work: Path, scale: Scale) -> list[Row]:
    small_db, big_db = work / "growth" / "small.db", work / "growth" / "big.db"
    t0 = time.perf_counter()
    bigstore.build(big_db, scale.growth_stories)
    build_seconds = time.perf_counter() - t0
    bigstore.build(small_db, 1_000)
    # Alternating, as the whole-command comparisons: the two stores' best-of-30 renders a
    # minute apart took 9.5 ms and 9.5 ms in one run and 5.2 ms and 8.2 ms in the next.
    renders = alternating(ROUNDS, lambda: feed_render(big_db), lambda: feed_render(small_db))
    drop = work / "growth" / "new"
    gen.write(drop, scale.growth_files, seed=99, start_mtime=1_750_000_000.0)
    configs = {}
    for name in ("empty", "big"):
        folder = work / "growth" / name
        configs[name] = write_config(folder, folder / "store.db")
        shutil.rmtree(folder / "drop")
        shutil.copytree(drop, folder / "drop")

    def into(name: str) -> tuple[float, float, str]:
        db = configs[name].parent / "store.db"
        remove_store(db)
        if name == "big":
            copy_synced(big_db, db)  # a fresh copy each round (not timed)
        return scan_cpu(configs[name])

    pairs = alternating(ROUNDS, lambda: into("big"), lambda: into("empty"))
    assert len({new_stories(run[2]) for pair in pairs for run in pair}) == 1, pairs
    # The scan into the big store leaves its keys in the recent tier; in service a fold
    # (monitor/storage/keys.py) later moves them into the main tables. Its share is added:
    # one fold of the big store's recent tier (what it holds on average between two folds),
    # per version it covers, times the versions the scan wrote. The empty store's own fold
    # is not added: it is due only at FOLD_MIN_VERSIONS, into small tables.
    fold_db = work / "growth" / "fold.db"
    folds = []
    for _ in range(3):
        remove_store(fold_db)
        copy_synced(big_db, fold_db)
        folds.append(json.loads(subprocess.run([PYTHON, str(HERE / "probe.py"), "fold", str(fold_db)],
                                               check=True, capture_output=True, text=True).stdout))
    remove_store(fold_db)
    written = new_stories(pairs[0][0][2]) + revised_stories(pairs[0][0][2])
    share = written / folds[0]["versions"]
    fold_s, fold_cpu = median(f["seconds"] for f in folds) * share, median(f["cpu_seconds"] for f in folds) * share
    walls = [(big[0] + fold_s) / empty[0] for big, empty in pairs]
    cpus = [(big[1] + fold_cpu) / empty[1] for big, empty in pairs]
    big_s, empty_s = median(big[0] for big, _ in pairs), median(empty[0] for _, empty in pairs)
    big_cpu, empty_cpu = median(big[1] for big, _ in pairs), median(empty[1] for _, empty in pairs)
    scan_alone = median(big[0] / empty[0] for big, empty in pairs)
    # The CPU ratio beside the wall-clock one: what the big store costs in work, apart from
    # waiting for its pages (and for a shared machine).
    growth = Row(f"Growth: ingest {scale.growth_files:,} new bulletins, empty store vs "
                 f"{scale.growth_stories:,} stories (the fold's share included)",
                 f"{big_s + fold_s:.2f} s", f"{empty_s:.2f} s", median(walls), 1.5,
                 f"{new_stories(pairs[0][0][2]):,} new stories each; median of {ROUNDS} alternating rounds, "
                 f"ratio by round {spread(walls)}; the scan alone {big_s:.2f} s (ratio {scan_alone:.2f}), the "
                 f"fold's share {fold_s:.2f} s ({share:.3f} of a fold of {folds[0]['versions']:,} versions, "
                 f"median {median(f['seconds'] for f in folds):.2f} s of 3); CPU {big_cpu + fold_cpu:.2f} s vs "
                 f"{empty_cpu:.2f} s (ratio {median(cpus):.2f}, by round {spread(cpus)}); big store built in "
                 f"{build_seconds:.0f} s")
    render_ratios = [big / small for big, small in renders]
    render = Row(f"Feeds render (main and corrections), 1,000 vs {scale.growth_stories:,} stories stored",
                 f"{median(big for big, _ in renders):.1f} ms", f"{median(small for _, small in renders):.1f} ms",
                 median(render_ratios), 1.2,
                 "Publisher.feeds(): the main feed's 100 stories, their notes, the archive link, and the "
                 f"corrections feed ({bigstore.CORRECTIONS} revisions in each store); best of 30 in a warm "
                 f"process, median of {ROUNDS} alternating rounds, ratio by round {spread(render_ratios)}")
    return [growth, render]


def feed_render(db: Path) -> float:
    out = subprocess.run([PYTHON, str(HERE / "probe.py"), "feed", str(db)], check=True, capture_output=True,
                         text=True).stdout
    return float(json.loads(out)["render_ms"])


def bench_rss(work: Path, scale: Scale) -> Row:
    folder = work / "rss"
    config = write_config(folder, folder / "monitor.db")
    drop = folder / "drop"
    # Longer articles than the ingest set: fewer, bigger files, like real bulletins of a busy month.
    total, seed = 0, 1000
    while total < scale.rss_megabytes * 1_000_000:
        paths = gen.write(drop, 100, seed=seed, start_mtime=1_700_000_000.0 + seed * 1000,
                          paragraph_words=120, article_paragraphs=40, prefix=f"{seed}_")
        total += sum(p.stat().st_size for p in paths)
        seed += 1
    files = len(os.listdir(drop))
    _, _, floor_kib = run_rss([PYTHON, "-c", "import sqlalchemy, feedgen.feed, charset_normalizer; "
                                "import monitor.scan"])
    seconds, out, kib = run_rss([MONITOR, "--config", str(config), "--log-level", "WARNING", "scan"])
    return Row(f"Peak RSS ingesting a {total / 1e6:.0f} MB drop folder ({files:,} files)",
               f"{kib / 1024:.0f} MB", f"{floor_kib / 1024:.0f} MB", kib / 1024 / 150, 1,
               f"ratio is against the 150 MB budget; the scan and its helper process together (sampled); "
               f"floor = RSS of importing the modules alone; "
               f"took {seconds:.0f} s, {new_stories(out):,} stories")


def bench_search(work: Path, scale: Scale) -> list[Row]:
    """Indexing cost at ingest, search times on the big store, topic vs main feed (bench/search_bench.py)."""
    files = scale.ingest_files
    ing = search_bench.ingest_overhead(work / "search", files, rounds=ROUNDS)
    out = search_bench.run(work / "search", scale.growth_stories, files, 3, 40, skip_ingest=True)
    typical = out["typical"]
    queries = out["queries"]
    stress = queries["stress: the most common word"]
    names = ", ".join(f"{label} {q['median_ms']:.1f}" for label, q in queries.items() if not label.startswith("stress"))
    n = f"{scale.growth_stories:,}"
    return [
        Row(f"Ingest {files:,} bulletins with the search index vs without (CPU time)",
            f"{ing['with_cpu_s']:.2f} s", f"{ing['without_cpu_s']:.2f} s", median(ing["cpu_ratios"]), 1.2,
            f"median of {ROUNDS} alternating rounds, ratio by round {spread(ing['cpu_ratios'])}; wall "
            f"{ing['with_s']:.2f} s vs {ing['without_s']:.2f} s (ratio {median(ing['wall_ratios']):.2f}); "
            "a fresh process and store each"),
        Row(f"Search on {n} stories, typical queries, median", f"{typical['median_ms']:.1f} ms", "20 ms budget",
            typical["median_ms"] / 20, 1, f"first page of 20 (Storage.search); median ms: {names}"),
        Row(f"Search on {n} stories, typical queries, p95", f"{typical['p95_ms']:.1f} ms", "100 ms budget",
            typical["p95_ms"] / 100, 1, "the same runs"),
        Row(f"Search on {n} stories, stress: the most common word {stress['query']!r}",
            f"{stress['median_ms']:.1f} ms (p95 {stress['p95_ms']:.1f})", "20 ms budget", stress["median_ms"] / 20,
            None, f"{stress['matches']} matches; the newest {search_bench_candidates()} versions are ranked"),
        Row(f"Topic feed vs main feed render, {n} stories", f"{out['topic_feed_ms']:.1f} ms",
            f"{out['main_feed_ms']:.1f} ms", out["topic_feed_ms"] / out["main_feed_ms"], 1.5,
            "topics.topic_feed (newest_matching(max_entries=100) + render) vs Publisher.main_feed, best of 40"),
    ]


def bench_http(scale: Scale) -> tuple[list[Row], str]:
    """/feed.atom from `monitor run` against nginx on the same bytes (bench/http_bench.py).
    The ratio is nginx's requests/s over monitor's, so "at least 50 % of nginx" is < 2."""
    described, cases = http_bench.run(scale.http)
    rows = []
    for case in cases:
        ours, nginx = case.rps["monitor"], case.rps.get("nginx")
        measured = f"{ours:,.0f} requests/s"
        errors = f"p99 {case.p99_ms:.1f} ms, {case.errors} errors"
        # The slow clients' case shows the operations issue's guarantee holds under load; no target of its own.
        target = None if "slow" in case.name else 2.0
        if nginx is None:
            rows.append(Row(f"HTTP /feed.atom, {case.name}", measured, "nginx not installed", None, target,
                            f"comparison skipped (apt-get install nginx); {errors}"))
            continue
        shares = f"{min(case.ratios):.0%}–{max(case.ratios):.0%}"
        rows.append(Row(f"HTTP /feed.atom, {case.name}", measured, f"{nginx:,.0f} requests/s (nginx)", nginx / ours,
                        target, f"monitor at {ours / nginx:.0%} of nginx (rounds {shares}); {errors}"))
    return rows, described


def search_bench_candidates() -> str:
    from monitor.storage.search import CANDIDATES

    return f"{CANDIDATES:,}"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, {platform.system()} {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="scaled down, about a minute")
    parser.add_argument("--only", choices=["ingest", "growth", "rss", "search", "http"], action="append",
                        help="run only these (idle runs with ingest)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    scale = QUICK if args.quick else FULL
    only = set(args.only or ["ingest", "growth", "rss", "search", "http"])
    work = args.keep or Path(tempfile.mkdtemp(prefix="monitor-bench-"))
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    started = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []

    def done_with(before: set[Path]) -> None:
        # A section's stores (gigabytes for growth's) are deleted before the next one runs:
        # left in the page cache, they made the next section's writes cost more system time
        # (the search index's ratio was 1.27 after growth, 1.10 alone).
        if not args.keep:
            for path in set(work.iterdir()) - before:
                shutil.rmtree(path, ignore_errors=True)

    try:
        if "ingest" in only:
            ingest_rows, config = bench_ingest(work, scale)
            rows += ingest_rows
            rows += bench_idle(work, config, scale)
        if "growth" in only:
            before = set(work.iterdir())
            rows += bench_growth(work, scale)
            done_with(before)
        if "rss" in only:
            before = set(work.iterdir())
            rows.append(bench_rss(work, scale))
            done_with(before)
        if "search" in only:
            rows += bench_search(work, scale)
        if "http" in only:
            http_rows, described = bench_http(scale)
            rows += http_rows
            notes.append(f"HTTP: {described}.")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    command = "bench/run.py" + (" --quick" if args.quick else "")
    print(f"\n`.venv/bin/python {command}` on {machine()}; total {time.perf_counter() - started:.0f} s\n")
    print("| benchmark | monitor | floor | ratio | target | met | notes |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.markdown())
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
