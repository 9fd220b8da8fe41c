"""Alternating rounds for whole-command comparisons, shared by bench/run.py and bench/search_bench.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def alternating(rounds: int, first: Callable[[], T], second: Callable[[], T]) -> list[tuple[T, T]]:
    """`first` and `second` in turn, `rounds` times, the order swapped every round: a shared
    machine's speed drifts over minutes, and pairing lets the drift hit both alike."""
    pairs = []
    for i in range(rounds):
        if i % 2 == 0:
            x = first()
            y = second()
        else:
            y = second()
            x = first()
        pairs.append((x, y))
    return pairs


def spread(ratios: list[float]) -> str:
    return f"{min(ratios):.2f}–{max(ratios):.2f}"


def remove_store(db: Path) -> None:
    """A SQLite store and its WAL files, so that the next round starts from nothing."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
