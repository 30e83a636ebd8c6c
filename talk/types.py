"""Shared vocabulary of the product: enums every package agrees on."""

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    AGENT = "agent"
    SELLER = "seller"
    MARKETER = "marketer"


class CallState(StrEnum):
    QUEUED = "queued"
    RINGING = "ringing"
    CONNECTED = "connected"
    ENDED = "ended"


class EndReason(StrEnum):
    COMPLETED = "completed"
    CALLER_CANCELLED = "caller-cancelled"
    NO_AGENT = "no-agent"
    AGENT_DECLINED = "agent-declined"
    CALLER_DISCONNECTED = "caller-disconnected"
    AGENT_DISCONNECTED = "agent-disconnected"
    FAILED = "failed"


CONSOLE_ROLES = frozenset({Role.AGENT, Role.ADMIN})
