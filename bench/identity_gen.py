"""A labelled corpus for story identity: formulaic CSTO-style bulletins with ground truth.

    .venv/bin/python bench/identity_gen.py OUT [--files 400] [--seed 11]

writes OUT/files/*.txt (the bulletins), OUT/truth.json (every story, its category, its
versions, which file carries which version, the drop order of the files). Everything
follows from the seed. bench/identity_run.py scores `monitor` on it.

Stories are written from formulas, English and Russian, with identity slots (date,
country, city, person, body). Categories:

* siblings: a formula's story and one or two more that differ in one slot (date,
  country, city, person, body) or in two; recurring: the weekly duty-shift training,
  only the date differs; opening: stories sharing an opening sentence or boilerplate
  paragraphs;
* revisions (rule 3 and 4): wording, typo (also inside a name), quantity or ordinal,
  appended sentence, added / removed / reordered paragraphs, reworded title, corrected
  date line, brief published in full, large edit keeping at least half of the words;
* repeats in other encodings and layouts, and late copies (an older bulletin dropped
  after newer ones);
* undecidable (rule 5, not in the target): two stories on one date that differ only in
  a quantity (monitor takes them for one story, see the README).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
             "October", "November", "December"]
RU_MONTHS = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября",
             "октября", "ноября", "декабря"]

# (English, Russian nominative, genitive, prepositional)
COUNTRIES = [
    ("Nicaragua", "Никарагуа", "Никарагуа", "Никарагуа"), ("Cambodia", "Камбоджа", "Камбоджи", "Камбодже"),
    ("Vietnam", "Вьетнам", "Вьетнама", "Вьетнаме"), ("Serbia", "Сербия", "Сербии", "Сербии"),
    ("Cuba", "Куба", "Кубы", "Кубе"), ("Venezuela", "Венесуэла", "Венесуэлы", "Венесуэле"),
    ("Mongolia", "Монголия", "Монголии", "Монголии"), ("Iran", "Иран", "Ирана", "Иране"),
    ("Iraq", "Ирак", "Ирака", "Ираке"), ("India", "Индия", "Индии", "Индии"), ("China", "Китай", "Китая", "Китае"),
    ("Egypt", "Египет", "Египта", "Египте"), ("Laos", "Лаос", "Лаоса", "Лаосе"),
    ("Pakistan", "Пакистан", "Пакистана", "Пакистане"), ("Indonesia", "Индонезия", "Индонезии", "Индонезии"),
    ("Algeria", "Алжир", "Алжира", "Алжире"), ("Brazil", "Бразилия", "Бразилии", "Бразилии"),
    ("Malaysia", "Малайзия", "Малайзии", "Малайзии"), ("Ethiopia", "Эфиопия", "Эфиопии", "Эфиопии"),
    ("Qatar", "Катар", "Катара", "Катаре"),
]
MEMBERS = [
    ("Armenia", "Армения", "Армении", "Армении"), ("Belarus", "Беларусь", "Беларуси", "Беларуси"),
    ("Kazakhstan", "Казахстан", "Казахстана", "Казахстане"), ("Kyrgyzstan", "Кыргызстан", "Кыргызстана", "Кыргызстане"),
    ("Tajikistan", "Таджикистан", "Таджикистана", "Таджикистане"), ("Russia", "Россия", "России", "России"),
]
CITIES = [
    ("Moscow", "Москва", "Москвы", "Москве"), ("Minsk", "Минск", "Минска", "Минске"),
    ("Yerevan", "Ереван", "Еревана", "Ереване"), ("Astana", "Астана", "Астаны", "Астане"),
    ("Bishkek", "Бишкек", "Бишкека", "Бишкеке"), ("Dushanbe", "Душанбе", "Душанбе", "Душанбе"),
    ("Almaty", "Алматы", "Алматы", "Алматы"), ("Kazan", "Казань", "Казани", "Казани"),
    ("Brest", "Брест", "Бреста", "Бресте"), ("Orenburg", "Оренбург", "Оренбурга", "Оренбурге"),
    ("Chelyabinsk", "Челябинск", "Челябинска", "Челябинске"), ("Karaganda", "Караганда", "Караганды", "Караганде"),
    ("Vanadzor", "Ванадзор", "Ванадзора", "Ванадзоре"), ("Khujand", "Худжанд", "Худжанда", "Худжанде"),
    ("Novosibirsk", "Новосибирск", "Новосибирска", "Новосибирске"), ("Gyumri", "Гюмри", "Гюмри", "Гюмри"),
]
# (English full name, Russian surname stem: nominative = stem, genitive = stem + "а", instrumental = stem + "ым")
PERSONS = [
    ("Imangali Tasmagambetov", "Имангали Тасмагамбетов"), ("Taalatbek Masadykov", "Таалатбек Масадыков"),
    ("Samat Ordabayev", "Самат Ордабаев"), ("Andrey Serdyukov", "Андрей Сердюков"),
    ("Valery Semerikov", "Валерий Семериков"), ("Viktor Zinoviev", "Виктор Зиновьев"),
    ("Anatoly Sidorov", "Анатолий Сидоров"), ("Marat Sarsembayev", "Марат Сарсембаев"),
    ("Ruslan Kazakbayev", "Руслан Казакбаев"), ("Maxim Ryzhenkov", "Максим Рыженков"),
    ("Oleg Belyakov", "Олег Беляков"), ("Yuri Khachaturov", "Юрий Хачатуров"),
    ("Nurlan Yermekbayev", "Нурлан Ермекбаев"), ("Dmitry Gorbunov", "Дмитрий Горбунов"),
]
# (English, Russian genitive)
BODIES = [
    ("Council of Foreign Ministers", "Совета министров иностранных дел"),
    ("Council of Defence Ministers", "Совета министров обороны"),
    ("Committee of Secretaries of Security Councils", "Комитета секретарей советов безопасности"),
    ("Working Group on Afghanistan", "Рабочей группы по Афганистану"),
    ("Interstate Commission on Military-Economic Cooperation",
     "Межгосударственной комиссии по военно-экономическому сотрудничеству"),
    ("Coordination Council for Emergency Situations", "Координационного совета по чрезвычайным ситуациям"),
    ("Coordination Council on Combating Illegal Migration", "Координационного совета по борьбе с незаконной миграцией"),
    ("Council of Heads of Border Services", "Совета командующих пограничными войсками"),
]
TOPICS_EN = ["the prospects of cooperation in the field of security", "issues of countering international terrorism",
             "the preparation of joint exercises", "the situation in Central Asia", "humanitarian demining",
             "information security and the fight against cybercrime", "the training of peacekeeping personnel",
             "countering drug trafficking", "the exchange of experience in emergency response"]
TOPICS_RU = ["перспективы сотрудничества в сфере безопасности", "вопросы противодействия международному терроризму",
             "подготовку совместных учений", "ситуацию в Центральной Азии", "вопросы гуманитарного разминирования",
             "вопросы информационной безопасности", "подготовку миротворческого персонала",
             "противодействие незаконному обороту наркотиков", "обмен опытом реагирования на чрезвычайные ситуации"]
BOILER_EN = [
    "The parties noted the high level of interaction and expressed their readiness to continue the dialogue on all "
    "issues of mutual interest.",
    "Particular attention was paid to the implementation of the decisions of the Collective Security Council and to "
    "the plans of joint activities for the coming year.",
    "Following the meeting, the participants agreed to hold the next round of consultations in the second half of "
    "the year and to exchange the draft documents in advance.",
    "Representatives of the Secretariat and the Joint Staff of the Organization took part in the event.",
]
BOILER_RU = [
    "Стороны отметили высокий уровень взаимодействия и выразили готовность продолжить диалог по всем вопросам, "
    "представляющим взаимный интерес.",
    "Особое внимание было уделено выполнению решений Совета коллективной безопасности и планам совместных "
    "мероприятий на предстоящий год.",
    "По итогам встречи участники договорились провести следующий раунд консультаций во втором полугодии и заранее "
    "обменяться проектами документов.",
    "В мероприятии приняли участие представители Секретариата и Объединенного штаба Организации.",
]
APPEND_EN = ["The meeting took place in a constructive and friendly atmosphere.",
             "The parties also exchanged views on current international issues.",
             "At the end of the meeting, the parties exchanged memorable gifts."]
APPEND_RU = ["Встреча прошла в конструктивной и дружественной атмосфере.",
             "Стороны также обменялись мнениями по актуальным международным вопросам.",
             "В завершение встречи стороны обменялись памятными подарками."]
SYNONYMS = [("held", "conducted"), ("discussed", "considered"), ("meeting", "session"), ("issues", "matters"),
            ("noted", "emphasized"), ("took part", "participated"), ("readiness", "willingness"),
            ("провел", "провёл"), ("обсудили", "рассмотрели"), ("состоялось", "прошло"), ("вопросы", "темы"),
            ("отметили", "подчеркнули"), ("приняли участие", "участвовали"), ("готовность", "намерение")]
ORDINALS_EN = ["10th", "11th", "12th", "14th", "15th", "20th", "21st", "22nd", "25th", "30th", "40th", "41st"]
_FILLER_EN = ("cooperation development regional practical joint further mutual effective modern strategic common "
              "operational analytical technical coordinated comprehensive")
_FILLER_RU = ("сотрудничество развитие региональное практическое совместное дальнейшее взаимное эффективное "
              "современное стратегическое общее оперативное аналитическое техническое")
FILLER_EN, FILLER_RU = _FILLER_EN.split(), _FILLER_RU.split()


@dataclass
class Version:
    kind: str
    paragraphs: list[str]
    title: str | None = None
    date_line: str | None = None  # DD.MM.YYYY

    def signature(self) -> list[str]:
        return [self.title or "", *self.paragraphs]


@dataclass
class Story:
    sid: int
    category: str
    lang: str
    versions: list[Version]
    carried: list[tuple[int, int]] = field(default_factory=list)  # (file index, version index)
    decidable: bool = True


def en_date(d: dt.date, rng: random.Random, year: bool = True) -> str:
    if rng.random() < 0.5:
        return f"{d.day} {EN_MONTHS[d.month - 1]}" + (f" {d.year}" if year else "")
    return f"{EN_MONTHS[d.month - 1]} {d.day}" + (f", {d.year}" if year else "")


def ru_date(d: dt.date) -> str:
    return f"{d.day} {RU_MONTHS[d.month - 1]} {d.year} года"


class Corpus:
    def __init__(self, seed: int, files: int) -> None:
        self.rng = random.Random(seed)
        self.nfiles = files
        self.stories: list[Story] = []
        self.plan: list[list[tuple[int, int]]] = [[] for _ in range(files)]  # per file: (story, version)
        self.start = dt.date(2024, 1, 8)
        self.texts: set[str] = set()
        self.series: set[tuple[str, dt.date]] = set()

    def day_of(self, f: int) -> dt.date:
        return self.start + dt.timedelta(days=f // 2)

    # -- formulas: slots -> a version -------------------------------------------------

    def slots(self) -> dict[str, object]:
        r = self.rng
        return {"country": r.randrange(len(COUNTRIES)), "member": r.randrange(len(MEMBERS)),
                "city": r.randrange(len(CITIES)), "person": r.randrange(len(PERSONS)),
                "body": r.randrange(len(BODIES)), "topic": r.randrange(len(TOPICS_EN)),
                "n": r.randint(20, 300), "ordinal": r.randrange(len(ORDINALS_EN)), "formula": r.randrange(6),
                "republic": r.random() < 0.5}

    def write(self, lang: str, date: dt.date, s: dict, article: bool) -> Version:
        en = lang == "en"
        r = self.rng
        f = s["formula"]
        c, m, city, p, b = (COUNTRIES[s["country"]], MEMBERS[s["member"]], CITIES[s["city"]],
                            PERSONS[s["person"]], BODIES[s["body"]])
        topic = TOPICS_EN[s["topic"]] if en else TOPICS_RU[s["topic"]]
        if en:
            when = f"On {en_date(date, r)},"
            country = f"the Republic of {c[0]}" if s["republic"] else c[0]
            lead = [
                f"{when} the CSTO Secretary General {p[0]} held a working meeting with the Ambassador of {country} "
                f"to the Russian Federation, at which the parties discussed {topic}.",
                f"{when} {p[0]}, the CSTO Deputy Secretary General, took part in the international conference on "
                f"{topic} held in the city of {city[0]}.",
                f"{when} the {ORDINALS_EN[s['ordinal']]} meeting of the {b[0]} of the CSTO was held in {city[0]} "
                f"under the chairmanship of {p[0]}.",
                f"{when} in {city[0]}, the CSTO Secretariat hosted consultations with a delegation of {c[0]} led by "
                f"{p[0]} on {topic}.",
                f"{when} a delegation of the {b[0]} of the CSTO headed by {p[0]} visited {m[0]}, where it held talks "
                f"in {city[0]} on {topic}.",
                f"{when} about {s['n']} specialists from {m[0]} completed a training course in {city[0]} organised by "
                f"the {b[0]} of the CSTO.",
            ][f]
            title = [f"Meeting of the CSTO Secretary General with the Ambassador of {c[0]}",
                     f"The CSTO Deputy Secretary General at a conference in {city[0]}",
                     f"Meeting of the {b[0]} in {city[0]}", f"Consultations with a delegation of {c[0]}",
                     f"Visit of a CSTO delegation to {m[0]}", f"Training course in {city[0]}"][f]
            boiler, filler = BOILER_EN, FILLER_EN
            detail = (f"During the event, {s['n']} participants discussed practical measures of "
                      f"{r.choice(filler)} and {r.choice(filler)} interaction.")
        else:
            when = ru_date(date)
            sur = p[1]
            country = f"Республики {c[2]}" if s["republic"] else c[2]
            lead = [
                f"{when} Генеральный секретарь ОДКБ {sur} провел рабочую встречу с Послом {country} в Российской "
                f"Федерации, в ходе которой стороны обсудили {topic}.",
                f"{when} заместитель Генерального секретаря ОДКБ {sur} принял участие в международной конференции "
                f"в городе {city[2]}, посвященной теме «{topic}».",
                f"{when} в {city[3]} состоялось заседание {b[1]} ОДКБ под председательством {sur}а.",
                f"{when} в {city[3]} в Секретариате ОДКБ прошли консультации с делегацией {c[2]} во главе с {sur}ым.",
                f"{when} делегация {b[1]} ОДКБ во главе с {sur}ым посетила {m[1].replace('я', 'ю')}, где в "
                f"{city[3]} провела переговоры.",
                f"{when} около {s['n']} специалистов из {m[2]} прошли курс подготовки в {city[3]}, организованный "
                f"по линии {b[1]} ОДКБ.",
            ][f]
            title = [f"Встреча Генерального секретаря ОДКБ с Послом {c[2]}",
                     f"Заместитель Генерального секретаря ОДКБ на конференции в {city[3]}",
                     f"Заседание {b[1]} в {city[3]}", f"Консультации с делегацией {c[2]}",
                     f"Визит делегации ОДКБ в {m[1]}", f"Курс подготовки в {city[3]}"][f]
            boiler, filler = BOILER_RU, FILLER_RU
            detail = (f"В ходе мероприятия {s['n']} участников обсудили практические меры "
                      f"по развитию сотрудничества и {r.choice(filler)} взаимодействия.")
        if not article:
            return Version("brief", [lead])
        body = [lead, detail, *r.sample(boiler, r.randint(1, 3))]
        return Version("article", body, title, f"{date.day:02d}.{date.month:02d}.{date.year}")

    # -- stories ----------------------------------------------------------------------

    def add(self, category: str, lang: str, versions: list[Version], first_file: int, *,
            decidable: bool = True, step: int = 2) -> Story:
        """A story whose versions come in bulletins f, f + 2 * (step + 0..2), ... of one language."""
        signatures = [json.dumps([" ".join(p.split()) for p in [*v.signature(), v.date_line or ""]]) for v in versions]
        if any(sig in self.texts for sig in signatures) or len(set(signatures)) < len(signatures):
            # the same text twice (two series on one date, an edit that changed nothing): no ground truth
            return Story(-1, category, lang, versions)
        self.texts.update(signatures)
        story = Story(len(self.stories), category, lang, versions, decidable=decidable)
        self.stories.append(story)
        f = first_file
        for v in range(len(versions)):
            if f >= self.nfiles:
                break
            story.carried.append((f, v))
            self.plan[f].append((story.sid, v))
            # carried again word for word in the producer's next bulletin (the same language)
            if self.rng.random() < 0.3 and f + 2 < self.nfiles:
                story.carried.append((f + 2, v))
                self.plan[f + 2].append((story.sid, v))
            f += 2 * (step + self.rng.randint(0, 2))
        return story

    def event_date(self, f: int) -> dt.date:
        return self.day_of(f) - dt.timedelta(days=self.rng.randint(0, 2))

    def build(self) -> None:
        r = self.rng
        f = 0
        while f < self.nfiles - 6:
            for _ in range(r.randint(3, 5)):
                self.one_group(f)
            f += 1

    def one_group(self, f: int) -> None:
        r = self.rng
        lang = "en" if f % 2 == 0 else "ru"  # even bulletins in English, odd ones in Russian
        article = r.random() < 0.35
        date = self.event_date(f)
        s = self.slots()
        roll = r.random()
        if roll < 0.30:
            self.siblings(f, lang, date, s, article)
        elif roll < 0.37:
            self.recurring(f, lang, date)
        elif roll < 0.43:
            self.opening(f, lang, date, s)
        elif roll < 0.47:
            self.quantity_pair(f, lang, date, s, article)
        else:
            self.revision(f, lang, date, s, article)

    def siblings(self, f: int, lang: str, date: dt.date, s: dict, article: bool) -> None:
        r = self.rng
        self.add("plain", lang, [self.write(lang, date, s, article)], f)
        wanted = {0: ["country", "person", "topic"], 1: ["person", "city"], 2: ["city", "person", "body"],
                  3: ["city", "country", "person"], 4: ["body", "person", "member", "city"],
                  5: ["member", "city", "body"]}[s["formula"]]
        # the identity of each event: two siblings with the same slots would be one story
        identity = {k: v for k, v in s.items() if k not in ("topic", "n", "ordinal", "republic")}
        events = {json.dumps([str(date), sorted(identity.items())])}
        for _ in range(r.randint(1, 2)):
            twos = r.random() < 0.35
            keys = r.sample([*wanted, "date"], 2 if twos else 1)
            other = dict(s)
            d = date
            for k in keys:
                if k == "date":
                    d = date + dt.timedelta(days=r.choice([-3, -2, -1, 1, 2, 7]))
                else:
                    pool = {"country": COUNTRIES, "person": PERSONS, "city": CITIES, "body": BODIES,
                            "member": MEMBERS, "topic": TOPICS_EN}[k]
                    other[k] = r.choice([i for i in range(len(pool)) if i != s[k]])
            if keys == ["topic"]:
                keys = ["country"]
                other["country"] = r.choice([i for i in range(len(COUNTRIES)) if i != s["country"]])
            event = json.dumps([str(d), sorted((k, other[k]) for k in identity)])
            if event in events:
                continue
            events.add(event)
            label = "sibling-" + ("2-slots" if twos else keys[0])
            # a sibling comes in the same bulletin or a later one
            self.add(label, lang, [self.write(lang, d, other, article)], f + r.choice([0, 0, 2, 4, 8]))

    def recurring(self, f: int, lang: str, date: dt.date) -> None:
        if (lang, date) in self.series:
            return  # one training a day: another series on this date would be the same event
        self.series.update((lang, date + dt.timedelta(days=7 * week)) for week in range(3))
        for week in range(3):
            d = date + dt.timedelta(days=7 * week)
            if lang == "en":
                text = (f"On {en_date(d, self.rng, year=self.rng.random() < 0.7)}, a joint training session was held "
                        "between the duty shifts of the CSTO Crisis Response Center and the command posts of the "
                        "defense and emergency ministries of the Organization's member states.")
            else:
                text = (f"{ru_date(d)} проведена совместная тренировка дежурных смен Кризисного центра ОДКБ и "
                        "командных пунктов министерств обороны и чрезвычайных ситуаций государств-членов Организации.")
            self.add("recurring", lang, [Version("brief", [text])], f + week * 14)  # two bulletins a day

    def opening(self, f: int, lang: str, date: dt.date, s: dict) -> None:
        """Two articles of one formula: the same opening words and boilerplate, other slots."""
        a = self.write(lang, date, s, True)
        other = dict(s, person=(s["person"] + 3) % len(PERSONS), city=(s["city"] + 5) % len(CITIES),
                     country=(s["country"] + 7) % len(COUNTRIES), body=(s["body"] + 1) % len(BODIES),
                     member=(s["member"] + 1) % len(MEMBERS))
        b = self.write(lang, date, other, True)
        b.paragraphs[2:] = a.paragraphs[2:]  # the same boilerplate paragraphs
        self.add("opening", lang, [a], f)
        self.add("opening", lang, [b], f + self.rng.choice([0, 2, 6]))

    def quantity_pair(self, f: int, lang: str, date: dt.date, s: dict, article: bool) -> None:
        """Rule 5: two stories on one date that differ only in a quantity (not decidable)."""
        s = dict(s, formula=5)
        a = self.write(lang, date, s, article)
        b = self.write(lang, date, dict(s, n=s["n"] + 17), article)
        if article:
            b.paragraphs[1:] = a.paragraphs[1:]
        self.add("undecidable-quantity", lang, [a], f, decidable=False)
        self.add("undecidable-quantity", lang, [b], f + 4, decidable=False)

    def revision(self, f: int, lang: str, date: dt.date, s: dict, article: bool) -> None:
        r = self.rng
        kinds = ["wording", "typo", "name-typo", "quantity", "appended", "large-edit", "brief-in-full"]
        if article:
            kinds = [*kinds[:-1], "added-paragraph", "removed-paragraph", "reordered", "title", "date-line"]
        kind = r.choice(kinds)
        if kind == "brief-in-full":
            brief = self.write(lang, date, s, False)
            full = self.write(lang, date, s, True)
            full.paragraphs[0] = brief.paragraphs[0]
            if r.random() < 0.3:
                full.paragraphs[0] = _reword(full.paragraphs[0], r)
            self.add("rev-brief-in-full", lang, [brief, full], f)
            return
        base = self.write(lang, date, s, article)
        versions = [base]
        for _ in range(1 if kind == "name-typo" else r.randint(1, 2)):
            versions.append(self.revise(versions[-1], kind, lang, s, date))
        if kind == "name-typo":
            versions.reverse()  # the name is misspelt first and fixed later
        self.add("rev-" + kind, lang, versions, f)

    def revise(self, v: Version, kind: str, lang: str, s: dict, date: dt.date) -> Version:
        r = self.rng
        paras = list(v.paragraphs)
        title, date_line = v.title, v.date_line
        if kind == "wording":
            paras[0] = _reword(paras[0], r)
        elif kind == "typo":
            i = r.randrange(len(paras))
            paras[i] = _typo(paras[i], r)
        elif kind == "name-typo":
            person = PERSONS[s["person"]][0 if lang == "en" else 1].split()[-1]
            paras[0] = paras[0].replace(person, _typo(person, r, inside=True), 1)
        elif kind == "quantity":
            n = f" {s['n']} "
            if n in paras[0]:
                paras[0] = paras[0].replace(n, f" {s['n'] + r.randint(1, 9)} ", 1)
            elif lang == "en" and ORDINALS_EN[s["ordinal"]] in paras[0]:
                paras[0] = paras[0].replace(ORDINALS_EN[s["ordinal"]], r.choice(ORDINALS_EN), 1)
            else:
                paras[-1] = paras[-1] + (" In total, 25 experts took part." if lang == "en"
                                         else " Всего приняли участие 25 экспертов.")
        elif kind == "appended":
            paras[-1] = paras[-1] + " " + r.choice(APPEND_EN if lang == "en" else APPEND_RU)
        elif kind == "large-edit":
            paras = [_large_edit(p, r, lang) for p in paras]
        elif kind == "added-paragraph":
            paras.insert(r.randint(1, len(paras)), r.choice(APPEND_EN if lang == "en" else APPEND_RU))
        elif kind == "removed-paragraph" and len(paras) > 2:
            del paras[r.randint(1, len(paras) - 1)]
        elif kind in ("reordered", "removed-paragraph"):
            tail = paras[1:]
            r.shuffle(tail)
            paras = [paras[0], *tail[::-1]] if tail == paras[1:] else [paras[0], *tail]
        elif kind == "title":
            title = (f"{title}: results" if lang == "en" else f"{title}: итоги") if r.random() < 0.5 else \
                (f"The CSTO reports: {title[0].lower()}{title[1:]}" if lang == "en" else f"ОДКБ: {title}")
        elif kind == "date-line":
            d = dt.datetime.strptime(date_line or "", "%d.%m.%Y").date() + dt.timedelta(days=1)
            date_line = f"{d.day:02d}.{d.month:02d}.{d.year}"
        return Version(v.kind, paras, title, date_line)


def _reword(text: str, r: random.Random) -> str:
    options = [(a, b) for a, b in SYNONYMS if a in text]
    if not options:
        extra = ", in particular," if text.isascii() else ", в частности,"
        if "," in text:
            return text.replace(",", extra, 1)
        return text.rstrip(".") + (", as reported." if text.isascii() else ", как сообщается.")
    a, b = r.choice(options)
    return text.replace(a, b, 1)


def _typo(text: str, r: random.Random, inside: bool = False) -> str:
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if len(w) > 5 and w.isalpha() and (inside or w.islower())] or [0]
    i = r.choice(idx) if not inside else 0
    w = words[i]
    k = r.randrange(1, len(w) - 2)
    w = w[:k] + w[k + 1] + w[k] + w[k + 2:] if r.random() < 0.5 else w[:k] + w[k] * 2 + w[k + 1:]
    words[i] = w
    return " ".join(words)


# Words a large edit keeps: months (dates) and the words of bodies' names (slots).
_NAMED = ["Совета коллективной безопасности", "Объединенного штаба Организации"]
PROTECTED = {w for name in [*EN_MONTHS, *RU_MONTHS, *(b for pair in BODIES for b in pair), *_NAMED]
             for w in name.lower().split()}


def _large_edit(text: str, r: random.Random, lang: str) -> str:
    """Replace a third of the longer lower-case words, keeping names, dates and numbers."""
    filler = FILLER_EN if lang == "en" else FILLER_RU
    words = text.split(" ")
    eligible = [i for i, w in enumerate(words) if w.isalpha() and w.islower() and len(w) > 3 and w not in PROTECTED]
    for i in r.sample(eligible, len(eligible) // 3):  # a third: at least half of the words stay
        words[i] = r.choice(filler)
    return " ".join(words)


# -- files ----------------------------------------------------------------------------

LAYOUTS = ["lf", "crlf-bom-blank", "blank-trailing", "cr", "cp1251-crlf", "glued-nofinal", "softbreak"]


def render(versions: list[Version], layout: str, lang: str) -> bytes:
    briefs = [v for v in versions if v.kind == "brief"]
    articles = [v for v in versions if v.kind == "article"]
    lines = [v.paragraphs[0] for v in briefs]
    for a in articles:
        body = list(a.paragraphs)
        if layout == "softbreak":
            body = [p.replace(". ", ".\x0b", 1) for p in body]
        if layout == "glued-nofinal":
            lines += [a.title or "", (a.date_line or "") + body[0], *body[1:]]
        else:
            lines += [a.title or "", a.date_line or "", *body]
    sep = {"lf": "\n", "crlf-bom-blank": "\r\n\r\n", "blank-trailing": "  \n\n", "cr": "\r",
           "cp1251-crlf": "\r\n", "glued-nofinal": "\n", "softbreak": "\n"}[layout]
    text = sep.join(lines) + ("" if layout == "glued-nofinal" else sep)
    if layout == "crlf-bom-blank":
        return b"\xef\xbb\xbf" + text.encode()
    if layout == "cp1251-crlf" and lang == "ru":
        return text.encode("cp1251", errors="replace")
    return text.encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--files", type=int, default=400)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    corpus = Corpus(args.seed, args.files)
    corpus.build()
    r = corpus.rng
    files_dir = args.out / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    base_ns = 1_700_000_000 * 10**9
    meta = []
    for f, entries in enumerate(corpus.plan):
        if not entries:
            continue
        # one bulletin is in one language: its producer's
        langs = {corpus.stories[sid].lang for sid, _ in entries}
        layout = r.choice(LAYOUTS)
        parts: list[bytes] = []
        for lang in sorted(langs):
            chosen = [corpus.stories[sid].versions[v] for sid, v in entries if corpus.stories[sid].lang == lang]
            parts.append((lang, chosen))
        for n, (lang, chosen) in enumerate(parts):
            name = f"{f:04d}_{lang}_{n}.txt"
            (files_dir / name).write_bytes(render(chosen, layout, lang))
            mtime = base_ns + f * 3600 * 10**9 + n * 10**9
            os.utime(files_dir / name, ns=(mtime, mtime))
            items = [[sid, v] for sid, v in entries if corpus.stories[sid].lang == lang]
            meta.append({"name": name, "file": f, "lang": lang, "layout": layout, "mtime_ns": mtime, "items": items})
    # late copies: every 25th bulletin reaches the drop folder 6 bulletins later than its mtime says
    order = [m["name"] for m in meta]
    late = [m["name"] for i, m in enumerate(meta) if i % 25 == 12]
    for name in late:
        i = order.index(name)
        order.insert(min(i + 6, len(order) - 1), order.pop(i))
    truth = {"files": meta, "drop_order": order, "late": late,
             "stories": [asdict(s) for s in corpus.stories if s.carried]}
    (args.out / "truth.json").write_text(json.dumps(truth, ensure_ascii=False), encoding="utf-8")
    items = sum(len(s.carried) for s in corpus.stories)
    print(f"{len(meta)} files, {sum(1 for s in corpus.stories if s.carried)} stories, {items} items -> {args.out}")


if __name__ == "__main__":
    main()
