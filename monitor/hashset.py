"""Sets of 64-bit hashes (a text's shingles, its content words), as identity uses them.

Where monitor/_speedups.c is built (setup.py, wherever a C compiler is found), a set is
packed: bytes holding the sorted distinct values, 8 bytes each. It is made, sent through
the helper's pipe, compared and freed as one object, where a frozenset of ints costs an
int object and a table slot per value, and a pass over 10,000 bulletins makes and frees
millions of them. Without the extension a set is a frozenset of ints. Either way sets are
only made and measured by the functions here (and identity's builders), so the rest of
monitor works with both.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from typing import cast

try:
    from monitor import _speedups as speedups
except ImportError:  # pragma: no cover - exercised where no C compiler built it
    speedups = None  # type: ignore[assignment]

HashSet = bytes | frozenset[int]


def _py_shared(a: HashSet, b: HashSet) -> int:
    return len(a & b)  # type: ignore[operator]  # frozensets, without the extension


if speedups is not None:
    EMPTY: HashSet = b""
    # The C functions take bytes only: with the extension, every HashSet is bytes.
    pack = cast(Callable[[Iterable[int]], HashSet], speedups.pack)
    shared = cast(Callable[[HashSet, HashSet], int], speedups.shared)  # len(a & b)

    def size(hashes: HashSet) -> int:
        return len(hashes) >> 3

    def values(hashes: HashSet) -> list[int]:
        """The set's values in ascending order."""
        return array("Q", hashes).tolist()

    def from_wire(data: bytes) -> HashSet:
        return data  # the packed set itself went through the pipe
else:  # pragma: no cover - exercised where no C compiler built the extension
    EMPTY = frozenset()
    pack = frozenset
    shared = _py_shared
    size = len

    def values(hashes: HashSet) -> list[int]:
        return sorted(hashes)

    def from_wire(data: bytes) -> HashSet:
        return frozenset(array("Q", data))


def to_wire(hashes: HashSet) -> bytes:
    """A set as the helper's pipe carries it: packed, whichever form the sender has, so
    that either end reads it (from_wire) whether or not the other has the extension."""
    return hashes if type(hashes) is bytes else array("Q", values(hashes)).tobytes()
