"""The Starlette/FastAPI dependency in front of a real keyward."""

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from keyward import AsyncClient, Client
from keyward.starlette import KeywardAuth, install


def make_app(address):
    @asynccontextmanager
    async def lifespan(app):
        # The aio channel belongs to the loop that serves the app.
        app.state.keyward = AsyncClient(address, timeout=3)
        yield
        await app.state.keyward.close()

    app = Starlette(lifespan=lifespan)
    auth = KeywardAuth(lambda: app.state.keyward, scopes=["orders:read"])

    async def orders(request: Request):
        key = await auth(request)
        return JSONResponse({"account": key.account_id})

    app.router.routes.append(Route("/orders", orders))
    install(app)
    return app


def test_denials_become_the_products_status_and_body(keyward):
    with Client(keyward.address) as admin:
        good = admin.create_key("acct_7", "web", ["orders:read"]).secret
        other = admin.create_key("acct_7", "web", ["portfolio:read"]).secret

    with TestClient(make_app(keyward.address)) as http:
        none = http.get("/orders")
        assert none.status_code == 401
        assert none.json() == {"error": {"code": "unauthorized", "message": "Invalid or missing API key."}}

        lacking = http.get("/orders", headers={"authorization": f"Bearer {other}"})
        assert lacking.status_code == 403 and lacking.json()["error"]["code"] == "forbidden"

        allowed = http.get("/orders", headers={"authorization": f"Bearer {good}"})
        assert allowed.status_code == 200 and allowed.json() == {"account": "acct_7"}


def test_keyward_unreachable_fails_closed():
    with TestClient(make_app("127.0.0.1:1"), raise_server_exceptions=False) as http:
        assert http.get("/orders", headers={"authorization": "Bearer cc_x"}).status_code == 500
