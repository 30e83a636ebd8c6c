"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from talk.db import upgrade_schema_async
from talk.models import Base


def _differences(connection) -> list:
    context = MigrationContext.configure(connection, opts={"compare_type": False})
    return compare_metadata(context, Base.metadata)


async def _check(url: str) -> None:
    await upgrade_schema_async(url)
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    await engine.dispose()
    assert differences == [], differences


async def test_sqlite_schema_matches_the_models(tmp_path):
    await _check(f"sqlite+aiosqlite:///{tmp_path}/m.db")


@pytest.mark.postgres
async def test_postgres_schema_matches_the_models(pg_database):
    await _check(pg_database)
