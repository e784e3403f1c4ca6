//! Command line.

use std::net::{IpAddr, Ipv4Addr};

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// `auth: { name: "bench-<i>" }`: an anonymous user per connection.
    Anonymous,
    /// `auth: { token }`: an HS256 JWT per client (`sub` = `name` = `bench-<i>`), signed with --jwt-secret.
    Jwt,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Anonymous => "anonymous",
            AuthMode::Jwt => "jwt",
        }
    }
}

/// Load tool for palaver and any Socket.IO server speaking its chat contract (`room:join`, `message:send`,
/// `message`): N WebSocket clients in R rooms send at a total rate; every receiver checks latency, missing and
/// duplicate deliveries.
#[derive(Debug, Parser)]
#[command(name = "palaver-bench", version)]
pub struct Args {
    /// Server URL (http:// or ws://). A path other than `/` is the namespace, as in socket.io-client. Several
    /// URLs, comma separated (nodes of one cluster): client i connects to URL i mod n.
    #[arg(long, default_value = "http://127.0.0.1:3000", value_delimiter = ',')]
    pub url: Vec<String>,

    /// Socket.IO path on the server.
    #[arg(long, default_value = "/socket.io/")]
    pub path: String,

    /// Socket.IO namespace (default: the URL's path, else `/`).
    #[arg(long)]
    pub namespace: Option<String>,

    /// Number of clients (connections).
    #[arg(long, default_value_t = 100)]
    pub clients: u32,

    /// Number of rooms; client i joins `bench-<i % rooms>`.
    #[arg(long, default_value_t = 10)]
    pub rooms: u32,

    /// Total messages sent per second, spread evenly over the clients. 0: only connect, join and hold the
    /// connections for --duration (idle-connection measurements).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,

    /// Seconds of measured sending (or of holding, with --rate 0), after the warm-up.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,

    /// Seconds of sending before the measurement starts (latencies and rates ignore them).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,

    /// After the sending stopped, keep receiving until nothing arrived for 1 s (the server's queues are
    /// empty), at most this many seconds; then missing deliveries are counted.
    #[arg(long, default_value_t = 30.0)]
    pub drain: f64,

    /// Size of each message text in bytes (the stamp `<run>:<sender>:<n>:<unix_nanos>:` plus padding).
    #[arg(long, default_value_t = 200)]
    pub size: usize,

    /// How clients authenticate.
    #[arg(long, value_enum, default_value_t = AuthMode::Anonymous)]
    pub auth: AuthMode,

    /// HS256 secret to sign the clients' JWTs with (--auth jwt).
    #[arg(long, env = "PALAVER_BENCH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Local addresses to connect from, round-robin: `127.0.0.2-127.0.0.20`, `10.0.0.5,10.0.0.6`, or both
    /// mixed. Each address gives another ~28k ephemeral ports towards one server address.
    #[arg(long)]
    pub source_addrs: Option<String>,

    /// New connections started per second (0: as fast as --connect-concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,

    /// Connections being set up (TCP, WebSocket, Socket.IO connect, join) at once, at most.
    #[arg(long, default_value_t = 500)]
    pub connect_concurrency: usize,

    /// Seconds allowed for one client's TCP connect, WebSocket upgrade and Socket.IO connect.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,

    /// Seconds to wait for an ack (join or send) before counting a timeout.
    #[arg(long, default_value_t = 10.0)]
    pub ack_timeout: f64,

    /// Read traffic: every client marks what it received as read, `room:read { room, seq }` with the newest seq
    /// of its room it received, at most once per this many seconds (as a client showing the room would, throttled
    /// like the server's read receipts), while sending runs. Off by default. On palaver a read needs a membership,
    /// which guests in public rooms do not have: use --auth jwt.
    #[arg(long)]
    pub read_every: Option<f64>,

    /// Worker threads of the tool (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,

