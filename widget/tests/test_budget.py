"""Size budget of the embeddable widget: every shop page that embeds us pays for these bytes.

Budgets (gzip level 9, what a server or CDN would send compressed):
- talk.js, the loader every page downloads: at most 3 KB (3000 bytes).
- talk.js + talk-core.js together: at most 25 KB (25000 bytes). Every .js file in widget/ counts towards this total,
  so a part split off talk-core.js later (loaded only when needed, say) cannot slip past the budget.
Run with `python -m pytest widget/tests -q -s` to see the sizes.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

WIDGET_DIR = Path(__file__).resolve().parent.parent
LOADER = WIDGET_DIR / "talk.js"
CORE = WIDGET_DIR / "talk-core.js"

# Decimal kilobytes: the stricter reading of "3 KB" / "25 KB".
LOADER_BUDGET = 3_000
TOTAL_BUDGET = 25_000


def gzipped_size(path: Path) -> int:
    # mtime=0 keeps the output deterministic; the header is still counted, as it is on the wire.
    return len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))


def widget_files() -> list[Path]:
    """Everything the server can serve at /widget/*.js (web/__init__.py serves any .js file in this folder)."""
    return sorted(WIDGET_DIR.glob("*.js"))


@pytest.fixture(scope="module")
def sizes() -> dict[str, int]:
    result = {path.name: gzipped_size(path) for path in widget_files()}
    for name, size in result.items():
        print(f"{name}: {size} bytes gzipped ({(WIDGET_DIR / name).stat().st_size} raw)")
    print(f"total: {sum(result.values())} bytes gzipped (budget {TOTAL_BUDGET})")
    return result


def test_loader_within_budget(sizes: dict[str, int]) -> None:
    assert sizes["talk.js"] <= LOADER_BUDGET, f"talk.js is {sizes['talk.js']} B gzipped, budget {LOADER_BUDGET} B"


def test_loader_and_core_within_budget(sizes: dict[str, int]) -> None:
    assert {LOADER.name, CORE.name} <= set(sizes), sizes
    total = sum(sizes.values())
    assert total <= TOTAL_BUDGET, f"{' + '.join(sorted(sizes))} are {total} B gzipped, budget {TOTAL_BUDGET} B"
