"""Synthetic bulletins shaped like the seeds, for the benchmarks and the crash test.

Each file carries briefs (one paragraph, opening with a date) and then articles (title
line, a ``DD.MM.YYYY`` date line, body paragraphs), like ../shared/seeds. Half of each
file's briefs are repeated word for word from the previous file, as producers do, and a
few of the repeats are revised (one word changed). Everything follows from the seed, so
the same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
from collections.abc import Iterator
from pathlib import Path

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
SUBJECTS = ["the Joint Staff", "the Secretary General", "the Crisis Response Center", "the Ministerial Council",
            "the Working Group on Afghanistan", "the Interstate Commission", "the Parliamentary Assembly",
            "the Coordination Service", "the Deputy Secretary General", "the Committee of Secretaries"]
SYLLABLES = ["ka", "lo", "mi", "ra", "te", "vo", "sun", "dar", "pel", "gri", "nos", "tal", "ver", "bu",
             "zen", "ock", "ist", "ar", "pro", "lin", "met", "sod", "qua", "ex", "fil", "hor", "jun", "wes"]
# The first BRIEFS_NEW briefs of a file are new stories; the next BRIEFS_REPEAT repeat
# the previous file's new briefs ("half of each file's briefs repeated").
BRIEFS_NEW = 3
BRIEFS_REPEAT = 3
# Every REVISE_EVERY-th file changes one word in one of the briefs it repeats.
REVISE_EVERY = 10


def _vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class Generator:
    def __init__(self, seed: int = 7, paragraph_words: int = 45) -> None:
        self.rng = random.Random(seed)
        self.words = _vocabulary(self.rng)
        self.paragraph_words = paragraph_words
        self.day = dt.date(2024, 1, 1)

    def sentence(self, n: int) -> str:
        words = self.rng.choices(self.words, k=n)
        return " ".join(words).capitalize() + "."

    def paragraph(self, words: int | None = None) -> str:
        total = words or self.rng.randint(self.paragraph_words // 2, self.paragraph_words * 3 // 2)
        parts = []
        while total > 0:
            n = min(total, self.rng.randint(8, 16))
            parts.append(self.sentence(n))
            total -= n
        return " ".join(parts)

    def brief(self) -> str:
        d = self.day - dt.timedelta(days=self.rng.randint(0, 3))
        opening = (f"On {d.day} {MONTHS[d.month - 1]} {d.year}," if self.rng.random() < 0.5
                   else f"On {MONTHS[d.month - 1]} {d.day}, {d.year},")
        text = self.paragraph()
        return f"{opening} {self.rng.choice(SUBJECTS)} {text[0].lower()}{text[1:]}"

    def article(self, paragraphs: int) -> list[str]:
        title = self.sentence(self.rng.randint(6, 12)).rstrip(".")
        body = [self.paragraph() for _ in range(paragraphs)]
        date_line = f"{self.day.day:02d}.{self.day.month:02d}.{self.day.year}"
        if self.rng.random() < 0.3:  # glued to the first body paragraph, as in 000_*.txt
            return [title, date_line + body[0], *body[1:]]
        return [title, date_line, *body]

    def revise(self, text: str) -> str:
        words = text.split(" ")
        i = self.rng.randrange(len(words) // 2, len(words))
        words[i] = self.rng.choice(self.words)
        return " ".join(words)

    def bulletins(self, count: int, article_paragraphs: int = 4) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) of `count` bulletins in publishing order."""
        previous: list[str] = []
        for n in range(count):
            self.day += dt.timedelta(days=1) if n % 3 == 0 else dt.timedelta()
            fresh = [self.brief() for _ in range(BRIEFS_NEW)]
            repeats = list(previous[:BRIEFS_REPEAT])
            if repeats and n % REVISE_EVERY == 0:
                repeats[0] = self.revise(repeats[0])
            lines = fresh + repeats
            for _ in range(self.rng.choice((1, 1, 2))):
                lines += self.article(self.rng.randint(2, article_paragraphs + 2))
            sep = "\n\n" if n % 2 else "\n"
            name = f"{n:06d}_{self.rng.getrandbits(64):016x}.txt"
            yield name, (sep.join(lines) + "\n").encode("utf-8")
            previous = fresh


def write(folder: Path, count: int, *, seed: int = 7, start_mtime: float | None = None,
          paragraph_words: int = 45, article_paragraphs: int = 4, prefix: str = "") -> list[Path]:
    """Write `count` bulletins with increasing mtimes (settled long ago); return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    base = start_mtime if start_mtime is not None else 1_700_000_000.0
    paths = []
    gen = Generator(seed, paragraph_words)
    for n, (name, data) in enumerate(gen.bulletins(count, article_paragraphs)):
        path = folder / (prefix + name)
        path.write_bytes(data)
        os.utime(path, (base + n, base + n))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    paths = write(args.folder, args.count, seed=args.seed)
    print(f"{len(paths)} bulletins, {sum(p.stat().st_size for p in paths)} bytes in {args.folder}")


if __name__ == "__main__":
    main()
