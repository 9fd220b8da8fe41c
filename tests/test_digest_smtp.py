"""The digest outbox against a real SMTP server on loopback (aiosmtpd) and a real SQLite store."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult
from conftest import drop_file, schema_diffs, write_config
from mailserver import MailServer, Received, free_port

from monitor.config import Settings, load_settings
from monitor.digest import send_pending
from monitor.scan import scan
from monitor.storage import Storage

SENDER = "digest@example.org"
A, B, BAD = "alice@example.org", "bob@example.org", "nobody@example.org"

BRIEFS = [
    "On 20 December, a joint training session was held between the duty shifts of the Crisis Response Center.",
    "On 10 and 11 December, the Joint Staff hosted videoconference consultations on joint training activities.",
    "On 12 December, the Secretary General met the delegation of the Monitoring Group in Moscow.",
    "On 13 December, a seminar on information security took place in Yerevan with experts from five states.",
    "On 14 December, the Council of Foreign Ministers adopted a statement on security in the region.",
]
ARTICLE = ("Exercise of the Collective Rapid Reaction Forces\n15.09.2024\n"
           "The exercise took place in Kyrgyzstan <b>near Bishkek</b>.\nAbout two thousand servicemen took part.\n")
REVISED = BRIEFS[2].replace("in Moscow", "in Moscow and agreed on a joint plan for next year")


class Env:
    """A store, a drop folder and settings; `deliver()` runs the digest as the service would."""

    def __init__(self, tmp_path: Path, port: int, recipients: tuple[str, ...] = (A, B), **smtp: Any) -> None:
        config = write_config(tmp_path, digest={"recipients": list(recipients), "sender": SENDER,
                                                "subject": "CSTO bulletins", "max_stories": 10},
                              smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5, **smtp})
        self.settings: Settings = load_settings(config)
        self.drop = tmp_path / "drop"
        self.storage = Storage.open(self.settings.state.database_url)
        self.files = 0

    def add(self, *texts: str) -> None:
        self.files += 1
        drop_file(self.drop, f"b{self.files:03}.txt", "\n".join(texts).encode() + b"\n")
        report = scan(self.settings, self.storage)
        assert report.rejected == 0

    def deliver(self, **overrides: Any) -> Any:
        settings = self.settings
        if overrides:
            settings = settings._replace(smtp=settings.smtp._replace(**overrides))
        return send_pending(settings, self.storage)

    def sent_history(self) -> list[dict[str, Any]]:
        """The email messages made (not the baselines and starting marks), oldest first."""
        return [m for m in self.storage.outbox_history() if m["channel"] == "email"
                and m["status"] not in ("baseline", "start")]

    def pending(self) -> list[Any]:
        return self.storage.pending_messages()


def received_by(server: MailServer) -> dict[str, list[Received]]:
    out: dict[str, list[Received]] = {}
    for m in server.messages:
        assert len(m.rcpt_tos) == 1  # one message per subscriber: its own unsubscribe link
        out.setdefault(m.rcpt_tos[0], []).append(m)
    return out


def plain(received: Received) -> str:
    return received.message.get_body(("plain",)).get_content()


@pytest.fixture
def server() -> Iterator[MailServer]:
    with MailServer() as srv:
        yield srv


@pytest.fixture
def env(tmp_path: Path, server: MailServer) -> Iterator[Env]:
    e = Env(tmp_path, server.port)
    yield e
    e.storage.close()


def assert_each_version_in_one_digest(env: Env, subscribers: tuple[str, ...] = (A, B)) -> None:
    """Every story's current text went to each subscriber in exactly one message; no version twice."""
    history = env.sent_history()
    current = {s.uid for s in env.storage.latest_stories(1000)}
    for who in subscribers:
        carried = [(uid, h) for m in history if m["subscriber"] == who for uid, h, _ in m["stories"]]
        assert len(carried) == len(set(carried)), who
        assert {uid for uid, _ in carried} == current, who


