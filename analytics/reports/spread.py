"""Order statistics of a column (wait and talk times, delays to purchase): count, sum, mean, median, p90 (nearest
rank) and maximum, exact.

Two plans, the same figures: PostgreSQL has ordered-set aggregates (`percentile_disc`), which take the statistics
in the aggregate pass that computes the report's other figures, sorting only the column's values; SQLite ranks the
values with window functions, in a statement of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.sql import ColumnElement

from analytics.reports.base import ratio, seconds

# percentile_disc(f) is the value at rank ceil(f * n) (PostgreSQL computes f * n in double precision). The lower
# middle value is at rank ceil(n / 2), exact in binary; the upper middle at (n + 2) // 2 = ceil((0.5 + e) * n) and
# the p90 at ceil(0.9 * n) = ceil((0.9 - e) * n) (0.9 is not exact in binary: 0.9 * 10 may come out above 9), both
# exact while e * n < 0.1, that is for fewer than 10^9 values (a report's range holds at most 400 days of calls).
EPSILON = 1e-10
FRACTIONS = (0.5, 0.5 + EPSILON, 0.9 - EPSILON)


@dataclass(frozen=True)
class Spread:
    """Order statistics of integer microsecond values: n, sum, mean, median (mean of the two middle values when n
    is even), p90 (nearest rank: the smallest value with at least 90% of the values at or below it) and max."""

    n: int = 0
    total_us: int = 0
    median_us: float | None = None
    p90_us: int | None = None
    max_us: int | None = None

    @property
    def mean_us(self) -> float | None:
        return ratio(self.total_us, self.n)

    def seconds(self) -> dict[str, float | None]:
        return {"avg": seconds(self.mean_us), "median": seconds(self.median_us), "p90": seconds(self.p90_us),
                "max": seconds(self.max_us), "total": seconds(self.total_us) if self.n else 0.0}


def ordered_stats(column) -> list[ColumnElement]:
    """PostgreSQL: aggregates giving the order statistics of `column` (NULLs left out) from the query's own pass;
    `spread_of` turns their four values into a Spread."""
    return [func.count(column), func.coalesce(func.sum(column), 0), func.max(column),
            func.percentile_disc(array(FRACTIONS)).within_group(column)]


def spread_of(n, total, largest, picks) -> Spread:
    """The Spread of ordered_stats' values."""
    if not n:
        return Spread()
    lower, upper, p90 = (int(value) for value in picks)
    return Spread(int(n), int(total), (lower + upper) / 2, p90, int(largest))


async def spread(db, values) -> Spread:
    """Order statistics of the one column of `values` (a subquery), in a statement of their own, with window
    functions: SQLite's plan (on PostgreSQL the reports take ordered_stats in their aggregate pass instead)."""
    (column,) = values.c
    n_over = func.count().over()
    ranked = select(column.label("v"), func.row_number().over(order_by=column).label("rn"), n_over.label("n"),
                    func.sum(column).over().label("total")).select_from(values).subquery()
    n, rn = ranked.c.n, ranked.c.rn
    picks = (await db.execute(
        select(ranked.c.v, rn, n, ranked.c.total)
        .where((rn == (n + 1) // 2) | (rn == (n + 2) // 2) | (rn == (9 * n + 9) // 10) | (rn == n))
    )).all()
    if not picks:
        return Spread()
    at = {row.rn: int(row.v) for row in picks}
    count = int(picks[0].n)
    return Spread(count, int(picks[0].total), (at[(count + 1) // 2] + at[(count + 2) // 2]) / 2,
                  at[(9 * count + 9) // 10], at[count])
