"""Search and topics through the real service, the console script and the digest.

The service runs on SQLite and on PostgreSQL: hostile queries get a page or a valid
feed from both, never an error page or a traceback.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import Monitor, drop_file, seed, validate_atom, write_config
from lxml import etree
from lxml import html as lxml_html
from servicekit import Service, wait_for
from test_search import EN_MEETINGS, EN_STAFF, HOSTILE, RU_COUNCIL, RU_SESSIONS, bulletin_of

from monitor.config import TopicSettings
from monitor.models import Story
from monitor.notify.abc import Selection
from monitor.notify.email import build_message

TOPICS = [{"name": "afghanistan", "query": "Afghanistan OR Афганистан"},
          {"name": "sessions", "query": "заседание -Совет"},
          {"name": "serdyukov", "query": "Сердюков OR Serdyukov"}]
MARKUP = ("<script>alert(1)</script> On 8 March 2025, the meeting of the <b>Council</b> & its "
          "\"friends\" discussed <img src=x onerror=alert(2)> exercises.")
STORIES = 6 + 4 + 1


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def svc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, exe: str) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp(f"search-{request.param}")
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_server").create_database()
    (folder / "drop").mkdir()
    for name, data in (("000.txt", seed("000")), ("004.txt", seed("004")),
                       ("en.txt", bulletin_of(EN_MEETINGS, EN_STAFF)), ("ru.txt", bulletin_of(RU_SESSIONS, RU_COUNCIL)),
                       ("markup.txt", bulletin_of(MARKUP))):
        drop_file(folder / "drop", name, data)
    extra = {"state": {"database_url": url}} if url else {}
    service = Service(exe, folder, topics=TOPICS, **extra)
    try:
        service.wait_ready()
        wait_for(lambda: service.metrics()["monitor_stories_stored"] == STORIES, 20, "the stories")
        yield service
    finally:
        service.close()


def page_of(body: bytes) -> lxml_html.HtmlElement:
    return lxml_html.fromstring(body.decode())


def titles(entries: list[dict[str, str]]) -> set[str]:
    return {e["content"] for e in entries}


def test_every_page_has_the_search_box(svc: Service) -> None:
    front = page_of(svc.get("/").body)
    link = front.xpath("//ol/li/a")[0].get("href")
    for path in ("/", "/" + link, "/topics/afghanistan", "/search?q=meeting", "/search"):
        tree = page_of(svc.get(path).body)
        (form,) = tree.xpath('//form[@role="search"]')
        assert form.get("method") == "get" and form.get("action").endswith("search")
        assert form.xpath('.//input[@name="q"]'), path
    assert [a.text for a in front.xpath('//ul[@class="topics"]/li/a')] == [t["name"] for t in TOPICS]
    csp = svc.get("/").headers["content-security-policy"]
    assert "form-action 'self'" in csp  # the search box may submit (to this site only)


def test_search_page_lists_ranked_results_with_marked_snippets(svc: Service) -> None:
    r = svc.get("/search?q=" + quote("meetings"))
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    tree = page_of(r.body)
    marks = [m.text_content().lower() for m in tree.xpath("//li//mark")]
    assert marks and all(m.startswith("meet") for m in marks)
    assert tree.xpath("//script") == [] and tree.xpath("//img") == []  # the markup brief, as text
    assert any("<script>" in p.text_content() for p in tree.xpath('//p[@class="snip"]'))
    assert tree.xpath('//a[starts-with(@href, "search.atom?q=")]')


def test_russian_word_forms_and_exclusion_over_http(svc: Service) -> None:
    both = page_of(svc.get("/search?q=" + quote("заседание")).body)
    assert len(both.xpath("//ol/li")) == 2  # заседания, заседание
    tree = page_of(svc.get("/search?q=" + quote("заседание -Совет")).body)
    (text,) = [li.text_content() for li in tree.xpath("//ol/li")]
    assert "заседания рабочей группы" in text


def test_paging_links(svc: Service) -> None:
    tree = page_of(svc.get("/search?q=CSTO").body)
    assert "6 stories match" in tree.text_content()
    assert tree.xpath('//nav[@class="pages"]') == []  # one page of 20
    last = page_of(svc.get("/search?q=CSTO&page=2").body)
    assert last.xpath("//ol") == [] and last.xpath('//a[@rel="prev"]')


@pytest.mark.parametrize("q", HOSTILE)
def test_hostile_queries_get_a_page_and_a_valid_feed(svc: Service, q: str) -> None:
    path = quote(q.replace("\x00", ""), safe="")[:12_000]
    r = svc.get(f"/search?q={path}&page=2")
    assert r.status == 200, r.body[:200]
    tree = page_of(r.body)
    assert tree.xpath("//script") == []
    feed = svc.get(f"/search.atom?q={path}")
    assert feed.status == 200 and feed.headers["content-type"].startswith("application/atom+xml")
    validate_atom(feed.body)


@pytest.mark.parametrize("raw", ["q=%ZZ%", "q", "q=a&q=b&page=x", "&" * 500, "page=99999999999&q=CSTO", "q=%00%01"])
def test_malformed_query_strings_are_no_error(svc: Service, raw: str) -> None:
    assert svc.get(f"/search?{raw}").status == 200
    validate_atom(svc.get(f"/search.atom?{raw}").body)


def test_search_feed_has_validators_and_answers_304(svc: Service) -> None:
    r = svc.get("/search.atom?q=" + quote("Serdyukov OR Сердюков"))
    entries = validate_atom(r.body)
    assert len(entries) == 2
    assert svc.get("/search.atom?q=" + quote("Serdyukov OR Сердюков"), If_None_Match=r.headers["etag"]).status == 304
    assert svc.get("/search.atom?q=" + quote("Serdyukov OR Сердюков"),
                   If_Modified_Since=r.headers["last-modified"]).status == 304
    root = etree.fromstring(r.body)
    self_link = root.find("{http://www.w3.org/2005/Atom}link[@rel='self']").get("href")
    assert self_link == svc.base + "search.atom?q=" + quote("Serdyukov OR Сердюков")


def test_topic_feeds_hold_only_matching_stories(svc: Service) -> None:
    for name, expected in (("afghanistan", 1), ("sessions", 1), ("serdyukov", 2)):
        r = svc.get(f"/topics/{name}.atom")
        entries = validate_atom(r.body)
        assert len(entries) == expected, name
        assert svc.get(f"/topics/{name}.atom", If_None_Match=r.headers["etag"]).status == 304
        # Also a file beside the main feed, with the same bytes.
        assert (svc.folder / "topics" / f"{name}.atom").read_bytes() == r.body
    (session,) = validate_atom(svc.get("/topics/sessions.atom").body)
    assert "заседания" in session["content"]
    page = page_of(svc.get("/topics/afghanistan").body)
    assert len(page.xpath("//ol/li")) == 1 and page.xpath('//a[@href="afghanistan.atom"]')
    assert svc.get("/topics/nosuch.atom").status == 404


def test_opml_lists_every_feed(svc: Service) -> None:
    r = svc.get("/feeds.opml")
    assert r.status == 200
    outlines = etree.fromstring(r.body).findall(".//outline")
    urls = [o.get("xmlUrl") for o in outlines]
    assert urls == [svc.base + "feed.atom", svc.base + "corrections.atom",
                    *(f"{svc.base}topics/{t['name']}.atom" for t in TOPICS)]
    for url in urls:  # every feed listed is served, the corrections feed too
        feed = svc.get(url.removeprefix(svc.base.rstrip("/")))
        assert feed.status == 200 and feed.headers["content-type"].startswith("application/atom+xml"), url
        validate_atom(feed.body)


# -- the console script ---------------------------------------------------------------------


@pytest.fixture
def mon(tmp_path: Path, exe: str) -> Monitor:
    m = Monitor(exe, write_config(tmp_path, topics=TOPICS))
    m.drop_file("en.txt", bulletin_of(EN_MEETINGS, EN_STAFF))
    m.drop_file("ru.txt", bulletin_of(RU_SESSIONS, RU_COUNCIL))
    m("scan")
    return m


def test_search_command(mon: Monitor) -> None:
    out = mon("search", "Serdyukov", "OR", "Сердюкова").stdout
    assert out.startswith("2 stories match 'Serdyukov OR Сердюкова'")
    assert "[Serdyukov]" in out and "[Сердюкова]" in out and "/stories/" in out
    assert mon("search", '"joint staff"').stdout.startswith("1 story matches")
    assert mon("search", '"joint staff').stdout.startswith("2 stories match")  # unbalanced: two words
    for q in HOSTILE:
        proc = mon("search", "--", q.replace("\x00", "") or "-", check=False)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, q


def test_status_lists_topics_with_counts(mon: Monitor) -> None:
    out = mon("status").stdout
    assert "topics: 3\n" in out
    assert "  afghanistan: 0 stories (Afghanistan OR Афганистан)" in out
    assert "  sessions: 1 story (заседание -Совет)" in out
    assert "  serdyukov: 2 stories (Сердюков OR Serdyukov)" in out
    assert sorted(p.name for p in (mon.folder / "topics").iterdir()) == [
        "afghanistan.atom", "serdyukov.atom", "sessions.atom"]
    assert len(validate_atom((mon.folder / "topics" / "serdyukov.atom").read_bytes())) == 2


@pytest.mark.parametrize(("topics", "message"), [
    ([{"name": "x", "query": "a", "colour": "red"}], "[[topics]] #1 colour: unknown key"),
    ([{"name": "ok", "query": "a"}, {"name": "Bad Name", "query": "a"}], "[[topics]] #2 name: 'Bad Name': use"),
    ([{"name": "x", "query": "a"}, {"name": "x", "query": "b"}], "[[topics]] #2 name: 'x' is already a topic"),
    ([{"name": "x", "query": "-only -exclusions"}], "[[topics]] #1 query: '-only -exclusions' has no word"),
    ([{"name": "x", "query": '"" * ()'}], "[[topics]] #1 query: '\"\" * ()' has no word"),
    ([{"name": "x"}], "[[topics]] #1 query: missing"),
    ([{"query": "a"}], "[[topics]] #1 name: missing"),
    ([{"name": "x", "query": 3}], "[[topics]] #1 query: expected a string, got int 3"),
])
def test_bad_topics_are_config_errors(tmp_path: Path, exe: str, topics: list[dict[str, object]], message: str) -> None:
    proc = Monitor(exe, write_config(tmp_path, topics=topics))("status", check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.startswith("monitor: config error: ") and message in line, line


def test_topics_must_be_a_list_of_tables(tmp_path: Path, exe: str) -> None:
    config = write_config(tmp_path)
    config.write_text('topics = "afghanistan"\n' + config.read_text())
    proc = Monitor(exe, config)("status", check=False)
    assert proc.returncode == 2 and "[[topics]]: must be a list of tables" in proc.stderr


# -- the digest -------------------------------------------------------------------------------


def test_digest_has_a_section_per_topic_in_config_order() -> None:
    from monitor.config import DigestSettings, FeedSettings

    when = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)

    def story(n: int, text: str) -> Story:
        return Story(uid=f"urn:uuid:00000000-0000-4000-8000-{n:012d}", kind="brief", title=text[:40],
                     paragraphs=(text,), published=None, first_seen=when, updated=when)

    selection = Selection(new=(story(1, EN_MEETINGS), story(2, RU_SESSIONS), story(3, MARKUP)))
    topics = [TopicSettings(**t) for t in reversed(TOPICS)]
    msg = build_message(selection, digest=DigestSettings(), feed=FeedSettings(), message_id="<d@x>", date=when,
                        topics=topics)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    plain, markup = (part.get_content() for part in parsed.iter_parts())
    headings = [line for line in plain.splitlines() if line.startswith("Topic: ")]
    assert headings == ["Topic: serdyukov (2)", "Topic: sessions (1)", "Topic: afghanistan (0)"]
    assert plain.index("New (3)") < plain.index("Topic: serdyukov")
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert markup.count("<h2>Topic: ") == 3


def test_opml_escapes_titles() -> None:
    from monitor import opml

    hostile = 'CSTO <b>"news"</b> & \x01co'
    root = etree.fromstring(opml.render(hostile, [(hostile, "http://h/feed.atom?a=1&b=2", "http://h/")]))
    assert root.findtext("head/title") == 'CSTO <b>"news"</b> & co'
    (outline,) = root.findall(".//outline")
    assert outline.get("text") == 'CSTO <b>"news"</b> & co' and outline.get("xmlUrl") == "http://h/feed.atom?a=1&b=2"
