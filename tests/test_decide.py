"""decide(): new, revise, older and repeat for one bulletin's items, given what the store knows."""

from __future__ import annotations

import datetime as dt

from conftest import seed

from monitor.bulletin import parse
from monitor.decide import BulletinKey, Candidate, Decision, decide
from monitor.identity import Fingerprint, fingerprint
from monitor.models import Bulletin, Item, Kind

EARLY: BulletinKey = (1_000, "a.txt")
LATE: BulletinKey = (2_000, "b.txt")

TEXT = ("On 5 March 2025, the CSTO Secretary General met the Ambassador of Serbia to discuss cooperation "
        "in humanitarian demining and the training of specialists.")
EDITED = TEXT.replace("discuss", "review")
ARTICLE = Item(kind="article", title="Meeting with the Ambassador of Serbia", paragraphs=(
    TEXT, "The parties agreed to hold consultations in Belgrade next month on the same subjects."))


def brief(text: str) -> Item:
    return Item(kind="brief", paragraphs=(text,))


def entries(*items: Item) -> list[tuple[Item, Fingerprint]]:
    return [(item, fingerprint(item)) for item in items]


def stored(story: int, item: Item, key: BulletinKey, kind: Kind | None = None) -> Candidate:
    return Candidate(story, fingerprint(item), len(item.paragraphs), key, kind)


def seed_items(prefix: str) -> tuple[Item, ...]:
    parsed = parse(seed(prefix))
    assert isinstance(parsed, Bulletin)
    return parsed.items


def test_everything_new_in_an_empty_store() -> None:
    items = seed_items("000")
    got = decide(entries(*items), {}, [], EARLY)
    assert [d.action for d in got] == ["new"] * 5
    assert len({d.story for d in got}) == 5
    assert all(d.story < 0 for d in got)  # provisional ids until the store assigns real ones


def test_known_text_is_a_repeat() -> None:
    item = brief(TEXT)
    got = decide(entries(item), {fingerprint(item).text_hash: 7}, [], LATE)
    assert got == (Decision("repeat", 7),)


def test_seed_004_after_000_repeats_four_briefs_and_brings_one_story() -> None:
    first = seed_items("000")
    known = {fingerprint(item).text_hash: n + 1 for n, item in enumerate(first)}
    got = decide(entries(*seed_items("004")), known, [], LATE)
    assert [d.action for d in got] == ["repeat"] * 4 + ["new"]
    assert [d.story for d in got[:4]] == [1, 2, 3, 4]


def test_a_newer_text_revises_the_story() -> None:
    got = decide(entries(brief(EDITED)), {}, [stored(3, brief(TEXT), EARLY)], LATE)
    assert got[0].action == "revise" and got[0].story == 3
    assert 0 < got[0].score <= 1


def test_a_text_from_an_older_bulletin_does_not_become_current() -> None:
    got = decide(entries(brief(TEXT)), {}, [stored(3, brief(EDITED), LATE)], EARLY)
    assert got[0].action == "older" and got[0].story == 3


def test_the_outcome_does_not_depend_on_processing_order() -> None:
    """Whichever bulletin is processed first, the text of the later one ends up current."""
    # early bulletin first, then the late one
    first = decide(entries(brief(TEXT)), {}, [], EARLY)
    then = decide(entries(brief(EDITED)), {}, [stored(1, brief(TEXT), EARLY)], LATE)
    assert (first[0].action, then[0].action) == ("new", "revise")
    # the late bulletin first, then the early one turns up
    first = decide(entries(brief(EDITED)), {}, [], LATE)
    then = decide(entries(brief(TEXT)), {}, [stored(1, brief(EDITED), LATE)], EARLY)
    assert (first[0].action, then[0].action) == ("new", "older")


def test_a_brief_expanded_into_an_article_revises_it() -> None:
    got = decide(entries(ARTICLE), {}, [stored(4, brief(TEXT), EARLY)], LATE)
    assert got[0].action == "revise" and got[0].story == 4


def test_the_brief_of_a_stored_article_adds_nothing() -> None:
    """A brief whose article is already stored keeps the fuller text, even from a later bulletin."""
    got = decide(entries(brief(TEXT)), {}, [stored(4, ARTICLE, EARLY)], LATE)
    assert got[0].action == "older" and got[0].story == 4


