"""The call state machine: legal paths keep their timestamps, illegal ones name the current state."""

import pytest

from signaling.call import Call, IllegalTransition
from talk.types import CallState, EndReason


def new_call() -> Call:
    return Call(site_id=1, queue_id=1, visitor_id="v_1")


def test_answered_call_goes_through_every_state_with_timestamps():
    call = new_call()
    assert call.state is CallState.QUEUED
    call.ring(7)
    call.answer()
    call.end(EndReason.COMPLETED)
    assert call.state is CallState.ENDED and call.agent_id == 7
    assert call.created_at <= call.ringing_at <= call.answered_at <= call.ended_at
    assert call.end_reason is EndReason.COMPLETED


def test_requeue_remembers_the_agent_tried_and_keeps_first_ring_time():
    call = new_call()
    call.ring(1)
    first_ring = call.ringing_at
    call.requeue(declined=True)
    assert call.state is CallState.QUEUED and call.agent_id is None
    assert call.tried_agents == {1} and call.last_decline
    call.ring(2)
    assert call.ringing_at == first_ring and call.agent_id == 2


@pytest.mark.parametrize("steps, illegal, current", [
    ([], "answer", "queued"),
    ([("end", EndReason.CALLER_CANCELLED)], "ring", "ended"),
    ([("ring", 1), ("answer",)], "requeue", "connected"),
    ([("ring", 1), ("end", EndReason.CALLER_CANCELLED)], "end", "ended"),
])
def test_illegal_transitions_name_the_current_state(steps, illegal, current):
    call = new_call()
    for name, *args in steps:
        getattr(call, name)(*args)
    args = {"answer": (), "ring": (3,), "requeue": (False,), "end": (EndReason.COMPLETED,)}[illegal]
    with pytest.raises(IllegalTransition, match=f"is {current};"):
        getattr(call, illegal)(*args)
    assert call.state.value == current
