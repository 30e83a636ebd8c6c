"""Survey results and the people who take calls (agents and sellers).

- `survey`: the post-call survey answers of the calls in range: one `all` row, then one per queue, per agent and
  per seller (the account that answered the call: agent calls under `agent`, masked seller calls under `seller`).
  Columns: dimension, id, name (queue name or account name), survey_responses, survey_rating_sum, survey_average and
  the distribution rating_1 … rating_5 (how many answers gave each rating).
- `survey_comments`: the `limit` latest answers with a comment (newest first): call_id, created_at (of the answer),
  rating, comment (as the caller typed it: text, never markup; escaping is the view's job), queue, channel,
  person_id, person_name.
- `people`: the calls in range by the person on them (analytics/reports/base.py: the answering or ringing agent,
  or the seller of a seller call's queue; agent calls no agent took are the row with no id): role (agent or seller),
  id, name, calls, calls_answered, answer_rate, talk_total_seconds and talk_avg_seconds (answered calls that ended,
  talk = ended_at − answered_at), survey_responses, survey_average, calls_converted (calls with a conversion
  attributed), conversion_rate (calls_converted / calls), conversions (distinct, attributed to the person's calls)
  and revenue. The calls of all rows add up to calls_offered. A conversion after calls of two people counts for both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import desc, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics import factdays
from analytics.reports.base import RATINGS, Report, attributions, calls_in, ratio, seconds
from analytics.reports.conversion import money
from analytics.reports.filters import Range
from analytics.reports.sqltime import binary
from talk.models import Account, Queue, SurveyAnswer

SURVEY_COLUMNS = ("dimension", "id", "name", "survey_responses", "survey_rating_sum", "survey_average",
                  *(f"rating_{r}" for r in RATINGS))
DIMENSIONS = ("all", "queue", "agent", "seller")


def _name_order(row: tuple) -> tuple:
    """Most first, then name and id (None last), in code point order on every engine."""
    return (-row[3], row[2] is None, row[2] or "", row[1] is None, row[1] or 0)


async def survey(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    """The answers counted per (queue, channel, person, rating) in one pass over the calls read, and the day sums of
    the days that serve (analytics/factdays.py), added up here per dimension: four groupings in SQL read every call
    of the range four times (a year: 4 x 50 ms)."""
    days = await factdays.split(db, rng)
    calls = calls_in(rng, window, days=days)
    keys = (calls.c.queue_id, calls.c.channel, calls.c.person_id)
    counted = [(*key, Tally(n, rating * n, Counter({rating: n}))) for *key, rating, n in await db.execute(
        select(*keys, calls.c.rating, func.count()).where(calls.c.rating.is_not(None))
        .group_by(*keys, calls.c.rating))]
    if days is not None:
        summed = factdays.summed_people(days, rng, keys=("queue_id", "channel", "person_id"))
        counted += [(r["queue_id"], r["channel"], r["person_id"], Tally(int(r["responses"]), int(r["rating_sum"]),
                     Counter({rating: int(r[f"rated_{rating}"]) for rating in RATINGS})))
                    for r in (await db.execute(summed)).mappings() if r["responses"]]
    q, a = Queue.__table__, Account.__table__
    queue_names = dict((await db.execute(select(q.c.id, q.c.name).where(
        q.c.id.in_({queue for queue, *_ in counted})))).all())
    person_names = dict((await db.execute(select(a.c.id, a.c.name).where(
        a.c.id.in_({person for _, _, person, _ in counted if person is not None})))).all())
    tallies: dict[tuple, Tally] = {}  # (dimension, id) -> the answers
    for queue, channel, person, tally in counted:
        keys_of = [("all", None), ("queue", queue)]
        if channel in ("agent", "seller") and person is not None:
            keys_of.append((channel, person))
        for key in keys_of:
            tallies.setdefault(key, Tally(0, 0, Counter())).add(tally)
    names = {"queue": queue_names, "agent": person_names, "seller": person_names}
    rows = []
    for dimension in DIMENSIONS:
        found = []
        for (kind, key), tally in tallies.items():
            # (A queue or person no longer in the database has no row, as an inner join would have it.)
            if kind == dimension and (dimension == "all" or key in names[dimension]):
                found.append(_survey_row(dimension, key, names.get(dimension, {}).get(key), tally))
        if dimension == "all" and not found:
            found = [_survey_row("all", None, None, Tally(0, 0, Counter()))]
        rows.extend(found if dimension == "all" else sorted(found, key=_name_order))
    return Report("survey", SURVEY_COLUMNS, rows)


@dataclass
class Tally:
    """Survey answers: how many, the sum of their ratings, how many gave each rating."""
    n: int
    total: int
    ratings: Counter

    def add(self, other: "Tally") -> None:
        self.n, self.total = self.n + other.n, self.total + other.total
        self.ratings.update(other.ratings)


def _survey_row(dimension: str, key, name, tally: Tally) -> tuple:
    return (dimension, key, name, tally.n, tally.total, ratio(tally.total, tally.n),
            *(tally.ratings[rating] for rating in RATINGS))


COMMENT_COLUMNS = ("call_id", "created_at", "rating", "comment", "queue", "channel", "person_id", "person_name")


async def survey_comments(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = calls_in(rng, window)
    sa, q, a = SurveyAnswer.__table__, Queue.__table__, Account.__table__
    statement = (
        select(calls.c.id, sa.c.created_at, sa.c.rating, sa.c.comment, q.c.name, calls.c.channel,
               calls.c.person_id, a.c.name.label("person_name"))
        .select_from(calls).join(sa, sa.c.call_id == calls.c.id).join(q, q.c.id == calls.c.queue_id)
        .outerjoin(a, a.c.id == calls.c.person_id)
        .where(calls.c.commented == 1, sa.c.comment.is_not(None))
        .order_by(desc(sa.c.created_at), desc(binary(calls.c.id)))
        .limit(rng.limit)
    )
    rows = [(r.id, r.created_at.isoformat(), r.rating, r.comment, r.name, r.channel, r.person_id, r.person_name)
            for r in await db.execute(statement)]
    return Report("survey_comments", COMMENT_COLUMNS, rows)


PEOPLE_COLUMNS = (
    "role", "id", "name", "calls", "calls_answered", "answer_rate", "talk_total_seconds", "talk_avg_seconds",
    "survey_responses", "survey_average", "calls_converted", "conversion_rate", "conversions", "revenue",
)


async def people(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    days = await factdays.split(db, rng)
    calls = calls_in(rng, window, days=days)
    read = select(calls.c.channel, calls.c.person_id, *factdays.person_figures(calls)).group_by(
        calls.c.channel, calls.c.person_id)
    statements = [read] if days is None else [read, factdays.summed_people(days, rng)]
    found: dict[tuple, Counter] = {}
    for statement in statements:
        for r in (await db.execute(statement)).mappings():
            found.setdefault((r["channel"], r["person_id"]), Counter()).update(
                {name: int(r[name] or 0) for name in factdays.PERSON_FIGURES})
    a = Account.__table__
    names = dict((await db.execute(select(a.c.id, a.c.name).where(
        a.c.id.in_({person for _, person in found if person is not None})))).all())
    pairs = attributions(rng, window, "channel", "person_id")
    keyed = select(pairs.c.channel, pairs.c.person_id, pairs.c.conversion_id, pairs.c.cents).distinct().subquery()
    money_of = {(r.channel, r.person_id): (int(r.n), int(r.cents)) for r in await db.execute(
        select(keyed.c.channel, keyed.c.person_id, func.count().label("n"), func.sum(keyed.c.cents).label("cents"))
        .group_by(keyed.c.channel, keyed.c.person_id))}
    rows = []
    for (channel, person), r in found.items():
        conversions, revenue_cents = money_of.get((channel, person), (0, 0))
        rows.append((channel, person, names.get(person), r["calls"], r["answered"], ratio(r["answered"], r["calls"]),
                     seconds(r["talk_us"]), seconds(ratio(r["talk_us"], r["talked"])), r["responses"],
                     ratio(r["rating_sum"], r["responses"]), r["converted"], ratio(r["converted"], r["calls"]),
                     conversions, money(revenue_cents)))
    rows.sort(key=lambda row: (row[0], *_name_order(row)))
    return Report("people", PEOPLE_COLUMNS, rows)
