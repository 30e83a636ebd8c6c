"""The summary: one row with every headline figure of the range, with the integer numerators and denominators next
to each rate, so it can be compared exactly (the columns are analytics/generator_truth.py's summary keys).

calls_offered, calls_answered, calls_abandoned, calls_missed, voicemails, answer_rate; callers, callers_converted,
conversion_rate_callers, conversions_after_calls, revenue_after_calls; non_callers, non_callers_converted,
conversion_rate_non_callers; survey_responses (answers of calls in range), survey_rating_sum, survey_average. Rates
and averages are unrounded floats, None when the denominator is 0; revenue is rounded to the cent.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from analytics.reports.base import OUTCOME_COLUMNS, Report, calls_in, outcome_counts, ratio
from analytics.reports.conversion import caller_figures, money, non_caller_figures
from analytics.reports.filters import Range

SUMMARY_COLUMNS = (
    *OUTCOME_COLUMNS, "answer_rate", "callers", "callers_converted", "conversion_rate_callers",
    "conversions_after_calls", "revenue_after_calls", "non_callers", "non_callers_converted",
    "conversion_rate_non_callers", "survey_responses", "survey_rating_sum", "survey_average",
)


async def summary(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    calls = calls_in(rng, window)
    counts = (await db.execute(select(*outcome_counts(calls), func.count(calls.c.rating).label("responses"),
                                      func.coalesce(func.sum(calls.c.rating), 0).label("rating_sum")))).one()
    offered, answered, abandoned, missed, voicemails = (int(getattr(counts, name)) for name in OUTCOME_COLUMNS)
    responses, rating_sum = int(counts.responses), int(counts.rating_sum)
    callers = await caller_figures(db, rng, window)
    others = await non_caller_figures(db, rng, window)
    row = (
        offered, answered, abandoned, missed, voicemails, ratio(answered, offered),
        callers["callers"], callers["callers_converted"], ratio(callers["callers_converted"], callers["callers"]),
        callers["conversions_after_calls"], money(callers["revenue_cents"]),
        others["non_callers"], others["non_callers_converted"],
        ratio(others["non_callers_converted"], others["non_callers"]),
        responses, rating_sum, ratio(rating_sum, responses),
    )
    return Report("summary", SUMMARY_COLUMNS, [row])
