"""Handing a finished message to the world: SMTP, or a local Maildir when no server is set.

The only module that talks SMTP. It knows nothing about digests or the store: a message
(a string of ASCII lines, as the outbox keeps it) goes in, and what the server took
comes out, or a DeliveryError that says why nothing was taken.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
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


# A server's reply text can echo what the client sent (a 535 quoting the AUTH line carries
# the base64 of the password): only the code, the RFC 3463 status and our own words are shown.
REASONS = {
    421: "service not available", 450: "mailbox unavailable, try later", 451: "local error at the server",
    452: "insufficient storage", 454: "temporary authentication failure", 500: "command not recognised",
    501: "syntax error in parameters", 502: "command not implemented", 503: "bad sequence of commands",
    504: "parameter not implemented", 530: "authentication required", 534: "authentication mechanism too weak",
    535: "authentication failed", 538: "encryption required", 550: "mailbox unavailable", 551: "user not local",
    552: "storage allocation exceeded", 553: "mailbox name not allowed", 554: "transaction failed",
}
_ENHANCED = re.compile(rb"\s*([245]\.\d{1,3}\.\d{1,3})(?=\s|$)")


def reason(code: int, reply: bytes | str) -> str:
    """`5.1.1 mailbox unavailable` for any 550 reply, whatever text the server put after it."""
    raw = reply.encode("utf-8", "replace") if isinstance(reply, str) else reply
    enhanced = _ENHANCED.match(raw)
    words = REASONS.get(code) or ("temporary failure" if 400 <= code < 500 else "refused")
    return f"{enhanced.group(1).decode()} {words}" if enhanced else words


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
        raise DeliveryError(f"SMTP {where}: {exc.smtp_code} {reason(exc.smtp_code, exc.smtp_error)}") from None
    except smtplib.SMTPServerDisconnected as exc:
        # smtplib reports a read timeout as a lost connection ("... closed: timed out").
        if "timed out" in str(exc):
            raise DeliveryError(f"SMTP {where}: no answer within {smtp.timeout:g}s") from None
        raise DeliveryError(f"SMTP {where}: connection lost: {exc or 'server disconnected'}") from None
    except (smtplib.SMTPException, ssl.SSLError) as exc:
        # Not the exception's text: some of smtplib's quote the server's reply.
        raise DeliveryError(f"SMTP {where}: {type(exc).__name__}{_ssl_reason(exc)}") from None
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
    return {address: (code, reason(code, reply)) for address, (code, reply) in refused.items()}


def _ssl_reason(exc: Exception) -> str:
    """The TLS library's own reason (ours, not the server's), e.g. CERTIFICATE_VERIFY_FAILED."""
    return f": {exc.reason}" if isinstance(exc, ssl.SSLError) and exc.reason else ""


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

