"""A channel-neutral outbox: one delivery record per channel, subscriber and story version.

0002's digests were one message to a list of recipients. Every digest row becomes one
outbox row per recipient (channel "email", the address as the subscriber's name, the
same Message-ID and bytes, so a pending digest is retried exactly as before), and every
story it carried becomes a delivery for each of them. A digest to nobody (the Maildir)
belongs to the implicit subscriber "maildir". 0002's mark was one for all: what a digest
carried was done for every recipient, present or future. So each digest is also kept
as a baseline for everyone ("*", as `monitor scan --baseline` writes), which keeps that
meaning: no story an old digest carried is sent again to anyone.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from monitor.storage.schema import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

EVERYONE = "*"
MAILDIR = "maildir"
COPY = "digest-"  # the message key of an email digest's everyone-copy
RECIPIENT_STATUS = {"accepted": "sent", "refused": "refused", "pending": "pending"}

def _columns(*names: str) -> list[sa.ColumnClause]:
    # Typed where it matters: the times are stored as naive UTC and handed on as aware UTC.
    return [sa.column(n, UTCDateTime) if n in ("created", "sent", "updated") else sa.column(n) for n in names]


old_digests = sa.table("digests", *_columns(
    "id", "message_id", "status", "created", "sent", "version_upto", "new_count", "revised_count", "message",
    "attempts", "last_error"))
old_stories = sa.table("digest_stories", sa.column("digest_id"), sa.column("story_id"), sa.column("text_hash"),
                       sa.column("section"))
old_recipients = sa.table("digest_recipients", *_columns("digest_id", "address", "status", "reply", "updated"))


def upgrade() -> None:
    outbox = op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("subscriber", sa.Text, nullable=False),
        sa.Column("message_key", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("sent", UTCDateTime),
        sa.Column("next_attempt", UTCDateTime),
        sa.Column("version_upto", sa.BigInteger, nullable=False),
        sa.Column("new_count", sa.Integer, nullable=False),
        sa.Column("revised_count", sa.Integer, nullable=False),
        sa.Column("address", sa.Text),
        sa.Column("payload", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("channel", "subscriber", "message_key", name="uq_outbox_key"),
    )
    op.create_index("ix_outbox_status", "outbox", ["status"])
    op.create_index("ix_outbox_subscriber", "outbox", ["channel", "subscriber", "version_upto"])
    deliveries = op.create_table(
        "deliveries",
        sa.Column("channel", sa.Text, primary_key=True),
        sa.Column("subscriber", sa.Text, primary_key=True),
        sa.Column("text_hash", sa.Text, primary_key=True),
        sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="CASCADE"), nullable=False),
        sa.Column("outbox_id", sa.Integer, sa.ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False),
        sa.Column("section", sa.Text, nullable=False),
    )
    op.create_index("ix_deliveries_story", "deliveries", ["channel", "subscriber", "story_id", "outbox_id"])
    op.create_index("ix_deliveries_outbox", "deliveries", ["outbox_id"])
    op.create_table(
        "unsubscribed",
        sa.Column("subscriber", sa.Text, primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    _copy_digests(op.get_bind(), outbox, deliveries)
    for name in ("digest_recipients", "digest_stories", "digests"):
        op.drop_table(name)


def _copy_digests(conn: sa.Connection, outbox: sa.Table, deliveries: sa.Table) -> None:
    for d in conn.execute(sa.select(old_digests).order_by(old_digests.c.id)).all():
        carried = conn.execute(sa.select(old_stories).where(old_stories.c.digest_id == d.id)).all()
        people = [(EVERYONE, EVERYONE, None, "baseline", None)]
        if d.status != "baseline":
            rows = conn.execute(sa.select(old_recipients).where(old_recipients.c.digest_id == d.id)
                                .order_by(old_recipients.c.address)).all()
            people += [("email", r.address, r.address, RECIPIENT_STATUS[r.status], r.reply)
                       for r in rows] or [("email", MAILDIR, None, d.status, None)]
        for channel, subscriber, address, status, reply in people:
            if channel != EVERYONE:
                key = d.message_id
            else:
                key = f"{COPY}{d.id}" if d.status != "baseline" else f"baseline-{d.id}"
            new_id = conn.execute(outbox.insert().values(
                channel=channel, subscriber=subscriber, message_key=key,
                status=status, created=d.created, sent=d.sent if status in ("sent", "baseline") else None,
                version_upto=d.version_upto, new_count=d.new_count, revised_count=d.revised_count,
                address=address, payload=None if channel == EVERYONE else d.message, attempts=d.attempts,
                last_error=reply or d.last_error,
            ).returning(outbox.c.id)).scalar_one()
            if carried:
                conn.execute(deliveries.insert(), [
                    {"channel": channel, "subscriber": subscriber, "text_hash": s.text_hash, "story_id": s.story_id,
                     "outbox_id": new_id, "section": s.section} for s in carried])


def downgrade() -> None:
    """Back to 0002's tables: email messages with one Message-ID become one digest again."""
    conn = op.get_bind()
    op.create_table(
        "digests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("message_id", sa.Text, unique=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("sent", UTCDateTime),
        sa.Column("version_upto", sa.BigInteger, nullable=False),
        sa.Column("new_count", sa.Integer, nullable=False),
        sa.Column("revised_count", sa.Integer, nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_digests_status", "digests", ["status"])
    op.create_index("ix_digests_version_upto", "digests", ["version_upto"])
    op.create_table(
        "digest_stories",
        sa.Column("digest_id", sa.Integer, sa.ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("story_id", sa.Integer, sa.ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("text_hash", sa.Text, nullable=False, unique=True),
        sa.Column("section", sa.Text, nullable=False),
    )
    op.create_index("ix_digest_stories_story", "digest_stories", ["story_id", "digest_id"])
    op.create_table(
        "digest_recipients",
        sa.Column("digest_id", sa.Integer, sa.ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("address", sa.Text, primary_key=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("reply", sa.Text),
        sa.Column("updated", UTCDateTime, nullable=False),
    )
    out = sa.table("outbox", *_columns(
        "id", "channel", "subscriber", "message_key", "status", "created", "sent", "version_upto", "new_count",
        "revised_count", "address", "payload", "attempts", "last_error"))
    dl = sa.table("deliveries", sa.column("outbox_id"), sa.column("story_id"), sa.column("text_hash"),
                  sa.column("section"))
    by_key: dict[str, int] = {}
    carried: set[str] = set()  # 0002 let a version reach one digest only: its first
    back = {v: k for k, v in RECIPIENT_STATUS.items()}
    rows = conn.execute(sa.select(out).where(out.c.channel.in_(["email", EVERYONE]),
                                             out.c.status.in_(["pending", "sent", "refused", "baseline"]))
                        .order_by(out.c.id)).all()
    for r in rows:
        if r.channel == EVERYONE and r.message_key.startswith(COPY):
            continue  # the everyone-copy of an email digest (see upgrade): that digest comes back once
        digest_id = by_key.get(r.message_key)
        if digest_id is None:
            digest_id = conn.execute(old_digests.insert().values(
                message_id=None if r.status == "baseline" else r.message_key,
                status="baseline" if r.status == "baseline" else ("pending" if r.status == "pending" else "sent"),
                created=r.created, sent=r.sent, version_upto=r.version_upto, new_count=r.new_count,
                revised_count=r.revised_count, message=r.payload, attempts=r.attempts, last_error=None,
            ).returning(old_digests.c.id)).scalar_one()
            by_key[r.message_key] = digest_id
            for s in conn.execute(sa.select(dl).where(dl.c.outbox_id == r.id)).all():
                if s.text_hash in carried:
                    continue
                carried.add(s.text_hash)
                conn.execute(old_stories.insert().values(digest_id=digest_id, story_id=s.story_id,
                                                         text_hash=s.text_hash, section=s.section))
        if r.address:
            conn.execute(old_recipients.insert().values(digest_id=digest_id, address=r.address,
                                                        status=back.get(r.status, "accepted"), reply=r.last_error,
                                                        updated=r.sent or r.created))
    for name in ("unsubscribed", "deliveries", "outbox"):
        op.drop_table(name)
