"""Identity slots: the event dates and named entities of an item, English and Russian. Pure.

Press offices write to formulas, so two different events can share 90 % of their words;
what tells them apart are the slots (BULLETINS.md): the date of the event, a country, a
city, a person, an organisation or body. This module finds them with a documented
heuristic rather than a model (measured in bench/identity_run.py, see the README):

* dates: every ``11 December 2024`` / ``December 11, 2024`` / ``20 декабря 2024 года``
  form the parser knows (bulletin.find_dates), the year left open when the text has none;
* names: capitalised words that are not a sentence's first word (a first word counts
  when it is a known name), acronyms (``CSTO``, ``ОДКБ``), minus a list of generic
  capitalised vocabulary (titles, ``Republic``, ``Council``...). A multi-word name is its
  words; a Russian body is its head and the lower-case words after it (``Совета министров
  обороны``). Russian case forms of one name are one entity: words are reduced to a stem by
  cutting a case ending (``Беларусь``, ``Беларуси`` -> ``беларус``; ``Москве`` -> ``москв``);
* known names: countries, capitals and other cities, organisations, in both languages.
  Two known names are never taken for a typo of one another (``Iran`` / ``Iraq``).

The event date is a date of the lead paragraph's first sentence (``core_dates``): formulas
open with it ("On 21 January 2024, the CSTO Secretary General held ..."), while later
sentences mention other dates freely. identity.conflict() says when slots differ.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import re
from dataclasses import dataclass

from monitor.bulletin import MONTHS, find_dates
from monitor.models import Item

Date = tuple[int, int, int]  # (year or 0 when the text gives none, month, day)

# Words (hyphenated ones whole: "Al-Qaeda"), capitalised or lower-case. An apostrophe
# ends a word, so "CSTO's" is the name CSTO.
_WORD = r"[^\W\d_]*(?:-[^\W\d_]+)*"
_CAPITAL = re.compile(rf"(?<![\w-])[A-ZА-ЯЁ]{_WORD}")
_LOWER = re.compile(rf"(?<![\w-])[a-zа-яё]{_WORD}")
_NEXT_LOWER = re.compile(rf"\s+([a-zа-яё]{_WORD})")
_LOWER_RUN = re.compile(rf"(?:\s+[a-zа-яё]{_WORD})+")
_WORD_CHAR = re.compile(r"\w")
# A sentence ends at . ! ? except after an initial ("S. Ordabayev", Russian "г." for a
# year) or a few abbreviations ("Mr.", "гг."); each lookbehind has a fixed width.
# The lookbehinds follow the stop (and include it), so they are tried at stops only.
_SENTENCE_END = re.compile("[.!?]" + "".join(rf"(?<!\b{a}\.)" for a in (
    r"\w", "Mr", "Mrs", "Ms", "Dr", "St", "No", "Gen", "Col", "Lt", "Prof", "vs", "etc", "гг", "им", "ул")))
# A Russian body's name is its capitalised head and the lower-case words after it
# ("Совета министров обороны", "Совета министров иностранных дел"): the head alone says
# nothing, the words after it tell one council from another. Up to this many of them.
_HEADS = frozenset({"совет", "комитет", "комисс", "ассамбле", "групп", "центр", "штаб", "секретариат",
                    "министерств", "управлен", "служб", "форум", "конференц"})
_QUALIFIERS = 3
_FUNCTION_WORDS_RU = "в во на с со по к о об от до из за для при под над без между"
# A conjunction ends a body's name ("Совета коллективной безопасности и планам ...").
_CONJUNCTIONS_RU = frozenset(["и", "или", "а", "но"])
_FUNCTION_RU = frozenset(_FUNCTION_WORDS_RU.split())
_ROMAN = re.compile(r"^[IVXLC]+$")

# Russian case and number endings, longest first; a stem keeps at least MIN_STEM letters.
_ENDINGS = tuple(sorted((
    "ами", "ями", "ого", "его", "ому", "ему", "ыми", "ими", "иями", "ией", "ой", "ей", "ий", "ый", "ая",
    "яя", "ое", "ее", "ые", "ие", "ом", "ем", "ам", "ям", "ах", "ях", "ов", "ев", "ию", "ью", "ия", "ья",
    "ым", "им", "ых", "их", "ую", "юю", "ии", "а", "я", "о", "е", "ы", "и", "у", "ю", "ь", "й",
), key=len, reverse=True))
_NAME_ENDINGS = tuple(e for e in _ENDINGS if e not in ("ов", "ев"))
MIN_STEM = 3
_CYRILLIC = re.compile("[а-яё]")

# Capitalised words that name no particular entity: titles, kinds of body, months. They
# are left out so that rewording "the Ambassador" as "the Envoy" is no change of slot.
_GENERIC_EN = """
the a an and or of for on in at to by with from as into within under over between about after before
this that these those his her its their our it he she they we i
secretary general deputy ambassador minister ministers ministry chairman chairperson chair head heads
chief representative representatives special plenipotentiary extraordinary president prime vice first
republic kingdom federation state states member members organization organisation organizations
treaty collective security council committee commission group working joint staff secretariat center
centre office department assembly parliamentary session meeting meetings mr mrs ms dr excellency
affairs board service services agency forces force headquarters delegation delegations embassy
permanent mission envoy adviser advisor director coordinator spokesman spokesperson press
international national interstate regional also however during following according today yesterday
monday tuesday wednesday thursday friday saturday sunday year
"""
_GENERIC_RU = """
и в во на с со по к о об от до из за для при под над без между или а но как что это этот эта эти
его ее её их он она они мы я также
генеральный генерального генеральным секретарь секретаря секретарем секретарём заместитель заместителя
посол посла послом министр министра министров министерство министерства председатель председателя
глава главы руководитель руководителя представитель представителя специальный чрезвычайный
полномочный президент премьер республика республики республике республикой королевство королевства
федерация федерации государство государства государств член члены членов организация организации
договор договора коллективной коллективная безопасности совет совета советом комитет комитета
комиссия комиссии группа группы рабочая рабочей объединенный объединенного объединённый штаб штаба
секретариат секретариата центр центра управление управления ассамблея ассамблеи парламентская
парламентской заседание заседания встреча встречи делегация делегации посольство посольства
постоянный постоянного миссия миссии господин г-н
понедельник вторник среда четверг пятница суббота воскресенье год года году
"""

# Known names, as written in the nominative (case forms reach the same stem). Each line is
# one entity's spellings in English and Russian: a country with its adjective, a city, a
# body; every spelling stands for the first (``Kazakh``, ``Казахстане`` -> ``kazakhstan``), so
# "the Kazakh side" reworded as "the side of Kazakhstan" keeps its slot.
_KNOWN = """
armenia armenian армения армянский армянской
azerbaijan azerbaijani азербайджан
belarus belarusian белоруссия беларусь белорусский белорусской
kazakhstan kazakh казахстан казахстанский
kyrgyzstan kyrgyz киргизия кыргызстан кыргызский кыргызской
russia russian россия российский российской
tajikistan tajik таджикистан таджикский
uzbekistan uzbek узбекистан узбекский
turkmenistan turkmen туркменистан
georgia georgian грузия
ukraine ukrainian украина
moldova молдова молдавия
china chinese китай китайский кнр
india indian индия
iran iranian иран иранский
iraq iraqi ирак
afghanistan afghan афганистан афганский
pakistan pakistani пакистан
mongolia mongolian монголия
vietnam vietnamese вьетнам
cambodia камбоджа
laos лаос
nicaragua никарагуа
cuba cuban куба
venezuela венесуэла
serbia serbian сербия
turkey turkish turkiye турция
syria syrian сирия
egypt egyptian египет
israel израиль
japan japanese япония
korea korean корея кндр
indonesia индонезия
malaysia малайзия
thailand таиланд
qatar катар
emirates эмираты оаэ
saudi саудовская
germany german германия
france french франция
italy italian италия
spain испания
austria австрия
switzerland швейцария
hungary венгрия
poland польша
finland финляндия
norway норвегия
sweden швеция
britain british великобритания
usa сша america american америка
canada канада
brazil бразилия
argentina аргентина
mexico мексика
chile чили
ethiopia эфиопия
algeria алжир
moscow москва
minsk минск
yerevan ереван
astana астана
almaty алматы
bishkek бишкек
dushanbe душанбе
tashkent ташкент
baku баку
tbilisi тбилиси
beijing пекин
ankara анкара
tehran тегеран
kabul кабул
islamabad исламабад
delhi дели
hanoi ханой
phnom пномпень
penh
managua манагуа
havana гавана
belgrade белград
vienna вена
geneva женева
brussels брюссель
york нью-йорк
petersburg санкт-петербург петербург
sochi сочи
kazan казань
novosibirsk новосибирск
osh ош
gyumri гюмри
brest брест
grodno гродно
vitebsk витебск
gomel гомель
khujand худжанд
cholpon-ata чолпон-ата
issyk-kul иссык-куль
samarkand самарканд
csto одкб
cis снг
sco шос
eaeu еаэс
un оон
unoct
unrcca
nato нато
osce обсе
brics брикс
australia австралия
zealand зеландия
belgium бельгия
netherlands нидерланды
greece греция
portugal португалия
romania румыния
bulgaria болгария
czech чехия
slovakia словакия
croatia хорватия
montenegro черногория
albania албания
lithuania литва
latvia латвия
estonia эстония
denmark дания
ireland ирландия
jordan иордания
lebanon ливан
kuwait кувейт
oman оман
bahrain бахрейн
yemen йемен
libya ливия
tunisia тунис
morocco марокко
sudan судан
nigeria нигерия
kenya кения
angola ангола
peru перу
colombia колумбия
bolivia боливия
ecuador эквадор
uruguay уругвай
paraguay парагвай
philippines филиппины
singapore сингапур
myanmar мьянма
bangladesh бангладеш
nepal непал
lanka ланка
palestine палестина
asean асеан
interpol интерпол
"""


@functools.lru_cache(maxsize=1 << 16)  # a bulletin's vocabulary is small; a stem costs a few µs
def stem(word: str) -> str:
    """A casefolded word with its Russian case ending cut (English words are left whole).
    A capitalised word keeps a final -ов / -ев: that is a surname's own (Масадыков,
    Масадыкова, Масадыковым are one name), not a plural ending."""
    name = word[:1].isupper()
    word = word.casefold().replace("ё", "е")
    if _CYRILLIC.search(word):
        for ending in _NAME_ENDINGS if name else _ENDINGS:
            if word.endswith(ending) and len(word) - len(ending) >= MIN_STEM:
                return word[: -len(ending)]
    return word


GENERIC = frozenset(stem(w.capitalize()) for w in (_GENERIC_EN + _GENERIC_RU).split() + list(MONTHS))
_CANONICAL: dict[str, str] = {}  # the stem of a known spelling -> the entity's first spelling
for _line in _KNOWN.strip().splitlines():
    _forms = [stem(part.capitalize()) for w in _line.split() for part in (w, *w.split("-"))]
    for _form in _forms:
        _CANONICAL.setdefault(_form, _forms[0])
KNOWN = frozenset(_CANONICAL)
_SPELLINGS: dict[str, set[str]] = {}
for _form, _entity in _CANONICAL.items():
    _SPELLINGS.setdefault(_entity, set()).add(_form)
# Common lower-case words: not counted when judging whether enough of a text stays (identity.py).
STOPWORDS = frozenset((_GENERIC_EN + _GENERIC_RU).split()) | frozenset(MONTHS)


@dataclass(frozen=True)
class Slots:
    """The identity slots of one item."""

    core_dates: frozenset[Date]  # dates in the lead's first sentence
    dates: frozenset[Date]  # every date in the body
    date_line: dt.date | None  # an article's date line
    names: frozenset[str]  # name stems in the body
    title_names: frozenset[str]  # name stems in an article's title (never a conflict on their own)


EMPTY = Slots(frozenset(), frozenset(), None, frozenset(), frozenset())


def extract(item: Item) -> Slots:
    """The slots of an item: its body's dates and names, its lead sentence's dates, its title's names."""
    if not item.paragraphs:
        return EMPTY
    names: set[str] = set()
    core_end = 0
    for n, paragraph in enumerate(item.paragraphs):
        end = _names(paragraph, names)
        core_end = end if n == 0 else core_end
    dates = frozenset(d for p in item.paragraphs for d in _dates(p))
    core_dates = frozenset(_dates(item.paragraphs[0][:core_end]))
    title: set[str] = set()
    if item.title:
        _names(item.title, title)
    date_line = item.published if item.kind == "article" else None
    return Slots(core_dates, dates, date_line, frozenset(names), frozenset(title))


