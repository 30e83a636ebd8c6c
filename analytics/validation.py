"""Shapes of what browsers and sites send to the journey endpoints, validated with pydantic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

ID_PATTERN = r"^[A-Za-z0-9_-]{16,40}$"
VISITOR_ID = Annotated[str, Field(pattern=r"^v_[A-Za-z0-9_-]{16,40}$")]
SESSION_ID = Annotated[str, Field(pattern=r"^s_[A-Za-z0-9_-]{16,40}$")]
EVENT_ID = Annotated[str, Field(pattern=r"^e_[A-Za-z0-9_-]{16,40}$")]
MAX_EVENTS = 50
MAX_PROPS = 20


def _http_url(value: str) -> str:
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


HttpUrl = Annotated[str, Field(min_length=8, max_length=2048), AfterValidator(_http_url)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EventIn(Strict):
    id: EVENT_ID
    type: Literal["pageview"]
    ts: int = Field(ge=0, le=10**14)
    url: HttpUrl
    title: str = Field("", max_length=300)
    referrer: str = Field("", max_length=2048)
    props: dict[str, str | int | float | bool] | None = None

    @field_validator("props")
    @classmethod
    def _small_props(cls, props: dict | None) -> dict | None:
        if props is None:
            return None
        if len(props) > MAX_PROPS:
            raise ValueError(f"at most {MAX_PROPS} properties")
        for key, value in props.items():
            if not 1 <= len(key) <= 40:
                raise ValueError("property names have 1 to 40 characters")
            if isinstance(value, str) and len(value) > 200:
                raise ValueError(f"property {key!r} is longer than 200 characters")
        return props


class EventBatch(Strict):
    site: str = Field(min_length=1, max_length=64)
    visitor_id: VISITOR_ID
    session_id: SESSION_ID
    sent_at: int | None = Field(None, ge=0, le=10**14)
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class ConversionIn(Strict):
    order_id: str = Field(min_length=1, max_length=100)
    value: float | int = Field(ge=0, le=1_000_000_000)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class BrowserConversion(ConversionIn):
    site: str = Field(min_length=1, max_length=64)
    visitor_id: VISITOR_ID
    session_id: SESSION_ID | None = None


class ServerConversion(ConversionIn):
    visitor_id: VISITOR_ID | None = None
    call_id: str | None = Field(None, min_length=1, max_length=40)


class SurveyIn(Strict):
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(None, max_length=1000)


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{where}: {error['msg']}"
