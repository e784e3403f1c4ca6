"""Harness for the python-socketio contract suite.

* ``server``: one real ``palaver`` process per test module and per store (SQLite file in a temp dir, or a fresh
  Postgres database), started on ``127.0.0.1:0``; the port is read from its ``listening addr=…`` log line. Stopped
  with SIGTERM (SIGKILL after 5 s).
* ``token``: signs HS256 JWTs with the secret the server was started with.
* ``connect``: opens ``socketio.Client`` connections that record every server event, and disconnects them after the
  test.

Every wait has a timeout (``STEP`` seconds), so a broken server fails a test instead of hanging it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import jwt
import pytest
import socketio

REPO = Path(__file__).resolve().parents[2]
#: How long one ack, event or connection may take before the test fails.
STEP = 10.0
#: How long the server may take to print its `listening` line.
STARTUP_TIMEOUT = 60.0
#: HS256 secret the servers are started with (long enough for PyJWT's key-length check).
JWT_SECRET = "palaver-python-suite-secret-0123456789abcdef-0123456789abcdef"
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/postgres"

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LISTEN_ADDR = re.compile(r"addr=(?:\[[0-9a-fA-F:]+\]|[0-9.]+):(\d+)")

#: Variables the server would read through clap's `env = …`; the suite passes everything it needs as flags.
SERVER_ENV_VARS = {"DATABASE_URL", "JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_ALGORITHM", "PORT"}


def stores() -> list[str]:
    """Stores to run on: `PALAVER_TEST_STORES` (comma separated), default both."""
    raw = os.environ.get("PALAVER_TEST_STORES", "").strip()
    chosen = [s.strip() for s in raw.split(",") if s.strip()] if raw else ["sqlite", "postgres"]
    unknown = set(chosen) - {"sqlite", "postgres"}
    if unknown:
        raise pytest.UsageError(f"PALAVER_TEST_STORES: unknown store(s) {sorted(unknown)}")
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# The server binary
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def palaver_bin() -> Path:
    explicit = os.environ.get("PALAVER_BIN", "").strip()
    if explicit:
        path = Path(explicit)
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, REPO / path]
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
        pytest.fail(f"PALAVER_BIN={explicit!r} does not exist (looked at {[str(c) for c in candidates]})")
    path = REPO / "target" / "debug" / "palaver"
    if not path.is_file():
        cargo = shutil.which("cargo")
        if cargo is None:
            pytest.fail(f"{path} is missing and cargo is not on PATH; build it or set PALAVER_BIN")
        try:
            built = subprocess.run(
                [cargo, "build", "--bins"], cwd=REPO, capture_output=True, text=True, timeout=1200
            )
        except subprocess.TimeoutExpired:
            pytest.fail("cargo build --bins took more than 20 minutes")
        if built.returncode != 0 or not path.is_file():
            pytest.fail(f"cargo build --bins failed ({built.returncode}):\n{built.stderr[-4000:]}")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------------------------


def pg_admin_url() -> str:
    return os.environ.get("PALAVER_TEST_PG", "").strip() or DEFAULT_PG


def pg_url_with_db(base: str, db: str) -> str:
    """`base` with its database name replaced by `db` (user, host, port and query kept)."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, parts.fragment))


class PostgresDatabase:
    """A fresh database on the Postgres server, dropped (WITH FORCE) on `drop()`."""

    def __init__(self) -> None:
        import psycopg  # imported here so an SQLite-only run does not need a working libpq

        self._psycopg = psycopg
        self.admin_url = pg_admin_url()
        self.name = f"palaver_py_{uuid.uuid4().hex[:16]}"
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        except psycopg.OperationalError as e:
            pytest.fail(
                f"cannot create a test database on {self.admin_url} ({e}); start Postgres, set PALAVER_TEST_PG, "
                "or run only SQLite with PALAVER_TEST_STORES=sqlite"
            )
        self.url = pg_url_with_db(self.admin_url, self.name)

    def drop(self) -> None:
        psycopg = self._psycopg
        try:
            with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        except psycopg.Error as e:  # pragma: no cover - cleanup only
            print(f"warning: could not drop test database {self.name}: {e}")


