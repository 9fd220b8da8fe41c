"""`monitor digest` and `monitor scan --baseline` through the real console script."""

from __future__ import annotations

import mailbox
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import Monitor, write_config
from mailserver import MailServer, Received, free_port

BRIEFS = [
    "On 20 December, a joint training session was held between the duty shifts of the Crisis Response Center.",
    "On 10 and 11 December, the Joint Staff hosted videoconference consultations on joint training activities.",
    "On 12 December, the Secretary General met the delegation of the Monitoring Group in Moscow.",
    "On 13 December, a seminar on information security took place in Yerevan with experts from five states.",
]
STORY_URL = re.compile(r"http://127\.0\.0\.1:8080/stories/[0-9a-f-]+")


def smtp_monitor(exe: str, tmp_path: Path, port: int, database_url: str | None = None,
                 recipients: tuple[str, ...] = ("alice@example.org", "bob@example.org")) -> Monitor:
    config = write_config(tmp_path, database_url,
                          digest={"recipients": list(recipients),
                                  "sender": "digest@example.org", "subject": "CSTO bulletins"},
                          smtp={"host": "127.0.0.1", "port": port, "security": "none", "timeout": 5})
    return Monitor(exe, config)


def add(monitor: Monitor, name: str, *texts: str, baseline: bool = False) -> str:
    monitor.drop_file(name, "\n".join(texts).encode() + b"\n")
    return monitor("scan", *(["--baseline"] if baseline else [])).stdout


def digest_rows(folder: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(folder / "monitor.db") as db:
        return db.execute("SELECT message_key, status FROM outbox WHERE channel = 'email' "
                          "AND status NOT IN ('start', 'baseline') ORDER BY id").fetchall()


def stories_in(received: Received) -> set[str]:
    return set(STORY_URL.findall(received.message.get_body(("plain",)).get_content()))


def test_maildir_is_the_default_and_opens_in_a_standard_reader(monitor: Monitor) -> None:
    add(monitor, "a.txt", *BRIEFS[:2])
    done = monitor("digest")
    assert "digest: sent <" in done.stdout
    box = mailbox.Maildir(monitor.folder / "state" / "outbox", factory=None, create=False)
    [msg] = list(box)
    assert msg["Subject"] == "Bulletins: 2 new"
    assert msg["Message-ID"] in done.stdout
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.get_payload()] == ["text/plain", "text/html"]
    assert BRIEFS[0] in msg.get_payload()[0].get_payload(decode=True).decode()
    assert monitor("digest").stdout.strip() == "digest: nothing to send"
    assert len(box) == 1
    add(monitor, "b.txt", BRIEFS[2])
    monitor("digest")
    assert sorted(m["Subject"] for m in box) == ["Bulletins: 1 new", "Bulletins: 2 new"]


def test_dry_run_prints_a_readable_preview_and_changes_nothing(monitor: Monitor) -> None:
    add(monitor, "a.txt", *BRIEFS[:3])
    dry = monitor("digest", "--dry-run")
    outbox = monitor.folder / "state" / "outbox"
    head = f"=== email to the Maildir {outbox} (new; 3 new, 0 revised)\nSubject: Bulletins: 3 new\n"
    assert dry.stdout.startswith(head)
    assert BRIEFS[0] in dry.stdout and "New (3)" in dry.stdout  # the decoded plain text
    assert "multipart/alternative" not in dry.stdout and "Content-Transfer-Encoding" not in dry.stdout
    assert "no recipients configured" in dry.stderr and str(outbox) in dry.stderr
    raw = monitor("digest", "--dry-run", "--raw")
    assert raw.stdout.startswith("Subject: Bulletins: 3 new\n")
    assert "Message-ID: <" in raw.stdout and "multipart/alternative" in raw.stdout
    assert digest_rows(monitor.folder) == []
    assert not outbox.exists()
    assert "Subject: Bulletins: 3 new" in monitor("digest", "--dry-run").stdout  # still due


def test_dry_run_names_the_envelope_recipients(tmp_path: Path, exe: str) -> None:
    monitor = smtp_monitor(exe, tmp_path, free_port())
    add(monitor, "a.txt", BRIEFS[0])
    dry = monitor("digest", "--dry-run")
    heads = [line for line in dry.stdout.splitlines() if line.startswith("=== ")]
    assert heads == ["=== email to alice@example.org (new; 1 new, 0 revised)",
                     "=== email to bob@example.org (new; 1 new, 0 revised)"]
    assert "no recipients configured" not in dry.stderr


def test_baseline_keeps_the_archive_out_of_the_first_digest(monitor: Monitor) -> None:
    out = add(monitor, "archive.txt", *BRIEFS[:3], baseline=True)
    assert "baseline: 3 stories marked as already mailed" in out
    assert monitor("digest", "--dry-run").stderr.strip().endswith("digest: nothing to send")
    assert monitor("digest").stdout.strip() == "digest: nothing to send"
    revised = BRIEFS[2].replace("in Moscow", "in Moscow and agreed on a joint plan")
    add(monitor, "today.txt", revised, BRIEFS[3])
    monitor("digest")
    [msg] = list(mailbox.Maildir(monitor.folder / "state" / "outbox", factory=None, create=False))
    assert msg["Subject"] == "Bulletins: 1 new, 1 revised"
    text = msg.get_payload()[0].get_payload(decode=True).decode()
    assert BRIEFS[0] not in text and BRIEFS[3] in text and "{+and agreed on a joint plan+}" in text