def test_digest_reaches_every_recipient_with_both_parts(env: Env, server: MailServer) -> None:
    env.add(*BRIEFS[:2], ARTICLE)
    result = env.deliver()
    assert result.ok and len(result.sent) == 2
    got = received_by(server)
    assert sorted(got) == [A, B]
    for address in (A, B):
        [one] = got[address]
        assert one.mail_from == SENDER
        msg = one.message
        assert msg["Subject"] == "CSTO bulletins: 3 new"
        assert msg["Message-ID"] in {s.message_id for s in result.sent if s.subscriber == address}
        assert msg["From"] == SENDER and msg["Date"] and msg["To"] == address
        assert msg["List-Id"] == "Test bulletins <test-bulletins.monitor.localhost>"
        text, markup = (p.get_content() for p in msg.iter_parts())
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        for needle in (BRIEFS[0], BRIEFS[1], "Exercise of the Collective Rapid Reaction Forces", "2024-09-15"):
            assert needle in text and needle in markup
        assert "near Bishkek" in text and "<b>near Bishkek</b>" not in markup
        assert "&lt;b&gt;near Bishkek&lt;/b&gt;" in markup
        assert "About two thousand" not in text  # an article's first paragraph, then the link
        assert text.count("Full entry: http://127.0.0.1:8080/stories/") == 3
    # Nothing new: nothing sent.
    again = env.deliver()
    assert again.ok and not again.sent and len(server.messages) == 2
    assert_each_version_in_one_digest(env)


def test_a_revision_after_mailing_goes_out_with_a_diff(env: Env, server: MailServer) -> None:
    env.add(*BRIEFS[:3])
    env.deliver()
    env.add(REVISED, BRIEFS[3])
    result = env.deliver()
    assert result.ok and len(server.messages) == 4
    for address in (A, B):
        msg = received_by(server)[address][1].message
        assert msg["Subject"] == "CSTO bulletins: 1 new, 1 revised"
        text = msg.get_body(("plain",)).get_content()
        assert text.index("New (1)") < text.index(BRIEFS[3]) < text.index("Revised (1)")
        assert "Group in Moscow {+and agreed on a joint plan for next year+}." in text
        markup = msg.get_body(("html",)).get_content()
        assert 'in Moscow <ins style="color:#060">and agreed on a joint plan for next year</ins>.' in markup
        assert BRIEFS[0] not in text  # mailed before, unchanged since
    assert_each_version_in_one_digest(env)


