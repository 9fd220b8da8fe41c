"""The revision ids of the migration scripts, read from the files (no SQLAlchemy, no Alembic).

"Is the schema at head?" is asked at every start and every `monitor scan`, by
`migrate.upgrade` and by the ledger of an idle scan; answering it must not cost the
import of Alembic, nor, for the ledger, of SQLAlchemy.
"""

from __future__ import annotations

import re
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"

_ASSIGNMENT = r"^{name}\s*(?::[^=\n]*)?=\s*(?P<value>.+)$"


def head() -> str | None:
    """The newest revision, from the revision files themselves (Alembic not imported)."""
    known, parents = revisions()
    heads = sorted(known - parents)
    return ",".join(heads) or None


def revisions() -> tuple[set[str], set[str]]:
    """Every revision id in the scripts, and those that some script revises."""
    known: set[str] = set()
    parents: set[str] = set()
    for script in sorted((SCRIPTS / "versions").glob("*.py")):
        source = script.read_text(encoding="utf-8")
        revision = _literal(source, "revision")
        if revision is None:
            continue
        known.add(revision)
        down = _literal(source, "down_revision")
        if down:
            parents.update(part.strip(" '\"") for part in down.strip("()[]").split(",") if part.strip(" '\""))
    return known, parents


def _literal(source: str, name: str) -> str | None:
    match = re.search(_ASSIGNMENT.format(name=name), source, re.MULTILINE)
    if match is None:
        return None
    value = match.group("value").split("#", 1)[0].strip()
    return None if value == "None" else value.strip("'\"")
