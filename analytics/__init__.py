"""Analytics: journey events, call-journey stitching, conversions, surveys, privacy (and reports, later)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

from aiohttp import web

from analytics.callfacts import FactsKeeper, call_facts_ctx
from analytics.ingest import EventWriter, IpHasher
from analytics.privacy import retention_ctx
from talk.db import ENGINE_KEY, SESSIONMAKER_KEY
from talk.settings import SETTINGS_KEY
from talk.voicemails import voicemail_dir

EVENT_WRITER_KEY = web.AppKey("event_writer", EventWriter)
IP_HASHER_KEY = web.AppKey("ip_hasher", IpHasher)
CALL_FACTS_KEY = web.AppKey("call_facts", FactsKeeper)


async def analytics_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    writer = EventWriter(app[ENGINE_KEY], settings.ingest_max_pending, settings.ingest_linger_ms / 1000)
    writer.start()
    app[EVENT_WRITER_KEY] = writer
    app[IP_HASHER_KEY] = IpHasher()
    yield
    await writer.stop()


def setup_analytics(app: web.Application) -> None:
    """Needs the database context before it (setup_database)."""
    settings = app[SETTINGS_KEY]
    app.cleanup_ctx.append(analytics_ctx)
    app.cleanup_ctx.append(call_facts_ctx(lambda a: a[SESSIONMAKER_KEY], timedelta(days=settings.attribution_days),
                                          CALL_FACTS_KEY))
    app.cleanup_ctx.append(retention_ctx(lambda a: a[SESSIONMAKER_KEY], timedelta(days=settings.retention_days),
                                         voicemail_dir(settings.data_dir)))


__all__ = ["setup_analytics", "EVENT_WRITER_KEY", "IP_HASHER_KEY", "CALL_FACTS_KEY"]
