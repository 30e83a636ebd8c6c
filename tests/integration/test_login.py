"""Console login: argon2-checked passwords, an encrypted session cookie, CSRF on every form, safe redirects."""

from __future__ import annotations

import re

from yarl import URL

from talk.sessions import SESSION_COOKIE
from tests.support.client import CSRF_RE, login


async def csrf(http, base_url) -> str:
    async with http.get(f"{base_url}/login") as response:
        page = await response.text()
    assert re.search(r'<label[^>]*for="[^"]+"[^>]*>\s*Email', page) and ">Log in<" in page
    return CSRF_RE.search(page).group(1)


async def test_console_requires_login_and_then_shows_the_agent(server, base_url, http):
    async with http.get(f"{base_url}/console", allow_redirects=False) as response:
        assert response.status == 302 and response.headers["Location"] == "/login?next=/console"
    await login(http, base_url, "agent@demo.test")
    async with http.get(f"{base_url}/console") as response:
        assert response.status == 200 and "Alex Agent" in await response.text()
    cookie = http.cookie_jar.filter_cookies(URL(base_url))[SESSION_COOKIE]
    assert "account_id" not in cookie.value and "agent@demo.test" not in cookie.value  # encrypted, not just signed


async def test_without_a_next_page_each_role_lands_on_its_own_console(server, base_url, http, http2):
    for client, email, home in ((http, "agent@demo.test", "/console"), (http2, "seller@demo.test", "/seller")):
        token = await csrf(client, base_url)
        form = {"email": email, "password": "demo", "csrf_token": token}
        async with client.post(f"{base_url}/login", data=form, allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == home, email
        async with client.get(f"{base_url}/login", allow_redirects=False) as response:  # already logged in
            assert response.status == 302 and response.headers["Location"] == home, email
        async with client.get(f"{base_url}{home}") as response:
            assert response.status == 200, email


async def test_wrong_password_is_refused(server, base_url, http):
    token = await csrf(http, base_url)
    form = {"email": "agent@demo.test", "password": "nope", "csrf_token": token, "next": "/console"}
    async with http.post(f"{base_url}/login", data=form, allow_redirects=False) as response:
        assert response.status == 401 and "Wrong e-mail or password" in await response.text()
    async with http.get(f"{base_url}/console", allow_redirects=False) as response:
        assert response.status == 302


async def test_login_without_the_csrf_token_is_refused(server, base_url, http):
    await csrf(http, base_url)
    form = {"email": "agent@demo.test", "password": "demo", "csrf_token": "forged"}
    async with http.post(f"{base_url}/login", data=form, allow_redirects=False) as response:
        assert response.status == 403


async def test_next_never_redirects_off_site(server, base_url, http):
    token = await csrf(http, base_url)
    form = {"email": "agent@demo.test", "password": "demo", "csrf_token": token, "next": "//evil.example/x"}
    async with http.post(f"{base_url}/login", data=form, allow_redirects=False) as response:
        assert response.headers["Location"] == "/console"


async def test_a_marketer_may_not_open_the_agent_console(server, base_url, http):
    await login(http, base_url, "marketer@demo.test")
    async with http.get(f"{base_url}/console", allow_redirects=False) as response:
        assert response.status == 403


async def test_logout_needs_csrf_and_ends_the_session(server, base_url, http):
    await login(http, base_url, "agent@demo.test")
    async with http.post(f"{base_url}/logout", data={"csrf_token": "wrong"}, allow_redirects=False) as response:
        assert response.status == 403
    async with http.get(f"{base_url}/console") as response:
        token = CSRF_RE.search(await response.text()).group(1)
    async with http.post(f"{base_url}/logout", data={"csrf_token": token}, allow_redirects=False) as response:
        assert response.status == 302
    async with http.get(f"{base_url}/console", allow_redirects=False) as response:
        assert response.status == 302


async def test_healthz(server, base_url, http):
    async with http.get(f"{base_url}/healthz") as response:
        assert await response.json() == {"status": "ok"}


async def test_console_and_login_pages_cannot_be_framed_or_run_foreign_scripts(server, base_url, http):
    async with http.get(f"{base_url}/login") as response:
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
