"""Admin commands create sites, queues and agents that the running product then uses."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from argon2 import PasswordHasher

from alembic.script import ScriptDirectory

from talk.cli import main
from talk.db import alembic_config

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def run_cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "talk.cli", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_site_queue_and_agent_commands(tmp_path, capsys):
    data = ["--data-dir", str(tmp_path)]
    main(["site", "create", "Kettle Shop", "--origin", "https://Shop.Example.com/", "--key", "kettles", *data])
    assert "key kettles" in capsys.readouterr().out
    main(["queue", "create", "kettles", "sales", "--display-name", "Sales", *data])
    main(["account", "create", "Bo@Example.com", "--name", "Bo", "--password", "correct horse", "--queue", "kettles:sales", *data])
    assert "agent account bo@example.com" in capsys.readouterr().out.splitlines()[-1]

    with sqlite3.connect(tmp_path / "talk.db") as db:
        origins = db.execute("SELECT allowed_origins FROM sites WHERE key='kettles'").fetchone()[0]
        email, role, password_hash = db.execute("SELECT email, role, password_hash FROM accounts").fetchone()
        members = db.execute(
            "SELECT queues.name FROM queue_members JOIN queues ON queues.id = queue_members.queue_id").fetchall()
    assert origins == '["https://shop.example.com"]'
    assert (email, role) == ("bo@example.com", "agent")
    assert password_hash.startswith("$argon2") and PasswordHasher().verify(password_hash, "correct horse")
    assert members == [("sales",)]


@pytest.mark.parametrize("args, message", [
    (["site", "create", "Bad", "--origin", "shop.example.com"], "not an origin"),
    (["queue", "create", "no-such-site", "sales"], "no site with key"),
    (["account", "create", "x@example.com", "--password", "short"], "at least 8 characters"),
])
def test_admin_commands_refuse_bad_input_clearly(tmp_path, args, message):
    result = subprocess.run([sys.executable, "-m", "talk.cli", *args, "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_db_upgrade_is_idempotent(tmp_path):
    assert "up to date" in run_cli("db", "upgrade", "--data-dir", str(tmp_path))
    assert "up to date" in run_cli("db", "upgrade", "--data-dir", str(tmp_path))
    with sqlite3.connect(tmp_path / "talk.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)
