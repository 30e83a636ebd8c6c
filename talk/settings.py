"""One frozen Settings object, built once from TALK_* environment variables and an optional TOML file.

Handlers never read the environment: they get the Settings instance from the app (SETTINGS_KEY).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

CONFIG_FILE_ENV = "TALK_CONFIG"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALK_", frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="Port to listen on.")
    data_dir: Path = Field(Path("./talk-data"), description="Directory for the SQLite file, the secret key and recordings.")
    database_url: str = Field("", description="SQLAlchemy async URL; empty means SQLite in the data dir.")
    secret_key: str = Field("", description="Key for session cookies and visitor tokens; empty means generated once into the data dir.")
    public_url: str = Field("", description="Public base URL (https://talk.example.com) when behind a proxy; empty means taken from each request.")
    ice_servers: list[dict[str, Any]] = Field(default_factory=list, description='RTCIceServer list as JSON, e.g. [{"urls": "stun:stun.example.com:3478"}].')
    ring_timeout: float = Field(20.0, gt=0, description="Seconds an agent's console rings before the next agent rings.")
    max_queue_wait: float = Field(600.0, gt=0, description="Seconds a caller may wait in a queue before the call ends with no-agent.")
    voicemail_max_seconds: float = Field(120.0, gt=0, le=600, description="Longest voicemail in seconds; the recording stops there.")
    hello_timeout: float = Field(10.0, gt=0, description="Seconds a new WebSocket has to send hello.")
    ws_heartbeat: float = Field(15.0, gt=0, description="Seconds between WebSocket pings.")
    ws_max_message_bytes: int = Field(65536, ge=1024, le=1048576, description="Largest accepted signaling message.")
    ws_send_queue: int = Field(256, ge=8, description="Messages queued for one slow client before it is disconnected.")
    attribution_days: float = Field(7.0, gt=0, le=90, description="Days after a call in which page views and purchases count as after the call.")
    retention_days: int = Field(396, ge=1, description="Days journey events, calls, surveys and conversions are kept (default 13 months).")
    ingest_max_pending: int = Field(50000, ge=100, description="Events waiting to be written before /api/v1/events answers 503.")
    ingest_linger_ms: float = Field(5.0, ge=0, le=1000, description="Milliseconds the event writer waits to group requests into one transaction.")
    demo: bool = Field(False, description="Demo mode: demo shop at /demo/ and demo accounts (set by `talk demo`).")
    log_level: str = Field("INFO", description="Python logging level.")

    @field_validator("ice_servers", mode="before")
    @classmethod
    def _parse_ice_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments (CLI flags) > environment > TOML file named by TALK_CONFIG.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'talk.db').resolve()}"


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, description) rows for the README's configuration table."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        rows.append((f"TALK_{name.upper()}", json.dumps(default, default=str), field.description or ""))
    return rows


SETTINGS_KEY = web.AppKey("settings", Settings)
