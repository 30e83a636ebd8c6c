"""Routing decisions of the switchboard, driven directly (no sockets): who rings, in what order, and why calls end."""

from __future__ import annotations

import asyncio

import pytest

from signaling.call import Call
from signaling.protocol import ProtocolError
from signaling.routing import InMemoryRouting
from signaling.switchboard import CALL_CHANGED, AgentLink, Switchboard, Timing
from talk.directory import QueueInfo
from talk.types import CallState

QUEUE = QueueInfo(id=1, site_id=1, name="support", display_name="Support")
RING = 0.05


class Inbox(list):
    def __call__(self, message):
        self.append(message)

    def types(self):
        return [m["type"] for m in self]

    def last(self, type_):
        return [m for m in self if m["type"] == type_][-1]


def make_board(**timing) -> Switchboard:
    return Switchboard(InMemoryRouting(), Timing(ring_timeout=timing.get("ring", RING), max_queue_wait=timing.get("wait", 60)))


async def add_agent(board: Switchboard, agent_id: int, available: bool = True) -> Inbox:
    inbox = Inbox()
    closed = []
    link = AgentLink(agent_id, f"Agent {agent_id}", inbox, closed.append)
    inbox.link, inbox.closed = link, closed
    await board.agent_online(link, [QUEUE])
    if available:
        await board.set_available(agent_id, True)
    return inbox


async def call(board: Switchboard, visitor: str = "v_1") -> tuple[Call, Inbox]:
    inbox = Inbox()
    placed = await board.start_call(Call(site_id=1, queue_id=QUEUE.id, visitor_id=visitor), QUEUE, inbox)
    return placed, inbox


async def test_no_agent_on_duty_ends_the_call_at_once():
    board = make_board()
    await add_agent(board, 1, available=False)
    placed, caller = await call(board)
    assert placed.state is CallState.ENDED and placed.end_reason.value == "no-agent"
    assert caller.types() == ["call.ended"]


async def test_longest_idle_agent_rings_first():
    board = make_board(ring=10)
    first = await add_agent(board, 1)
    await asyncio.sleep(0.01)
    second = await add_agent(board, 2)
    placed, caller = await call(board)
    assert placed.agent_id == 1 and first.types() == ["call.incoming"] and second == []
    assert caller.types() == ["call.ringing"]
    # Agent 1 takes it and finishes; now agent 2 has been idle longer and gets the next call.
    await board.answer(placed.id, 1)
    await board.agent_hangup(placed.id, 1)
    following, _ = await call(board, "v_2")
    assert following.agent_id == 2


