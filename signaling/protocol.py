"""The wire format: envelope, typed messages, error codes and server events (documented in docs/protocol.md)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Error codes (docs/protocol.md, "Error codes").
INVALID_JSON = "invalid_json"
INVALID_MESSAGE = "invalid_message"
UNKNOWN_TYPE = "unknown_type"
MESSAGE_TOO_LARGE = "message_too_large"
HELLO_REQUIRED = "hello_required"
ALREADY_HELLO = "already_hello"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
ILLEGAL_STATE = "illegal_state"
BUSY = "busy"
ENDPOINT_UNAVAILABLE = "endpoint_unavailable"
MEDIA_ERROR = "media_error"
INTERNAL_ERROR = "internal_error"

# Close codes.
CLOSE_HELLO_TIMEOUT = 4408
CLOSE_REPLACED = 4409
CLOSE_SLOW_CONSUMER = 4429

HARD_FRAME_LIMIT = 1024 * 1024

# Every event type the server may send; event() refuses any other, and a test checks each is documented.
SERVER_EVENTS = frozenset(
    {
        "call.queued",
        "call.ringing",
        "call.incoming",
        "call.ring_stopped",
        "call.connected",
        "call.ended",
        "call.journey",
        "rtc.offer",
        "rtc.answer",
        "rtc.candidate",
        "agent.status",
        "session.replaced",
        "voicemail.saved",
        "voicemail.new",
    }
)

MAX_ID = 2**31 - 1


class ProtocolError(Exception):
    """An error reply: a code from the table above and a message for humans."""

    def __init__(self, code: str, message: str, msg_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.msg_id = msg_id  # set when the frame was parsed far enough to know it


class Message(BaseModel):
    """Base of every client message: the envelope fields plus the message's own, nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=20000)

    id: int = Field(ge=1, le=MAX_ID)
    type: str


class Page(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field("", max_length=2048)
    title: str = Field("", max_length=300)
    referrer: str = Field("", max_length=2048)


class IceCandidate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    candidate: str = Field(max_length=1000)
    sdpMid: str | None = Field(None, max_length=64)
    sdpMLineIndex: int | None = Field(None, ge=0, le=64)
    usernameFragment: str | None = Field(None, max_length=256)


class Hello(Message):
    type: Literal["hello"]
    visitor_id: str | None = Field(None, pattern=r"^v_[A-Za-z0-9_-]{16,40}$")
    session_id: str | None = Field(None, pattern=r"^s_[A-Za-z0-9_-]{16,40}$")


class Ping(Message):
    type: Literal["ping"]


class CallStart(Message):
    """A call to a queue's agents, or a masked call to a seller through one of their endpoint tokens."""

    type: Literal["call.start"]
    queue: str | None = Field(None, min_length=1, max_length=64)
    seller: str | None = Field(None, pattern=r"^se_[A-Za-z0-9_-]{16,60}$")
    listing: str | None = Field(None, min_length=1, max_length=120)
    page: Page | None = None

    @model_validator(mode="after")
    def _one_target(self) -> "CallStart":
        if (self.queue is None) == (self.seller is None):
            raise ValueError("give either queue or seller (an endpoint token)")
        return self


class CallRef(Message):
    call_id: str = Field(min_length=1, max_length=40)


class CallHangup(CallRef):
    type: Literal["call.hangup"]


class CallAnswer(CallRef):
    type: Literal["call.answer"]


class CallDecline(CallRef):
    type: Literal["call.decline"]


class CallDisposition(CallRef):
    type: Literal["call.disposition"]
    disposition: str = Field(min_length=1, max_length=120)


class AgentAvailable(Message):
    type: Literal["agent.available"]
    available: bool


class RtcOffer(CallRef):
    type: Literal["rtc.offer"]
    sdp: str = Field(min_length=1, max_length=20000)


class RtcAnswer(CallRef):
    type: Literal["rtc.answer"]
    sdp: str = Field(min_length=1, max_length=20000)


class RtcCandidate(CallRef):
    type: Literal["rtc.candidate"]
    candidate: IceCandidate | None


class VoicemailStart(CallRef):
    type: Literal["voicemail.start"]


class VoicemailStop(CallRef):
    type: Literal["voicemail.stop"]


class VoicemailList(Message):
    type: Literal["voicemail.list"]
    include_handled: bool = False


class VoicemailHandled(Message):
    type: Literal["voicemail.handled"]
    voicemail_id: str = Field(min_length=1, max_length=40)


class PreflightStart(Message):
    type: Literal["preflight.start"]
    sdp: str = Field(min_length=1, max_length=20000)


class PreflightCandidate(Message):
    type: Literal["preflight.candidate"]
    preflight_id: str = Field(min_length=1, max_length=40)
    candidate: IceCandidate | None


class PreflightStop(Message):
    type: Literal["preflight.stop"]
    preflight_id: str = Field(min_length=1, max_length=40)


def message_type_name(model: type[Message]) -> str:
    return model.model_fields["type"].annotation.__args__[0]


def parse_envelope(raw: str | bytes, max_bytes: int) -> dict[str, Any]:
    """Raw frame -> dict with a valid id and type, or ProtocolError. The id is kept on the error when known."""
    if len(raw) > max_bytes:
        raise ProtocolError(MESSAGE_TOO_LARGE, f"message is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProtocolError(INVALID_JSON, "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(INVALID_JSON, "message must be a JSON object")
    msg_id = data.get("id")
    if type(msg_id) is not int or not 1 <= msg_id <= MAX_ID:
        raise ProtocolError(INVALID_MESSAGE, "id must be an integer from 1 to 2^31-1")
    if not isinstance(data.get("type"), str):
        raise ProtocolError(INVALID_MESSAGE, "type must be a string", msg_id)
    return data


def validate(model: type[Message], data: dict[str, Any]) -> Message:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise ProtocolError(INVALID_MESSAGE, f"{where}: {first['msg']}") from None


def result(msg_id: int | None, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": msg_id, "type": "result", "success": True, "result": payload or {}}


def error(msg_id: int | None, code: str, message: str) -> dict[str, Any]:
    return {"id": msg_id, "type": "result", "success": False, "error": {"code": code, "message": message}}


def event(event_type: str, **fields: Any) -> dict[str, Any]:
    if event_type not in SERVER_EVENTS:
        raise ValueError(f"undocumented server event {event_type!r}")
    return {"type": event_type, **fields}
