"""A stand-in for the Talk server, just enough to test the widget on its own: the browser endpoints of docs/api.md
(events, conversions, surveys) with their CORS rules, a scripted caller side of docs/protocol.md, the widget's files,
and shop pages on a second origin (so every request the widget makes is cross-origin, as on a real shop).

Everything the widget sends is recorded for the tests to inspect. The server runs on its own event loop in a thread,
so the tests can stay plain synchronous Playwright code.
"""

from __future__ import annotations

import asyncio
import html
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

WIDGET_DIR = Path(__file__).resolve().parent.parent
SITE = "demo-shop"
CALL_ID = "c_mockcall0001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Request:
    path: str
    method: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the raw text when it is not JSON

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


@dataclass
class CallScript:
    """How the fake server treats the next call: `connect` answers it at once (call.connected, offerer); the end is
    sent by `MockTalk.end_call()` or after the caller's call.hangup, with these fields."""

    connect: bool = True
    landing_url: str | None = None
    survey: bool = False


@dataclass
class MockTalk:
    api_port: int = field(default_factory=free_port)
    shop_port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    hellos: list[dict] = field(default_factory=list)
    ws_messages: list[dict] = field(default_factory=list)
    # survey state per call id: {"answered": bool, "questions": {...}}; unknown ids answer 404
    surveys: dict[str, dict] = field(default_factory=dict)
    # status codes to answer POST /api/v1/events with, one per request, before falling back to 202
    event_statuses: list[int] = field(default_factory=list)
    call: CallScript = field(default_factory=CallScript)
    # shop pages by path ("*" for any other path); "{API}" in them becomes the API origin
    pages: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- what tests use

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def shop(self) -> str:
        return f"http://127.0.0.1:{self.shop_port}"

    def events(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/api/v1/events" and r.method == "POST"]

    def pageviews(self) -> list[tuple[dict, dict]]:
        """(batch, event) for every page view received, in order."""
        return [(r.body, e) for r in self.events() for e in r.body["events"]]

    def of(self, path: str, method: str = "POST") -> list[Request]:
        return [r for r in self.requests if r.path == path and r.method == method]

    def wait_for(self, predicate, timeout: float = 5.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; requests: {self.requests}")
            time.sleep(0.05)

    def end_call(self, reason: str = "completed") -> None:
        """Send call.ended (with the script's landing_url and survey) to every open caller socket."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._send_ended(reason), self._loop).result(5)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.hellos.clear()
            self.ws_messages.clear()
        self.surveys.clear()
        self.pages.clear()
        self.event_statuses.clear()
        self.call = CallScript()

    # ---------------------------------------------------------------- pages

    @staticmethod
    def page(title: str = "Shop page", attrs: str = "", head: str = "", body: str = "") -> str:
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>{html.escape(title)}</title>
<script>window.talk=window.talk||function(){{(talk.q=talk.q||[]).push(arguments)}};</script>
{head}
<script src="{{API}}/widget/talk.js" data-site="{SITE}" {attrs} async></script>
</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"""

    async def _shop_page(self, request: web.Request) -> web.Response:
        body = self.pages.get(request.path) or self.pages.get("*") or self.page()
        return web.Response(text=body.replace("{API}", self.api), content_type="text/html")

    # ---------------------------------------------------------------- API

    def _record(self, request: web.Request, text: str) -> Request:
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        entry = Request(request.path, request.method, dict(request.headers), body)
        with self._lock:
            self.requests.append(entry)
        return entry

    def _cors(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin == self.shop:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
        return response

    def _json(self, request: web.Request, data: dict, status: int = 200, **headers: str) -> web.Response:
        return self._cors(request, web.json_response(data, status=status, headers=headers))

    def _allowed(self, request: web.Request) -> bool:
        return request.headers.get("Origin") == self.shop

    async def _preflight(self, request: web.Request) -> web.Response:
        self._record(request, "")
        response = web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "GET, POST", "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "600"})
        return self._cors(request, response)

    async def _events(self, request: web.Request) -> web.Response:
        self._record(request, await request.text())
        if not self._allowed(request):
            return web.json_response({"error": {"code": "forbidden_origin", "message": "origin"}}, status=403)
        status = self.event_statuses.pop(0) if self.event_statuses else 202
        if status == 503:
            return self._json(request, {"error": {"code": "overloaded", "message": "later"}}, 503, **{"Retry-After": "1"})
        return self._json(request, {"accepted": 1, "duplicates": 0}, status)

    async def _conversions(self, request: web.Request) -> web.Response:
        self._record(request, await request.text())
        return self._json(request, {"status": "recorded"}, 201)

    async def _survey_get(self, request: web.Request) -> web.Response:
        self._record(request, "")
        call_id = request.match_info["call_id"]
        state = self.surveys.get(call_id)
        if state is None:
            return self._json(request, {"error": {"code": "not_found", "message": "call"}}, 404)
        return self._json(request, {"call_id": call_id, "answered": state.get("answered", False),
                                    "questions": state.get("questions", {"rating": None, "comment": None})})

    async def _survey_post(self, request: web.Request) -> web.Response:
        entry = self._record(request, await request.text())
        state = self.surveys.get(request.match_info["call_id"])
        if state is None:
            return self._json(request, {"error": {"code": "not_found", "message": "call"}}, 404)
        if state.get("answered"):
            return self._json(request, {"error": {"code": "conflict", "message": "answered"}}, 409)
        state["answered"] = True
        state["answer"] = entry.body
        return self._json(request, {"status": "recorded"}, 201)

    async def _widget(self, request: web.Request) -> web.StreamResponse:
        path = WIDGET_DIR / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Content-Type": "application/javascript", "Cache-Control": "no-store"})

    # ---------------------------------------------------------------- signaling (caller side)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                with self._lock:
                    self.ws_messages.append(m)
                await self._on_ws(ws, m)
        finally:
            self._sockets.remove(ws)
        return ws

    async def _on_ws(self, ws: web.WebSocketResponse, m: dict) -> None:
        kind, mid = m.get("type"), m.get("id")
        if kind == "hello":
            with self._lock:
                self.hellos.append(m)
            await ws.send_json({"id": mid, "type": "result", "success": True, "result": {
                "visitor_id": m.get("visitor_id") or "v_server_made_up_0000", "ice_servers": [], "queues": []}})
        elif kind == "call.start":
            await ws.send_json({"id": mid, "type": "result", "success": True,
                                "result": {"call_id": CALL_ID, "state": "ringing", "reason": None}})
            await ws.send_json({"type": "call.ringing", "call_id": CALL_ID})
            if self.call.connect:
                await ws.send_json({"type": "call.connected", "call_id": CALL_ID, "peer": {"name": "Alex"},
                                    "offerer": True})
        elif kind == "call.hangup":
            await ws.send_json({"id": mid, "type": "result", "success": True, "result": {}})
            await ws.send_json(self._ended_event("completed"))
        else:
            await ws.send_json({"id": mid, "type": "result", "success": True, "result": {}})

    def _ended_event(self, reason: str) -> dict:
        event = {"type": "call.ended", "call_id": CALL_ID, "reason": reason}
        if self.call.connect:
            event.update(landing_url=self.call.landing_url, survey=self.call.survey)
        return event

    async def _send_ended(self, reason: str) -> None:
        for ws in list(self._sockets):
            await ws.send_json(self._ended_event(reason))

    # ---------------------------------------------------------------- lifecycle

    def _app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get(r"/widget/{name:[a-z][a-z0-9-]*\.js}", self._widget)
        r.add_post("/api/v1/events", self._events)
        r.add_post("/api/v1/conversions", self._conversions)
        r.add_get("/api/v1/surveys/{call_id}", self._survey_get)
        r.add_post("/api/v1/surveys/{call_id}", self._survey_post)
        r.add_route("OPTIONS", "/api/{tail:.*}", self._preflight)
        r.add_get("/ws/v1", self._ws)
        r.add_get("/{tail:.*}", self._shop_page)
        return app

    def start(self) -> MockTalk:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            self._runner = web.AppRunner(self._app())
            loop.run_until_complete(self._runner.setup())
            for port in (self.api_port, self.shop_port):
                loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="widget-mock", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the mock Talk server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