def test_brief_and_its_article_in_one_bulletin_are_one_story() -> None:
    got = decide(entries(brief(TEXT), ARTICLE), {}, [], EARLY)
    assert [d.action for d in got] == ["new", "revise"]
    assert got[0].story == got[1].story
    got = decide(entries(ARTICLE, brief(TEXT)), {}, [], EARLY)
    assert [d.action for d in got] == ["new", "older"]
    assert got[0].story == got[1].story


def test_the_same_text_twice_in_one_bulletin_is_one_story() -> None:
    got = decide(entries(brief(TEXT), brief(TEXT)), {}, [], EARLY)
    assert [d.action for d in got] == ["new", "repeat"]
    assert got[0].story == got[1].story


def test_stories_sharing_an_opening_stay_apart() -> None:
    masadykov, afghanistan = seed_items("000")[2:4]
    got = decide(entries(afghanistan), {}, [stored(9, masadykov, EARLY)], LATE)
    assert got[0].action == "new"
    got = decide(entries(masadykov, afghanistan), {}, [], EARLY)
    assert [d.action for d in got] == ["new", "new"]
    assert got[0].story != got[1].story


def test_the_closest_candidate_wins() -> None:
    close = brief(EDITED)
    further = brief(EDITED.replace("Ambassador of Serbia", "Ambassador of the Republic of Serbia")
                    .replace("training of specialists", "training of young specialists"))
    got = decide(entries(brief(TEXT)), {}, [stored(5, further, EARLY), stored(6, close, EARLY)], LATE)
    assert got[0].action == "revise" and got[0].story == 6


def test_unrelated_candidates_are_rejected_by_verification() -> None:
    candidates = [stored(n + 1, item, EARLY) for n, item in enumerate(seed_items("000"))]
    got = decide(entries(seed_items("004")[-1]), {}, candidates, LATE)
    assert got[0].action == "new"


def test_a_brief_published_as_a_one_paragraph_article_takes_its_title() -> None:
    article = Item(kind="article", title="Meeting with the Ambassador of Serbia", paragraphs=(TEXT,))
    got = decide(entries(article), {}, [stored(4, brief(TEXT), EARLY, "brief")], LATE)
    assert got[0].action == "revise" and got[0].story == 4
    # and the brief turning up after it does not take the title away again
    got = decide(entries(brief(TEXT)), {}, [stored(4, article, EARLY, "article")], LATE)
    assert got[0].action == "older"


def test_a_corrected_title_is_a_revision() -> None:
    before = Item(kind="article", title="Meeting with the Ambasador of Serbia", paragraphs=ARTICLE.paragraphs)
    got = decide(entries(ARTICLE), {}, [stored(4, before, EARLY, "article")], LATE)
    assert got[0].action == "revise" and got[0].story == 4


# -- issue 11: one bulletin's items, dates, titles, short briefs ------------------------

COURSE = ("On 5 March 2025, about {n} specialists from Armenia completed a training course in Moscow organised by "
          "the Council of Defence Ministers of the CSTO.")


def test_items_side_by_side_in_one_bulletin_are_distinct_stories() -> None:
    """Even when nothing but a quantity tells them apart (a correction if they came apart)."""
    a, b = brief(COURSE.format(n=120)), brief(COURSE.format(n=130))
    got = decide(entries(a, b), {}, [], EARLY)
    assert [d.action for d in got] == ["new", "new"]
    # in two bulletins the second is a correction of the first (rule 5, see the README)
    got = decide(entries(b), {}, [stored(3, a, EARLY)], LATE)
    assert got[0].action == "revise" and got[0].story == 3


def test_one_stored_story_goes_to_one_item_of_a_bulletin() -> None:
    """Two items that both resemble a stored story: the closer one revises it, the other is new."""
    old = brief(COURSE.format(n=120))
    close, further = brief(COURSE.format(n=121)), brief(COURSE.format(n=130).replace("completed", "began"))
    got = decide(entries(further, close), {}, [stored(3, old, EARLY)], LATE)
    assert [(d.action, d.story) for d in got] == [("new", -1), ("revise", 3)]


def test_an_exact_repeat_inside_a_bulletin_is_still_one_story() -> None:
    a = brief(COURSE.format(n=120))
    got = decide(entries(a, brief(COURSE.format(n=130)), a), {}, [], EARLY)
    assert [d.action for d in got] == ["new", "new", "repeat"]
    assert got[2].story == got[0].story


