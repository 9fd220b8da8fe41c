"""Subscribers: topics and cadences, each getting exactly their stories; one-click unsubscribe
through a real HTTP POST to the running service."""

from __future__ import annotations

import datetime as dt
import http.client
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import Monitor, drop_file, write_config
from mailserver import MailServer, Received
from servicekit import Service, wait_for

from monitor.config import TopicSettings, load_settings
from monitor.models import Story
from monitor.notify.topics import QueryMatcher
from monitor.notify.unsubscribe import token, verify
from monitor.scan import scan
from monitor.server import MAX_BODY
from monitor.service import Service as MonitorService
from monitor.storage import Storage

SECRET = "a-long-random-secret-for-the-tests"
MINSK = [
    "On 20 December a joint training session was held in Minsk by the duty shifts of the Crisis Center.",
    "On 21 December the Council of Defence Ministers met in Minsk and adopted its plan for next year.",
    "On 23 December the working group on cyber security met in Minsk for the third time this year.",
]
OTHER = [
    "On 22 December a seminar on information security took place in Yerevan with experts from five states.",
    "On 24 December the Secretary General received the ambassador of Kazakhstan in Moscow.",
]
A, B = "alice@example.org", "bob@example.org"
TOPICS = [{"name": "belarus", "query": "Minsk OR Минск OR Belarus"}, {"name": "security", "query": "security"}]


def add_topics(config: Path, topics: list[dict[str, str]] = TOPICS) -> Path:
    with config.open("a") as fh:
        for topic in topics:
            fh.write(f'\n[[topics]]\nname = "{topic["name"]}"\nquery = "{topic["query"]}"\n')
    return config


def add_subscribers(config: Path, entries: list[dict[str, object]]) -> Path:
    with config.open("a") as fh:
        for entry in entries:
            fh.write("\n[[subscribers]]\n")
            for key, value in entry.items():
                shown = "[" + ", ".join(f'"{v}"' for v in value) + "]" if isinstance(value, list) else f'"{value}"'
                fh.write(f"{key} = {shown}\n")
    return config


def urls_in(received: Received) -> set[str]:
    return set(re.findall(r"http://127\.0\.0\.1:\d+/stories/[0-9a-f-]+", received.message.get_body(("plain",))
                          .get_content()))


@pytest.fixture
def server() -> Iterator[MailServer]:
    with MailServer() as srv:
        yield srv


def test_a_subscriber_topic_selects_what_its_query_matches() -> None:
    def story(n: int, text: str) -> Story:
        when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        return Story(uid=f"u{n}", kind="brief", title=text[:20], paragraphs=(text,), published=None,
                     first_seen=when, updated=when)

    stories = [story(1, MINSK[0]), story(2, OTHER[0]), story(3, MINSK[2]), story(4, "The Minskaya street was closed."),
               story(5, "Заседание прошло в Минске.")]
    m = QueryMatcher([TopicSettings(**t) for t in TOPICS]
                     + [TopicSettings(name="infosec", query='"information security" -Minsk')])
    assert m.matching(["belarus"], stories) == {"u1", "u3", "u5"}  # word forms (Минске), not "Minskaya"
    assert m.matching(["security"], stories) == {"u2", "u3"}
    assert m.matching(["infosec"], stories) == {"u2"}  # the phrase, and the exclusion
    assert m.matching(["belarus", "infosec"], stories) == {"u1", "u2", "u3", "u5"}
    assert m.matching([], stories) == set()


def test_a_subscriber_naming_an_unknown_topic_is_a_config_error(tmp_path: Path, exe: str) -> None:
    config = add_topics(write_config(tmp_path))
    add_subscribers(config, [{"name": "minsk-desk", "email": A, "topics": ["belarus", "minsk"]}])
    proc = Monitor(exe, config)("status", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"monitor: config error: {config}: [[subscribers]] minsk-desk: topics: unknown topic 'minsk' "
        "(not the name of any [[topics]] entry)"]


