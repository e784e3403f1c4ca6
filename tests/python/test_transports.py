"""The same flow over other client stacks: `socketio.AsyncClient` (aiohttp) and HTTP long-polling only."""

import asyncio
import json
import time

import requests
import socketio

from conftest import MARKER, STEP, check_message, make_token, unique


def test_async_client_join_send_receive(server):
    room = unique("async")
    ada_id, bob_id = unique("ada"), unique("bob")

    async def scenario():
        ada = socketio.AsyncClient(reconnection=False)
        bob = socketio.AsyncClient(reconnection=False)
        sessions = {"ada": asyncio.Queue(), "bob": asyncio.Queue()}
        inbox = {"ada": asyncio.Queue(), "bob": asyncio.Queue()}
        for name, sio in (("ada", ada), ("bob", bob)):
            sio.on("session", lambda data, name=name: sessions[name].put_nowait(data))
            sio.on("message", lambda data, name=name: inbox[name].put_nowait(data))
        try:
            await ada.connect(server.url, auth={"token": make_token(ada_id, "Ada")}, transports=["websocket"],
                              wait_timeout=STEP)
            await bob.connect(server.url, auth={"token": make_token(bob_id, "Bob")}, transports=["websocket"],
                              wait_timeout=STEP)
            assert (await asyncio.wait_for(sessions["ada"].get(), STEP))["user"]["id"] == ada_id
            assert (await asyncio.wait_for(sessions["bob"].get(), STEP))["user"]["id"] == bob_id

            for sio in (ada, bob):
                ack = await sio.call("room:join", {"room": room}, timeout=STEP)
                assert ack.get("ok") is True, ack

            ack = await ada.call("message:send", {"room": room, "text": "from asyncio"}, timeout=STEP)
            assert ack.get("ok") is True, ack
            check_message(ack["message"], room=room, seq=1, sender=ada_id, text="from asyncio")
            got = await asyncio.wait_for(inbox["bob"].get(), STEP)
            assert got == ack["message"]

            ack = await bob.call("message:send", {"room": room, "text": "back at you"}, timeout=STEP)
            assert ack.get("ok") is True, ack
            got = await asyncio.wait_for(inbox["ada"].get(), STEP)
            assert got == ack["message"] and got["seq"] == 2

            # Nobody got their own message back: the next message in each inbox is a marker from the other.
            for sender, receiver in ((ada, "bob"), (bob, "ada")):
                text = f"{MARKER}{receiver}"
                ack = await sender.call("message:send", {"room": room, "text": text}, timeout=STEP)
                assert ack.get("ok") is True, ack
                got = await asyncio.wait_for(inbox[receiver].get(), STEP)
                assert got["text"] == text, f"{receiver} got {got} before the marker: a sender got its own message back"
        finally:
            for sio in (ada, bob):
                if sio.connected:
                    await sio.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 6 * STEP))


def test_long_polling_only(connect):
    room = unique("polling")
    ada_id, bob_id = unique("ada"), unique("bob")
    ada = connect(auth={"token": make_token(ada_id, "Ada")}, transports=["polling"])
    bob = connect(auth={"token": make_token(bob_id, "Bob")}, transports=["polling"])
    assert ada.sio.transport() == "polling" and bob.sio.transport() == "polling"
    assert ada.session()["user"] == {"id": ada_id, "name": "Ada", "anonymous": False}
    assert bob.session()["user"]["id"] == bob_id

    ada.join(room)
    bob.join(room)
    for i in range(1, 4):
        msg = ada.send(room, f"poll {i}")
        check_message(msg, room=room, seq=i, sender=ada_id, text=f"poll {i}")
        assert bob.rec.wait_for("message", lambda m: m.get("seq") == i) == msg
    reply = bob.send(room, "polled back")
    assert ada.rec.wait_for("message", lambda m: m.get("seq") == 4) == reply

    history = bob.call("history:fetch", {"room": room, "limit": 2, "before": 4})
    assert [m["seq"] for m in history["messages"]] == [2, 3] and history["hasMore"] is True
    assert ada.sio.transport() == "polling"


def polling_session(server, auth) -> list[str]:
    """Raw Engine.IO v4 long-polling: handshake, CONNECT to `/` with `auth`, then polls until a Socket.IO CONNECT
    answer (`40…`) or CONNECT_ERROR (`44…`) arrives. Returns the Engine.IO packets received. Each request is on a
    fresh TCP connection, as browsers and python-engineio may do."""
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    with requests.Session() as http:
        handshake = http.get(base, timeout=STEP)
    assert handshake.status_code == 200 and handshake.text.startswith("0"), handshake.text
    sid = json.loads(handshake.text[1:])["sid"]
    url = f"{base}&sid={sid}"
    with requests.Session() as http:
        post = http.post(url, data="40" + json.dumps(auth), timeout=STEP)
    assert post.status_code == 200, f"POST on a new connection: {post.status_code} {post.text}"
    packets: list[str] = []
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        with requests.Session() as http:
            poll = http.get(url, timeout=STEP)
        assert poll.status_code == 200, f"GET on a new connection: {poll.status_code} {poll.text}"
        batch = poll.text.split("\x1e")
        packets += batch
        if any(p.startswith(("40", "44")) for p in packets):
            with requests.Session() as http:  # close the Engine.IO session
                http.post(url, data="1", timeout=STEP)
            return packets
        if "2" in batch:  # answer a ping so the session stays up
            with requests.Session() as http:
                http.post(url, data="3", timeout=STEP)
    raise AssertionError(f"no CONNECT answer over polling within {STEP} s; got {packets}")


def test_polling_session_is_shared_across_tcp_connections(server):
    """Engine.IO long-polling sends its GET and POST requests on separate HTTP connections: a session id from the
    handshake must be known on a fresh connection too (else every polling client fails with "Session ID unknown")."""
    packets = polling_session(server, {"token": make_token(unique("ada"), "Ada")})
    assert any(p.startswith('40{"sid":') for p in packets), packets


def test_polling_refusal(server):
    packets = polling_session(server, {"token": "garbage"})
    refusals = [json.loads(p[2:]) for p in packets if p.startswith("44")]
    assert len(refusals) == 1, packets
    assert refusals[0]["message"].startswith("unauthorized: invalid_token: "), refusals
