"""Handing a finished message to the world: SMTP, or a local Maildir when no server is set.

The only module that talks SMTP. It knows nothing about digests or the store: a message
(a string of ASCII lines, as the outbox keeps it) goes in, and what the server took
comes out, or a DeliveryError that says why nothing was taken.
"""

from __future__ import annotations

import hashlib
import logging
import os
import smtplib
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from monitor.config import SmtpSettings
from monitor.errors import DeliveryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """What the server accepted: every recipient not in `refused` got the message."""

    accepted: tuple[str, ...]
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)  # address -> (code, reply)


class RecipientsRefused(DeliveryError):
    """The server refused every recipient, so it took nothing."""

    def __init__(self, refused: dict[str, tuple[int, str]]) -> None:
        self.refused = refused
        listed = "; ".join(f"{a}: {c} {r}" for a, (c, r) in sorted(refused.items()))
        super().__init__(f"every recipient refused: {listed}")


def send_smtp(smtp: SmtpSettings, sender: str, recipients: tuple[str, ...], message: str) -> Delivery:
    """Send one message to these recipients in one SMTP transaction."""
    if not recipients:
        return Delivery(accepted=())
    where = f"{smtp.host}:{smtp.port}"
    try:
        with _connect(smtp) as client:
            if smtp.username:
                # The password is passed to the library and nowhere else: not logged, not in errors.
                client.login(smtp.username, smtp.password)
            refused = client.sendmail(sender, list(recipients), message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise RecipientsRefused(_replies(exc.recipients)) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP {where}: {exc.smtp_code} {_text(exc.smtp_error)}") from None
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a read timeout as a lost connection ("... closed: timed out").
        if "timed out" in str(exc):
            raise DeliveryError(f"SMTP {where}: no answer within {smtp.timeout:g}s") from None
        raise DeliveryError(f"SMTP {where}: connection lost: {exc or 'server disconnected'}") from None
    except (smtplib.SMTPException, ssl.SSLError) as exc:
        raise DeliveryError(f"SMTP {where}: {type(exc).__name__}: {exc}") from None
    except UnicodeEncodeError:
        raise DeliveryError(f"SMTP {where}: the message or an address is not ASCII") from None
    except TimeoutError:
        raise DeliveryError(f"SMTP {where}: no answer within {smtp.timeout:g}s") from None
    except OSError as exc:
        raise DeliveryError(f"SMTP {where}: cannot connect: {exc.strerror or exc}") from None
    codes = _replies(refused)
    accepted = tuple(a for a in recipients if a not in codes)
    return Delivery(accepted=accepted, refused=codes)


def _connect(smtp: SmtpSettings) -> smtplib.SMTP:
    if smtp.security == "tls":
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=ssl.create_default_context())
    client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
    try:
        if smtp.security == "starttls":
            client.starttls(context=ssl.create_default_context())
    except BaseException:
        client.close()
        raise
    return client


def _replies(refused: dict[str, tuple[int, bytes]]) -> dict[str, tuple[int, str]]:
    return {address: (code, _text(reply)) for address, (code, reply) in refused.items()}


def _text(reply: bytes | str) -> str:
    return (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply))[:300]


# -- Maildir -------------------------------------------------------------------------


def deliver_maildir(folder: Path, message: str, message_id: str) -> bool:
    """Put the message into the Maildir `folder` unless this Message-ID is there already.

    Written to tmp/ and renamed into new/ (the Maildir protocol), so a reader never
    sees half a message. The file name comes from the Message-ID, which makes a retry
    after a crash a no-op here: locally we get exactly once. Returns False for a repeat.
    """
    # No host name or time in it: the same digest must get the same name on any retry.
    name = f"digest-{hashlib.sha256(message_id.encode()).hexdigest()[:32]}.monitor"
    try:
        for sub in ("tmp", "new", "cur"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        if (folder / "new" / name).exists() or any(p.name.split(":", 1)[0] == name
                                                   for p in (folder / "cur").iterdir()):
            return False
        tmp = folder / "tmp" / name
        with tmp.open("wb") as fh:
            fh.write(message.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)  # mail is private to its owner, as in any Maildir
        os.rename(tmp, folder / "new" / name)
    except OSError as exc:
        raise DeliveryError(f"Maildir {folder}: {exc.strerror or exc}") from None
    return True

