"""Routing state: who is on duty, who is busy, which calls wait in which queue.

Everything the switchboard needs to decide who rings sits behind `Routing`, so a Redis implementation can replace
the in-memory one for several nodes: each method is async and `claim_agent` is the one atomic step (pick the
longest-idle available agent and mark it busy) that a shared store must do in one operation.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field


class Routing(ABC):
    @abstractmethod
    async def agent_online(self, agent_id: int, queue_ids: Iterable[int]) -> None:
        """The agent's console connected; off duty until set_available(True)."""

    @abstractmethod
    async def agent_offline(self, agent_id: int) -> None:
        """The agent's console went away: off duty, forgotten."""

    @abstractmethod
    async def set_available(self, agent_id: int, available: bool) -> None: ...

    @abstractmethod
    async def is_available(self, agent_id: int) -> bool: ...

    @abstractmethod
    async def claim_agent(self, queue_id: int, exclude: set[int]) -> int | None:
        """Atomically pick the longest-idle agent who is available, not busy and not excluded, and mark them busy."""

    @abstractmethod
    async def release_agent(self, agent_id: int) -> None:
        """The agent's ring or call is over: not busy, idle from now."""

    @abstractmethod
    async def agents_on_duty(self, queue_id: int) -> set[int]:
        """Available agents of the queue, busy or not."""

    @abstractmethod
    async def agent_queues(self, agent_id: int) -> set[int]: ...

    @abstractmethod
    async def enqueue(self, queue_id: int, call_id: str, front: bool = False) -> None: ...

    @abstractmethod
    async def dequeue(self, queue_id: int, call_id: str) -> None: ...

    @abstractmethod
    async def waiting(self, queue_id: int) -> list[str]:
        """Call ids waiting in the queue, first in line first."""


@dataclass
class _Presence:
    queue_ids: frozenset[int]
    available: bool = False
    busy: bool = False
    idle_since: float = field(default_factory=time.monotonic)


class InMemoryRouting(Routing):
    """Single-process routing state (the default)."""

    def __init__(self) -> None:
        self._agents: dict[int, _Presence] = {}
        self._queues: dict[int, list[str]] = {}

    async def agent_online(self, agent_id: int, queue_ids: Iterable[int]) -> None:
        self._agents[agent_id] = _Presence(frozenset(queue_ids))

    async def agent_offline(self, agent_id: int) -> None:
        self._agents.pop(agent_id, None)

    async def set_available(self, agent_id: int, available: bool) -> None:
        presence = self._agents.get(agent_id)
        if presence is None or presence.available == available:
            return
        presence.available = available
        if available and not presence.busy:
            presence.idle_since = time.monotonic()

    async def is_available(self, agent_id: int) -> bool:
        presence = self._agents.get(agent_id)
        return bool(presence and presence.available)

    async def claim_agent(self, queue_id: int, exclude: set[int]) -> int | None:
        candidates = [
            (p.idle_since, agent_id)
            for agent_id, p in self._agents.items()
            if p.available and not p.busy and queue_id in p.queue_ids and agent_id not in exclude
        ]
        if not candidates:
            return None
        _, agent_id = min(candidates)
        self._agents[agent_id].busy = True
        return agent_id

    async def release_agent(self, agent_id: int) -> None:
        presence = self._agents.get(agent_id)
        if presence is not None and presence.busy:
            presence.busy = False
            presence.idle_since = time.monotonic()

    async def agents_on_duty(self, queue_id: int) -> set[int]:
        return {a for a, p in self._agents.items() if p.available and queue_id in p.queue_ids}

    async def agent_queues(self, agent_id: int) -> set[int]:
        presence = self._agents.get(agent_id)
        return set(presence.queue_ids) if presence else set()

    async def enqueue(self, queue_id: int, call_id: str, front: bool = False) -> None:
        line = self._queues.setdefault(queue_id, [])
        if call_id not in line:
            line.insert(0, call_id) if front else line.append(call_id)

    async def dequeue(self, queue_id: int, call_id: str) -> None:
        line = self._queues.get(queue_id)
        if line and call_id in line:
            line.remove(call_id)
            if not line:
                del self._queues[queue_id]

    async def waiting(self, queue_id: int) -> list[str]:
        return list(self._queues.get(queue_id, ()))
