"""Rooms and messages: join, fan-out to the room but not to the sender, history paging, bad input."""

import pytest

from conftest import check_bad_request, check_message, make_token, marker, unique


def signed_in(connect, name):
    sub = unique(name.lower())
    chat = connect(auth={"token": make_token(sub, name)})
    assert chat.session()["user"]["id"] == sub
    return sub, chat


def test_join_and_receive(connect):
    room = unique("lobby")
    ada_id, ada = signed_in(connect, "Ada")
    bob_id, bob = signed_in(connect, "Bob")

    ack = ada.join(room)
    assert ack["room"]["id"] == room
    assert ack["room"]["kind"] == "group"
    assert ack["room"]["visibility"] == "public"
    assert ack["history"] == [] and ack["hasMore"] is False
    assert [m["id"] for m in ack["members"]] == [ada_id]

    ack = bob.join(room)
    assert {m["id"] for m in ack["members"]} == {ada_id, bob_id}
    notice = ada.rec.wait_for("room:notice", lambda n: n["user"]["id"] == bob_id)
    assert notice["room"] == room and notice["kind"] == "join"

    sent = []
    for i in range(1, 4):
        msg = ada.send(room, f"hello {i}", clientId=f"c-{i}")
        check_message(msg, room=room, seq=i, sender=ada_id, text=f"hello {i}")
        assert msg["from"]["name"] == "Ada"
        assert msg["clientId"] == f"c-{i}"
        sent.append(msg)

    for msg in sent:
        got = bob.rec.wait_for("message", lambda m: m.get("seq") == msg["seq"], what=f"seq {msg['seq']}")
        assert got == msg

    reply = bob.send(room, "hi Ada")
    check_message(reply, room=room, seq=4, sender=bob_id, text="hi Ada")
    assert ada.rec.wait_for("message", lambda m: m.get("seq") == 4) == reply

    # Nobody got their own message back: it would have come before a marker from the other.
    from_bob = marker(bob, room, ada)
    from_ada = marker(ada, room, bob)
    assert [m["seq"] for m in ada.rec.before("message", from_bob)] == [4], "the sender got its own message back"
    assert [m["seq"] for m in bob.rec.before("message", from_ada)] == [1, 2, 3], "the sender got its own message back"


def test_client_id_retry_returns_original(connect):
    room = unique("retry")
    _, ada = signed_in(connect, "Ada")
    _, bob = signed_in(connect, "Bob")
    ada.join(room)
    bob.join(room)
    first = ada.send(room, "once", clientId="same")
    again = ada.send(room, "once", clientId="same")
    assert again == first
    # A broadcast of the retry would have reached bob before a marker sent after it.
    text = marker(ada, room, bob)
    assert [m["seq"] for m in bob.rec.before("message", text)] == [first["seq"]]


def fetch(chat, room, **query):
    ack = chat.call("history:fetch", {"room": room, **query})
    assert ack.get("ok") is True, ack
    seqs = [m["seq"] for m in ack["messages"]]
    assert seqs == sorted(seqs), f"page not oldest first: {seqs}"
    for m in ack["messages"]:
        check_message(m, room=room)
    return ack["messages"], ack["hasMore"]


def test_history_paging(connect):
    room = unique("history")
    ada_id, ada = signed_in(connect, "Ada")
    ada.join(room)
    texts = {}
    for i in range(1, 31):
        msg = ada.send(room, f"message {i:02d}")
        assert msg["seq"] == i, msg
        texts[i] = msg["text"]

    # Backwards: the latest page, then `before` the oldest seq seen, until hasMore is false.
    seen, pages, before = [], [], None
    for _ in range(10):
        query = {"limit": 10} if before is None else {"limit": 10, "before": before}
        messages, has_more = fetch(ada, room, **query)
        pages.append(([m["seq"] for m in messages], has_more))
        assert messages, pages
        seen = [m["seq"] for m in messages] + seen
        for m in messages:
            assert m["text"] == texts[m["seq"]] and m["from"]["id"] == ada_id
        before = messages[0]["seq"]
        if not has_more:
            break
    else:
        raise AssertionError(f"hasMore never became false: {pages}")
    assert seen == list(range(1, 31)), pages
    assert [p[1] for p in pages] == [True, True, False], pages
    assert len(pages) == 3

    # Forwards from the start with `after`.
    seen, pages, after = [], [], 0
    for _ in range(10):
        messages, has_more = fetch(ada, room, limit=10, after=after)
        pages.append(([m["seq"] for m in messages], has_more))
        assert messages, pages
        seen += [m["seq"] for m in messages]
        after = messages[-1]["seq"]
        if not has_more:
            break
    else:
        raise AssertionError(f"hasMore never became false: {pages}")
    assert seen == list(range(1, 31)), pages
    assert [p[1] for p in pages] == [True, True, False], pages

    # Uneven pages and the edges.
    messages, has_more = fetch(ada, room, limit=7, before=8)
    assert [m["seq"] for m in messages] == list(range(1, 8)) and has_more is False
    messages, has_more = fetch(ada, room, limit=7, before=9)
    assert [m["seq"] for m in messages] == list(range(2, 9)) and has_more is True
    messages, has_more = fetch(ada, room, limit=5, after=25)
    assert [m["seq"] for m in messages] == list(range(26, 31)) and has_more is False
    messages, has_more = fetch(ada, room, limit=10, after=30)
    assert messages == [] and has_more is False
    messages, has_more = fetch(ada, room)
    assert [m["seq"] for m in messages] == list(range(1, 31)) and has_more is False

    # A late joiner gets the latest `limit` messages with its join ack.
    _, bob = signed_in(connect, "Bob")
    ack = bob.join(room, limit=5)
    assert [m["seq"] for m in ack["history"]] == list(range(26, 31))
    assert ack["hasMore"] is True


NON_OBJECTS = ["general", ["general"], 42, None, True]


@pytest.mark.parametrize("payload", NON_OBJECTS, ids=["string", "list", "number", "nothing", "bool"])
@pytest.mark.parametrize("event", ["room:join", "message:send", "history:fetch", "dm:send"])
def test_non_object_payload(connect, event, payload):
    chat = connect(auth={"token": make_token(unique("user"), "Ada")})
    check_bad_request(chat.call(event, payload))


MISSING_OR_WRONG = [
    ("room:join", {}),
    ("room:join", {"room": 5}),
    ("room:join", {"room": "no spaces allowed"}),
    ("message:send", {"room": "lobby"}),
    ("message:send", {"text": "hello"}),
    ("message:send", {"room": "lobby", "text": "   "}),
    ("dm:send", {"text": "hello"}),
    ("dm:send", {"to": "someone"}),
    ("history:fetch", {}),
    ("history:fetch", {"room": "lobby", "limit": "ten"}),
]


@pytest.mark.parametrize("event, payload", MISSING_OR_WRONG, ids=[f"{e}-{p}" for e, p in MISSING_OR_WRONG])
def test_missing_or_wrong_field(connect, event, payload):
    chat = connect(auth={"token": make_token(unique("user"), "Ada")})
    chat.join("lobby")
    check_bad_request(chat.call(event, payload))


def test_unknown_event_and_chat_error(connect):
    chat = connect(auth={"token": make_token(unique("user"), "Ada")})
    ack = chat.call("no:such:event", {})
    check_bad_request(ack)
    # Without an ack callback the error comes back as `chat:error`.
    chat.sio.emit("room:join", "not an object")
    err = chat.rec.wait_for("chat:error")
    assert err["event"] == "room:join"
    check_bad_request({"ok": False, **err})
    # The socket still works afterwards.
    assert chat.join(unique("after"))["ok"] is True
