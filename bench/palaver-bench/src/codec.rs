//! Client side of Engine.IO v4 / Socket.IO v5 over WebSocket text frames.
//!
//! The packet formats are not written here: Engine.IO packets are encoded and decoded by `engineioxide-core`
//! and Socket.IO packets by `socketioxide-parser-common` (`CommonParser`) on `socketioxide-core` types, the
//! very crates socketioxide (and so palaver) is built on. Both are written for the server side, which leaves
//! two gaps that this module fills by hand:
//!
//! * `engineioxide_core::Packet::parse` does not parse the `0{…}` OPEN packet (a server never receives one).
//!   Its `OpenPacket` type cannot be reused either: its `Sid` only accepts socketioxide's own 16-character
//!   ids, and the Node.js `engine.io` server sends 20-character ones. [`Open`] is the same JSON object with a
//!   plain string id.
//! * `CommonParser` does not decode the `4{"message":…}` CONNECT_ERROR packet (same reason); it is a JSON
//!   object after an optional `/namespace,` prefix and is decoded the same way.

use std::borrow::Cow;
use std::fmt;

use engineioxide_core::{Packet as EioPacket, PacketParseError, ProtocolVersion, Str};
use serde::{Deserialize, Serialize};
use socketioxide_core::Value;
use socketioxide_core::packet::{Packet as SioPacket, PacketData};
use socketioxide_core::parser::{Parse, ParseConfig, ParseError, ParserError, ParserState};
use socketioxide_parser_common::CommonParser;

/// The Engine.IO OPEN packet's payload (the handshake data). The client answers the server's pings rather than
/// keeping time itself, so it reads none of the fields; they are decoded to check the handshake.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    pub sid: String,
    #[serde(default)]
    pub ping_interval: u64,
    #[serde(default)]
    pub ping_timeout: u64,
    #[serde(default)]
    pub max_payload: u64,
}

