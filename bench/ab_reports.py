"""Two versions of the report code on one dataset, alternating process by process (issue 5's A/B runs).

On a machine whose speed drifts over minutes, two bench runs taken one after the other can differ by 2x with the
same code. This runs each report in a fresh process under each version in turn, `--rounds` times, so drift spreads
over both, and prints per report the median and minimum wall time of each version and the ratio of the medians.

    git worktree add /tmp/talk-old 534054a
    python bench/ab_reports.py --old /tmp/talk-old --url sqlite+aiosqlite:////work/benchdata/sqlite-10m/talk.db \\
        --days 365 --rounds 4 summary conversion
    python bench/ab_reports.py --old /tmp/talk-old --url postgresql+asyncpg://postgres@127.0.0.1:5432/talk_reports_10m \\
        --days 365 --rounds 4 survey calls_by_day

Each process times `--reps` runs of each report after one warm-up, through `run_report` in a fresh session (as
bench/reports.py times them), for the range of `--days` ending on --end, in --tz. The dataset's schema must suit
both versions (newer migrations that only add columns and indexes do); where the new one drops something the old
code reads, give the old code a copy of the dataset at its own schema with `--old-url`:

    createdb -h 127.0.0.1 -U postgres -T talk_reports_10m talk_reports_10m_old   # before upgrading the dataset
    python bench/ab_reports.py --old /tmp/talk-old --url postgresql+asyncpg://postgres@127.0.0.1:5432/talk_reports_10m \\
        --old-url postgresql+asyncpg://postgres@127.0.0.1:5432/talk_reports_10m_old --days 365 summary
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


async def time_reports(url: str, days: int, end: date, tz: str, reps: int, names: list[str]) -> dict[str, list]:
    """In this process (the code on sys.path): wall times in ms of each report, after a warm-up."""
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from analytics.reports import ReportFilters, run_report
    from talk.db import create_engine

    engine = create_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    filters, window = ReportFilters(end - timedelta(days=days - 1), end, tz), timedelta(days=7)
    times: dict[str, list] = {name: [] for name in names}
    try:
        for rep in range(reps + 1):
            for name in names:
                async with sessions() as db:
                    started = time.perf_counter()
                    await run_report(db, name, filters, window)
                    if rep:
                        times[name].append((time.perf_counter() - started) * 1000)
    finally:
        await engine.dispose()
    return times


def child(args: argparse.Namespace) -> None:
    code = Path(args.code).resolve()
    sys.path.insert(0, str(code))
    import analytics  # the version asked for, not an installed one

    if not Path(analytics.__file__).resolve().is_relative_to(code):
        sys.exit(f"analytics imported from {analytics.__file__}, not from {code}")
    found = asyncio.run(time_reports(args.url, args.days, args.end, args.tz, args.reps, args.reports))
    print(json.dumps(found))


def run_version(code: Path, url: str, args: argparse.Namespace) -> dict[str, list]:
    command = [sys.executable, __file__, "--child", "--code", str(code), "--url", url, "--days", str(args.days),
               "--end", args.end.isoformat(), "--tz", args.tz, "--reps", str(args.reps), *args.reports]
    # The version's own directory first on the path, and as the working directory (alembic.ini, templates).
    done = subprocess.run(command, cwd=code, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="report names (analytics.reports.REPORTS)")
    parser.add_argument("--old", type=Path, help="the other version's checkout (a git worktree)")
    parser.add_argument("--new", type=Path, default=HERE, help="this checkout by default")
    parser.add_argument("--url", required=True, help="the dataset's database URL")
    parser.add_argument("--old-url", help="the old version's copy of the dataset (default: --url)")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--end", type=date.fromisoformat, default=date(2026, 11, 1))
    parser.add_argument("--tz", default="Europe/Berlin")
    parser.add_argument("--reps", type=int, default=2, help="timed runs per process")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.old is None:
        parser.error("--old: the other version's checkout")
    samples: dict[tuple[str, str], list] = {}
    for _ in range(args.rounds):
        for label, code, url in (("old", args.old, args.old_url or args.url), ("new", args.new, args.url)):
            for name, times in run_version(code, url, args).items():
                samples.setdefault((name, label), []).extend(times)
    print(f"{args.days} days ending {args.end}, {args.tz}; {args.rounds} rounds of {args.reps} runs per version")
    print("| report | old: median / min ms | new: median / min ms | new / old (medians) |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.reports:
        old, new = samples[name, "old"], samples[name, "new"]
        print(f"| {name} | {statistics.median(old):,.0f} / {min(old):,.0f} | {statistics.median(new):,.0f} / "
              f"{min(new):,.0f} | {statistics.median(new) / statistics.median(old):.2f}x |")


if __name__ == "__main__":
    main()
