"""Migration 0007: a store with 0002's digests (pending, sent, refused, baseline, Maildir) keeps
every digest's state in the channel-neutral outbox, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from conftest import downgrade, drop_file, write_config
from mailserver import MailServer
from sqlalchemy import text

from monitor.config import load_settings
from monitor.digest import send_pending
from monitor.scan import scan
from monitor.storage import Storage
from monitor.storage.migrate import current, head

A, B, C = "alice@example.org", "bob@example.org", "carol@example.org"
BRIEFS = [
    "On 10 December, the Joint Staff hosted videoconference consultations on joint training activities.",
    "On 12 December, the Secretary General met the delegation of the Monitoring Group in Moscow.",
    "On 13 December, a seminar on information security took place in Yerevan with experts from five states.",
    "On 14 December, the Council of Foreign Ministers adopted a statement on security in the region.",
]
T = dt.datetime(2026, 11, 1, 8, 0)
PENDING_MESSAGE = "Subject: the pending digest\r\nMessage-ID: <m3@example.org>\r\n\r\nthe very same bytes\r\n"


def old_store(tmp_path: Path, url: str, port: int) -> tuple[object, dict[str, tuple[int, str]]]:
    """A store at 0006 (the revision before 0007) with four stories and the digests a 0002 monitor would have left."""
    settings = load_settings(write_config(tmp_path, url, digest={"recipients": [A, B, C]},
                                          smtp={"host": "127.0.0.1", "port": port, "security": "none"}))
    storage = Storage.open(url)
    for i, brief in enumerate(BRIEFS):
        drop_file(tmp_path / "drop", f"{i}.txt", (brief + "\n").encode(), age=100 - i)
        scan(settings, storage)
    storage.close()
    downgrade(url, "0006")  # after the scans, which speak today's schema
    storage = Storage.open(url, upgrade=False)
    with storage.engine.begin() as conn:
        ids = {row[2][:20]: (row[0], row[1]) for row in conn.execute(text(
            "SELECT s.id, s.current_hash, v.paragraphs FROM stories s "
            "JOIN versions v ON v.text_hash = s.current_hash"))}
        story = [ids[b[:20]] for b in (f'["{b}' for b in BRIEFS)]
        digests = [  # id, message_id, status, version_upto, message
            (1, None, "baseline", 1, None),
            (2, "<m2@example.org>", "sent", 2, "Subject: two\r\n\r\nsent\r\n"),
            (3, "<m3@example.org>", "pending", 3, PENDING_MESSAGE),
            (4, "<m4@example.org>", "sent", 4, "Subject: four\r\n\r\nto the Maildir\r\n"),
        ]
        for did, mid, status, upto, message in digests:
            conn.execute(text("INSERT INTO digests (id, message_id, status, created, sent, version_upto, new_count, "
                              "revised_count, message, attempts) VALUES (:i, :m, :s, :c, :t, :u, 1, 0, :msg, 2)"),
                         {"i": did, "m": mid, "s": status, "c": T, "t": None if status == "pending" else T, "u": upto,
                          "msg": message})
            conn.execute(text("INSERT INTO digest_stories VALUES (:d, :s, :h, :sec)"),
                         {"d": did, "s": story[did - 1][0], "h": story[did - 1][1],
                          "sec": "baseline" if did == 1 else "new"})
        recipients = [(2, A, "accepted", None), (2, B, "refused", "550 5.1.1 mailbox unavailable"),
                      (3, A, "pending", None), (3, B, "accepted", None)]
        for did, address, status, reply in recipients:
            conn.execute(text("INSERT INTO digest_recipients VALUES (:d, :a, :s, :r, :u)"),
                         {"d": did, "a": address, "s": status, "r": reply, "u": T})
    return settings, {b[:20]: s for b, s in zip(BRIEFS, story, strict=True)}


def test_every_digest_keeps_its_state(tmp_path: Path, store_url: str) -> None:
    with MailServer() as server:
        settings, _ = old_store(tmp_path, store_url, server.port)
        storage = Storage.open(store_url)  # the upgrade, as any command does it
        try:
            assert current(storage.engine) == head()
            assert storage.story_count() == 4
            rows = {(r["channel"], r["subscriber"], r["message_key"]): r for r in storage.outbox_history()}
            mine = {k: (r["status"], r["last_error"], [s for _, _, s in r["stories"]]) for k, r in rows.items()
                    if k[0] == "email"}
            assert mine == {
                ("email", A, "<m2@example.org>"): ("sent", None, ["new"]),
                ("email", B, "<m2@example.org>"): ("refused", "550 5.1.1 mailbox unavailable", ["new"]),
                ("email", A, "<m3@example.org>"): ("pending", None, ["new"]),
                ("email", B, "<m3@example.org>"): ("sent", None, ["new"]),
                ("email", "maildir", "<m4@example.org>"): ("sent", None, ["new"]),
            }
            [pending] = storage.pending_messages()
            assert (pending.subscriber, pending.message_key, pending.payload, pending.attempts) == \
                (A, "<m3@example.org>", PENDING_MESSAGE, 2)
            result = send_pending(settings, storage)
            # The pending digest goes to Alice, the same bytes; nothing an old digest carried goes
            # again to anyone, Carol (a recipient who never got one) included.
            assert result.ok and [(s.subscriber, s.message_id) for s in result.sent] == [(A, "<m3@example.org>")]
            [got] = server.messages
            assert got.rcpt_tos == [A] and got.data.replace(b"\r\n", b"\n") == PENDING_MESSAGE.replace(
                "\r\n", "\n").encode()
            assert send_pending(settings, storage).sent == ()
            drop_file(tmp_path / "drop", "new.txt", (BRIEFS[1].replace("Moscow", "Minsk") + "\n").encode())
            scan(settings, storage)
            after = send_pending(settings, storage)
            assert sorted(s.subscriber for s in after.sent) == [A, B, C]
        finally:
            storage.close()


def test_the_downgrade_gives_back_the_old_tables(tmp_path: Path) -> None:
    from monitor.storage.migrate import SCRIPTS

    url = f"sqlite:///{tmp_path}/store.db"
    old_store(tmp_path, url, 25)
    storage = Storage.open(url)
    try:
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(SCRIPTS))
        with storage.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0006")
        with storage.engine.connect() as conn:
            digests = conn.execute(text("SELECT message_id, status FROM digests ORDER BY id")).all()
            people = conn.execute(text("SELECT address, status FROM digest_recipients ORDER BY digest_id, address"))
            assert [tuple(d) for d in digests] == [(None, "baseline"), ("<m2@example.org>", "sent"),
                                                    ("<m3@example.org>", "pending"), ("<m4@example.org>", "sent")]
            assert [tuple(p) for p in people] == [(A, "accepted"), (B, "refused"), (A, "pending"), (B, "accepted")]
            assert conn.execute(text("SELECT count(*) FROM digest_stories")).scalar_one() == 4
    finally:
        storage.close()