/// One decoded text frame.
#[derive(Debug)]
pub enum Frame {
    /// Engine.IO OPEN (`0{"sid":…,"pingInterval":…}`): the first frame of a connection. The client answers
    /// the server's pings, so it needs none of the fields; they are decoded all the same (a malformed open
    /// packet is an error).
    Open(#[allow(dead_code)] Open),
    /// Engine.IO PING (`2`): answer with [`pong`].
    Ping,
    /// Engine.IO CLOSE (`1`).
    Close,
    /// An Engine.IO packet with nothing to do for a WebSocket-only client (pong, noop, upgrade).
    Ignored,
    /// A Socket.IO CONNECT_ERROR for namespace `ns`, with the server's message.
    ConnectError { ns: String, message: String },
    /// Any other Socket.IO packet (connect, disconnect, event, ack).
    Sio(SioPacket),
}

#[derive(Debug)]
pub enum CodecError {
    EngineIo(PacketParseError),
    Open(serde_json::Error),
    ConnectError(serde_json::Error),
    SocketIo(ParseError),
    Data(ParserError),
    Binary,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::EngineIo(e) => write!(f, "engine.io packet: {e}"),
            CodecError::Open(e) => write!(f, "engine.io open packet: {e}"),
            CodecError::ConnectError(e) => write!(f, "socket.io connect_error packet: {e}"),
            CodecError::SocketIo(e) => write!(f, "socket.io packet: {e}"),
            CodecError::Data(e) => write!(f, "socket.io payload: {e}"),
            CodecError::Binary => write!(f, "binary socket.io packets are not expected"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Decodes one WebSocket text frame.
///
/// The Socket.IO parser state only tracks binary attachments, which the chat contract never sends: a fresh one
/// per frame (a mutex and a counter, no allocation) means a stray binary packet is reported as an error and
/// leaves nothing behind that would make the next frames fail.
pub fn decode(text: &str, config: &ParseConfig) -> Result<Frame, CodecError> {
    let state = ParserState::default();
    if let Some(open) = text.strip_prefix('0') {
        let open: Open = serde_json::from_str(open).map_err(CodecError::Open)?;
        return Ok(Frame::Open(open));
    }
    let packet = EioPacket::parse(ProtocolVersion::V4, Str::copy_from_slice(text))
        .map_err(CodecError::EngineIo)?;
    match packet {
        EioPacket::Ping => Ok(Frame::Ping),
        EioPacket::Close => Ok(Frame::Close),
        EioPacket::Message(msg) => decode_sio(msg, config, &state),
        EioPacket::Binary(_) | EioPacket::BinaryV3(_) => Err(CodecError::Binary),
        _ => Ok(Frame::Ignored),
    }
}

fn decode_sio(msg: Str, config: &ParseConfig, state: &ParserState) -> Result<Frame, CodecError> {
    if let Some(rest) = msg.as_str().strip_prefix('4') {
        #[derive(Deserialize)]
        struct ConnectError {
            message: String,
        }
        let (ns, json) = match rest.strip_prefix('/') {
            Some(after) => match after.split_once(',') {
                Some((ns, json)) => (format!("/{ns}"), json),
                None => (format!("/{after}"), ""),
            },
            None => ("/".to_owned(), rest),
        };
        let err: ConnectError = serde_json::from_str(json).map_err(CodecError::ConnectError)?;
        return Ok(Frame::ConnectError {
            ns,
            message: err.message,
        });
    }
    let packet = CommonParser
        .decode_str(config, state, msg)
        .map_err(CodecError::SocketIo)?;
    if packet.inner.is_binary() {
        return Err(CodecError::Binary);
    }
    Ok(Frame::Sio(packet))
}

fn into_text(sio: SioPacket) -> String {
    match CommonParser.encode(sio) {
        Value::Str(s, _) => String::from(EioPacket::Message(s)),
        // CommonParser only produces `Bytes` for the MessagePack parser's packets; never here.
        Value::Bytes(_) => String::new(),
    }
}

/// Engine.IO PONG, the answer to a server PING.
pub fn pong() -> String {
    String::from(EioPacket::Pong)
}

/// Socket.IO CONNECT to `ns` with an optional `auth` payload (`40`, `40{…}`, `40/chat,{…}`).
pub fn connect(ns: &str, auth: Option<&serde_json::Value>) -> Result<String, serde_json::Error> {
    let auth = match auth {
        Some(a) => Some(Value::Str(Str::from(serde_json::to_string(a)?), None)),
        None => None,
    };
    Ok(into_text(SioPacket::connect(ns.to_owned(), auth)))
}

/// Socket.IO DISCONNECT from `ns` (`41`).
pub fn disconnect(ns: &str) -> String {
    into_text(SioPacket::disconnect(ns.to_owned()))
}

/// Socket.IO EVENT `[event, data]` on `ns`, asking for an ack when `ack` is set (`42`, `4212[…]`).
pub fn event<T: Serialize + ?Sized>(
    ns: &str,
    event: &str,
    data: &T,
    ack: Option<i64>,
) -> Result<String, ParserError> {
    let value = CommonParser.encode_value(data, Some(event))?;
    let mut packet = SioPacket::event(ns.to_owned(), value);
    if let Some(id) = ack {
        packet.inner.set_ack_id(id);
    }
    Ok(into_text(packet))
}

/// The name of an event packet's event.
pub fn event_name(value: &Value) -> Result<&str, CodecError> {
    CommonParser.read_event(value).map_err(CodecError::Data)
}

/// The first argument of an event packet, after the event name.
pub fn event_arg<'de, T: Deserialize<'de>>(value: &'de mut Value) -> Result<T, CodecError> {
    CommonParser
        .decode_value(value, true)
        .map_err(CodecError::Data)
}

/// The first argument of an ack packet.
pub fn ack_arg<'de, T: Deserialize<'de>>(value: &'de mut Value) -> Result<T, CodecError> {
    CommonParser
        .decode_value(value, false)
        .map_err(CodecError::Data)
}

/// The chat contract's ack: `{ ok: true, … }` or `{ ok: false, error: { code, message } }`.
#[derive(Debug, Deserialize)]
pub struct ChatAck<'a> {
    #[serde(default)]
    pub ok: bool,
    #[serde(default, borrow)]
    pub error: Option<ChatError<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatError<'a> {
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
}

impl ChatAck<'_> {
    /// `None` for an ok ack, else the error code (`"unknown"` when the server gave none).
    pub fn error_code(&self) -> Option<String> {
        if self.ok {
            return None;
        }
        Some(
            self.error
                .as_ref()
                .and_then(|e| e.code.as_deref())
                .unwrap_or("unknown")
                .to_owned(),
        )
    }
}

/// The part of a `message` event the load tool reads.
#[derive(Debug, Deserialize)]
pub struct ChatMessage<'a> {
    #[serde(borrow)]
    pub text: Cow<'a, str>,
    /// The message's number in its room (palaver's contract; a server without it sends none).
    #[serde(default)]
    pub seq: Option<i64>,
}

