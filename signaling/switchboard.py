"""The switchboard: starts calls, rings agents in turn, connects, relays and ends calls, and tells both parties.

It owns the live Call objects of this process and the links to the connected parties; who is on duty and who waits
comes from `Routing`. Every public method runs under one lock, so the ring-next logic never interleaves with itself.
Fires `call_changed` (pyee) with the Call after every real state change, for persistence and analytics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pyee.asyncio import AsyncIOEventEmitter

from signaling.call import Call, IllegalTransition
from signaling.protocol import FORBIDDEN, ILLEGAL_STATE, INVALID_MESSAGE, NOT_FOUND, ProtocolError, event
from signaling.routing import Routing
from talk.directory import DirectoryError, QueueInfo, check_landing_url, is_relative
from talk.types import CallState, EndReason

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]
CALL_CHANGED = "call_changed"


@dataclass
class AgentLink:
    agent_id: int
    name: str
    send: Send
    close: Callable[[int], None]  # close the agent's socket with a close code


@dataclass(frozen=True)
class Timing:
    ring_timeout: float
    max_queue_wait: float
    voicemail_max_seconds: float = 120.0


# An unanswered call ending so may leave a voicemail (when its queue takes voicemail): nobody could take it.
VOICEMAIL_REASONS = frozenset({EndReason.NO_AGENT, EndReason.AGENT_DECLINED})


class Switchboard:
    def __init__(self, routing: Routing, timing: Timing) -> None:
        self.routing = routing
        self.timing = timing
        self.events = AsyncIOEventEmitter()
        self.calls: dict[str, Call] = {}
        self._queues: dict[int, QueueInfo] = {}
        self._callers: dict[str, Send] = {}
        self._agents: dict[int, AgentLink] = {}
        self._ring_timers: dict[str, asyncio.TimerHandle] = {}
        self._wait_timers: dict[str, asyncio.TimerHandle] = {}
        self._positions: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    # ----- callers -----

    async def start_call(self, call: Call, queue: QueueInfo, send: Send) -> Call:
        async with self._lock:
            self.calls[call.id] = call
            self._queues[queue.id] = queue
            self._callers[call.id] = send
            self._changed(call)
            if not await self.routing.agents_on_duty(queue.id):
                self._end(call, EndReason.NO_AGENT)
                return call
            await self.routing.enqueue(queue.id, call.id)
            self._wait_timers[call.id] = self._later(self.timing.max_queue_wait, self._wait_expired, call.id)
            await self._dispatch(queue.id)
            return call

    async def caller_hangup(self, call_id: str, visitor_id: str) -> None:
        async with self._lock:
            call = self._call_of_caller(call_id, visitor_id)
            reason = EndReason.COMPLETED if call.state is CallState.CONNECTED else EndReason.CALLER_CANCELLED
            await self._end_and_dispatch(call, reason)

    async def caller_gone(self, call_id: str) -> None:
        async with self._lock:
            call = self.calls.get(call_id)
            if call is not None and call.is_active:
                await self._end_and_dispatch(call, EndReason.CALLER_DISCONNECTED)

    # ----- agents -----

    async def agent_online(self, link: AgentLink, queues: list[QueueInfo]) -> None:
        async with self._lock:
            old = self._agents.get(link.agent_id)
            if old is not None:
                # One console per agent: the newer one wins, the older one's call ends as a disconnect.
                await self._agent_gone(old)
                old.send(event("session.replaced"))
                old.close(4409)
            for queue in queues:
                self._queues[queue.id] = queue
            self._agents[link.agent_id] = link
            await self.routing.agent_online(link.agent_id, [q.id for q in queues])

    async def agent_offline(self, link: AgentLink) -> None:
        async with self._lock:
            if self._agents.get(link.agent_id) is link:
                await self._agent_gone(link)

    async def set_available(self, agent_id: int, available: bool) -> bool:
        async with self._lock:
            await self.routing.set_available(agent_id, available)
            for queue_id in await self.routing.agent_queues(agent_id):
                await self._dispatch(queue_id)
            return await self.routing.is_available(agent_id)

    async def answer(self, call_id: str, agent_id: int) -> None:
        async with self._lock:
            call = self._call_of_agent(call_id, agent_id)
            self._transition(call, call.answer)
            self._cancel(self._ring_timers, call.id)
            self._cancel(self._wait_timers, call.id)
            agent = self._agents[agent_id]
            if call.masked:
                # Each side makes its offer to the server's bridge and learns only the other's public label.
                self._to_caller(call, event("call.connected", call_id=call.id, peer={"name": call.seller_name},
                                            offerer=True, media="server"))
                agent.send(event("call.connected", call_id=call.id, peer={"name": call.caller_label}, offerer=True,
                                 media="server"))
            else:
                self._to_caller(call, event("call.connected", call_id=call.id, peer={"name": agent.name},
                                            offerer=True))
                agent.send(event("call.connected", call_id=call.id, peer={"name": "Caller"}, offerer=False))
            self._changed(call)

    async def decline(self, call_id: str, agent_id: int) -> None:
        async with self._lock:
            call = self._call_of_agent(call_id, agent_id)
            if call.state is not CallState.RINGING:
                raise ProtocolError(ILLEGAL_STATE, f"call is {call.state.value}; only a ringing call can be declined")
            await self._requeue(call, declined=True)

    async def agent_hangup(self, call_id: str, agent_id: int) -> None:
        async with self._lock:
            call = self._call_of_agent(call_id, agent_id)
            if call.state is CallState.RINGING:
                await self._requeue(call, declined=True)
            else:
                await self._end_and_dispatch(call, EndReason.COMPLETED)

    # ----- journey and outcome -----

    async def attach_journey(self, call_id: str, journey: dict[str, Any]) -> None:
        async with self._lock:
            call = self.calls.get(call_id)
            if call is None:
                return
            call.journey = journey
            if call.state in (CallState.RINGING, CallState.CONNECTED) and not call.masked:
                self._to_agent(call, event("call.journey", call_id=call.id, journey=journey))

    async def set_disposition(self, call_id: str, agent_id: int, disposition: str) -> bool:
        """Set the outcome of a live call; False when the call is no longer live (the caller updates the record)."""
        async with self._lock:
            call = self.calls.get(call_id)
            if call is None:
                return False
            if call.agent_id != agent_id:
                raise ProtocolError(FORBIDDEN, "this call is not at your console")
            if call.state is not CallState.CONNECTED:
                raise ProtocolError(ILLEGAL_STATE, f"call is {call.state.value}; answer it first")
            names = self._queues[call.queue_id].disposition_names
            if disposition not in names:
                raise ProtocolError(INVALID_MESSAGE, f"disposition: not one of this queue's: {names}")
            call.disposition = disposition
            self._changed(call)
            return True

    # ----- media signaling relay -----

    def connected_call(self, call_id: str, *, visitor_id: str | None = None, agent_id: int | None = None) -> Call:
        """The connected call of this party, for media negotiation; ProtocolError otherwise."""
        if agent_id is not None:
            call = self._call_of_agent(call_id, agent_id)
        else:
            call = self._call_of_caller(call_id, visitor_id or "")
        if call.state is not CallState.CONNECTED:
            raise ProtocolError(ILLEGAL_STATE, f"call is {call.state.value}; media is negotiated once connected")
        return call

    async def relay(self, call_id: str, message: dict[str, Any], *, visitor_id: str | None = None,
                    agent_id: int | None = None) -> None:
        """Pass a peer-to-peer call's media negotiation to the other party (masked calls never: see media.py)."""
        async with self._lock:
            call = self.connected_call(call_id, visitor_id=visitor_id, agent_id=agent_id)
            if call.masked:
                raise ProtocolError(ILLEGAL_STATE, "a masked call's media is negotiated with the server, not relayed")
            if agent_id is not None:
                self._to_caller(call, message)
            else:
                self._to_agent(call, message)

    async def fail(self, call_id: str) -> None:
        """The call's media failed (e.g. a bridge leg's connection): end it as failed."""
        async with self._lock:
            call = self.calls.get(call_id)
            if call is not None and call.is_active:
                await self._end_and_dispatch(call, EndReason.FAILED)

    async def notify(self, queue_id: int, recipient_id: int | None, message: dict[str, Any]) -> None:
        """Tell the online console of `recipient_id`, or (None) of every agent of the queue."""
        async with self._lock:
            for agent_id, link in list(self._agents.items()):
                if recipient_id is not None:
                    if agent_id == recipient_id:
                        link.send(message)
                elif queue_id in await self.routing.agent_queues(agent_id):
                    link.send(message)

    # ----- lifecycle -----

    async def shutdown(self) -> None:
        """Server stopping: every live call ends as failed (and is stored so), timers and tasks stop."""
        async with self._lock:
            for call in list(self.calls.values()):
                if call.is_active:
                    self._end(call, EndReason.FAILED)
        for task in list(self._tasks):
            task.cancel()

    # ----- internals -----

    async def _dispatch(self, queue_id: int) -> None:
        """Ring an idle agent for every waiting call that can have one; end calls nobody can take."""
        for call_id in await self.routing.waiting(queue_id):
            call = self.calls[call_id]
            agent_id = await self.routing.claim_agent(queue_id, exclude=call.tried_agents)
            if agent_id is not None:
                await self._ring(call, agent_id)
                continue
            on_duty = await self.routing.agents_on_duty(queue_id)
            if not on_duty:
                self._end(call, EndReason.NO_AGENT)
                await self.routing.dequeue(queue_id, call.id)
            elif on_duty <= call.tried_agents:
                self._end(call, EndReason.AGENT_DECLINED if call.last_decline else EndReason.NO_AGENT)
                await self.routing.dequeue(queue_id, call.id)
        await self._announce_positions(queue_id)

    async def _ring(self, call: Call, agent_id: int) -> None:
        await self.routing.dequeue(call.queue_id, call.id)
        self._positions.pop(call.id, None)
        call.ring(agent_id)
        queue = self._queues[call.queue_id]
        self._to_caller(call, event("call.ringing", call_id=call.id))
        self._to_agent(call, self._incoming(call, queue))
        self._ring_timers[call.id] = self._later(self.timing.ring_timeout, self._ring_expired, call.id, agent_id)
        self._changed(call)

    def _incoming(self, call: Call, queue: QueueInfo) -> dict[str, Any]:
        if call.masked:  # the seller learns the buyer's alias and the listing, nothing else (no page, no journey)
            return event("call.incoming", call_id=call.id, masked=True, listing=call.listing,
                         queue={"name": queue.name, "display_name": queue.display_name},
                         caller={"label": call.caller_label}, ring_timeout=self.timing.ring_timeout,
                         dispositions=queue.disposition_names)
        return event(
            "call.incoming",
            call_id=call.id,
            queue={"name": queue.name, "display_name": queue.display_name},
            page={"url": call.page_url, "title": call.page_title},
            caller={"label": call.caller_label},
            ring_timeout=self.timing.ring_timeout,
            dispositions=queue.disposition_names,
            journey=call.journey,
        )

    async def _requeue(self, call: Call, declined: bool) -> None:
        agent_id = call.agent_id
        self._cancel(self._ring_timers, call.id)
        call.requeue(declined)
        if agent_id is not None:
            await self.routing.release_agent(agent_id)
        await self.routing.enqueue(call.queue_id, call.id, front=True)
        self._changed(call)
        await self._dispatch(call.queue_id)

    async def _ring_expired(self, call_id: str, agent_id: int) -> None:
        async with self._lock:
            call = self.calls.get(call_id)
            if call is None or call.state is not CallState.RINGING or call.agent_id != agent_id:
                return
            # An agent who lets a call ring out is probably away: take them off duty until they come back.
            await self.routing.set_available(agent_id, False)
            link = self._agents.get(agent_id)
            if link is not None:
                link.send(event("call.ring_stopped", call_id=call_id, reason="timeout"))
                link.send(event("agent.status", available=False, reason="missed-ring"))
            await self._requeue(call, declined=False)

    async def _wait_expired(self, call_id: str) -> None:
        async with self._lock:
            call = self.calls.get(call_id)
            if call is None or not call.is_active:
                return
            if call.state is CallState.QUEUED:
                await self._end_and_dispatch(call, EndReason.NO_AGENT)
            elif call.state is CallState.RINGING:  # let the ring finish, then look again
                self._wait_timers[call_id] = self._later(self.timing.ring_timeout, self._wait_expired, call_id)

    async def _agent_gone(self, link: AgentLink) -> None:
        agent_id = link.agent_id
        queue_ids = await self.routing.agent_queues(agent_id)
        for call in [c for c in self.calls.values() if c.agent_id == agent_id and c.is_active]:
            if call.state is CallState.RINGING:
                self._cancel(self._ring_timers, call.id)
                call.requeue(declined=False)
                await self.routing.enqueue(call.queue_id, call.id, front=True)
                self._changed(call)
            else:
                self._end(call, EndReason.AGENT_DISCONNECTED)
        del self._agents[agent_id]
        await self.routing.agent_offline(agent_id)
        for queue_id in queue_ids:
            await self._dispatch(queue_id)

    async def _end_and_dispatch(self, call: Call, reason: EndReason) -> None:
        was_waiting = call.state is CallState.QUEUED
        agent_id = call.agent_id if call.state in (CallState.RINGING, CallState.CONNECTED) else None
        self._end(call, reason)
        if was_waiting:
            await self.routing.dequeue(call.queue_id, call.id)
        if agent_id is not None:
            await self.routing.release_agent(agent_id)
        await self._dispatch(call.queue_id)

    def _end(self, call: Call, reason: EndReason) -> None:
        """End the call and tell both parties; routing bookkeeping is the caller's job."""
        notify_agent = call.state in (CallState.RINGING, CallState.CONNECTED)
        self._transition(call, lambda: call.end(reason))
        self._cancel(self._ring_timers, call.id)
        self._cancel(self._wait_timers, call.id)
        self._positions.pop(call.id, None)
        ended = event("call.ended", call_id=call.id, reason=reason.value)
        if call.answered_at is not None:
            call.landing_url = self._landing_url(call)
            self._to_caller(call, {**ended, "landing_url": call.landing_url, "survey": True})
        elif reason in VOICEMAIL_REASONS and self._queues[call.queue_id].voicemail_enabled:
            call.voicemail_offered = True
            self._to_caller(call, {**ended, "voicemail": {"max_seconds": self.timing.voicemail_max_seconds}})
        else:
            self._to_caller(call, ended)
        if notify_agent:
            self._to_agent(call, ended)
        self._callers.pop(call.id, None)
        self._changed(call)
        del self.calls[call.id]  # the record lives on in the database

    def _landing_url(self, call: Call) -> str | None:
        """Where the caller's tab goes: the disposition's page, else the queue's, with talk_call; None when the queue
        does not redirect. Only pages on the site's allowed origins (no open redirect)."""
        queue = self._queues[call.queue_id]
        if not queue.redirect_enabled:
            return None
        url = dict(queue.dispositions).get(call.disposition or "") or queue.landing_url
        if not url:
            return None
        if is_relative(url) and call.origin:
            url = call.origin + url  # same site, same origin as the caller's page: their storage carries over
        try:
            check_landing_url(url, queue.site_origins)
        except DirectoryError:
            log.warning("not redirecting call %s to %s: not on the site's origins", call.id, url)
            return None
        parts = urlsplit(url)
        query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("talk_call", call.id)])
        return urlunsplit(parts._replace(query=query))

    async def _announce_positions(self, queue_id: int) -> None:
        for position, call_id in enumerate(await self.routing.waiting(queue_id), start=1):
            if self._positions.get(call_id) != position:
                self._positions[call_id] = position
                self._to_caller(self.calls[call_id], event("call.queued", call_id=call_id, position=position))

    def _active_call(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise ProtocolError(NOT_FOUND, f"no active call {call_id}")
        return call

    def _call_of_caller(self, call_id: str, visitor_id: str) -> Call:
        call = self._active_call(call_id)
        if call.visitor_id != visitor_id:
            raise ProtocolError(FORBIDDEN, "this call is not yours")
        return call

    def _call_of_agent(self, call_id: str, agent_id: int) -> Call:
        call = self._active_call(call_id)
        if call.agent_id != agent_id:
            raise ProtocolError(FORBIDDEN, "this call is not ringing or connected at your console")
        return call

    @staticmethod
    def _transition(call: Call, step: Callable[[], None]) -> None:
        try:
            step()
        except IllegalTransition as exc:
            raise ProtocolError(ILLEGAL_STATE, str(exc)) from None

    def _to_caller(self, call: Call, message: dict[str, Any]) -> None:
        send = self._callers.get(call.id)
        if send is not None:
            send(message)

    def _to_agent(self, call: Call, message: dict[str, Any]) -> None:
        link = self._agents.get(call.agent_id) if call.agent_id is not None else None
        if link is not None:
            link.send(message)

    def _changed(self, call: Call) -> None:
        try:
            self.events.emit(CALL_CHANGED, call)
        except Exception:  # a listener's fault must not break the call itself
            log.exception("call_changed listener failed for %s", call.id)

    def _later(self, delay: float, coro_fn, *args) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(delay, self.spawn, coro_fn, *args)

    def spawn(self, coro_fn, *args) -> None:
        """Run a coroutine in the background, tracked: cancelled at shutdown, its failure logged."""
        task = asyncio.create_task(coro_fn(*args))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("switchboard background task failed", exc_info=task.exception())

    @staticmethod
    def _cancel(timers: dict[str, asyncio.TimerHandle], call_id: str) -> None:
        timer = timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()
