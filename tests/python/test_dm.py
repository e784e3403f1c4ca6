"""Direct messages between JWT users (docs/protocol.md, `dm:send`)."""

from conftest import check_bad_request, check_message, make_token, marker, unique


def test_dm_reaches_every_client_of_both_users(connect):
    ada_id, bob_id = unique("ada"), unique("bob")
    ada = connect(auth={"token": make_token(ada_id, "Ada")})
    bob1 = connect(auth={"token": make_token(bob_id, "Bob")})
    bob2 = connect(auth={"token": make_token(bob_id, "Bob")})
    for chat in (ada, bob1, bob2):
        chat.session()
    ada2 = connect(auth={"token": make_token(ada_id, "Ada")})  # a second tab of the sender
    ada2.session()

    ack = ada.call("dm:send", {"to": bob_id, "text": "psst, Bob"})
    assert ack.get("ok") is True, ack
    msg = ack["message"]
    check_message(msg, seq=1, sender=ada_id, text="psst, Bob")
    dm_room = msg["room"]
    assert dm_room.startswith("dm:"), msg

    for who, chat in (("bob tab 1", bob1), ("bob tab 2", bob2), ("ada tab 2", ada2)):
        got = chat.rec.wait_for("message", lambda m: m.get("room") == dm_room, what=f"on {who}")
        assert got == msg, who

    # The reply lands in the same conversation, seen from the other side.
    ack = bob1.call("dm:send", {"to": ada_id, "text": "hi Ada"})
    assert ack.get("ok") is True, ack
    reply = ack["message"]
    check_message(reply, room=dm_room, seq=2, sender=bob_id, text="hi Ada")
    for who, chat in (("ada", ada), ("ada tab 2", ada2), ("bob tab 2", bob2)):
        assert chat.rec.wait_for("message", lambda m: m.get("seq") == 2, what=f"on {who}") == reply

    # Both users' sockets entered the DM room: message:send and history:fetch work on it.
    follow_up = bob2.call("message:send", {"room": dm_room, "text": "(from my phone)"})
    assert follow_up.get("ok") is True, follow_up
    assert ada.rec.wait_for("message", lambda m: m.get("seq") == 3)["text"] == "(from my phone)"
    history = ada.call("history:fetch", {"room": dm_room})
    assert history.get("ok") is True, history
    assert [m["seq"] for m in history["messages"]] == [1, 2, 3]

    listed = {r["id"]: r for r in bob1.call("rooms:list", {})["rooms"]}
    assert listed[dm_room]["kind"] == "dm" and listed[dm_room]["lastSeq"] == 3
    assert listed[dm_room]["peer"]["id"] == ada_id

    # Nobody got their own sends back: such a copy would have come before a marker from ada's second tab.
    text = marker(ada2, dm_room, ada, bob1, bob2)
    assert [m["seq"] for m in ada.rec.before("message", text)] == [2, 3]
    assert [m["seq"] for m in bob1.rec.before("message", text)] == [1, 3]
    assert [m["seq"] for m in bob2.rec.before("message", text)] == [1, 2]


def test_dm_to_offline_user_waits_in_history(connect):
    ada_id, cy_id = unique("ada"), unique("cy")
    ada = connect(auth={"token": make_token(ada_id, "Ada")})
    ada.session()
    ack = ada.call("dm:send", {"to": cy_id, "text": "for later"})
    assert ack.get("ok") is True, ack
    room = ack["message"]["room"]

    cy = connect(auth={"token": make_token(cy_id, "Cy")})
    session = cy.session()
    assert room in {r["id"] for r in session["rooms"]}, session
    history = cy.call("history:fetch", {"room": room})
    assert [m["text"] for m in history["messages"]] == ["for later"], history


def test_dm_to_yourself_is_bad_request(connect):
    ada_id = unique("ada")
    ada = connect(auth={"token": make_token(ada_id, "Ada")})
    check_bad_request(ada.call("dm:send", {"to": ada_id, "text": "me, myself"}))
