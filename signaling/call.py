"""One call and its state machine: queued -> ringing -> connected -> ended (ringing -> queued on a missed ring)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

from talk.types import CallState, EndReason

TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.QUEUED: frozenset({CallState.RINGING, CallState.ENDED}),
    CallState.RINGING: frozenset({CallState.QUEUED, CallState.CONNECTED, CallState.ENDED}),
    CallState.CONNECTED: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, call: "Call", target: CallState) -> None:
        super().__init__(f"call {call.id} is {call.state.value}; it cannot become {target.value}")
        self.current = call.state
        self.target = target


def new_call_id() -> str:
    return f"c_{secrets.token_urlsafe(16)}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Call:
    site_id: int
    queue_id: int
    visitor_id: str
    page_url: str = ""
    page_title: str = ""
    page_referrer: str = ""
    session_id: str | None = None
    has_journey: bool = False  # made with the visitor's consent: joined to their page views
    origin: str | None = None  # the caller page's origin: relative landing pages resolve against it
    id: str = field(default_factory=new_call_id)
    state: CallState = CallState.QUEUED
    agent_id: int | None = None
    end_reason: EndReason | None = None
    created_at: datetime = field(default_factory=_now)
    ringing_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    # Agents this call has rung and who declined or missed it: it does not ring them again.
    tried_agents: set[int] = field(default_factory=set)
    last_decline: bool = False
    disposition: str | None = None
    landing_url: str | None = None
    journey: dict | None = None  # what the agent's console shows; loaded after the first ring, not stored
    # Masked seller calls (channel "seller"): media goes through the server's bridge, and each side learns only
    # what is below about the other.
    channel: str = "agent"
    endpoint_id: int | None = None
    seller_id: int | None = None  # whom a voicemail of this call is for (never sent to the caller)
    listing: str | None = None
    seller_name: str = ""  # the seller's public display name: all the buyer sees
    caller_label: str = "Caller"  # "Buyer 4821" for a seller: all the seller sees
    voicemail_offered: bool = False  # ended unanswered where the caller may leave a voicemail

    @property
    def masked(self) -> bool:
        return self.channel == "seller"

    @property
    def is_active(self) -> bool:
        return self.state is not CallState.ENDED

    def _move(self, target: CallState) -> None:
        if target not in TRANSITIONS[self.state]:
            raise IllegalTransition(self, target)
        self.state = target

    def ring(self, agent_id: int) -> None:
        self._move(CallState.RINGING)
        self.agent_id = agent_id
        self.ringing_at = self.ringing_at or _now()  # the first ring is what the caller waited for

    def requeue(self, declined: bool) -> None:
        """The ringing agent declined or missed it: back to the queue for the next agent."""
        self._move(CallState.QUEUED)
        if self.agent_id is not None:
            self.tried_agents.add(self.agent_id)
        self.agent_id = None
        self.last_decline = declined

    def answer(self) -> None:
        self._move(CallState.CONNECTED)
        self.answered_at = _now()

    def end(self, reason: EndReason) -> None:
        self._move(CallState.ENDED)
        self.end_reason = reason
        self.ended_at = _now()
