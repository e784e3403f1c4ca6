"""Connecting: the `session` event for a JWT user, display-name fallbacks, and refused tokens (docs/protocol.md,
"Connecting")."""

import time

import pytest
import socketio

from conftest import JWT_SECRET, make_token, refused, unique


def test_session_carries_jwt_user(connect):
    sub = unique("user")
    chat = connect(auth={"token": make_token(sub, "Ada Lovelace")})
    session = chat.session()
    assert session["user"] == {"id": sub, "name": "Ada Lovelace", "anonymous": False}
    assert isinstance(session["rooms"], list)
    assert chat.sio.transport() == "websocket"


@pytest.mark.parametrize(
    "claims, expected",
    [
        ({"preferred_username": "ada_l"}, "ada_l"),  # no `name`: preferred_username
        ({}, None),  # neither: the sub
    ],
    ids=["preferred_username", "sub"],
)
def test_display_name_fallbacks(connect, claims, expected):
    sub = unique("user")
    chat = connect(auth={"token": make_token(sub, **claims)})
    assert chat.session()["user"] == {"id": sub, "name": expected or sub, "anonymous": False}


def test_anonymous_with_chosen_name(connect):
    chat = connect(auth={"name": "  grace  "})
    user = chat.session()["user"]
    assert user["anonymous"] is True
    assert user["id"].startswith("anon-")
    assert user["name"] == "grace"


def now() -> int:
    return int(time.time())


BAD_AUTH = {
    "bad_signature": lambda: {"token": make_token("u1", "Ada", secret=JWT_SECRET + "-not-the-server-s")},
    "expired": lambda: {"token": make_token("u1", "Ada", exp_in=-120)},
    "invalid_token": lambda: {"token": "this is not a jwt"},
    "missing_sub": lambda: {"token": make_token(None, "Ada")},
    "wrong_algorithm": lambda: {"token": make_token("u1", "Ada", algorithm="HS384")},
    "invalid_name": lambda: {"name": "x" * 33},
}


@pytest.mark.parametrize("code", list(BAD_AUTH))
def test_bad_auth_is_refused(server, code):
    error, connect_errors = refused(server, BAD_AUTH[code]())
    assert isinstance(error, socketio.exceptions.ConnectionError)
    # python-socketio raises its own text ("One or more namespaces failed to connect: /"); the server's refusal
    # reaches the client as the `connect_error` payload, `{ message: "unauthorized: <code>: <why>" }`.
    assert len(connect_errors) == 1, connect_errors
    message = connect_errors[0]["message"]
    assert message.startswith("unauthorized"), message
    assert message.startswith(f"unauthorized: {code}: "), message
    assert len(message) > len(f"unauthorized: {code}: "), message


def test_token_without_exp_is_refused(server):
    _, connect_errors = refused(server, {"token": make_token("u1", "Ada", exp_in=None)})
    assert connect_errors[0]["message"].startswith("unauthorized: invalid_token: "), connect_errors
