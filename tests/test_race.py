"""Four `monitor scan` processes at once on one PostgreSQL give what one process gives alone.

More generated bulletins than one group of files takes (scan.GROUP_FILES), shaped like
the seeds (briefs first, then articles with a title line and a DD.MM.YYYY date line),
carry new stories, word-for-word repeats, one-word revisions, briefs later published in
full, and exact copies of earlier files under other names. The generator is seeded, so
every run sees the same folder.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import write_config
from pgserver import PostgresServer

from monitor.scan import GROUP_FILES
from monitor.storage import Storage

SEED = 20261123
# More files than one write group takes, so the others, waiting at the lock, must get
# some of them however fast the first one runs (its group also ends after GROUP_SECONDS).
FILES = GROUP_FILES + 150
PROCESSES = 4
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]


@dataclass
class Story:
    kind: str  # "brief" or "article"
    title: str
    date: tuple[int, int, int]  # day, month, year
    paragraphs: list[str]
    versions: list[list[str]] = field(default_factory=list)


class Generator:
    """Stories with their own words (so two stories never look alike), and their revisions."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.stories: list[Story] = []

    def word(self) -> str:
        syllables = ["ka", "lo", "mi", "tra", "ven", "sor", "du", "pel", "ix", "ran", "to", "zen", "bri", "gal"]
        return "".join(self.rng.choice(syllables) for _ in range(self.rng.randint(2, 4)))

    def sentence(self, words: list[str], n: int) -> str:
        text = " ".join(self.rng.choice(words) for _ in range(n))
        return text[0].upper() + text[1:] + "."

    def new_story(self) -> Story:
        words = [self.word() for _ in range(60)]
        date = (self.rng.randint(1, 28), self.rng.randint(1, 12), 2024)
        if self.rng.random() < 0.55:
            opening = f"On {date[0]} {MONTHS[date[1] - 1]} {date[2]}, "
            paragraphs = [opening + self.sentence(words, self.rng.randint(25, 40))]
            story = Story("brief", "", date, paragraphs)
        else:
            title = " ".join(self.rng.choice(words) for _ in range(8)).capitalize()
            paragraphs = [self.sentence(words, self.rng.randint(25, 45)) for _ in range(self.rng.randint(3, 5))]
            story = Story("article", title, date, paragraphs)
        story.versions.append(list(story.paragraphs))
        self.stories.append(story)
        return story

    def revise(self, story: Story) -> None:
        """Change one word in one paragraph: the same story, corrected."""
        paragraphs = list(story.paragraphs)
        n = self.rng.randrange(len(paragraphs))
        words = paragraphs[n].split(" ")
        at = self.rng.randrange(4, len(words) - 1)
        words[at] = self.word()
        paragraphs[n] = " ".join(words)
        story.paragraphs = paragraphs
        story.versions.append(list(paragraphs))

    def publish_in_full(self, brief: Story) -> Story:
        """A brief published later as an article whose first body paragraph is the brief."""
        words = brief.paragraphs[0].rstrip(".").split(" ")[4:]
        body = [brief.paragraphs[0]] + [self.sentence(words, self.rng.randint(25, 40)) for _ in range(2)]
        brief.kind, brief.title, brief.paragraphs = "article", " ".join(words[:8]).capitalize(), body
        brief.versions.append(list(body))
        return brief


def render(items: list[Story]) -> bytes:
    briefs = [s for s in items if s.kind == "brief"]
    articles = [s for s in items if s.kind == "article"]
    lines = [s.paragraphs[0] for s in briefs]
    for a in articles:
        day, month, year = a.date
        lines += [a.title, f"{day:02d}.{month:02d}.{year}", *a.paragraphs]
    return ("\n".join(lines) + "\n").encode("utf-8")


def make_bulletins(folder: Path, count: int = FILES, seed: int = SEED) -> None:
    """Write `count` bulletins into `folder`, one second apart in mtime, names in random order."""
    gen = Generator(seed)
    rng = gen.rng
    written: list[bytes] = []
    base = time.time() - 10 * 60 - count
    for i in range(count):
        if written and i % 23 == 22:
            data = rng.choice(written)  # an earlier file again, under another name
        else:
            items = [gen.new_story() for _ in range(rng.randint(1, 3))]
            older = [s for s in gen.stories if s not in items]
            for story in rng.sample(older, min(len(older), rng.randint(0, 3))):
                if rng.random() < 0.4:
                    gen.revise(story)
                elif story.kind == "brief" and rng.random() < 0.15:
                    gen.publish_in_full(story)
                items.append(story)  # else a word-for-word repeat
            data = render(items)
        written.append(data)
        path = folder / f"{hashlib.sha1(f'{seed}-{i}'.encode()).hexdigest()[:12]}.txt"
        path.write_bytes(data)
        os.utime(path, (base + i, base + i))


def snapshot(url: str) -> tuple[int, set[tuple[str, str, tuple[str, ...], object]]]:
    store = Storage.open(url, upgrade=False)
    try:
        stories = store.latest_stories(100_000)
        return store.story_count(), {(s.uid, s.title, s.paragraphs, s.published) for s in stories}
    finally:
        store.close()


def difference(alone: set, race: set) -> str:
    lines = [f"only alone: {uid} {paras[0][:60]!r}" for uid, _, paras, _ in sorted(alone - race)[:5]]
    lines += [f"only race:  {uid} {paras[0][:60]!r}" for uid, _, paras, _ in sorted(race - alone)[:5]]
    return "\n".join(lines)


COUNTS = re.compile(r"stories new (\d+), revised (\d+)")


def counts(output: str) -> tuple[int, int]:
    m = COUNTS.search(output)
    assert m, output
    return int(m.group(1)), int(m.group(2))


def test_four_processes_store_what_one_process_stores(
        postgres_server: PostgresServer, tmp_path: Path, exe: str) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    make_bulletins(drop)
    env = {**os.environ, "MONITOR_DATABASE_URL": ""}

    def config(name: str, url: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        return write_config(folder, database_url=url, drop={"folder": str(drop)})

    alone_url, race_url = postgres_server.create_database("alone"), postgres_server.create_database("race")
    alone = subprocess.run([exe, "--config", str(config("alone", alone_url)), "--log-level", "WARNING", "scan"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert alone.returncode == 0, alone.stderr

    race_config = config("race", race_url)
    procs = [subprocess.Popen([exe, "--config", str(race_config), "--log-level", "WARNING", "scan"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(PROCESSES)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, _out, err in results:
        assert code == 0, err
        assert "Traceback" not in err

    alone_count, alone_stories = snapshot(alone_url)
    race_count, race_stories = snapshot(race_url)
    assert alone_count == len(alone_stories) > 150  # the generator made a real workload
    assert race_count == alone_count
    assert race_stories == alone_stories, difference(alone_stories, race_stories)  # ids, titles, texts, dates
    # Every story was created once and every revision applied once across the four.
    race_new = sum(counts(out)[0] for _, out, _ in results)
    race_revised = sum(counts(out)[1] for _, out, _ in results)
    assert (race_new, race_revised) == counts(alone.stdout)
    assert counts(alone.stdout)[1] > 20
    # All four did work: the files were shared out, not scanned by one while three waited.
    assert sum(1 for _, out, _ in results if counts(out) != (0, 0)) >= 2
