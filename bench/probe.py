"""In-process measurements for bench/run.py, each in a fresh interpreter.

    python bench/probe.py idle CONFIG   scans of an unchanged folder in a warm process, each
                                        beside a scandir+stat of it (ROUNDS of each, in
                                        turn), the start-up before them, files opened
    python bench/probe.py feed DB       the feeds (Publisher.feeds: main, corrections) on a store, best of 30
    python bench/probe.py rss CMD...    run CMD, report its peak RSS, and that of its processes
    python bench/probe.py fold DB       one fold of the store's recent index keys (Storage.fold_keys),
                                        its wall and CPU seconds and the versions it covered

The RSS of a command is read by this small, freshly started process: Linux counts the
memory a child had before exec, so a child forked straight from the big benchmark
runner would report the runner's size.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

ROUNDS = 15  # of the idle probe's scan and floor, in turn: each takes tens of milliseconds


def idle(config: Path) -> dict[str, float | int]:
    from monitor.config import load_settings
    from monitor.scan import scan
    from monitor.storage import Storage

    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    startup = time.perf_counter() - STARTED
    drop = str(settings.drop.folder)
    opened = []

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open" and str(args[0]).startswith(drop):
            opened.append(args[0])

    sys.addaudithook(hook)
    scan(settings, storage)  # warm: the modules a pass uses imported, the store's pages cached
    # Alternating, as every other row of bench/run.py: a single best of three of each, taken
    # one after the other, gave 2.75 in one full run where repeated probes gave 1.8.
    scans, floors = [], []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        report = scan(settings, storage)
        scans.append(time.perf_counter() - t0)
        assert report.files_read == 0, report
        t0 = time.perf_counter()
        with os.scandir(drop) as it:
            for entry in it:
                entry.stat(follow_symlinks=False)
        floors.append(time.perf_counter() - t0)
    storage.close()
    return {"startup_seconds": startup, "scan_seconds": scans, "scandir_seconds": floors, "opened": len(opened)}


def feed(db: Path) -> dict[str, float]:
    from monitor.config import Settings
    from monitor.publish import Publisher
    from monitor.storage import Storage

    storage = Storage.open(f"sqlite:///{db}")
    settings = Settings(source="<defaults>")
    publisher = Publisher(settings, storage)
    times = []
    for _ in range(30):
        t0 = time.perf_counter()
        feeds = publisher.feeds()
        times.append(time.perf_counter() - t0)
    assert feeds["/feed.atom"].count(b"<entry>") == min(settings.feed.max_entries, storage.story_count())
    assert feeds["/corrections.atom"].count(b"<entry>") > 0
    storage.close()
    return {"render_ms": min(times) * 1000}


def fold(db: Path) -> dict[str, float | int]:
    from monitor.storage import Storage

    storage = Storage.open(f"sqlite:///{db}")
    t0, cpu0 = time.perf_counter(), time.process_time()
    versions = storage.fold_keys(force=True)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    storage.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "versions": versions}


def rss(cmd: list[str]) -> dict[str, object]:
    import resource
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The command may start a process of its own (monitor/prepare.py's helper): what its
    # processes held at once, read from /proc every 20 ms while they run (ru_maxrss below
    # is only the largest single process), and each one's own peak.
    peaks: dict[int, int] = {}
    together = 0
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.communicate()))
    reader.start()
    while reader.is_alive():
        now = 0
        for pid in _tree(proc.pid):
            peaks[pid] = max(peaks.get(pid, 0), _status_kib(pid, "VmHWM"))
            now += _status_kib(pid, "VmRSS")
        together = max(together, now)
        reader.join(0.02)
    # The only child this process ever had: the largest RSS of all reaped descendants is its.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    stdout, stderr = out
    return {"seconds": time.perf_counter() - t0, "stdout": stdout, "stderr": stderr[-2000:],
            "returncode": proc.returncode, "maxrss_kib": usage.ru_maxrss,
            "tree_kib": max(together, usage.ru_maxrss), "peaks_kib": sorted(peaks.values(), reverse=True),
            "cpu_seconds": usage.ru_utime + usage.ru_stime}


def _tree(pid: int) -> list[int]:
    found = [pid]
    for parent in found:
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _status_kib(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the process's own peak so far) of a process, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "rss":
        print(json.dumps(rss(sys.argv[2:])))
    else:
        print(json.dumps({"idle": idle, "feed": feed, "fold": fold}[what](Path(sys.argv[2]))))