    /// PID of the server, when it runs on this machine: its resident memory is sampled before connecting
    /// and once all clients joined (and at the end of the hold), to report memory per connection.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Print one JSON object on stdout instead of the table (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// Parses `a.b.c.d-a.b.c.e`, single addresses and comma-separated mixes of both.
pub fn parse_source_addrs(spec: &str) -> Result<Vec<IpAddr>, String> {
    const MAX: u64 = 65_536;
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("bad address range start in {part:?}"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("bad address range end in {part:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a {
                return Err(format!("empty address range {part:?}"));
            }
            if u64::from(b - a) + 1 + out.len() as u64 > MAX {
                return Err(format!("more than {MAX} source addresses"));
            }
            out.extend((a..=b).map(|x| IpAddr::V4(Ipv4Addr::from(x))));
        } else {
            let ip: IpAddr = part
                .parse()
                .map_err(|_| format!("bad source address {part:?}"))?;
            out.push(ip);
        }
    }
    if out.is_empty() {
        return Err("no source address given".to_owned());
    }
    Ok(out)
}

/// Where to connect, from --url, --path and --namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `ws://host:port/socket.io/?EIO=4&transport=websocket`.
    pub request: String,
    pub namespace: String,
}

pub fn parse_target(url: &str, path: &str, namespace: Option<&str>) -> Result<Target, String> {
    let uri: tokio_tungstenite::tungstenite::http::Uri =
        url.parse().map_err(|e| format!("bad --url {url:?}: {e}"))?;
    let default_port = match uri.scheme_str() {
        Some("http" | "ws") => 80,
        Some("https" | "wss") => {
            return Err(
                "TLS (https/wss) is not supported: point the tool at the server's plain HTTP port"
                    .to_owned(),
            );
        }
        _ => return Err(format!("--url {url:?} must start with http:// or ws://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("--url {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(default_port);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| host.clone());
    let mut path = path.to_owned();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    if !path.ends_with('/') {
        path.push('/');
    }
    let namespace = match namespace {
        Some(ns) if ns.starts_with('/') => ns.to_owned(),
        Some(ns) => format!("/{ns}"),
        None => match uri.path() {
            "" | "/" => "/".to_owned(),
            p => p.trim_end_matches('/').to_owned(),
        },
    };
    Ok(Target {
        host,
        port,
        request: format!("ws://{authority}{path}?EIO=4&transport=websocket"),
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_and_lists() {
        let v = parse_source_addrs("127.0.0.2-127.0.0.4").unwrap();
        assert_eq!(
            v,
            ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
                .map(|s| s.parse::<IpAddr>().unwrap())
                .to_vec()
        );
        let v = parse_source_addrs("127.0.0.2, 127.0.0.9-127.0.0.10,::1").unwrap();
        assert_eq!(v.len(), 4);
        let v = parse_source_addrs("127.0.0.255-127.0.1.1").unwrap();
        assert_eq!(v.len(), 3);
        assert!(parse_source_addrs("127.0.0.5-127.0.0.2").is_err());
        assert!(parse_source_addrs("nope").is_err());
        assert!(parse_source_addrs("").is_err());
        assert!(parse_source_addrs("10.0.0.0-10.2.0.0").is_err());
    }

    #[test]
    fn targets() {
        let t = parse_target("http://127.0.0.1:3000", "/socket.io/", None).unwrap();
        assert_eq!(
            t,
            Target {
                host: "127.0.0.1".into(),
                port: 3000,
                request: "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket".into(),
                namespace: "/".into(),
            }
        );
        let t = parse_target("ws://localhost/chat", "socket.io", None).unwrap();
        assert_eq!(t.port, 80);
        assert_eq!(t.namespace, "/chat");
        assert_eq!(
            t.request,
            "ws://localhost/socket.io/?EIO=4&transport=websocket"
        );
        let t = parse_target("http://[::1]:3001/", "/socket.io/", Some("admin")).unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.namespace, "/admin");
        assert!(parse_target("https://example.com", "/socket.io/", None).is_err());
        assert!(parse_target("ftp://x", "/socket.io/", None).is_err());
    }
}
