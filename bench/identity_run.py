"""Score story identity on the labelled corpus of bench/identity_gen.py, through the CLI only.

    .venv/bin/python bench/identity_run.py [--files 340] [--seed 11] [--corpus DIR] [--batch 1]

Generates the corpus (or takes DIR from identity_gen.py), then, in a temporary folder,
drops the bulletins one by one in their drop order (late copies arrive after newer
bulletins) and runs `monitor scan` after each; the feed file that scan writes is read
after every scan. An item is placed in the feed entry whose current text is its text
once its bulletin is scanned; an item that never shows (a late copy, a brief whose
article is stored) is placed with the entry its story's other items showed in (so those
cannot count as false merges, a limit of a black-box runner). Prints the table of the
README: pair-counting and B-cubed precision / recall / F1, false merges, false splits,
current-text accuracy, per category, and for the decidable categories together.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ATOM = "{http://www.w3.org/2005/Atom}"
HERE = Path(__file__).resolve().parent
MONITOR = Path(sys.executable).with_name("monitor")
_P = re.compile(r"<p>(.*?)</p>", re.DOTALL)


def norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def config(root: Path) -> Path:
    cfg = root / "monitor.toml"
    cfg.write_text(f"""
[drop]
folder = "{root / 'drop'}"
settle_seconds = 0
[state]
database_url = "sqlite:///{root / 'state' / 'monitor.db'}"
[feed]
path = "{root / 'state' / 'feed.atom'}"
max_entries = 1000000
[http]
enabled = false
[digest]
enabled = false
""", encoding="utf-8")
    (root / "drop").mkdir()
    (root / "state").mkdir()
    return cfg


def read_feed(path: Path) -> dict[str, tuple[str, tuple[str, ...], str]]:
    """entry id -> (title, paragraphs, published day)"""
    entries = {}
    for e in ET.parse(path).getroot().iter(ATOM + "entry"):
        content = e.findtext(ATOM + "content") or ""
        paras = tuple(norm(html.unescape(p)) for p in _P.findall(content))
        published = (e.findtext(ATOM + "published") or "")[:10]
        entries[e.findtext(ATOM + "id") or ""] = (norm(e.findtext(ATOM + "title") or ""), paras, published)
    return entries


def version_index(truth: dict) -> tuple[dict, dict]:
    """(paragraphs -> [(story, version, title, date line)]), story -> its stories row"""
    by_paras: dict[tuple[str, ...], list[tuple[int, int, str | None, str | None]]] = defaultdict(list)
    stories = {s["sid"]: s for s in truth["stories"]}
    for s in truth["stories"]:
        for v, ver in enumerate(s["versions"]):
            key = tuple(norm(p) for p in ver["paragraphs"])
            by_paras[key].append((s["sid"], v, norm(ver["title"]) if ver["title"] else None, ver["date_line"]))
    return by_paras, stories


def which(entry: tuple[str, tuple[str, ...], str], by_paras: dict) -> tuple[int, int] | None:
    title, paras, published = entry
    options = by_paras.get(paras, [])
    for sid, v, t, line in options:
        if t is not None and t == title and (line is None or _iso(line) == published):
            return sid, v
    for sid, v, t, _ in options:
        if t is not None and t == title:
            return sid, v
    for sid, v, t, _ in options:
        if t is None:
            return sid, v
    return None


def _iso(line: str) -> str:
    d, m, y = line.split(".")
    return f"{y}-{m}-{d}"


def run(corpus: Path, batch: int) -> tuple[dict, dict, dict, float]:
    truth = json.loads((corpus / "truth.json").read_text(encoding="utf-8"))
    by_paras, _ = version_index(truth)
    meta = {m["name"]: m for m in truth["files"]}
    placed: dict[tuple[int, int, str], str] = {}  # (story, version, file) -> entry id
    with tempfile.TemporaryDirectory(prefix="identity-") as tmp:
        root = Path(tmp)
        cfg = config(root)
        feed = root / "state" / "feed.atom"
        started = time.perf_counter()
        order = truth["drop_order"]
        for start in range(0, len(order), batch):
            names = order[start:start + batch]
            for name in names:
                target = root / "drop" / name
                shutil.copyfile(corpus / "files" / name, target)
                os.utime(target, ns=(meta[name]["mtime_ns"], meta[name]["mtime_ns"]))
            subprocess.run([str(MONITOR), "--config", str(cfg), "--log-level", "ERROR", "scan"], check=True,
                           stdout=subprocess.DEVNULL)
            shown = {which(e, by_paras): eid for eid, e in read_feed(feed).items()}
            for name in names:
                for sid, v in meta[name]["items"]:
                    if (sid, v) in shown:
                        placed[(sid, v, name)] = shown[(sid, v)]
        elapsed = time.perf_counter() - started
        final = read_feed(feed)
    return truth, placed, final, elapsed


def clusters(truth: dict, placed: dict) -> tuple[list[tuple[int, str, str]], int]:
    """Every item as (true story, predicted entry, file); and how many were not seen."""
    items = []
    unseen = 0
    for s in truth["stories"]:
        sid = s["sid"]
        mine = [placed.get((sid, v, _name(truth, f))) for f, v in s["carried"]]
        seen = [e for e in mine if e]
        for (f, _), e in zip(s["carried"], mine, strict=True):
            if e is None:
                unseen += 1
                e = Counter(seen).most_common(1)[0][0] if seen else f"lost-{sid}"
            items.append((sid, e, _name(truth, f)))
    return items, unseen


_NAMES: dict[int, str] = {}


def _name(truth: dict, f: int) -> str:
    if not _NAMES:
        _NAMES.update({m["file"]: m["name"] for m in truth["files"]})
    return _NAMES[f]


def score(items: list[tuple[int, str, str]], subset: set[int], final: dict, truth: dict) -> dict:
    """Metrics over the items of the stories in `subset` (clusters over all items)."""
    cluster_of: dict[str, Counter] = defaultdict(Counter)
    story_of: dict[int, Counter] = defaultdict(Counter)
    for sid, e, _ in items:
        cluster_of[e][sid] += 1
        story_of[sid][e] += 1
    mine = [(sid, e) for sid, e, _ in items if sid in subset]
    p = sum(cluster_of[e][sid] / sum(cluster_of[e].values()) for sid, e in mine) / len(mine)
    r = sum(story_of[sid][e] / sum(story_of[sid].values()) for sid, e in mine) / len(mine)
    # pair counting over the subset's items
    cells = Counter(mine)
    tp = sum(n * (n - 1) / 2 for n in cells.values())
    pred = sum(n * (n - 1) / 2 for n in Counter(e for _, e in mine).values())
    true = sum(n * (n - 1) / 2 for n in Counter(sid for sid, _ in mine).values())
    pp, pr = (tp / pred if pred else 1.0), (tp / true if true else 1.0)
    merges = sum(1 for sid in subset if any(len(cluster_of[e]) > 1 for e in story_of[sid]))
    splits = sum(1 for sid in subset if len(story_of[sid]) > 1)
    stories = {s["sid"]: s for s in truth["stories"]}
    by_paras, _ = version_index(truth)
    current = {which(e, by_paras) for e in final.values()}
    right = sum(1 for sid in subset if (sid, _current(stories[sid])) in current)
    return {"stories": len(subset), "items": len(mine), "pair_p": pp, "pair_r": pr, "pair_f": _f(pp, pr),
            "b3_p": p, "b3_r": r, "b3_f": _f(p, r), "merges": merges, "splits": splits,
            "current": right / len(subset)}


def _current(story: dict) -> int:
    """The version whose earliest bulletin is the latest (files are in mtime order by index)."""
    first: dict[int, int] = {}
    for f, v in story["carried"]:
        first[v] = min(first.get(v, f), f)
    return max(first, key=lambda v: first[v])


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=340)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--corpus", type=Path, help="a corpus written by identity_gen.py (default: generate one)")
    # Four: a story's versions and word-for-word repeats are at least four bulletins apart
    # (identity_gen.py), so no item is hidden by another of its story in the same scan.
    ap.add_argument("--batch", type=int, default=4, help="bulletins dropped per scan")
    ap.add_argument("--show", type=int, default=0, help="print this many false merges and splits")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="identity-corpus-") as tmp:
        corpus = args.corpus
        if corpus is None:
            corpus = Path(tmp)
            subprocess.run([sys.executable, str(HERE / "identity_gen.py"), str(corpus), "--files", str(args.files),
                            "--seed", str(args.seed)], check=True)
        truth, placed, final, elapsed = run(corpus, args.batch)
    items, unseen = clusters(truth, placed)
    by_cat: dict[str, set[int]] = defaultdict(set)
    for s in truth["stories"]:
        by_cat[s["category"]].add(s["sid"])
    decidable = {s["sid"] for s in truth["stories"] if s["decidable"]}
    repeated = {s["sid"] for s in truth["stories"] if len(s["carried"]) > len({v for _, v in s["carried"]})}
    late_names = set(truth["late"])
    late = {sid for sid, _, name in items if name in late_names}
    rows = [(c, by_cat[c]) for c in sorted(by_cat)]
    rows += [("(items repeated word for word)", repeated & decidable), ("(in a late copy)", late & decidable),
             ("**decidable, all**", decidable), ("all", set(by_cat_all := {s["sid"] for s in truth["stories"]}))]
    print(f"{len(truth['files'])} files, {len(by_cat_all)} stories, {len(items)} items; {len(final)} feed entries; "
          f"{unseen} items never shown as a current text; {elapsed:.0f} s of monitor scan")
    show(items, truth, final, args.show)
    print()
    print("| category | stories | items | pair P | pair R | pair F1 | B³ P | B³ R | B³ F1 | false merges | "
          "false splits | current text |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, subset in rows:
        if not subset:
            continue
        m = score(items, subset, final, truth)
        print(f"| {name} | {m['stories']} | {m['items']} | {m['pair_p']:.3f} | {m['pair_r']:.3f} | {m['pair_f']:.3f} | "
              f"{m['b3_p']:.3f} | {m['b3_r']:.3f} | {m['b3_f']:.3f} | {m['merges']} | {m['splits']} | "
              f"{m['current']:.1%} |")


def show(items: list[tuple[int, str, str]], truth: dict, final: dict, limit: int) -> None:
    """Print examples of false merges and splits, for tuning."""
    stories = {s["sid"]: s for s in truth["stories"]}
    by_entry: dict[str, set[int]] = defaultdict(set)
    by_story: dict[int, set[str]] = defaultdict(set)
    for sid, e, _ in items:
        by_entry[e].add(sid)
        by_story[sid].add(e)
    merged = [sids for sids in by_entry.values()
              if len(sids) > 1 and any(stories[sid]["decidable"] for sid in sids)][:limit]
    split = [sid for sid, es in by_story.items() if len(es) > 1][:limit]
    for sids in merged:
        print("MERGED:")
        for sid in sorted(sids):
            s = stories[sid]
            print(f"  {sid} {s['category']} {s['carried']}: {s['versions'][0]['paragraphs'][0][:160]}")
    for sid in split:
        s = stories[sid]
        print(f"SPLIT {sid} {s['category']} {s['carried']}:")
        for v in s["versions"]:
            print(f"  {v['kind']} {v['title']} {v['date_line']} {[p[:100] for p in v['paragraphs']]}")
    by_paras, _ = version_index(truth)
    shown = {which(e, by_paras): e for e in final.values()}
    wrong = [s for s in truth["stories"] if s["decidable"] and (s["sid"], _current(s)) not in shown][:limit]
    for s in wrong:
        got = [(v, e) for (sid, v), e in shown.items() if sid == s["sid"]]
        print(f"CURRENT {s['sid']} {s['category']} {s['carried']} expected v{_current(s)}, shown {got}")


if __name__ == "__main__":
    main()