def test_two_subscribers_with_different_topics_and_cadences_get_exactly_their_stories(
        tmp_path: Path, server: MailServer) -> None:
    config = write_config(tmp_path, digest={"enabled": False, "sender": "digest@example.org"},
                          smtp={"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": 5})
    add_subscribers(add_topics(config), [
        {"name": "minsk-desk", "email": A, "topics": ["belarus"], "cadence": "daily", "schedule": "0 7 * * *",
         "timezone": "Europe/Minsk"},
        {"name": "security-desk", "email": B, "topics": ["security"], "cadence": "weekly"},
    ])
    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    service = MonitorService(settings, storage)
    try:
        jobs = {j.id: j for j in service.scheduler.get_jobs()}
        assert set(jobs) == {"scan", "deliver-1", "deliver-2"}  # [digest] is off: no implicit subscribers
        by_names = {j.args[0]: j for j in jobs.values() if j.id.startswith("deliver")}
        daily, weekly = by_names[("minsk-desk",)], by_names[("security-desk",)]
        monday = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
        assert daily.trigger.get_next_fire_time(None, monday).isoformat() == "2026-12-01T07:00:00+03:00"
        assert weekly.trigger.get_next_fire_time(None, monday).isoformat() == "2026-12-07T08:00:00+00:00"

        drop_file(tmp_path / "drop", "a.txt", "\n".join([MINSK[0], OTHER[0], MINSK[1]]).encode() + b"\n")
        scan(settings, storage)
        daily.func(*daily.args)  # the daily job: the Minsk desk only, and only the belarus topic's stories
        assert [m.rcpt_tos for m in server.messages] == [[A]]
        assert server.messages[0].message["Subject"] == "Bulletins: 2 new"
        text = server.messages[0].message.get_body(("plain",)).get_content()
        assert MINSK[0] in text and MINSK[1] in text and OTHER[0] not in text
        # Its digest has its topic's section, not the other subscriber's topic.
        assert "Topic: belarus (2)" in text and "Topic: security" not in text

        drop_file(tmp_path / "drop", "b.txt", "\n".join([OTHER[1], MINSK[2]]).encode() + b"\n")
        scan(settings, storage)
        daily.func(*daily.args)
        weekly.func(*weekly.args)  # the weekly one: the security topic's two, from both passes
        to_a = [m for m in server.messages if m.rcpt_tos == [A]]
        to_b = [m for m in server.messages if m.rcpt_tos == [B]]
        assert len(to_a) == 2 and len(to_b) == 1
        second = to_a[1].message.get_body(("plain",)).get_content()
        assert MINSK[2] in second and MINSK[0] not in second and OTHER[1] not in second
        assert to_b[0].message["Subject"] == "Bulletins: 2 new"
        weekly_text = to_b[0].message.get_body(("plain",)).get_content()
        assert OTHER[0] in weekly_text and MINSK[2] in weekly_text  # cyber security in Minsk: both topics
        assert not any(t in weekly_text for t in (MINSK[0], MINSK[1], OTHER[1]))
        assert "Topic: security (2)" in weekly_text and "Topic: belarus" not in weekly_text
        assert len(urls_in(to_b[0])) == 2
        daily.func(*daily.args)
        weekly.func(*weekly.args)
        assert len(server.messages) == 3  # nothing twice
    finally:
        storage.close()


