"""Settings come from flags, then TALK_* variables, then the TOML file named by TALK_CONFIG; they are frozen."""

import pytest
from pydantic import ValidationError

from talk.settings import Settings


def test_precedence_flags_env_toml(tmp_path, monkeypatch):
    config = tmp_path / "talk.toml"
    config.write_text('port = 9000\nring_timeout = 7.5\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("TALK_CONFIG", str(config))
    monkeypatch.setenv("TALK_RING_TIMEOUT", "12")
    monkeypatch.setenv("TALK_ICE_SERVERS", '[{"urls": "turn:turn.example.com:3478", "username": "u", "credential": "p"}]')
    settings = Settings(host="127.0.0.1")
    assert settings.port == 9000 and settings.ring_timeout == 12 and settings.host == "127.0.0.1"
    assert settings.ice_servers[0]["urls"] == "turn:turn.example.com:3478"


def test_settings_are_frozen_and_validated(monkeypatch):
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.port = 1
    monkeypatch.setenv("TALK_PORT", "not a port")
    with pytest.raises(ValidationError):
        Settings()


def test_default_database_is_sqlite_in_the_data_dir(tmp_path):
    assert Settings(data_dir=tmp_path).resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/talk.db"
