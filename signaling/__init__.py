"""Signaling: the WebSocket protocol, the call state machine, routing and the switchboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from signaling.bridge import MediaBridge
from signaling.call import Call
from signaling.callstore import CallStore
from signaling.echo import EchoService
from signaling.handlers import CALL_HANDLERS
from signaling.heaptrim import HeapTrimmer
from signaling.media_handlers import MEDIA_HANDLERS
from signaling.routing import InMemoryRouting, Routing
from signaling.session import SignalingContext, handler_table
from signaling.socket import CONNECTIONS_KEY, SIGNALING_KEY, websocket_handler
from signaling.switchboard import CALL_CHANGED, Switchboard, Timing
from signaling.voicemail import VoicemailDesk
from talk.db import SESSIONMAKER_KEY
from talk.secret import SECRET_KEY, subkey
from talk.settings import SETTINGS_KEY
from talk.types import CallState
from talk.voicemails import voicemail_dir

HANDLERS = CALL_HANDLERS + MEDIA_HANDLERS
CALLSTORE_KEY = web.AppKey("callstore", CallStore)
JOURNEY_PROVIDER_KEY = web.AppKey("journey_provider", object)  # set by the app factory: Call -> console journey
ROUTING_KEY = web.AppKey("routing", Routing)


async def signaling_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    routing = app.get(ROUTING_KEY) or InMemoryRouting()
    switchboard = Switchboard(
        routing, Timing(settings.ring_timeout, settings.max_queue_wait, settings.voicemail_max_seconds))
    store = CallStore(app[SESSIONMAKER_KEY])
    switchboard.events.on(CALL_CHANGED, store.record)
    store.start()
    ice_servers = list(settings.ice_servers)
    trimmer = HeapTrimmer()  # one per process: the bridge, recordings and echo sessions all free into one heap
    bridge = MediaBridge(ice_servers, trimmer)
    bridge.on_failure = lambda call_id, _leg: switchboard.spawn(switchboard.fail, call_id)
    desk = VoicemailDesk(app[SESSIONMAKER_KEY], store, voicemail_dir(settings.data_dir), ice_servers,
                         settings.voicemail_max_seconds, switchboard.notify, trimmer)
    echo = EchoService(ice_servers, trimmer=trimmer)

    def media_after_call(call: Call) -> None:
        if call.state is CallState.ENDED:
            if call.masked:
                switchboard.spawn(bridge.close, call.id)  # both legs, their tasks and tracks
            desk.call_changed(call, call.seller_id)

    switchboard.events.on(CALL_CHANGED, media_after_call)
    app[CALLSTORE_KEY] = store
    app[SIGNALING_KEY] = SignalingContext(
        switchboard=switchboard,
        callstore=store,
        sessionmaker=app[SESSIONMAKER_KEY],
        handlers=handler_table(HANDLERS),
        journey_provider=app.get(JOURNEY_PROVIDER_KEY),
        ice_servers=ice_servers,
        max_message_bytes=settings.ws_max_message_bytes,
        ring_timeout=settings.ring_timeout,
        bridge=bridge,
        voicemail=desk,
        echo=echo,
        alias_key=subkey(app[SECRET_KEY], "buyer-alias"),
    )
    yield
    await switchboard.shutdown()
    await asyncio.gather(bridge.close_all(), desk.close_all(), echo.close_all(), return_exceptions=True)
    trimmer.close()
    await store.stop()


async def close_connections(app: web.Application) -> None:
    """Server stopping: end the live calls (stored as failed, both parties told), then close every signaling
    WebSocket with 1001. Otherwise aiohttp waits up to its shutdown timeout (60 s) for clients that never hang up
    (every console holds a socket), and a supervisor's SIGKILL meanwhile would leave those calls unrecorded."""
    if SIGNALING_KEY in app:
        await app[SIGNALING_KEY].switchboard.shutdown()
    for close in list(app[CONNECTIONS_KEY]):
        close(WSCloseCode.GOING_AWAY)


def setup_signaling(app: web.Application) -> None:
    """Needs the database context before it (setup_database)."""
    app[CONNECTIONS_KEY] = set()
    app.cleanup_ctx.append(signaling_ctx)
    app.on_shutdown.append(close_connections)
    app.router.add_get("/ws/v1", websocket_handler, name="ws")


__all__ = ["setup_signaling", "SIGNALING_KEY", "CALLSTORE_KEY", "ROUTING_KEY", "JOURNEY_PROVIDER_KEY"]
