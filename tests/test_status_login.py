"""The /status login: a browser signs in with the token through a form and gets a session cookie.

In process (the routes on a Starlette app, driven through httpx's ASGI transport) and once
through the real entry point over Streamable HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from pydantic import SecretStr
from starlette.applications import Starlette

from mcp_queue_server import Settings
from mcp_queue_server.observe.http import SESSION_COOKIE, routes, session_value
from mcp_queue_server.observe.metrics import Metrics
from tests.test_http import BEARER, TOKEN, http_server

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@asynccontextmanager
async def status_client(
    settings: Settings, token: str | None = TOKEN, base_url: str = "http://127.0.0.1:8000"
) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of the /metrics and /status routes in this process (no redirects followed)."""
    configured = settings.model_copy(update={"auth_token": None if token is None else SecretStr(token)})
    metrics = Metrics(configured)
    transport = httpx2.ASGITransport(app=Starlette(routes=routes(metrics)))
    try:
        async with httpx2.AsyncClient(transport=transport, base_url=base_url, timeout=10) as client:
            yield client
    finally:
        await metrics.aclose()


def cookie_attributes(response: httpx2.Response) -> set[str]:
    [header] = response.headers.get_list("set-cookie")
    return {part.strip().lower() for part in header.split(";")[1:]}


def cookie_value(response: httpx2.Response) -> str:
    [header] = response.headers.get_list("set-cookie")
    name, value = header.split(";", 1)[0].split("=", 1)
    assert name == SESSION_COOKIE
    return value


async def test_status_without_credentials_answers_a_login_form_posting_the_token_in_the_body(
    settings: Settings,
) -> None:
    async with status_client(settings) as client:
        form = await client.get("/status")

    assert form.status_code == 401
    assert form.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/status/login">' in form.text
    assert '<input type="password" name="token"' in form.text
    assert form.headers["cache-control"] == "no-store"
    assert "<td>" not in form.text  # no queue figures before signing in


async def test_a_wrong_token_shows_the_form_again_with_401_and_a_one_line_message(settings: Settings) -> None:
    async with status_client(settings) as client:
        wrong = await client.post("/status/login", content=b"token=guess", headers=FORM)
        empty = await client.post("/status/login", content=b"", headers=FORM)

    assert (wrong.status_code, empty.status_code) == (401, 401)
    assert "Wrong token" in wrong.text
    assert '<input type="password" name="token"' in wrong.text
    assert "set-cookie" not in wrong.headers
    assert "guess" not in wrong.text


async def test_the_right_token_redirects_to_status_with_an_httponly_strict_cookie_that_is_not_the_token(
    settings: Settings,
) -> None:
    async with status_client(settings) as client:
        login = await client.post("/status/login", data={"token": TOKEN})

    assert login.status_code == 303
    assert login.headers["location"] == "/status"
    assert {"httponly", "samesite=strict", "path=/status"} <= cookie_attributes(login)
    assert "secure" not in cookie_attributes(login)  # plain http: a Secure cookie would never come back
    value = cookie_value(login)
    assert TOKEN not in value
    assert value == session_value(TOKEN)


async def test_the_cookie_is_secure_when_the_login_came_over_https(settings: Settings) -> None:
    async with status_client(settings, base_url="https://localhost") as client:
        login = await client.post("/status/login", data={"token": TOKEN})

    assert login.status_code == 303
    assert "secure" in cookie_attributes(login)


async def test_the_session_cookie_opens_status_but_not_metrics(settings: Settings) -> None:
    async with status_client(settings) as client:
        login = await client.post("/status/login", data={"token": TOKEN})
        cookie = {"Cookie": f"{SESSION_COOKIE}={cookie_value(login)}"}
        status = await client.get("/status", headers=cookie)
        metrics = await client.get("/metrics", headers=cookie)
        metrics_with_header = await client.get("/metrics", headers=BEARER)
        status_with_header = await client.get("/status", headers=BEARER)

    assert status.status_code == 200
    assert "<form" not in status.text
    assert "default" in status.text
    assert metrics.status_code == 401
    assert (metrics_with_header.status_code, status_with_header.status_code) == (200, 200)


async def test_a_forged_or_stale_cookie_is_refused(settings: Settings) -> None:
    forged = [
        TOKEN,  # the raw token is not a session
        session_value("another-token"),  # a session of another token (or the token before a rotation)
        session_value(TOKEN)[:-1] + ("0" if session_value(TOKEN)[-1] != "0" else "1"),
        "",
    ]
    async with status_client(settings) as client:
        answers = [(await client.get("/status", headers={"Cookie": f"{SESSION_COOKIE}={v}"})) for v in forged]

    assert [a.status_code for a in answers] == [401] * len(forged)
    assert all("<form" in a.text for a in answers)


async def test_a_foreign_host_is_refused_before_any_token_or_cookie_is_looked_at(settings: Settings) -> None:
    async with status_client(settings) as client:
        login = await client.post("/status/login", data={"token": TOKEN}, headers={"Host": "evil.example"})
        status = await client.get(
            "/status", headers={"Host": "evil.example", "Cookie": f"{SESSION_COOKIE}={session_value(TOKEN)}"}
        )

    assert (login.status_code, status.status_code) == (421, 421)
    assert "set-cookie" not in login.headers


async def test_an_oversized_login_body_is_refused_unread(settings: Settings) -> None:
    async with status_client(settings) as client:
        big = await client.post("/status/login", content=b"token=" + b"x" * 10_000, headers=FORM)

    assert big.status_code == 413


async def test_without_a_configured_token_status_opens_directly_and_login_just_redirects(settings: Settings) -> None:
    async with status_client(settings, token=None) as client:
        status = await client.get("/status")
        login = await client.post("/status/login", data={"token": "anything"})

    assert status.status_code == 200
    assert "<form" not in status.text
    assert login.status_code == 303
    assert "set-cookie" not in login.headers


async def test_a_browser_session_over_the_real_http_transport_keeps_the_token_out_of_urls_and_logs(
    settings: Settings,
) -> None:
    async with (
        http_server(settings, "streamable-http") as server,
        httpx2.AsyncClient(base_url=server.url.removesuffix("/mcp"), timeout=10) as browser,
    ):
        form = await browser.get("/status")
        login = await browser.post("/status/login", data={"token": TOKEN})
        followed = await browser.get(login.headers["location"])  # the client keeps the cookie, like a browser
        scrape = await browser.get("/metrics")
        urls = [str(r.url) for r in (form, login, followed, scrape)] + [login.headers["location"]]

    assert (form.status_code, login.status_code, followed.status_code, scrape.status_code) == (401, 303, 200, 401)
    assert "<form" not in followed.text
    assert "default" in followed.text
    assert not any(TOKEN in url for url in urls)
    log = "".join(server.log)
    assert TOKEN not in log
    assert session_value(TOKEN) not in log
