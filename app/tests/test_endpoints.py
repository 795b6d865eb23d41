"""Health, readiness, metrics, ICE servers, the static client and uploads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import aiohttp
import pytest
from yarl import URL

from signaling import __version__


async def test_health(client):
    resp = await client.get("/health")
    assert resp.status == 200 and await resp.json() == {"status": "ok", "version": __version__}


async def test_ready_until_draining(client):
    assert (await client.get("/ready")).status == 200
    await client.app[__import__("signaling.keys").keys.HUB].drain()
    resp = await client.get("/ready")
    assert resp.status == 503 and (await resp.json())["status"] == "draining"
    assert (await client.post("/api/sessions")).status == 503


async def test_drain_closes_websockets_with_1001(client, connect):
    from signaling.keys import HUB

    peer = await connect(client)
    await client.app[HUB].drain()
    msg = await peer.ws.receive(timeout=3)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001


async def test_metrics_count_what_happened(client, connect):
    a, b = await connect(client), await connect(client)
    await a.send(type="offer", to=b.id, data={})
    await b.expect("offer")
    await a.send(type="offer", to="nobody", data={})
    await a.expect("error")
    text = await (await client.get("/metrics")).text()
    assert 'signaling_connections{transport="websocket"} 2' in text
    assert 'signaling_messages_relayed_total{type="offer"} 1' in text
    assert 'signaling_errors_total{code="unknown-peer"} 1' in text
    assert 'signaling_relay_latency_seconds_count 1' in text
    assert "signaling_rooms 0" in text


async def test_ice_servers_static_list(make_client):
    client = await make_client(ice_servers=[{"urls": ["stun:stun.example.org:3478"]}])
    body = await (await client.get("/api/ice-servers")).json()
    assert body["ice_servers"] == [{"urls": ["stun:stun.example.org:3478"]}]


async def test_turn_credentials_follow_coturn_rest_scheme(make_client, connect):
    client = await make_client(turn_urls=["turn:turn.example.org:3478?transport=udp"], turn_secret="s3cret",
                               turn_ttl=600)
    peer = await connect(client)
    (turn,) = peer.welcome["ice_servers"]
    expiry, user = turn["username"].split(":")
    assert user == peer.id and 590 <= int(expiry) - time.time() <= 601
    expected = base64.b64encode(hmac.new(b"s3cret", turn["username"].encode(), hashlib.sha1).digest()).decode()
    assert turn["credential"] == expected
    body = await (await client.get("/api/ice-servers", headers={"Authorization": f"Bearer {peer.token}"})).json()
    assert body["ttl"] == 600 and body["ice_servers"][0]["username"].endswith(":" + peer.id)
    body = await (await client.get("/api/ice-servers", params={"id": peer.id})).json()  # no token: not that name
    assert ":anonymous-" in body["ice_servers"][0]["username"]


async def test_index_and_assets(make_client, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>t</title>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_text("export {};")
    client = await make_client(static_dir=str(tmp_path))
    resp = await client.get("/")
    assert resp.status == 200 and "<title>t</title>" in await resp.text()
    assert resp.headers["Cache-Control"] == "no-cache"
    resp = await client.get("/js/app.js")
    assert resp.status == 200 and "javascript" in resp.headers["Content-Type"]


@pytest.mark.parametrize("path", ["/../etc/passwd", "/%2e%2e/etc/passwd", "/js/../../x", "/nope.html", "/js/"])
async def test_static_never_leaves_its_root(make_client, tmp_path, path):
    (tmp_path / "index.html").write_text("x")
    (tmp_path / "js").mkdir()
    client = await make_client(static_dir=str(tmp_path))
    resp = await client.get(URL(path, encoded=True))
    assert resp.status in (404, 400)


# -- uploads -------------------------------------------------------------------


def _form(content: bytes, ctype: str = "image/png", name: str = "a.png") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", content, filename=name, content_type=ctype)
    return form


async def test_upload_round_trip(make_client, tmp_path):
    client = await make_client(uploads_dir=str(tmp_path))
    resp = await client.post("/api/uploads", data=_form(b"\x89PNG\r\n\x1a\n" + b"x" * 1000))
    assert resp.status == 201
    url = (await resp.json())["url"]
    assert url.startswith("/uploads/") and url.endswith(".png")
    got = await client.get(url)
    assert got.status == 200 and (await got.read()).endswith(b"x" * 1000)
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in got.headers["Content-Security-Policy"]
    assert [p.name for p in tmp_path.iterdir()] == [url.rsplit("/", 1)[1]]


async def test_oversize_upload_is_refused_and_leaves_nothing(make_client, tmp_path):
    client = await make_client(uploads_dir=str(tmp_path), upload_max_size=1000)
    resp = await client.post("/api/uploads", data=_form(b"x" * 5000))
    assert resp.status == 413
    assert list(tmp_path.iterdir()) == []


async def test_oversize_chunked_upload_is_cut_off_and_leaves_nothing(make_client, tmp_path):
    client = await make_client(uploads_dir=str(tmp_path), upload_max_size=100_000)

    async def body():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
        yield b"Content-Type: text/plain\r\n\r\n"
        for _ in range(40):
            yield b"y" * 10_000
        yield b"\r\n--b--\r\n"

    resp = await client.post("/api/uploads", data=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert resp.status == 413
    assert list(tmp_path.iterdir()) == []


async def test_disallowed_type_is_415(make_client, tmp_path):
    client = await make_client(uploads_dir=str(tmp_path))
    resp = await client.post("/api/uploads", data=_form(b"<script>", "text/html", "x.html"))
    assert resp.status == 415
    assert list(tmp_path.iterdir()) == []


async def test_not_multipart_is_400(make_client, tmp_path):
    client = await make_client(uploads_dir=str(tmp_path))
    assert (await client.post("/api/uploads", data=b"raw")).status == 400


@pytest.mark.parametrize("name", ["..%2f..%2fetc%2fpasswd", "x.png", "%2e%2e", ".hidden.png.part"])
async def test_upload_names_are_checked(make_client, tmp_path, name):
    client = await make_client(uploads_dir=str(tmp_path))
    assert (await client.get(URL(f"/uploads/{name}", encoded=True))).status == 404


async def test_uploads_off_without_directory(client):
    assert (await client.post("/api/uploads", data=_form(b"x"))).status == 403