def test_server_down_keeps_the_digest_and_retries_the_same_message(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    env = Env(tmp_path, port)
    env.add(*BRIEFS[:2])
    failed = env.deliver()
    # The server is down: the first message stays pending, and no more are made on top of it.
    assert failed.error and "cannot connect" in failed.error and failed.pending == 1 and not failed.sent
    [pending] = env.pending()
    assert pending.subscriber == A
    env.add(BRIEFS[2])  # new while the server is down: Alice's next digest, not this one
    with MailServer() as server:
        result = env.deliver(port=server.port)
    assert result.ok and len(result.sent) == 3 and result.sent[0].message_id == pending.message_key
    assert [m.message["Message-ID"] for m in server.messages] == [s.message_id for s in result.sent]
    got = received_by(server)
    first, second = (plain(m) for m in got[A])
    assert BRIEFS[0] in first and BRIEFS[1] in first and BRIEFS[2] not in first
    assert BRIEFS[2] in second and BRIEFS[0] not in second
    [bob] = got[B]  # Bob's first digest was made once the server was back: all three
    assert all(b in plain(bob) for b in BRIEFS[:3])
    assert [m["attempts"] for m in env.sent_history()] == [2, 1, 1]
    assert_each_version_in_one_digest(env)
    env.storage.close()


def test_4xx_on_rcpt_keeps_it_pending_then_the_same_digest_goes(env: Env, server: MailServer) -> None:
    env.add(*BRIEFS[:2])
    server.recorder.rcpt_replies = {A: "450 4.2.1 Mailbox busy, try later", B: "451 4.3.0 Try again"}
    failed = env.deliver()
    assert not failed.ok and failed.error == "451 4.3.0 local error at the server" and failed.pending == 2
    assert server.messages == []
    pending = {m.subscriber: m.message_key for m in env.pending()}
    assert sorted(pending) == [A, B]
    server.recorder.rcpt_replies = {}
    result = env.deliver()
    assert result.ok and {s.message_id for s in result.sent} == set(pending.values())
    assert {a: m[0].message["Message-ID"] for a, m in received_by(server).items()} == pending


def test_4xx_for_one_recipient_retries_only_that_one(env: Env, server: MailServer) -> None:
    env.add(*BRIEFS[:2])
    server.recorder.rcpt_replies = {B: "452 4.2.2 Mailbox full"}
    partial = env.deliver()
    assert partial.pending == 1 and [s.subscriber for s in partial.sent] == [A] and not partial.ok
    assert [m.rcpt_tos for m in server.messages] == [[A]]
    server.recorder.rcpt_replies = {}
    done = env.deliver()
    assert done.ok and [s.subscriber for s in done.sent] == [B]
    assert [m.rcpt_tos for m in server.messages] == [[A], [B]]  # Alice does not get it twice


def test_5xx_for_one_recipient_is_reported_and_the_others_get_it(env: Env, server: MailServer,
                                                                 tmp_path: Path, caplog: Any) -> None:
    env.storage.close()
    env = Env(tmp_path, server.port, recipients=(A, BAD, B))
    server.recorder.rcpt_replies = {BAD: "550 5.1.1 No such user"}
    env.add(*BRIEFS[:2])
    with caplog.at_level(logging.WARNING, logger="monitor.digest"):
        result = env.deliver()
    assert len(result.sent) == 2 and result.pending == 0 and result.ok
    assert result.refused == ((BAD, "550 5.1.1 mailbox unavailable"),)
    assert BAD in caplog.text and "550" in caplog.text
    assert sorted(received_by(server)) == [A, B]
    refused = [m for m in env.sent_history() if m["subscriber"] == BAD]
    assert [(m["status"], m["last_error"]) for m in refused] == [("refused", "550 5.1.1 mailbox unavailable")]
    assert env.deliver().ok and len(server.messages) == 2  # a permanent refusal is not retried
    from monitor.digest import delivery_problems

    assert delivery_problems(env.settings, env.storage) == [
        f"email to {BAD} refused for good: 550 5.1.1 mailbox unavailable"]
    env.storage.close()


def test_connection_dropped_during_data(env: Env, server: MailServer) -> None:
    def hang_up(srv: Any, session: Any, envelope: Any) -> str:
        srv.transport.close()
        return "250 never seen"

    env.add(*BRIEFS[:2])
    server.recorder.on_data = hang_up
    failed = env.deliver()
    assert failed.error and failed.pending == 1 and server.messages == []
    [pending] = env.pending()
    server.recorder.on_data = None
    result = env.deliver()
    assert result.ok and received_by(server)[A][0].message["Message-ID"] == pending.message_key
    assert_each_version_in_one_digest(env)


def test_a_server_that_does_not_answer_times_out(env: Env, server: MailServer) -> None:
    def stall(srv: Any, session: Any, envelope: Any) -> str:
        time.sleep(1.5)
        return "451 4.3.0 too late"

    env.add(BRIEFS[0])
    server.recorder.on_data = stall
    t0 = time.monotonic()
    failed = env.deliver(timeout=0.5)
    assert time.monotonic() - t0 < 1.4
    assert failed.error and "no answer within 0.5s" in failed.error and failed.pending == 1
    server.recorder.on_data = None
    time.sleep(1.2)  # let the stalled session end
    assert env.deliver().ok and len(server.messages) == 2


def test_a_backlog_larger_than_max_stories_is_summarised_and_all_delivered(env: Env, server: MailServer) -> None:
    env.add(*BRIEFS)
    small = env.settings._replace(digest=env.settings.digest._replace(max_stories=2))
    result = send_pending(small, env.storage)
    assert result.ok and len(server.messages) == 2
    for got in server.messages:
        msg = got.message
        assert msg["Subject"] == "CSTO bulletins: 5 new"
        assert plain(got).count("Full entry:") == 2
        assert "…and 3 more (3 new): http://127.0.0.1:8080/feed.atom" in plain(got)
    for digest in env.sent_history():
        assert sorted(section for _, _, section in digest["stories"]) == ["more", "more", "more", "new", "new"]
    assert send_pending(small, env.storage).sent == ()  # the summarised ones count as delivered


def test_login_uses_the_password_from_the_environment_and_never_logs_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    secret = "s3cret-Pa55-from-env"
    seen: list[tuple[str, str]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        seen.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == secret.encode())

    monkeypatch.setenv("MONITOR_SMTP_PASSWORD", secret)
    server = MailServer(authenticator=authenticator, auth_require_tls=False)
    with server, caplog.at_level(logging.DEBUG):
        env = Env(tmp_path, server.port, username="digest-user")
        assert secret not in repr(env.settings)
        env.add(BRIEFS[0])
        result = env.deliver()
        env.storage.close()
    assert result.ok and len(server.messages) == 2
    assert seen == [("digest-user", secret)] * 2
    assert secret not in caplog.text


def test_an_auth_reply_that_echoes_the_client_is_not_logged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """A 535 quoting the AUTH line carries the base64 of the password: code and our words only."""
    import base64

    secret = "s3cret-Pa55-from-env"
    echo = base64.b64encode(f"\0digest-user\0{secret}".encode()).decode()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        return AuthResult(success=False, handled=False, message=f"535 5.7.8 Bad credentials in AUTH PLAIN {echo}")

    monkeypatch.setenv("MONITOR_SMTP_PASSWORD", secret)
    server = MailServer(authenticator=authenticator, auth_require_tls=False)
    with server, caplog.at_level(logging.DEBUG):
        env = Env(tmp_path, server.port, username="digest-user")
        env.add(BRIEFS[0])
        result = env.deliver()
        problems = __import__("monitor.digest", fromlist=["x"]).delivery_problems(env.settings, env.storage)
        env.storage.close()
    assert result.error == f"SMTP 127.0.0.1:{server.port}: 535 5.7.8 authentication failed"
    assert problems and "535 5.7.8 authentication failed" in problems[0]
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("mail.log"))  # not the server's
    for text in (ours, result.error, *problems):
        assert echo not in text and secret not in text and "Bad credentials" not in text
    assert env.sent_history()[0]["last_error"] == result.error  # what the store keeps, too