async def until(condition, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def test_missed_ring_rings_the_next_agent_and_sets_the_first_unavailable():
    board = make_board(ring=0.3)
    first = await add_agent(board, 1)
    await asyncio.sleep(0.01)
    second = await add_agent(board, 2)
    placed, _ = await call(board)
    assert placed.agent_id == 1
    await until(lambda: "agent.status" in first.types())
    assert placed.agent_id == 2 and placed.state is CallState.RINGING
    assert first.types() == ["call.incoming", "call.ring_stopped", "agent.status"]
    assert first.last("agent.status")["available"] is False
    assert second.types() == ["call.incoming"]
    assert not await board.routing.is_available(1)


async def test_ring_out_with_nobody_left_ends_with_no_agent():
    board = make_board()
    await add_agent(board, 1)
    placed, caller = await call(board)
    await until(lambda: not placed.is_active)
    assert placed.end_reason.value == "no-agent"
    assert caller.types() == ["call.ringing", "call.ended"]


async def test_decline_rings_the_next_and_all_declined_ends_with_agent_declined():
    board = make_board(ring=10)
    await add_agent(board, 1)
    await asyncio.sleep(0.01)
    await add_agent(board, 2)
    placed, caller = await call(board)
    await board.decline(placed.id, 1)
    assert placed.agent_id == 2
    await board.decline(placed.id, 2)
    assert placed.state is CallState.ENDED and placed.end_reason.value == "agent-declined"
    assert caller.last("call.ended")["reason"] == "agent-declined"
    assert await board.routing.is_available(1)  # declining is not a reason to go off duty


async def test_queue_positions_update_and_cancel_while_queued():
    board = make_board(ring=10)
    agent = await add_agent(board, 1)
    busy, _ = await call(board, "v_0")
    await board.answer(busy.id, 1)
    second, second_inbox = await call(board, "v_2")
    third, third_inbox = await call(board, "v_3")
    assert second_inbox.last("call.queued")["position"] == 1
    assert third_inbox.last("call.queued")["position"] == 2
    await board.caller_hangup(second.id, "v_2")
    assert second.end_reason.value == "caller-cancelled"
    assert third_inbox.last("call.queued")["position"] == 1
    # The agent finishes: the one still waiting rings.
    await board.agent_hangup(busy.id, 1)
    assert third.state is CallState.RINGING and agent.last("call.incoming")["call_id"] == third.id


async def test_caller_disconnect_mid_call_frees_the_agent():
    board = make_board(ring=10)
    agent = await add_agent(board, 1)
    placed, _ = await call(board)
    await board.answer(placed.id, 1)
    await board.caller_gone(placed.id)
    assert placed.end_reason.value == "caller-disconnected"
    assert agent.last("call.ended")["reason"] == "caller-disconnected"
    following, _ = await call(board, "v_2")
    assert following.agent_id == 1 and following.state is CallState.RINGING


async def test_agent_disconnect_mid_call_ends_it_and_while_ringing_passes_it_on():
    board = make_board(ring=10)
    first = await add_agent(board, 1)
    await asyncio.sleep(0.01)
    await add_agent(board, 2)
    placed, caller = await call(board)
    await board.answer(placed.id, 1)
    await board.agent_offline(first.link)
    assert caller.last("call.ended")["reason"] == "agent-disconnected"

    ringing, _ = await call(board, "v_2")
    assert ringing.agent_id == 2
    third = await add_agent(board, 3)
    await board.agent_offline(board._agents[2])
    assert ringing.agent_id == 3 and third.last("call.incoming")["call_id"] == ringing.id


async def test_a_second_console_replaces_the_first():
    board = make_board(ring=10)
    old = await add_agent(board, 1)
    await add_agent(board, 1)
    assert old.types()[-1] == "session.replaced" and old.closed == [4409]


async def test_only_the_parties_may_act_on_a_call():
    board = make_board(ring=10)
    await add_agent(board, 1)
    await add_agent(board, 2, available=False)
    placed, _ = await call(board, "v_owner")
    with pytest.raises(ProtocolError) as caught:
        await board.caller_hangup(placed.id, "v_intruder")
    assert caught.value.code == "forbidden"
    with pytest.raises(ProtocolError) as caught:
        await board.answer(placed.id, 2)
    assert caught.value.code == "forbidden"
    with pytest.raises(ProtocolError) as caught:
        await board.relay(placed.id, {"type": "rtc.offer"}, visitor_id="v_owner")
    assert caught.value.code == "illegal_state" and "ringing" in caught.value.message


async def test_every_state_change_is_published_once():
    board = make_board(ring=10)
    seen: list[str] = []
    board.events.on(CALL_CHANGED, lambda c: seen.append(c.state.value))
    await add_agent(board, 1)
    placed, _ = await call(board)
    await board.answer(placed.id, 1)
    await board.caller_hangup(placed.id, "v_1")
    assert seen == ["queued", "ringing", "connected", "ended"]


POST_CALL = QueueInfo(id=1, site_id=1, name="support", display_name="Support", landing_url="/thanks?x=1",
                      dispositions=(("Sold", "https://shop.test/offer"), ("Asked", None), ("Evil", "https://evil.test/")),
                      site_origins=("https://shop.test",))


async def connected_call(board: Switchboard, queue: QueueInfo = POST_CALL) -> tuple[Call, Inbox]:
    await add_agent(board, 1)
    board._queues[queue.id] = queue
    inbox = Inbox()
    placed = await board.start_call(Call(site_id=1, queue_id=queue.id, visitor_id="v_1", origin="https://shop.test"),
                                    queue, inbox)
    await board.answer(placed.id, 1)
    return placed, inbox


@pytest.mark.parametrize("disposition, landing", [
    (None, "https://shop.test/thanks?x=1&talk_call={id}"),  # the queue's page, relative to the caller's origin
    ("Asked", "https://shop.test/thanks?x=1&talk_call={id}"),  # a disposition without a page keeps the queue's
    ("Sold", "https://shop.test/offer?talk_call={id}"),  # the disposition's own page wins
    ("Evil", None),  # a page off the site's origins (say, stored before the origins changed) is never used
])
async def test_landing_page_on_call_end(disposition, landing):
    board = make_board(ring=10)
    placed, caller = await connected_call(board)
    if disposition:
        await board.set_disposition(placed.id, 1, disposition)
    await board.caller_hangup(placed.id, "v_1")
    ended = caller.last("call.ended")
    assert ended["landing_url"] == (landing.format(id=placed.id) if landing else None)
    assert ended["survey"] is True and placed.landing_url == ended["landing_url"]


async def test_no_redirect_queue_asks_the_survey_in_place_and_unanswered_calls_get_neither():
    board = make_board(ring=10)
    placed, caller = await connected_call(board, QueueInfo(**{**POST_CALL.__dict__, "redirect_enabled": False}))
    await board.caller_hangup(placed.id, "v_1")
    assert caller.last("call.ended")["landing_url"] is None and caller.last("call.ended")["survey"] is True
    missed, inbox = await call(board, "v_2")
    await board.caller_hangup(missed.id, "v_2")
    assert "landing_url" not in inbox.last("call.ended") and "survey" not in inbox.last("call.ended")


async def test_disposition_must_be_the_queues_and_the_agents():
    board = make_board(ring=10)
    placed, _ = await connected_call(board)
    for agent_id, value, code in [(1, "Nonsense", "invalid_message"), (2, "Sold", "forbidden")]:
        with pytest.raises(ProtocolError) as caught:
            await board.set_disposition(placed.id, agent_id, value)
        assert caught.value.code == code
    assert placed.disposition is None
    assert await board.set_disposition("c_gone", 1, "Sold") is False  # ended calls are updated in the database
