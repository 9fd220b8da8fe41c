"""Story identity: normalisation, exact-repeat hashes, index keys and the verified similarity."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import seed

from monitor.bulletin import parse
from monitor.identity import (
    BANDS,
    LEAD_CONTAINMENT,
    SAME_STORY_JACCARD,
    Fingerprint,
    band_keys,
    conflict,
    fingerprint,
    jaccard,
    normalize,
    shingles,
    similarity,
    text_hash,
)
from monitor.models import Bulletin, Item


def seed_items(prefix: str) -> tuple[Item, ...]:
    parsed = parse(seed(prefix))
    assert isinstance(parsed, Bulletin)
    return parsed.items


def brief(text: str) -> Item:
    return Item(kind="brief", paragraphs=(text,))


def score(a: Item, b: Item) -> float:
    return similarity(fingerprint(a), fingerprint(b), len(a.paragraphs), len(b.paragraphs))


def shares_a_key(a: Fingerprint, b: Fingerprint) -> bool:
    return bool(set(a.band_keys) & set(b.band_keys) or set(a.paragraph_keys) & set(b.paragraph_keys))


# every paragraph of both seeds, briefs and article bodies
SEED_PARAGRAPHS = [p for prefix in ("000", "004") for item in seed_items(prefix) for p in item.paragraphs]


def test_normalize_folds_typography_and_case() -> None:
    fancy = ("\u201cCSTO\u00a0\u2014 2024\u201d\u2009forum in \u00abMinsk\u00bb, "
             "the capital\u2019s \ufb01rst\u200b  hall")
    plain = '"csto - 2024" forum in "minsk", the capital\'s first hall'
    assert normalize(fancy) == plain


def test_exact_repeat_in_another_layout_has_the_same_hash() -> None:
    a = Item(kind="article", title="T", paragraphs=("The \u201cInteraction\u201d exercise ended.", "Second."))
    b = Item(kind="article", title="T", paragraphs=('The "Interaction"  exercise ended.', "second."))
    assert fingerprint(a).text_hash == fingerprint(b).text_hash


def test_different_text_has_a_different_hash() -> None:
    assert fingerprint(brief("The exercise ended.")).text_hash != fingerprint(brief("The exercise began.")).text_hash


def test_paragraph_order_matters_for_the_hash() -> None:
    a = Item(kind="article", paragraphs=("First paragraph here.", "Second paragraph here."))
    b = Item(kind="article", paragraphs=("Second paragraph here.", "First paragraph here."))
    assert fingerprint(a).text_hash != fingerprint(b).text_hash


def test_shingles_of_short_text() -> None:
    assert shingles("") == frozenset()
    assert shingles("Hello, world") == frozenset({"hello world"})
    assert shingles("one two three four") == frozenset({"one two three", "two three four"})


def test_band_keys_are_stable_signed_64_bit() -> None:
    keys = band_keys(shingles(SEED_PARAGRAPHS[0]))
    assert len(keys) == BANDS
    assert keys == band_keys(shingles(SEED_PARAGRAPHS[0]))
    assert all(-(1 << 63) <= k < (1 << 63) for k in keys)
    assert band_keys(frozenset()) == ()


def test_short_paragraphs_get_no_paragraph_key() -> None:
    item = Item(kind="article", paragraphs=(
        "In addition, the plan was agreed.",
        "The meeting was held in the city of Moscow under the chairmanship of the Secretary.",
    ))
    assert len(fingerprint(item).paragraph_keys) == 1


def test_seed_briefs_sharing_an_opening_are_different_stories() -> None:
    items = seed_items("000")
    masadykov, afghanistan = items[2], items[3]
    assert masadykov.paragraphs[0].startswith("On December 11, 2024, Taalatbek Masadykov")
    assert afghanistan.paragraphs[0].startswith("On December 11, 2024, the 40th meeting")
    assert score(masadykov, afghanistan) == 0.0
    assert not shares_a_key(fingerprint(masadykov), fingerprint(afghanistan))


def test_no_two_seed_stories_match() -> None:
    stories = [*seed_items("000"), seed_items("004")[-1]]
    for n, a in enumerate(stories):
        for b in stories[n + 1:]:
            assert score(a, b) == 0.0, (a.paragraphs[0][:40], b.paragraphs[0][:40])


@pytest.mark.parametrize("paragraph", SEED_PARAGRAPHS, ids=[p[:30] for p in SEED_PARAGRAPHS])
def test_a_typo_or_changed_word_anywhere_is_found_and_verified(paragraph: str) -> None:
    """The LSH index must surface a one-word correction at every position, and verify() accept it."""
    words = paragraph.split()
    original = fingerprint(brief(paragraph))
    for n in range(len(words)):
        for change in (words[n] + "x", "replaced"):
            edited = brief(" ".join([*words[:n], change, *words[n + 1:]]))
            fp = fingerprint(edited)
            assert shares_a_key(fp, original), f"no index key shared after changing word {n}"
            assert similarity(fp, original, 1, 1) >= SAME_STORY_JACCARD, f"word {n}"


@pytest.mark.parametrize("text", [
    "On 5 March 2025, the CSTO Secretary General met the Ambassador of Serbia in Moscow.",
    "20 декабря 2024 года в Москве состоялось заседание Совета министров иностранных дел ОДКБ.",
])
def test_short_brief_one_word_changed(text: str) -> None:
    words = text.split()
    for n in range(len(words)):
        edited = " ".join([*words[:n], words[n] + "y", *words[n + 1:]])
        a, b = fingerprint(brief(text)), fingerprint(brief(edited))
        assert shares_a_key(a, b), n
        assert similarity(b, a, 1, 1) >= SAME_STORY_JACCARD, n


def test_a_paragraph_added_to_an_article_is_the_same_story() -> None:
    article = seed_items("004")[-1]
    longer = Item(kind="article", title=article.title, published=article.published,
                  paragraphs=(*article.paragraphs, "The participants agreed to hold the next consultations in "
                                                   "Minsk in the autumn of 2025 and to exchange contacts."))
    a, b = fingerprint(article), fingerprint(longer)
    assert set(a.paragraph_keys) <= set(b.paragraph_keys)
    assert similarity(b, a, len(longer.paragraphs), len(article.paragraphs)) >= SAME_STORY_JACCARD


def test_a_brief_published_as_an_article_is_the_same_story() -> None:
    text = seed_items("000")[0].paragraphs[0]
    article = Item(kind="article", title="Joint training of the duty shifts", paragraphs=(
        text, "The training worked out the exchange of information between the duty shifts.",
        "The next session is planned for the first quarter of next year."))
    b, a = fingerprint(brief(text)), fingerprint(article)
    assert set(b.paragraph_keys) <= set(a.paragraph_keys)
    assert similarity(a, b, 3, 1) > 0
    assert similarity(b, a, 1, 3) > 0  # the brief arriving late finds the article


def test_a_brief_inside_a_long_article_is_found_by_containment() -> None:
    """Whole-text overlap is small against a six-paragraph article; the lead carries the match."""
    article = seed_items("004")[-1]
    lead = brief(article.paragraphs[0])
    a, b = fingerprint(article), fingerprint(lead)
    assert similarity(a, b, len(article.paragraphs), 1) >= LEAD_CONTAINMENT
    assert similarity(b, a, 1, len(article.paragraphs)) >= LEAD_CONTAINMENT
    # a word changed in the brief as well as the expansion
    edited = brief(article.paragraphs[0].replace("consultations were held", "consultations took place"))
    assert similarity(a, fingerprint(edited), len(article.paragraphs), 1) >= LEAD_CONTAINMENT


def test_an_article_opening_with_a_different_brief_is_not_that_brief() -> None:
    masadykov, afghanistan = seed_items("000")[2:4]
    article = Item(kind="article", title="The Working Group on Afghanistan met",
                   paragraphs=(afghanistan.paragraphs[0], "The group adopted its plan for 2025."))
    assert score(article, masadykov) == 0.0
    assert score(article, afghanistan) >= LEAD_CONTAINMENT


def test_text_hash_alone_equals_the_fingerprints() -> None:
    for prefix in ("000", "004"):
        for item in seed_items(prefix):
            assert text_hash(item) == fingerprint(item).text_hash


def test_an_articles_title_and_date_line_are_part_of_its_text() -> None:
    body = ("The parties discussed cooperation in humanitarian demining.",)
    article = Item(kind="article", title="Meeting with the Ambasador of Serbia", paragraphs=body,
                   published=dt.date(2025, 3, 5))
    fixed_title = Item(kind="article", title="Meeting with the Ambassador of Serbia", paragraphs=body,
                       published=dt.date(2025, 3, 5))
    fixed_date = Item(kind="article", title=article.title, paragraphs=body, published=dt.date(2025, 3, 6))
    hashes = {text_hash(i) for i in (article, fixed_title, fixed_date)}
    assert len(hashes) == 3
    assert score(fixed_title, article) == 1.0  # same words: verified as the same story
    # a brief published as an article whose body is just that brief is not a repeat of it
    assert text_hash(Item(kind="brief", paragraphs=body)) not in hashes


def test_a_briefs_completed_year_is_not_part_of_its_text() -> None:
    """The same year-less brief in two bulletins may get a year in one and none in the other."""
    text = ("On 20 December, a joint training session was held",)
    assert text_hash(Item(kind="brief", paragraphs=text, published=dt.date(2024, 12, 20))) == \
        text_hash(Item(kind="brief", paragraphs=text))


# -- identity slots in verification (issue 11) ------------------------------------------

FORMULA = ("On 21 January 2024, the CSTO Secretary General Imangali Tasmagambetov held a working meeting with the "
           "Ambassador of the Republic of Nicaragua to the Russian Federation, at which the parties discussed the "
           "prospects of cooperation in the field of security.")
FORMULA_RU = ("21 января 2024 года Генеральный секретарь ОДКБ Имангали Тасмагамбетов провел рабочую встречу с Послом "
              "Республики Никарагуа в Российской Федерации, в ходе которой стороны обсудили перспективы "
              "сотрудничества в сфере безопасности. Встреча прошла в Москве.")


@pytest.mark.parametrize(("slot", "before", "after"), [
    ("country", "Republic of Nicaragua", "Kingdom of Cambodia"),
    ("country, known names close in spelling", "Republic of Nicaragua", "Republic of Iraq"),
    ("date", "21 January 2024", "28 January 2024"),
    ("date, year left out", "21 January 2024", "22 January"),
    ("person", "Imangali Tasmagambetov", "Samat Ordabayev"),
    ("organisation", "the CSTO Secretary General", "the CIS Secretary General"),
    ("two slots", "Nicaragua to the Russian", "Cuba to the Belarusian"),
])
def test_a_sibling_differing_in_one_slot_is_another_story(slot: str, before: str, after: str) -> None:
    sibling = FORMULA.replace(before, after)
    assert sibling != FORMULA
    assert score(brief(FORMULA), brief(sibling)) == 0.0, slot
    assert score(brief(sibling), brief(FORMULA)) == 0.0, slot


@pytest.mark.parametrize(("slot", "before", "after"), [
    ("country in another case", "Республики Никарагуа", "Республики Камбоджа"),
    ("city", "в Москве", "в Минске"),
    ("date", "21 января", "22 января"),
    ("person", "Имангали Тасмагамбетов", "Самат Ордабаев"),
])
def test_a_russian_sibling_is_another_story(slot: str, before: str, after: str) -> None:
    assert score(brief(FORMULA_RU), brief(FORMULA_RU.replace(before, after))) == 0.0, slot


@pytest.mark.parametrize(("kind", "before", "after"), [
    ("wording", "discussed", "considered"),
    ("a one-letter fix inside a name", "Tasmagambetov", "Tasmagambetow"),
    ("a two-letter fix inside a name", "Tasmagambetov", "Tasmagmabetov"),
    ("quantity", "prospects of", "12 prospects of"),
    ("appended sentence", "of security.", "of security. The meeting took place in Moscow in a friendly atmosphere."),
    ("the country's name worded another way", "the Republic of Nicaragua", "Nicaragua"),
])
def test_a_revision_keeps_the_slots(kind: str, before: str, after: str) -> None:
    revised = FORMULA.replace(before, after)
    assert revised != FORMULA
    assert score(brief(revised), brief(FORMULA)) > 0, kind


def test_a_russian_revision_in_another_case_form() -> None:
    revised = FORMULA_RU.replace("Встреча прошла в Москве.", "Встреча прошла в столице России, Москве.")
    assert score(brief(revised), brief(FORMULA_RU)) > 0


def test_a_large_edit_keeping_half_of_the_words_is_a_revision() -> None:
    words = FORMULA.split()
    long = [n for n, w in enumerate(words) if w.islower() and len(w) > 4]
    # every other long lower-case word replaced: most 3-shingles are gone, more than half of the words stay
    edited = " ".join("другое" if n in long[::2] else w for n, w in enumerate(words))
    day = dt.date(2024, 1, 21)
    a = fingerprint(Item(kind="brief", paragraphs=(FORMULA,), published=day))
    b = fingerprint(Item(kind="brief", paragraphs=(edited,), published=day))
    assert jaccard(a.shingles, b.shingles) < SAME_STORY_JACCARD
    assert similarity(b, a, 1, 1) > 0
    assert set(a.date_keys) == set(b.date_keys) != set()  # and the event-date key finds it


def test_an_edit_keeping_less_than_half_of_the_words_is_not() -> None:
    a = brief("On 5 March 2025, the CSTO Secretary General met the Ambassador of Serbia and discussed regional "
              "security, humanitarian demining and the training of specialists.")
    b = brief("On 5 March 2025, the CSTO Secretary General met the Ambassador of Serbia at a reception devoted to "
              "the anniversary of the embassy and presented awards.")
    assert score(b, a) == 0.0


def test_short_briefs_never_chain_merge() -> None:
    """A folder of one-line briefs `On 17 May 2024, p<i>.` is as many stories."""
    fps = [fingerprint(brief(f"On 17 May 2024, p{i}.")) for i in range(30)]
    for n, a in enumerate(fps):
        for b in fps[n + 1:]:
            assert similarity(a, b, 1, 1) == 0.0


def test_a_corrected_date_line_with_the_lead_unchanged_is_a_revision() -> None:
    body = ("The meeting was held in the city of Moscow under the chairmanship of Viktor Zinoviev.",
            "The participants agreed on the draft Work Plan of the Commission for 2025.")
    old = Item(kind="article", title="Meeting of the Commission", paragraphs=body, published=dt.date(2024, 4, 18))
    fixed = Item(kind="article", title="Meeting of the Commission", paragraphs=body, published=dt.date(2024, 4, 17))
    assert score(fixed, old) > 0
    # another lead under another date line is another meeting of the same formula
    other = Item(kind="article", title="Meeting of the Commission", published=dt.date(2024, 5, 16), paragraphs=(
        "The meeting was held in the city of Moscow under the chairmanship of Viktor Zinoviev, with new members.",
        body[1]))
    assert score(other, old) == 0.0


def test_a_reworded_title_over_the_same_body_is_a_revision() -> None:
    body = (FORMULA, "The parties agreed to continue the dialogue.")
    old = Item(kind="article", title="Meeting with the Ambassador of Nicaragua", paragraphs=body,
               published=dt.date(2024, 1, 21))
    new = Item(kind="article", title="The CSTO Secretary General received the Nicaraguan envoy", paragraphs=body,
               published=dt.date(2024, 1, 21))
    assert score(new, old) == 1.0


def test_a_new_article_whose_lead_resembles_an_older_brief_with_another_actor_is_new() -> None:
    article = Item(kind="article", title="Meeting", published=dt.date(2024, 1, 21), paragraphs=(
        FORMULA.replace("Imangali Tasmagambetov", "Samat Ordabayev"), "The parties agreed to continue the dialogue."))
    assert score(article, brief(FORMULA)) == 0.0
    assert score(Item(kind="article", title="Meeting", published=dt.date(2024, 1, 21),
                      paragraphs=(FORMULA, "The parties agreed to continue the dialogue.")), brief(FORMULA)) > 0


def test_conflict_needs_a_difference_both_ways() -> None:
    a = fingerprint(brief(FORMULA)).slots
    more = fingerprint(brief(FORMULA + " Representatives of Armenia also took part.")).slots
    assert not conflict(a, more) and not conflict(more, a)