def test_exit_status_follows_delivery(tmp_path: Path, exe: str) -> None:
    port = free_port()
    monitor = smtp_monitor(exe, tmp_path, port)
    add(monitor, "a.txt", *BRIEFS[:2])
    down = monitor("digest", check=False)
    assert down.returncode == 1
    assert "kept for the next run" in down.stderr and "cannot connect" in down.stderr
    [(message_id, status)] = digest_rows(tmp_path)  # the server is down: no more made on top of it
    assert status == "pending"
    shown = monitor("status").stdout
    assert "digests pending: 1" in shown and message_id in shown and "1 attempts" in shown
    assert "delivery problems: 1" in shown and "email to alice@example.org not delivered after 1 attempts" in shown
    assert "cannot connect" in shown
    with MailServer(port=port) as server:
        up = monitor("digest")
    assert up.returncode == 0 and message_id in up.stdout
    assert server.messages[0].message["Message-ID"] == message_id
    assert [s for _, s in digest_rows(tmp_path)] == ["sent", "sent"]
    shown = monitor("status").stdout
    assert "digests pending: 0" in shown and "delivery problems: 0" in shown


def test_a_crash_between_send_and_mark_repeats_the_same_digest_only(tmp_path: Path, exe: str) -> None:
    """The server accepts and the client is killed before it can record that: at-least-once."""
    victim: list[subprocess.Popen[str]] = []

    def kill_client(srv: Any, session: Any, envelope: Any) -> str:
        # The server has the message (recorded first), the client dies before the 250 reaches it.
        server.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
        deadline = time.monotonic() + 10
        while not victim and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(victim[0].pid, signal.SIGKILL)
        victim[0].wait(10)  # dead: it can never mark the digest sent
        return "250 Message accepted for delivery"

    with MailServer() as server:
        monitor = smtp_monitor(exe, tmp_path, server.port, recipients=("alice@example.org",))
        add(monitor, "a.txt", *BRIEFS[:2])
        server.recorder.on_data = kill_client
        victim.append(subprocess.Popen([monitor.exe, "--config", str(monitor.config), "digest"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=monitor.env))
        assert victim[0].wait(30) == -signal.SIGKILL
        [(message_id, status)] = digest_rows(tmp_path)
        assert status == "pending" and len(server.messages) == 1
        server.recorder.on_data = None
        add(monitor, "b.txt", BRIEFS[2])  # arrives after the crash: belongs to the next digest
        monitor("digest")
        assert monitor("digest").stdout.strip() == "digest: nothing to send"
    first, repeat, after = server.messages
    assert repeat.data == first.data  # the same bytes, Message-ID and all: a mail system can drop it
    assert first.message["Message-ID"] == message_id
    assert after.message["Message-ID"] != message_id
    assert len(stories_in(first)) == 2 and len(stories_in(after)) == 1
    assert not stories_in(first) & stories_in(after)  # no story in two different digests
    assert [s for _, s in digest_rows(tmp_path)] == ["sent", "sent"]


def test_two_runners_at_the_same_moment_send_one_digest(tmp_path: Path, exe: str, store_url: str) -> None:
    def slow_accept(srv: Any, session: Any, envelope: Any) -> None:
        time.sleep(1.0)  # hold the first runner inside the send while the other starts
        return None

    with MailServer() as server:
        monitor = smtp_monitor(exe, tmp_path, server.port, database_url=store_url)
        add(monitor, "a.txt", *BRIEFS)
        server.recorder.on_data = slow_accept
        command = [monitor.exe, "--config", str(monitor.config), "digest"]
        runners = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=monitor.env) for _ in range(2)]
        outputs = [r.communicate(timeout=60) for r in runners]
    assert [r.returncode for r in runners] == [0, 0], outputs
    assert sorted(m.rcpt_tos[0] for m in server.messages) == ["alice@example.org", "bob@example.org"]
    stdout = [out for out, _ in outputs]
    assert sum(out.count("digest: sent <") for out in stdout) == 2
    assert any("another digest runner" in out or "nothing to send" in out for out in stdout)
    assert all(len(stories_in(m)) == len(BRIEFS) for m in server.messages)


def test_smtp_without_recipients_is_a_config_error(tmp_path: Path, exe: str) -> None:
    config = write_config(tmp_path, smtp={"host": "127.0.0.1", "port": free_port()})
    proc = Monitor(exe, config)("digest", check=False)
    assert proc.returncode == 2
    assert "[digest] recipients" in proc.stderr and str(config) in proc.stderr



def test_a_subscriber_added_later_starts_with_what_arrives_then(tmp_path: Path, exe: str) -> None:
    """The dry run shows what the real run sends: nothing of what was delivered before it joined."""
    with MailServer() as server:
        monitor = smtp_monitor(exe, tmp_path, server.port, recipients=("alice@example.org",))
        add(monitor, "a.txt", *BRIEFS[:2])
        monitor("digest")
        monitor.config.write_text(monitor.config.read_text().replace(
            '"alice@example.org"]', '"alice@example.org", "carol@example.org"]'))
        assert monitor("digest", "--dry-run").stderr.strip().endswith("digest: nothing to send")
        assert monitor("digest").stdout.strip() == "digest: nothing to send"
        add(monitor, "b.txt", BRIEFS[2])
        heads = [h for h in monitor("digest", "--dry-run").stdout.splitlines() if h.startswith("=== ")]
        assert heads == ["=== email to alice@example.org (new; 1 new, 0 revised)",
                         "=== email to carol@example.org (new; 1 new, 0 revised)"]
        monitor("digest")
    carol = [m for m in server.messages if m.rcpt_tos == ["carol@example.org"]]
    assert len(carol) == 1 and stories_in(carol[0]) and BRIEFS[2] in carol[0].message.get_body(
        ("plain",)).get_content()
