"""WebSub: the hub link in every feed, and the publish ping to a real hub endpoint on loopback."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import Monitor, ValidateAtom, validate_atom, write_config
from httpsink import HttpSink
from lxml import etree
from servicekit import Service, wait_for

from monitor.config import load_settings
from monitor.notify import websub
from monitor.publish import Publisher
from monitor.storage import Storage

BRIEF = "On 12 December, the Secretary General met the delegation of the Monitoring Group in Moscow."
OTHER = "On 14 December, the Council of Foreign Ministers adopted the plan of consultations for the next year."
ATOM = "{http://www.w3.org/2005/Atom}"


def hub_links(feed: bytes) -> list[str]:
    return [link.get("href") for link in etree.fromstring(feed).findall(ATOM + "link") if link.get("rel") == "hub"]


def test_every_feed_names_the_hub_and_still_validates(tmp_path: Path, exe: str) -> None:
    """The main feed, the corrections feed and an archive: whatever the publisher renders."""
    with HttpSink() as hub:
        config = write_config(tmp_path, feed={"hub": hub.url, "max_entries": 1})
        monitor = Monitor(exe, config)
        monitor.drop_file("a.txt", (BRIEF + "\n").encode())
        monitor.drop_file("b.txt", (OTHER + "\n").encode())
        monitor("scan")
        feed = monitor.feed()
        storage = Storage.open(load_settings(config).state.database_url)
        try:
            archive = Publisher(load_settings(config), storage).archive(1)
        finally:
            storage.close()
    assert archive is not None
    for document in (feed, (tmp_path / "corrections.atom").read_bytes(), archive.identity.body):
        assert hub_links(document) == [hub.url]
        validate_atom(document)
    (tmp_path / "plain").mkdir()
    plain = Monitor(exe, write_config(tmp_path / "plain"))
    plain("scan")
    assert hub_links(plain.feed()) == []  # no hub: no link


def test_a_changed_feed_pings_the_hub_and_a_failed_ping_is_retried(tmp_path: Path, exe: str) -> None:
    with HttpSink() as hub:
        hub.sink.plan = [503, "drop"]  # the hub fails twice, then takes it
        monitor = Monitor(exe, write_config(tmp_path, feed={"hub": hub.url}))
        monitor.drop_file("a.txt", (BRIEF + "\n").encode())
        monitor("scan")
        assert len(hub.sink.requests) == 3
        [ping] = hub.sink.accepted
        assert ping.headers["content-type"] == "application/x-www-form-urlencoded"
        # The first scan writes both feed files: one ping names both.
        assert ping.form() == [("hub.mode", "publish"), ("hub.url", "http://127.0.0.1:8080/corrections.atom"),
                               ("hub.url", "http://127.0.0.1:8080/feed.atom")]
        monitor("scan")  # nothing changed: no ping
        assert len(hub.sink.requests) == 3


def test_the_service_pings_after_each_change_of_its_feed(tmp_path: Path, exe: str,
                                                         validate: ValidateAtom = validate_atom) -> None:
    with HttpSink() as hub:
        svc = Service(exe, tmp_path, feed={"hub": hub.url}, digest={"enabled": False})
        try:
            svc.wait_ready()
            base = len(hub.sink.accepted)  # the first render of the feed file at start
            svc.drop.joinpath("a.txt").write_bytes((BRIEF + "\n").encode())
            wait_for(lambda: len(hub.sink.accepted) > base, timeout=20, what="the ping after the pickup")
            assert hub.sink.accepted[-1].form() == [("hub.mode", "publish"), ("hub.url", svc.base + "feed.atom")]
            time.sleep(1.5)
            assert len(hub.sink.accepted) == base + 1  # one ping per change, not one per writer
            assert hub_links(svc.get("/feed.atom").body) == [hub.url]
            validate(svc.get("/feed.atom").body)
        finally:
            svc.stop()


def test_publish_gives_up_after_its_tries(tmp_path: Path) -> None:
    slept: list[float] = []
    with HttpSink() as hub:
        hub.sink.default = 500
        assert not websub.publish(hub.url, ["http://x/feed.atom"], delays=(1.0, 2.0), sleep=slept.append)
        assert len(hub.sink.requests) == 3 and slept == [1.0, 2.0]