/// `PacketData` of a decoded Socket.IO packet, re-exported for matching.
pub type Data = PacketData;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dec(text: &str) -> Result<Frame, CodecError> {
        decode(text, &ParseConfig::default())
    }

    #[test]
    fn decodes_engine_io_open() {
        let f = dec(r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#).unwrap();
        match f {
            Frame::Open(open) => {
                // Node's engine.io: a 20-character sid.
                assert_eq!(open.sid, "lv_VI97HAXpY6yYWAAAC");
                assert_eq!(open.ping_interval, 25000);
                assert_eq!(open.ping_timeout, 20000);
                assert_eq!(open.max_payload, 1_000_000);
            }
            other => panic!("{other:?}"),
        }
        // socketioxide's: 16 characters.
        assert!(matches!(
            dec(
                r#"0{"sid":"AAAAAAAAAAAAAAAA","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":100000}"#
            ),
            Ok(Frame::Open(_))
        ));
        assert!(matches!(dec("0{not json"), Err(CodecError::Open(_))));
    }

    #[test]
    fn decodes_ping_close_noop() {
        assert!(matches!(dec("2").unwrap(), Frame::Ping));
        assert!(matches!(dec("1").unwrap(), Frame::Close));
        assert!(matches!(dec("6").unwrap(), Frame::Ignored));
        assert!(matches!(dec("3").unwrap(), Frame::Ignored));
        assert!(matches!(dec(""), Err(CodecError::EngineIo(_))));
        assert!(matches!(dec("x"), Err(CodecError::EngineIo(_))));
    }

    #[test]
    fn encodes_pong_connect_disconnect() {
        assert_eq!(pong(), "3");
        assert_eq!(connect("/", None).unwrap(), "40");
        assert_eq!(
            connect("/", Some(&json!({"name": "ada"}))).unwrap(),
            r#"40{"name":"ada"}"#
        );
        assert_eq!(
            connect("/chat", Some(&json!({"token": "t"}))).unwrap(),
            r#"40/chat,{"token":"t"}"#
        );
        assert_eq!(disconnect("/"), "41");
        assert_eq!(disconnect("/chat"), "41/chat,");
    }

    #[test]
    fn encodes_events_with_ack_ids() {
        assert_eq!(
            event("/", "room:join", &json!({"room": "bench-0"}), Some(0)).unwrap(),
            r#"420["room:join",{"room":"bench-0"}]"#
        );
        assert_eq!(
            event(
                "/",
                "message:send",
                &json!({"room": "r", "text": "hi"}),
                Some(12)
            )
            .unwrap(),
            r#"4212["message:send",{"room":"r","text":"hi"}]"#
        );
        assert_eq!(
            event("/chat", "typing", &json!({"room": "r"}), None).unwrap(),
            r#"42/chat,["typing",{"room":"r"}]"#
        );
    }

    #[test]
    fn decodes_connect_ok_and_error() {
        match dec(r#"40{"sid":"abc"}"#).unwrap() {
            Frame::Sio(p) => {
                assert_eq!(p.ns.as_str(), "/");
                assert!(matches!(p.inner, Data::Connect(_)));
            }
            other => panic!("{other:?}"),
        }
        match dec(r#"40/chat,{"sid":"abc"}"#).unwrap() {
            Frame::Sio(p) => assert_eq!(p.ns.as_str(), "/chat"),
            other => panic!("{other:?}"),
        }
        match dec(r#"44{"message":"unauthorized: invalid_token: nope"}"#).unwrap() {
            Frame::ConnectError { ns, message } => {
                assert_eq!(ns, "/");
                assert_eq!(message, "unauthorized: invalid_token: nope");
            }
            other => panic!("{other:?}"),
        }
        match dec(r#"44/admin,{"message":"Invalid namespace","data":{"x":1}}"#).unwrap() {
            Frame::ConnectError { ns, message } => {
                assert_eq!(ns, "/admin");
                assert_eq!(message, "Invalid namespace");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(dec("44{broken"), Err(CodecError::ConnectError(_))));
    }

    #[test]
    fn decodes_message_event() {
        let f = dec(r#"42["message",{"id":"1","room":"bench-0","text":"a:1:2:3:xx","seq":4}]"#)
            .unwrap();
        let Frame::Sio(p) = f else { panic!() };
        let Data::Event(mut value, ack) = p.inner else {
            panic!()
        };
        assert_eq!(ack, None);
        assert_eq!(event_name(&value).unwrap(), "message");
        let m: ChatMessage<'_> = event_arg(&mut value).unwrap();
        assert_eq!(m.text, "a:1:2:3:xx");
    }

    #[test]
    fn decodes_acks() {
        let Frame::Sio(p) = dec(r#"437[{"ok":true,"message":{"id":"9"}}]"#).unwrap() else {
            panic!()
        };
        let Data::EventAck(mut value, id) = p.inner else {
            panic!()
        };
        assert_eq!(id, 7);
        let ack: ChatAck<'_> = ack_arg(&mut value).unwrap();
        assert_eq!(ack.error_code(), None);

        let Frame::Sio(p) =
            dec(r#"438[{"ok":false,"error":{"code":"rate_limited","message":"slow down"}}]"#)
                .unwrap()
        else {
            panic!()
        };
        let Data::EventAck(mut value, id) = p.inner else {
            panic!()
        };
        assert_eq!(id, 8);
        let ack: ChatAck<'_> = ack_arg(&mut value).unwrap();
        assert_eq!(ack.error_code().as_deref(), Some("rate_limited"));

        let Frame::Sio(p) = dec(r#"439[{"ok":false}]"#).unwrap() else {
            panic!()
        };
        let Data::EventAck(mut value, _) = p.inner else {
            panic!()
        };
        let ack: ChatAck<'_> = ack_arg(&mut value).unwrap();
        assert_eq!(ack.error_code().as_deref(), Some("unknown"));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for s in [
            "4",
            "42",
            "42[",
            "43",
            "439",
            "4x",
            "42[\"message\"",
            "4é",
            "42[1,2]",
            "b",
        ] {
            // Either a decode error or a frame whose payload fails to decode later; never a panic.
            if let Ok(Frame::Sio(p)) = dec(s)
                && let Data::Event(mut v, _) = p.inner
            {
                let _ = event_name(&v);
                let _ = event_arg::<ChatMessage<'_>>(&mut v);
            }
        }
        // A binary event is an error, and does not poison the frames after it.
        assert!(dec("451-[\"x\",{\"_placeholder\":true,\"num\":0}]").is_err());
        assert!(matches!(
            dec(r#"42["message",{"text":"t"}]"#),
            Ok(Frame::Sio(_))
        ));
    }
}