def content_words(item: Item) -> frozenset[str]:
    """The body's lower-case content words, stemmed (no stopwords, no numbers, no single
    letters): apart from the slots, as only a large edit's test needs them (identity.py),
    and finding them was two fifths of extract()."""
    words: set[str] = set()
    for paragraph in item.paragraphs:
        found = set(_LOWER.findall(paragraph))
        found -= STOPWORDS
        words.update([stem(word) for word in found if len(word) > 1])
    return frozenset(words)


def _dates(text: str) -> list[Date]:
    return [(year or 0, month, day) for day, month, year in find_dates(text)]


def _names(text: str, names: set[str]) -> int:
    """Add a paragraph's name stems; return where its first sentence ends. Regular
    expressions find the words; Python looks at capitals only."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    for m in _CAPITAL.finditer(text):
        token = m.group()
        if len(token) > 1 and not _ROMAN.match(token):  # an ordinal ("the XXII meeting") may be corrected
            s = stem(token)
            if s in _HEADS:
                names.add(_body(s, text, m.end()))
            since = ends[bisect.bisect_right(ends, m.start()) - 1] if ends and ends[0] <= m.start() else 0
            first = not _WORD_CHAR.search(text, since, m.start())
            # generic vocabulary; "The", "Participants": a capital that only starts a sentence
            if not (s in GENERIC or (first and s not in KNOWN and not token.isupper())):
                names.add(_CANONICAL.get(s, s))
        after = _NEXT_LOWER.match(text, m.end())
        if after and (head := stem(after.group(1))) in _HEADS:
            names.add(_body(head, text, after.end()))  # "Координационного совета по ...": adjective, then head
    return ends[0] if ends else len(text)


def _body(head: str, text: str, at: int) -> str:
    """A Russian body's name: its head and up to _QUALIFIERS lower-case words after it."""
    parts = [head]
    after = _LOWER_RUN.match(text, at)
    for word in after.group().split() if after else ():
        if word in _CONJUNCTIONS_RU or len(parts) > _QUALIFIERS:
            break
        if word not in _FUNCTION_RU:
            parts.append(word)  # these do not decline with the head: kept whole
    return ">".join(parts)


def close_names(a: str, b: str) -> bool:
    """Whether two different name stems may be one name with a typo fixed: an edit of one
    character (``UN`` / ``UNx`` too), of two in a name of 5 or more letters; never two
    known names (Iran / Iraq, Austria / Australia are different places)."""
    if a in KNOWN and b in KNOWN:
        return False
    if (">" in a) != (">" in b):
        # a typo in a body's head word ("Советаy министров") leaves the head alone: compare heads
        a, b = a.split(">")[0], b.split(">")[0]
    # a known name in each of its spellings: "маскв" is a typo of Москва, the entity "moscow"
    return any(_within(x, y, 2 if min(len(x), len(y)) >= 5 else 1)
               for x in _SPELLINGS.get(a, (a,)) for y in _SPELLINGS.get(b, (b,)))


def _within(a: str, b: str, limit: int) -> bool:
    """Levenshtein distance of a and b is at most `limit` (a banded dynamic programme)."""
    if abs(len(a) - len(b)) > limit:
        return False
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb))
        if min(current) > limit:
            return False
        previous = current
    return previous[-1] <= limit
