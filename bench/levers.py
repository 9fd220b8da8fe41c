"""What a proposed change to the store's keys would buy and cost, measured before it is made.

    python bench/levers.py writes SRC [--group 500] [--rounds 3]
    python bench/levers.py bands [--files 340] [--seed 11]

`writes` replays the rows `monitor scan` wrote to the SQLite store SRC (bench/floors.py
replay), `--group` files a transaction and with the page cache of the scan's store, in turn: as written; without
band keys; with seven of a story's band-key rows at most (what six bands and the event-date
key would store); with text hashes cut to 16 characters. Each variant's seconds, by round.

`bands` scores MinHash band layouts on the labelled identity corpus (bench/identity_gen.py):
the share of each revision category's consecutive versions that share a band key (the
band keys alone, without the paragraph and date keys that find many of the rest), and how
many pairs of different stories share one (candidates that verification then rejects).
The identity benchmark (bench/identity_run.py) scores the whole decision; this isolates
what the band keys contribute to it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import floors  # noqa: E402

from monitor.storage.ledger import CACHE_KIB  # noqa: E402  (the store's page cache, as the scan has it)

LAYOUTS = ((10, 4), (8, 3), (6, 3), (6, 4), (5, 3))  # (bands, rows); the first is monitor's
# Keys held by more stories than this are crowded: the candidate query gives them no weight
# (monitor.storage.ingest.KEY_ROWS), so they make no candidates.
CROWDED = 200


# Band keys are in both tiers of the key tables (monitor/storage/keys.py).
BAND_TABLES = ("band_keys", "recent_band_keys")


def _without_band_keys(rows: floors.Rows) -> floors.Rows:
    return {path: {t: r for t, r in tables.items() if t not in BAND_TABLES} for path, tables in rows.items()}


def _seven_band_keys(rows: floors.Rows) -> floors.Rows:
    kept: Counter[object] = Counter()
    out: floors.Rows = {}
    for path, tables in rows.items():
        out[path] = dict(tables)
        for table in BAND_TABLES:
            keys = []
            for row in tables.get(table, []):
                kept[row[1]] += 1
                if kept[row[1]] <= 7:
                    keys.append(row)
            out[path][table] = keys
    return out


def _short_hashes(rows: floors.Rows) -> floors.Rows:
    # versions.text_hash is column 2, stories.current_hash column 4 (monitor/storage/schema.py)
    def cut(row: tuple[object, ...], at: int) -> tuple[object, ...]:
        return (*row[:at], str(row[at])[:16], *row[at + 1:])

    out: floors.Rows = {}
    for path, tables in rows.items():
        out[path] = dict(tables)
        out[path]["versions"] = [cut(r, 2) for r in tables.get("versions", [])]
        out[path]["stories"] = [cut(r, 4) for r in tables.get("stories", [])]
    return out


VARIANTS: dict[str, Callable[[floors.Rows], floors.Rows]] = {
    "as written": lambda rows: rows,
    "without band keys": _without_band_keys,
    "seven band keys a story at most": _seven_band_keys,
    "text hashes of 16 characters": _short_hashes,
}


def writes(src: str, group: int, rounds: int) -> None:
    ddl, rows = floors.stored_rows(src)
    variants = {name: make(rows) for name, make in VARIANTS.items()}
    seconds: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as work:
        for n in range(rounds):
            for v, (name, variant) in enumerate(variants.items()):
                seconds[name].append(floors.write_rows(ddl, variant, os.path.join(work, f"{n}-{v}.db"), group,
                                                       CACHE_KIB))
    for name, taken in seconds.items():
        keys = sum(len(t.get(table, [])) for t in variants[name].values() for table in BAND_TABLES)
        print(f"{name}: {', '.join(f'{s:.2f}' for s in taken)} s ({keys:,} band-key rows; {group} files a transaction)")


def bands(files: int, seed: int) -> None:
    from monitor import identity
    from monitor.models import Item

    with tempfile.TemporaryDirectory() as work:
        subprocess.run([sys.executable, str(HERE / "identity_gen.py"), work, "--files", str(files),
                        "--seed", str(seed)], check=True, capture_output=True)
        stories = json.loads((Path(work) / "truth.json").read_text(encoding="utf-8"))["stories"]
    for layout in LAYOUTS:
        identity.BANDS, identity.ROWS = layout  # read at each call of identity._band_keys
        found: Counter[str] = Counter()
        total: Counter[str] = Counter()
        holders: defaultdict[int, set[int]] = defaultdict(set)
        for story in stories:
            keys = [set(identity.fingerprint(Item(kind=v["kind"], paragraphs=tuple(v["paragraphs"]), title=v["title"],
                                                  published=None)).band_keys) for v in story["versions"]]
            for key in set().union(*keys):
                holders[key].add(story["sid"])
            if story["category"].startswith("rev-"):
                for a, b in itertools.pairwise(keys):
                    total[story["category"]] += 1
                    found[story["category"]] += bool(a & b)
        pairs = {pair for held in holders.values() if 1 < len(held) <= CROWDED
                 for pair in itertools.combinations(sorted(held), 2)}
        weakest = sorted((found[c] / total[c], c) for c in total)[:3]
        print(f"{layout[0]} bands of {layout[1]} rows: revisions sharing a band key "
              f"{sum(found.values())}/{sum(total.values())} = {sum(found.values()) / sum(total.values()):.3f}; "
              f"pairs of other stories sharing one {len(pairs):,}; weakest: "
              + ", ".join(f"{c} {share:.2f}" for share, c in weakest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("writes")
    w.add_argument("src")
    w.add_argument("--group", type=int, default=500)
    w.add_argument("--rounds", type=int, default=3)
    b = sub.add_parser("bands")
    b.add_argument("--files", type=int, default=340)
    b.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.what == "writes":
        writes(args.src, args.group, args.rounds)
    else:
        bands(args.files, args.seed)


if __name__ == "__main__":
    main()