def test_utc_dates_in_the_store(env: Env) -> None:
    env.add(BRIEFS[0])
    env.deliver()
    for digest in env.sent_history():
        assert digest["created"].tzinfo == dt.UTC and digest["sent"] >= digest["created"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a test certificate")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_starttls_verify_the_server_certificate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path], security: str) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    options = {"tls_context": context, "require_starttls": True} if security == "starttls" else \
        {"ssl_context": context}
    server = MailServer(**options)
    with server:
        env = Env(tmp_path, server.port, security=security)
        env.add(BRIEFS[0])
        untrusted = env.deliver()  # the system's CAs do not know this certificate
        assert untrusted.error and "CERTIFICATE_VERIFY_FAILED" in untrusted.error and untrusted.pending == 1
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust it, as an operator would with their CA
        result = env.deliver()
        env.storage.close()
    assert result.ok and len(server.messages) == 2
    assert [m.message["Message-ID"] for m in server.messages] == [s.message_id for s in result.sent]


def test_migrations_create_what_the_schema_describes(store_url: str) -> None:
    diffs = schema_diffs(store_url)
    ours = [d for d in diffs if any(t in repr(d) for t in ("outbox", "deliveries", "unsubscribed", "digest"))]
    assert ours == []


def test_maildir_retry_after_a_crash_does_not_deliver_twice(tmp_path: Path) -> None:
    """A run that put the digest in the Maildir and died before marking it: the retry sees it there."""
    import mailbox

    from monitor.notify import channel
    from monitor.notify.subscribers import recipients

    config = write_config(tmp_path, digest={"recipients": [A]})
    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    try:
        drop_file(tmp_path / "drop", "a.txt", (BRIEFS[0] + "\n").encode())
        scan(settings, storage)
        [who] = recipients(settings)
        real_send = type(channel("email")).send
        crashed: list[str] = []

        def send_then_crash(self: Any, message: Any, who: Any, settings: Any) -> Any:
            real_send(self, message, who, settings)  # the real Maildir delivery...
            crashed.append(message.message_key)
            raise SystemExit("killed before the mark")  # ...then the process dies

        type(channel("email")).send = send_then_crash  # type: ignore[method-assign]
        try:
            with pytest.raises(SystemExit):
                send_pending(settings, storage)
        finally:
            type(channel("email")).send = real_send  # type: ignore[method-assign]
        [pending] = storage.pending_messages()
        assert pending.message_key == crashed[0] and pending.subscriber == who.name
        box = mailbox.Maildir(settings.digest.outbox, factory=None, create=False)
        [key] = box.keys()
        read = box[key]
        read.set_subdir("cur")
        read.add_flag("S")  # a mail client has read it meanwhile: moved to cur/ with flags
        box[key] = read
        assert [p.name for p in (settings.digest.outbox / "cur").iterdir()] == [f"{key}:2,S"]
        result = send_pending(settings, storage)
        assert [s.message_id for s in result.sent] == [pending.message_key] and result.ok
        assert len(box) == 1 and next(iter(box))["Message-ID"] == pending.message_key
        assert storage.pending_messages() == []
    finally:
        storage.close()