# ---------------------------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    """A running `palaver` process."""

    bin: Path
    database_url: str
    workdir: Path
    store: str
    proc: subprocess.Popen | None = None
    port: int | None = None
    lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self, last: int = 60) -> str:
        return "\n".join(self.lines[-last:])

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PALAVER_") and k not in SERVER_ENV_VARS and k != "RUST_LOG"
        }
        env["RUST_LOG"] = os.environ.get("PALAVER_TEST_RUST_LOG", "info")
        self.proc = subprocess.Popen(
            [
                str(self.bin),
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                self.database_url,
                "--jwt-secret",
                JWT_SECRET,
            ],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name="palaver-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(2)
                pytest.fail(f"palaver exited with {self.proc.returncode} before listening:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"palaver did not log `listening` within {STARTUP_TIMEOUT:.0f} s:\n{self.log()}")

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = ANSI.sub("", raw.rstrip("\n"))
            self.lines.append(line)
            if self.port is None and "listening" in line:
                m = LISTEN_ADDR.search(line)
                if m:
                    self.port = int(m.group(1))
                    self._ready.set()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(2)
        return self.proc.returncode


@pytest.fixture(scope="module", params=stores())
def server(request, palaver_bin, tmp_path_factory):
    store = request.param
    workdir = tmp_path_factory.mktemp(f"palaver-{store}")
    pg = None
    if store == "sqlite":
        database_url = f"sqlite://{workdir}/p.db"
    else:
        pg = PostgresDatabase()
        database_url = pg.url
    srv = Server(bin=palaver_bin, database_url=database_url, workdir=workdir, store=store)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()
        if pg is not None:
            pg.drop()


# ---------------------------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------------------------


def make_token(
    sub: str | None,
    name: str | None = None,
    *,
    secret: str = JWT_SECRET,
    algorithm: str = "HS256",
    exp_in: int | None = 300,
    **claims,
) -> str:
    """An HS256 (by default) JWT with `sub`, `name` and `exp` = now + `exp_in` seconds (None: no `exp`)."""
    payload = dict(claims)
    if sub is not None:
        payload["sub"] = sub
    if name is not None:
        payload["name"] = name
    if exp_in is not None:
        payload["exp"] = int(time.time()) + exp_in
    payload.setdefault("iat", int(time.time()))
    return jwt.encode(payload, secret, algorithm=algorithm)


@pytest.fixture
def token():
    return make_token


def unique(prefix: str) -> str:
    """A room or user id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------------------------------


class Recorder:
    """Every event a client received, in order, with a condition to wait on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._cond = threading.Condition()

    def add(self, event: str, *args) -> None:
        data = args[0] if len(args) == 1 else (list(args) if args else None)
        with self._cond:
            self.events.append((event, data))
            self._cond.notify_all()

    def of(self, event: str) -> list:
        with self._cond:
            return [d for e, d in self.events if e == event]

    def before(self, event: str, marker_text: str) -> list:
        """The `event` payloads received before the marker message `marker_text` (other markers left out).

        The marker must have arrived already (see `marker`)."""
        with self._cond:
            out = []
            for e, d in self.events:
                if e == "message" and isinstance(d, dict) and d.get("text") == marker_text:
                    return out
                if e == event and not is_marker(d):
                    out.append(d)
        raise AssertionError(f"the marker {marker_text!r} has not arrived")

    def wait_for(self, event: str, match=lambda d: True, timeout: float = STEP, what: str = ""):
        """The first `event` whose data satisfies `match` (received already or within `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e, d in self.events:
                    if e == event and match(d):
                        return d
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [e for e, _ in self.events]
                    raise AssertionError(
                        f"no {event!r} event{' ' + what if what else ''} within {timeout} s; got {seen}"
                    )
                self._cond.wait(left)


class Chat:
    """A connected `socketio.Client` plus what it received."""

    def __init__(self, sio: socketio.Client, rec: Recorder) -> None:
        self.sio = sio
        self.rec = rec

    def call(self, event: str, data=None, timeout: float = STEP):
        try:
            return self.sio.call(event, data, timeout=timeout)
        except socketio.exceptions.TimeoutError:
            raise AssertionError(f"no ack for {event!r} {data!r} within {timeout} s") from None

    def session(self) -> dict:
        return self.rec.wait_for("session")

    def join(self, room: str, **extra) -> dict:
        ack = self.call("room:join", {"room": room, **extra})
        assert ack.get("ok") is True, ack
        return ack

    def send(self, room: str, text: str, **extra) -> dict:
        """`message:send`, retrying while the per-socket rate limit says `rate_limited`."""
        deadline = time.monotonic() + 3 * STEP
        while True:
            ack = self.call("message:send", {"room": room, "text": text, **extra})
            if ack.get("ok") is False and ack["error"]["code"] == "rate_limited" and time.monotonic() < deadline:
                time.sleep(0.15)
                continue
            assert ack.get("ok") is True, ack
            return ack["message"]

    def disconnect(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:  # pragma: no cover - teardown only
            pass


@pytest.fixture
def connect(server):
    """`connect(auth=None, transports=("websocket",))` → a connected `Chat`; all are disconnected afterwards."""
    opened: list[Chat] = []

    def _connect(auth=None, transports=("websocket",)) -> Chat:
        sio = socketio.Client(reconnection=False)
        rec = Recorder()
        sio.on("*", rec.add)
        try:
            sio.connect(server.url, auth=auth, transports=list(transports), wait_timeout=STEP)
        except socketio.exceptions.ConnectionError as e:
            raise AssertionError(f"connect failed: {e!r}; connect_error data: {rec.of('connect_error')}") from e
        chat = Chat(sio, rec)
        opened.append(chat)
        return chat

    yield _connect
    for chat in opened:
        chat.disconnect()


#: Texts of marker messages (see `marker`) start with this.
MARKER = "marker "


def is_marker(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("text"), str) and data["text"].startswith(MARKER)


def marker(sender: Chat, room: str, *observers: Chat) -> str:
    """Sends a marker message from `sender` to `room`, waits until every one of `observers` has it, returns its text.

    "Nothing arrived" is checked against this barrier, never a quiet window (which passes whenever the server is
    merely slow): anything the room should not have delivered, before the marker was sent, reaches an observer before
    the marker does. Then `chat.rec.before(event, text)` lists what came first.
    """
    text = f"{MARKER}{uuid.uuid4().hex[:12]}"
    sender.send(room, text)
    for chat in observers:
        chat.rec.wait_for("message", lambda m: isinstance(m, dict) and m.get("text") == text, what=f"marker {text}")
    return text


def refused(server, auth, transports=("websocket",)) -> tuple[Exception | None, list]:
    """Connects with `auth`, expecting a refusal: the exception `connect()` raised and the `connect_error` payloads.

    `connect()` runs on a daemon thread. After a refusal python-engineio closes the session and then waits for its
    pending long-poll GET to return; engineioxide sometimes answers that GET only at the next ping (25 s later). So
    once `connect_error` has arrived we give `connect()` a few seconds to return and otherwise report `None` as the
    exception instead of stalling the suite.
    """
    sio = socketio.Client(reconnection=False)
    errors: list = []
    got_error = threading.Event()

    def on_connect_error(*args):
        errors.append(args[0] if len(args) == 1 else list(args))
        got_error.set()

    sio.on("connect_error", on_connect_error)
    outcome: dict = {}

    def run():
        try:
            sio.connect(server.url, auth=auth, transports=list(transports), wait_timeout=STEP)
            outcome["connected"] = True
        except Exception as e:  # noqa: BLE001 - reported to the caller
            outcome["error"] = e

    thread = threading.Thread(target=run, name="refused-connect", daemon=True)
    thread.start()
    got_error.wait(STEP)
    thread.join(STEP if not got_error.is_set() else 3)
    if outcome.get("connected"):
        sio.disconnect()
        raise AssertionError(f"connection with auth={auth!r} was accepted")
    if not got_error.is_set() and "error" not in outcome:
        raise AssertionError(f"no answer to a connection with auth={auth!r} within {2 * STEP} s")
    return outcome.get("error"), errors


# ---------------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------------

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def check_message(msg: dict, *, room: str | None = None, seq: int | None = None, sender: str | None = None,
                  text: str | None = None) -> None:
    """`msg` has the `Message` shape of docs/protocol.md, and the given fields."""
    assert isinstance(msg, dict), msg
    assert isinstance(msg.get("id"), str) and msg["id"], msg
    assert isinstance(msg.get("room"), str), msg
    assert isinstance(msg.get("seq"), int) and msg["seq"] >= 1, msg
    assert isinstance(msg.get("from"), dict) and isinstance(msg["from"].get("id"), str), msg
    assert isinstance(msg["from"].get("name"), str), msg
    assert isinstance(msg.get("text"), str), msg
    assert isinstance(msg.get("at"), str) and RFC3339.match(msg["at"]), msg
    if room is not None:
        assert msg["room"] == room, msg
    if seq is not None:
        assert msg["seq"] == seq, msg
    if sender is not None:
        assert msg["from"]["id"] == sender, msg
    if text is not None:
        assert msg["text"] == text, msg


def check_bad_request(ack) -> None:
    assert isinstance(ack, dict), ack
    assert ack.get("ok") is False, ack
    error = ack.get("error")
    assert isinstance(error, dict), ack
    assert error.get("code") == "bad_request", ack
    assert isinstance(error.get("message"), str) and error["message"], ack
