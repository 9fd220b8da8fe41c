"""The channel-neutral outbox in the store, on SQLite and PostgreSQL: marks, claims, conflicts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from conftest import drop_file, write_config

from monitor.config import load_settings
from monitor.scan import scan
from monitor.storage import Storage
from monitor.storage.outbox import Claim, Due

T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
BRIEFS = [
    "On 10 December, the Joint Staff hosted videoconference consultations on joint training activities.",
    "On 12 December, the Secretary General met the delegation of the Monitoring Group in Moscow.",
    "On 13 December, a seminar on information security took place in Yerevan with experts from five states.",
]


@pytest.fixture
def store(tmp_path: Path, store_url: str):  # type: ignore[no-untyped-def]
    settings = load_settings(write_config(tmp_path, store_url))
    storage = Storage.open(store_url)
    n = 0

    def add(text: str) -> None:
        nonlocal n
        n += 1
        drop_file(tmp_path / "drop", f"{n}.txt", (text + "\n").encode(), age=100 - n)
        scan(settings, storage)

    storage.add = add  # type: ignore[attr-defined]
    yield storage
    storage.close()


def claim_all(storage: Storage, channel: str, who: str, due: Due) -> list[object] | None:
    carried = tuple((v, "new" if v.delivered is None else "revised") for v in due.versions)
    return storage.claim(channel, who, due, [Claim(f"key-{who}-{due.upto}", "payload", None, len(carried), 0,
                                                   carried)], T0)


def test_a_fresh_store_starts_everyone_at_the_baseline_and_a_later_one_at_now(store: Storage) -> None:
    store.add(BRIEFS[0])  # type: ignore[attr-defined]
    store.register_subscribers([("email", "a"), ("apprise", "b")], T0)
    assert len(store.due("email", "a").versions) == 1 and len(store.due("apprise", "b").versions) == 1
    assert claim_all(store, "email", "a", store.due("email", "a"))
    store.register_subscribers([("email", "c")], T0)  # joins a store that delivered already
    assert store.due("email", "c").versions == ()
    store.add(BRIEFS[1])  # type: ignore[attr-defined]
    assert [len(store.due(c, s).versions) for c, s in (("email", "a"), ("apprise", "b"), ("email", "c"))] == \
        [1, 2, 1]


def test_a_claim_is_refused_when_the_mark_moved_or_a_version_went_already(store: Storage) -> None:
    store.add(BRIEFS[0])  # type: ignore[attr-defined]
    store.register_subscribers([("email", "a")], T0)
    first, second = store.due("email", "a"), store.due("email", "a")  # two runners read the same
    assert claim_all(store, "email", "a", first)
    assert claim_all(store, "email", "a", second) is None  # the mark moved: nothing written
    assert len(store.pending_messages()) == 1
    # A version delivered already, under a stale mark: the database's key refuses it too.
    store.add(BRIEFS[1])  # type: ignore[attr-defined]
    fresh = store.due("email", "a")
    stale = Due(fresh.since, fresh.upto, (*fresh.versions, *first.versions))
    assert claim_all(store, "email", "a", stale) is None
    assert len(store.pending_messages()) == 1
    assert claim_all(store, "email", "a", fresh) and len(store.pending_messages()) == 2


def test_channels_and_subscribers_are_separate_and_a_revision_is_due_again(store: Storage) -> None:
    store.add(BRIEFS[1])  # type: ignore[attr-defined]
    store.register_subscribers([("email", "a"), ("apprise", "a")], T0)
    assert claim_all(store, "email", "a", store.due("email", "a"))
    assert len(store.due("apprise", "a").versions) == 1  # the same name on another channel
    # A correction of a non-slot word (another city would be a sibling story under the slot rule).
    store.add(BRIEFS[1].replace("the delegation", "a delegation"))  # type: ignore[attr-defined]
    [revised] = store.due("email", "a").versions
    assert revised.delivered is not None and revised.delivered != revised.current
    texts = store.stories_by_hash([revised.current, revised.delivered])
    assert "met a delegation" in texts[revised.current].paragraphs[0]
    assert "met the delegation" in texts[revised.delivered].paragraphs[0]


def test_unsubscribe_drops_pending_and_is_kept(store: Storage, store_url: str) -> None:
    store.add(BRIEFS[0])  # type: ignore[attr-defined]
    store.register_subscribers([("email", "a"), ("email", "b")], T0)
    for who in ("a", "b"):
        claim_all(store, "email", who, store.due("email", who))
    assert store.unsubscribe("a", T0) and not store.unsubscribe("a", T0)
    assert [m.subscriber for m in store.pending_messages()] == ["b"]
    again = Storage.open(store_url)
    try:
        assert again.unsubscribed() == {"a"}
    finally:
        again.close()


def test_sent_refused_and_failures_make_the_states(store: Storage) -> None:
    store.add(BRIEFS[0])  # type: ignore[attr-defined]
    store.register_subscribers([("email", "a"), ("apprise", "b")], T0)
    [ma] = claim_all(store, "email", "a", store.due("email", "a"))  # type: ignore[misc]
    [mb] = claim_all(store, "apprise", "b", store.due("apprise", "b"))  # type: ignore[misc]
    store.record_failure(ma.id, "SMTP x: cannot connect", None)
    store.record_refused(mb.id, T0, "HTTP 404")
    states = {(s.channel, s.subscriber): s for s in store.delivery_states()}
    a, b = states[("email", "a")], states[("apprise", "b")]
    assert (a.pending, a.attempts, a.error, a.refused) == (1, 1, "SMTP x: cannot connect", False)
    assert (b.pending, b.error, b.refused) == (0, "HTTP 404", True)
    store.record_sent(ma.id, T0)
    assert store.pending_messages() == []
    assert {(s.channel, s.subscriber): s.refused for s in store.delivery_states()} == {
        ("email", "a"): False, ("apprise", "b"): True}
