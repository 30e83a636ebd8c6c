"""STUN/TURN servers come from settings and reach both browsers of a call in their hello result."""

from __future__ import annotations

import pytest

from tests.support.client import connect_agent, connect_caller, login


ICE = [{"urls": "turn:turn.example.com:3478", "username": "u", "credential": "p"}]


@pytest.fixture
def settings(settings):
    """The same test settings, with STUN/TURN servers configured."""
    return settings.model_copy(update={"ice_servers": ICE})


async def test_configured_ice_servers_reach_both_browsers(server, base_url, http, http2):
    await login(http2, base_url, "agent@demo.test")
    agent = await connect_agent(http2, base_url)
    caller = await connect_caller(http, base_url)
    assert caller.hello["ice_servers"] == ICE and agent.hello["ice_servers"] == ICE
    await caller.close()
    await agent.close()
