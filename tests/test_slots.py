"""Identity slots, table-driven: dates and named entities in English and Russian."""

from __future__ import annotations

import datetime as dt

import pytest

from monitor.models import Item
from monitor.slots import close_names, content_words, extract, stem


def brief(text: str) -> Item:
    return Item(kind="brief", paragraphs=(text,))


@pytest.mark.parametrize(("text", "dates"), [
    ("On 11 December 2024, the CSTO Secretary General met the Ambassador of Serbia.", {(2024, 12, 11)}),
    ("On December 11, 2024, Taalatbek Masadykov held a meeting.", {(2024, 12, 11)}),
    ("On 20 December, a joint training session was held.", {(0, 12, 20)}),
    ("On 10 and 11 December, the Joint Staff hosted consultations.", {(0, 12, 10), (0, 12, 11)}),
    ("On December 10-11, 2024, the Joint Staff hosted consultations.", {(2024, 12, 10), (2024, 12, 11)}),
    ("20 декабря 2024 года в Москве состоялось заседание.", {(2024, 12, 20)}),
    ("18 января в Минске прошла встреча.", {(0, 1, 18)}),
    ("The meeting agreed on the plan for 2025.", set()),
])
def test_dates(text: str, dates: set[tuple[int, int, int]]) -> None:
    assert extract(brief(text)).dates == dates


def test_lead_sentence_dates_are_the_core() -> None:
    got = extract(brief("On 5 March 2025, the CSTO Secretary General met the Ambassador of Serbia. "
                        "The next meeting is planned for 20 April 2025."))
    assert got.core_dates == {(2025, 3, 5)}
    assert got.dates == {(2025, 3, 5), (2025, 4, 20)}


@pytest.mark.parametrize(("text", "present", "absent"), [
    ("On 21 January 2024, the CSTO Secretary General held a working meeting with the Ambassador of the "
     "Republic of Nicaragua to the Russian Federation.", {"csto", "nicaragua", "russia"},
     {"secretary", "general", "ambassador", "republic", "federation", "on", "january"}),
    ("The meeting was attended by S. Ordabayev and T. Masadykov.", {"ordabayev", "masadykov"}, {"the", "s", "t"}),
    ("Participants of the XXII meeting of the Council of Foreign Ministers met in Minsk.",
     {"foreign", "minsk"}, {"participants", "xxii", "council", "ministers"}),
    ("The CSTO's Joint Staff took part in the Interaction-2024 exercise.", {"csto", "interaction"}, {"joint", "staff"}),
    ("Kazakhstan hosted the exercise in Almaty.", {"kazakhstan", "almaty"}, set()),
    ("18 января 2024 года в Минске состоялась встреча Генерального секретаря ОДКБ с Послом Республики Беларусь.",
     {"minsk", "csto", "belarus"}, {"генеральн", "секретар", "республик", "посл"}),
])
def test_names(text: str, present: set[str], absent: set[str]) -> None:
    names = extract(brief(text)).names
    assert present <= names, names
    assert not absent & names, names


@pytest.mark.parametrize(("a", "b"), [
    ("Республика Беларусь", "Республики Беларусь"),
    ("в Москве", "из Москвы"),
    ("Масадыков", "Масадыкова"),
    ("с Масадыковым", "Масадыкову"),
    ("Казахстан", "Казахстане"),
])
def test_russian_case_forms_are_one_entity(a: str, b: str) -> None:
    first = extract(brief(f"Встреча, {a}.")).names
    second = extract(brief(f"Встреча, {b}.")).names
    assert first and first == second


@pytest.mark.parametrize(("a", "b"), [
    ("the Kazakh side", "the side of Kazakhstan"),
    ("the Republic of Belarus", "the Belarusian delegation"),
    ("в Российской Федерации", "в России"),
])
def test_spellings_of_one_known_entity_are_one_name(a: str, b: str) -> None:
    assert extract(brief(f"They met {a}.")).names == extract(brief(f"They met {b}.")).names != set()


def test_a_typo_in_a_known_russian_name_is_still_that_name() -> None:
    assert close_names(stem("Масквы"), "moscow")
    assert not close_names("moscow", "minsk")


def test_russian_bodies_are_told_apart_by_the_words_after_their_head() -> None:
    defence = extract(brief("Состоялось заседание Совета министров обороны ОДКБ.")).names
    foreign = extract(brief("Состоялось заседание Совета министров иностранных дел ОДКБ.")).names
    assert defence - {"одкб"} and foreign - {"одкб"}
    assert defence != foreign


def test_title_names_are_kept_apart_from_the_body() -> None:
    item = Item(kind="article", title="Meeting with the Ambassador of Cuba", published=dt.date(2024, 5, 1),
                paragraphs=("The CSTO Secretary General held a meeting in Moscow.",))
    got = extract(item)
    assert got.title_names == {"cuba"}
    assert "cuba" not in got.names
    assert got.date_line == dt.date(2024, 5, 1)


def test_lower_case_content_words() -> None:
    got = content_words(brief("On 5 March 2025, the parties discussed 40 issues of the exercise."))
    assert {"parties", "discussed", "issues", "exercise"} <= got
    assert not {"the", "of", "40", "march"} & got


@pytest.mark.parametrize(("a", "b", "close"), [
    ("masadikov", "masadykov", True),  # a one-letter fix inside a name
    ("ordabayev", "ordabaev", True),
    ("tasmagambetov", "tasmagamebtov", True),  # two letters swapped
    ("iran", "iraq", False),  # two known countries
    ("austria", "australia", False),
    ("minsk", "pinsk", True),  # Pinsk is not in the gazetteer: taken for a typo of Minsk
    ("ordabayev", "masadykov", False),
    ("un", "unx", True),
    (stem("Беларусь"), stem("Белорусь"), True),
])
def test_close_names(a: str, b: str, close: bool) -> None:
    assert close_names(a, b) is close