def test_tokens_are_signed_and_an_altered_one_is_refused() -> None:
    good = token(SECRET, A)
    assert verify(SECRET, good) == A
    name, mac = good.split(".")
    assert verify("another-secret", good) is None
    assert verify(SECRET, token(SECRET, B).split(".")[0] + "." + mac) is None  # another name, A's MAC
    assert verify(SECRET, name + "." + mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")) is None
    for junk in ("", ".", "abc", "a.b.c", "!!!.???", name + "."):
        assert verify(SECRET, junk) is None
    assert verify("", good) is None  # no secret set: no link is ever valid


def post(port: int, path: str, body: bytes = b"List-Unsubscribe=One-Click") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_one_click_unsubscribe_through_the_running_service_stops_that_subscriber_only(
        tmp_path: Path, exe: str, server: MailServer) -> None:
    env = {"MONITOR_UNSUBSCRIBE_SECRET": SECRET}
    smtp = {"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": 5}
    svc = Service(exe, tmp_path, env=env, digest={"enabled": True, "recipients": [A, B], "sender": "d@example.org"},
                  smtp=smtp)
    try:
        svc.wait_ready()
        cli = Monitor(exe, svc.config, env=env)
        drop_file(svc.drop, "a.txt", (MINSK[0] + "\n").encode())
        cli("scan")
        cli("digest")
        first = {m.rcpt_tos[0]: m.message for m in server.messages}
        assert sorted(first) == [A, B]
        for address, msg in first.items():
            assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            link = msg["List-Unsubscribe"].strip("<>")
            assert link.startswith(f"{svc.base}unsubscribe/") and verify(SECRET, link.rsplit("/", 1)[1]) == address
        path = urlsplit(first[A]["List-Unsubscribe"].strip("<>")).path
        page = svc.get(path)  # what a person sees: a button, and nothing done yet
        assert page.status == 200 and b'<form method="post">' in page.body and A.encode() in page.body
        assert "form-action 'self'" in page.headers["content-security-policy"]
        forged = path[:-3] + ("xyz" if not path.endswith("xyz") else "abc")
        assert post(svc.port, forged)[0] == 403
        assert post(svc.port, path, b"x" * (MAX_BODY + 1))[0] == 413  # a bounded body; nothing done
        assert svc.get(forged).status == 403
        status, body = post(svc.port, path)  # what the mail client sends (RFC 8058)
        assert status == 200 and "Unsubscribed" in body
        assert post(svc.port, path)[0] == 200  # a second click changes nothing
        svc.check_alive()
    finally:
        svc.stop()
    # A later process, the service restarted meanwhile: the unsubscribe is in the store.
    drop_file(svc.drop, "b.txt", (MINSK[1] + "\n").encode())
    cli("scan")
    cli("digest")
    later = server.messages[2:]
    assert [m.rcpt_tos for m in later] == [[B]]
    assert "unsubscribed: alice@example.org" in cli("status").stdout


def test_without_a_secret_digests_carry_no_unsubscribe_link(tmp_path: Path, server: MailServer) -> None:
    config = write_config(tmp_path, digest={"recipients": [A]},
                          smtp={"host": "127.0.0.1", "port": server.port, "security": "none"})
    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    try:
        drop_file(tmp_path / "drop", "a.txt", (MINSK[0] + "\n").encode())
        scan(settings, storage)
        from monitor.digest import send_pending

        assert send_pending(settings, storage).ok
        assert server.messages[0].message["List-Unsubscribe"] is None
    finally:
        storage.close()


def test_an_immediate_subscriber_is_alerted_after_the_pass_and_health_tells_a_refusal(
        tmp_path: Path, exe: str) -> None:
    from httpsink import HttpSink

    with HttpSink() as sink:
        sink.sink.plan = [404]  # the first alert is refused for good, the next goes through
        env = {"MONITOR_TEST_DESK": f"json://127.0.0.1:{sink.port}/hook/S3CRET-T0KEN"}
        extra = '\n[[subscribers]]\nname = "desk"\napprise_env = "MONITOR_TEST_DESK"\ncadence = "immediate"\n'
        svc = Service(exe, tmp_path, env=env, extra=extra, digest={"enabled": False})
        try:
            assert svc.wait_ready()["deliveries"] == {"ok": True, "failing": [], "refused": []}
            drop_file(svc.drop, "a.txt", (MINSK[0] + "\n").encode(), age=0)
            wait_for(lambda: sink.sink.requests, timeout=20, what="the alert after the pickup")

            def told() -> dict[str, object] | None:
                r = svc.get("/healthz")
                return r.json() if r.json()["deliveries"]["refused"] else None

            health = wait_for(told, timeout=10, what="/healthz to tell the refusal")
            # Reported, but no outage: one URL was refused, the service delivers.
            assert health["deliveries"] == {"ok": False, "failing": [],
                                            "refused": ["apprise to desk (json://…) refused for good: HTTP 404"]}
            assert health["status"] == "ok" and svc.get("/healthz").status == 200
            assert "S3CRET-T0KEN" not in svc.get("/healthz").body.decode()
            drop_file(svc.drop, "b.txt", (MINSK[1] + "\n").encode(), age=0)
            wait_for(lambda: sink.sink.accepted, timeout=20, what="the next alert")
            assert sink.sink.accepted[0].json()["title"].startswith("New: The Council of Defence Ministers")
            wait_for(lambda: svc.get("/healthz").json()["deliveries"]["ok"], timeout=10, what="deliveries ok again")
        finally:
            svc.stop()
        assert "S3CRET-T0KEN" not in svc.log()


def test_an_undeliverable_digest_shows_in_healthz_not_only_in_the_log(tmp_path: Path) -> None:
    """The SMTP host does not exist (a plain `docker run` of a config made for compose)."""
    config = write_config(tmp_path, digest={"recipients": [A], "retry_seconds": 3600},
                          smtp={"host": "mailpit.invalid", "port": 1025, "security": "none", "timeout": 5})
    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    service = MonitorService(settings, storage)
    try:
        drop_file(tmp_path / "drop", "a.txt", (MINSK[0] + "\n").encode())
        scan(settings, storage)
        status, health = service.health()
        assert status == 200 and health["deliveries"] == {"ok": True, "failing": [], "refused": []}
        service.scheduler.start(paused=True)
        service.digest_job()
        status, health = service.health()
        assert status == 503 and health["status"] == "unhealthy"
        [problem] = health["deliveries"]["failing"]
        assert problem.startswith(f"email to {A} not delivered after 1 attempts (1 waiting): "
                                  "SMTP mailpit.invalid:1025: cannot connect")
        assert problem in health["problems"]
    finally:
        service.scheduler.shutdown(wait=False)
        storage.close()


class WritingMatcher(QueryMatcher):
    """The topics' matcher, which also writes to the store from another connection while it runs:
    that write would wait (and time out) if the run held the store's write lock then."""

    def __init__(self, url: str, topics: Sequence[TopicSettings]) -> None:
        super().__init__(topics)
        self.other = Storage.open(url)
        self.wrote: list[bool] = []

    def matching(self, topics: Sequence[str], stories: Sequence[Story]) -> set[str]:
        import threading

        done = threading.Event()

        def write() -> None:
            self.other.unsubscribe("somebody-else", dt.datetime.now(dt.UTC))
            done.set()

        threading.Thread(target=write, daemon=True).start()
        self.wrote.append(done.wait(3.0))
        return super().matching(topics, stories)


def test_the_digest_is_selected_and_composed_outside_the_write_transaction(
        tmp_path: Path, store_url: str, server: MailServer) -> None:
    from monitor.digest import send_pending

    config = write_config(tmp_path, store_url, digest={"enabled": False},
                          smtp={"host": "127.0.0.1", "port": server.port, "security": "none"})
    add_subscribers(add_topics(config), [{"name": "minsk-desk", "email": A, "topics": ["belarus"]}])
    settings = load_settings(config)
    storage = Storage.open(settings.state.database_url)
    matcher = WritingMatcher(settings.state.database_url, settings.topics)
    try:
        drop_file(tmp_path / "drop", "a.txt", "\n".join([MINSK[0], OTHER[0]]).encode() + b"\n")
        scan(settings, storage)
        assert send_pending(settings, storage, matcher=matcher).ok
        assert matcher.wrote == [True]  # another writer got through while the digest was being made
        assert [m.rcpt_tos for m in server.messages] == [[A]]
        assert MINSK[0] in server.messages[0].message.get_body(("plain",)).get_content()
    finally:
        matcher.other.close()
        storage.close()
