"""The summary: one row with every headline figure of the range, with the integer numerators and denominators next
to each rate, so it can be compared exactly (the columns are analytics/generator_truth.py's summary keys).

calls_offered, calls_answered, calls_abandoned, calls_missed, voicemails, answer_rate; callers, callers_converted,
conversion_rate_callers, conversions_after_calls, revenue_after_calls; non_callers, non_callers_converted,
conversion_rate_non_callers; survey_responses (answers of calls in range), survey_rating_sum, survey_average. Rates
and averages are unrounded floats, None when the denominator is 0; revenue is rounded to the cent.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from analytics import factdays
from analytics.reports.base import OUTCOME_COLUMNS, Report, ratio
from analytics.reports.conversion import call_counts, caller_figures, money, non_caller_figures
from analytics.reports.filters import Range

SUMMARY_COLUMNS = (
    *OUTCOME_COLUMNS, "answer_rate", "callers", "callers_converted", "conversion_rate_callers",
    "conversions_after_calls", "revenue_after_calls", "non_callers", "non_callers_converted",
    "conversion_rate_non_callers", "survey_responses", "survey_rating_sum", "survey_average",
)


async def summary(db: AsyncSession, rng: Range, window: timedelta) -> Report:
    days = await factdays.split(db, rng)  # (the summary needs no delays to purchase: every figure adds up)
    counts = await call_counts(db, rng, window, days)
    callers = await caller_figures(db, rng, window, days)
    others = await non_caller_figures(db, rng, counts)
    offered, answered = counts["calls_offered"], counts["calls_answered"]
    responses, rating_sum = counts["survey_responses"], counts["survey_rating_sum"]
    row = (
        *(counts[name] for name in OUTCOME_COLUMNS), ratio(answered, offered),
        counts["callers"], callers["callers_converted"], ratio(callers["callers_converted"], counts["callers"]),
        callers["conversions_after_calls"], money(callers["revenue_cents"]),
        others["non_callers"], others["non_callers_converted"],
        ratio(others["non_callers_converted"], others["non_callers"]),
        responses, rating_sum, ratio(rating_sum, responses),
    )
    return Report("summary", SUMMARY_COLUMNS, [row])