def test_siblings_of_a_formula_are_new_stories() -> None:
    stored_one = stored(5, brief(COURSE.format(n=120)), EARLY)
    for before, after in (("Armenia", "Belarus"), ("Moscow", "Minsk"), ("5 March", "12 March"),
                          ("Defence Ministers", "Foreign Ministers")):
        got = decide(entries(brief(COURSE.format(n=120).replace(before, after))), {}, [stored_one], LATE)
        assert got[0].action == "new", after


def test_a_brief_whose_only_change_is_its_date_is_a_new_story() -> None:
    """Rule 5: the weekly duty-shift training is a new story every week (see the README)."""
    week = "On {d} March, a joint training session was held between the duty shifts of the CSTO Crisis Response Center."
    got = decide(entries(brief(week.format(d=12))), {}, [stored(2, brief(week.format(d=5)), EARLY)], LATE)
    assert got[0].action == "new"


def test_a_correction_without_a_full_date_keeps_the_storys_date() -> None:
    dated = Item(kind="brief", paragraphs=(TEXT,), published=dt.date(2025, 3, 5))
    yearless = Item(kind="brief", paragraphs=(EDITED.replace("5 March 2025", "5 March"),))
    candidate = Candidate(4, fingerprint(dated), 1, EARLY, "brief", dt.date(2025, 3, 5))
    got = decide(entries(yearless), {}, [candidate], LATE)
    assert got[0].action == "revise" and got[0].published == dt.date(2025, 3, 5)
    # an item with its own date keeps its own
    redated = Item(kind="brief", paragraphs=(EDITED,), published=dt.date(2025, 3, 5))
    assert decide(entries(redated), {}, [candidate], LATE)[0].published == dt.date(2025, 3, 5)


def test_a_reworded_title_is_a_revision_that_becomes_current() -> None:
    new = Item(kind="article", title="The CSTO Secretary General received the Serbian envoy",
               paragraphs=ARTICLE.paragraphs)
    got = decide(entries(new), {}, [stored(4, ARTICLE, EARLY, "article")], LATE)
    assert got[0].action == "revise" and got[0].story == 4


def test_a_thousand_one_line_briefs_stay_a_thousand_stories() -> None:
    pool: list[Candidate] = []
    for i in range(1000):
        item = Item(kind="brief", paragraphs=(f"On 17 May 2024, p{i}.",), published=dt.date(2024, 5, 17))
        got = decide(entries(item), {}, pool[-50:], (i, f"{i}.txt"))
        assert got[0].action == "new", i
        pool.append(Candidate(i + 1, fingerprint(item), 1, (i, f"{i}.txt"), "brief", item.published))


def test_the_seed_briefs_of_december_11_stay_two_stories() -> None:
    masadykov, afghanistan = seed_items("000")[2:4]
    assert masadykov.paragraphs[0].startswith("On December 11, 2024,")
    assert afghanistan.paragraphs[0].startswith("On December 11, 2024,")
    got = decide(entries(afghanistan), {}, [stored(1, masadykov, EARLY)], LATE)
    assert got[0].action == "new"
    got = decide(entries(masadykov), {}, [stored(1, afghanistan, EARLY)], LATE)
    assert got[0].action == "new"


def test_an_item_meets_only_the_candidates_its_own_keys_found() -> None:
    """With a shortlist (what ingest passes), each item is decided against the stories its
    own index keys found: another item of the file bringing a story in changes nothing."""
    edited, other = brief(EDITED), brief("On 9 May 2025, the CSTO Council of Foreign Ministers met in Minsk "
                                        "and adopted a statement on the anniversary of the Victory.")
    candidates = [stored(3, brief(TEXT), EARLY)]
    items = entries(other, edited)
    both = {fp.text_hash: {3} for _, fp in items}
    own = {items[0][1].text_hash: set(), items[1][1].text_hash: {3}}
    assert [d.action for d in decide(items, {}, candidates, LATE, both)] == ["new", "revise"]
    assert [d.action for d in decide(items, {}, candidates, LATE, own)] == ["new", "revise"]
    # ...and the edited brief, had its keys not found story 3, is a new story, even though
    # the file's other item brought story 3 in as a candidate.
    unlisted = {items[0][1].text_hash: {3}, items[1][1].text_hash: set()}
    assert [d.action for d in decide(items, {}, candidates, LATE, unlisted)] == ["new", "new"]
    assert [d.action for d in decide(items, {}, candidates, LATE)] == ["new", "revise"]  # no shortlist: all
