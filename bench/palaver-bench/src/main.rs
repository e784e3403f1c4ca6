//! palaver-bench: load tool for palaver and any Socket.IO server speaking its chat contract.
//!
//! See bench/README.md for the options, the method and the JSON report's fields.

mod cli;
mod client;
mod codec;
mod report;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use socketioxide_core::parser::ParseConfig;
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::cli::{Args, AuthMode};
use crate::client::{Auth, Ctx, Phase};
use crate::report::{Report, rss_bytes};
use crate::stats::{Member, Percentiles, Stats, tally, unix_nanos};

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palaver-bench: {e}");
            ExitCode::from(1)
        }
    }
}

/// Longest duration any option may ask for (a week), so that no deadline overflows.
const MAX_SECS: f64 = 7.0 * 24.0 * 3600.0;

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    if !(0.0..=MAX_SECS).contains(&v) {
        return Err(format!("--{name} must be between 0 and {MAX_SECS} seconds"));
    }
    Duration::try_from_secs_f64(v).map_err(|_| format!("--{name} must be a number of seconds ≥ 0"))
}

fn real_main(args: Args) -> Result<ExitCode, String> {
    if args.clients == 0 {
        return Err("--clients must be at least 1".to_owned());
    }
    if args.rooms == 0 {
        return Err("--rooms must be at least 1".to_owned());
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err("--rate must be ≥ 0".to_owned());
    }
    if !(args.connect_rate >= 0.0 && args.connect_rate.is_finite()) {
        return Err("--connect-rate must be ≥ 0".to_owned());
    }
    if (args.rate > 0.0 && args.rate < 1e-3)
        || (args.connect_rate > 0.0 && args.connect_rate < 1e-3)
    {
        return Err("--rate and --connect-rate must be 0 or at least 0.001 per second".to_owned());
    }
    for (name, v) in [
        ("duration", args.duration),
        ("warmup", args.warmup),
        ("drain", args.drain),
        ("connect-timeout", args.connect_timeout),
        ("ack-timeout", args.ack_timeout),
    ] {
        secs(name, v)?;
    }
    let targets = args
        .url
        .iter()
        .map(|url| cli::parse_target(url, &args.path, args.namespace.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let target = targets
        .first()
        .cloned()
        .ok_or_else(|| "--url names no server".to_owned())?;
    let sources = match &args.source_addrs {
        Some(spec) => cli::parse_source_addrs(spec)?,
        None => Vec::new(),
    };
    let auth = match args.auth {
        AuthMode::Anonymous => Auth::Anonymous,
        AuthMode::Jwt => {
            let secret = args
                .jwt_secret
                .as_deref()
                .ok_or("--auth jwt needs --jwt-secret (or PALAVER_BENCH_JWT_SECRET)")?;
            Auth::Jwt(jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()))
        }
    };

    // One socket per client plus a few for the runtime.
    let wanted = u64::from(args.clients) + 256;
    let fd_limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    if fd_limit < wanted {
        eprintln!(
            "palaver-bench: warning: the open-file limit is {fd_limit} (hard limit), below the {wanted} that \
             {} clients need; connections past it will fail with `too many open files`",
            args.clients
        );
    }

    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let want_v6 = sources.first().is_some_and(|s| s.is_ipv6());
        let mut endpoints = Vec::with_capacity(targets.len());
        for target in &targets {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((target.host.as_str(), target.port))
                    .await
                    .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
                    .collect();
            let addr = addrs
                .iter()
                .find(|a| a.is_ipv6() == want_v6)
                .or(addrs.first())
                .copied()
                .ok_or_else(|| format!("{} resolves to no address", target.host))?;
            if let Some(bad) = sources.iter().find(|s| s.is_ipv6() != addr.is_ipv6()) {
                return Err(format!(
                    "source address {bad} is not of the same family as the server address {addr}"
                ));
            }
            endpoints.push((target.request.clone(), addr));
        }
        let run = format!(
            "r{:x}",
            (unix_nanos() / 1000) as u32 ^ std::process::id().rotate_left(16)
        );
        let ctx = Arc::new(Ctx {
            endpoints,
            sources: sources.clone(),
            namespace: target.namespace.clone(),
            auth,
            clients: args.clients,
            rooms: args.rooms,
            size: args.size,
            run: run.clone(),
            connect_timeout: secs("connect-timeout", args.connect_timeout)?,
            ack_timeout: secs("ack-timeout", args.ack_timeout)?,
            read_every: args.read_every.map(|v| secs("read-every", v)).transpose()?,
            // Small buffers: memory per client matters at 100k clients. Writes go out at once.
            ws_config: WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0)
                .max_message_size(Some(16 << 20)),
            parse_config: ParseConfig::default(),
            stats: Stats::default(),
            epoch: Instant::now(),
        });
        let report = bench(&args, ctx, fd_limit, sources.len(), target.namespace).await?;
        if args.json {
            let json = serde_json::to_string_pretty(&report)
                .map_err(|e| format!("cannot serialize the report: {e}"))?;
            println!("{json}");
        } else {
            print!("{}", report.table());
        }
        if report.connect.connected == 0 {
            eprintln!("palaver-bench: no client could connect");
            return Ok(ExitCode::from(1));
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn bar(json: bool, len: u64, template: &str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

/// Counters read at two instants, for rates over the window between them.
#[derive(Clone, Copy)]
struct Snap {
    sent: u64,
    delivered: u64,
    at: Instant,
}

impl Snap {
    fn take(s: &Stats) -> Self {
        Snap {
            sent: Stats::get(&s.sent),
            delivered: Stats::get(&s.delivered),
            at: Instant::now(),
        }
    }
}

/// Updates `pb` every 250 ms until `until`, with live rates.
async fn tick_until(pb: &ProgressBar, stats: &Stats, start: Instant, until: Instant) {
    let mut last = Snap::take(stats);
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        sleep_until((now + Duration::from_millis(250)).min(until)).await;
        let snap = Snap::take(stats);
        let dt = (snap.at - last.at).as_secs_f64().max(1e-3);
        pb.set_position((snap.at - start).as_millis() as u64);
        pb.set_message(format!(
            "sent {:.0}/s  delivered {:.0}/s  acked {}  errors {}  dropped {}",
            (snap.sent - last.sent) as f64 / dt,
            (snap.delivered - last.delivered) as f64 / dt,
            Stats::get(&stats.acked_ok),
            stats.send_errors.total(),
            stats.disconnects.total(),
        ));
        last = snap;
    }
}

/// Everything the clients receive, counted together: when it stops moving, the server has sent everything.
fn arrivals(s: &Stats) -> u64 {
    Stats::get(&s.delivered)
        + Stats::get(&s.foreign)
        + Stats::get(&s.acked_ok)
        + Stats::get(&s.late_acks)
        + s.send_errors.total()
}

/// After the sending stopped: waits until nothing arrived for a second (the server's queues are empty), or
/// `max` passed. Returns how long it took.
async fn drain_until_quiet(json: bool, stats: &Stats, max: Duration) -> Duration {
    const QUIET: Duration = Duration::from_secs(1);
    let pb = bar(
        json,
        max.as_millis() as u64,
        "{elapsed_precise} draining   [{bar:40}] {msg}",
    );
    let start = Instant::now();
    let mut last = arrivals(stats);
    let mut last_change = start;
    loop {
        let now = Instant::now();
        if now - last_change >= QUIET || now - start >= max {
            break;
        }
        sleep(Duration::from_millis(100)).await;
        let a = arrivals(stats);
        if a != last {
            last = a;
            last_change = Instant::now();
        }
        pb.set_position(start.elapsed().as_millis() as u64);
        pb.set_message(format!("{} delivered", Stats::get(&stats.delivered)));
    }
    pb.finish_and_clear();
    start.elapsed()
}

async fn bench(
    args: &Args,
    ctx: Arc<Ctx>,
    fd_limit: u64,
    source_count: usize,
    namespace: String,
) -> Result<Report, String> {
    let stats = &ctx.stats;
    let n = args.clients;
    let rss_before = args.server_pid.and_then(rss_bytes);
    if let (Some(pid), None) = (args.server_pid, rss_before) {
        eprintln!("palaver-bench: warning: cannot read the memory of pid {pid}");
    }

    // ---- connect and join ----------------------------------------------------------------------------------
    let (phase_tx, phase_rx) = watch::channel(if args.rate > 0.0 {
        Phase::Stop
    } else {
        Phase::Hold
    });
    let pb = bar(
        args.json,
        u64::from(n),
        "{elapsed_precise} connecting [{bar:40}] {pos}/{len} {msg}",
    );
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let spawner = {
        let ctx = ctx.clone();
        let connect_rate = args.connect_rate;
        tokio::spawn(async move {
            let mut handles = Vec::with_capacity(n as usize);
            let start = Instant::now();
            for id in 0..n {
                if connect_rate > 0.0 {
                    sleep_until(start + Duration::from_secs_f64(f64::from(id) / connect_rate))
                        .await;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                handles.push(tokio::spawn(client::run(
                    ctx.clone(),
                    id,
                    permit,
                    phase_rx.clone(),
                )));
            }
            handles
        })
    };
    loop {
        let settled = Stats::get(&stats.settled);
        pb.set_position(settled);
        pb.set_message(format!(
            "connected {}  joined {}  errors {}",
            Stats::get(&stats.connected),
            Stats::get(&stats.joined),
            stats.connect_errors.total() + stats.join_errors.total()
        ));
        if settled >= u64::from(n) {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    pb.finish_and_clear();
    let handles = spawner
        .await
        .map_err(|e| format!("the connecting task failed: {e}"))?;
    let connected = Stats::get(&stats.connected);
    let joined = Stats::get(&stats.joined);
    let all_connected_s = Stats::get(&stats.last_connected_ns) as f64 / 1e9;
    let all_joined_s = Stats::get(&stats.last_joined_ns) as f64 / 1e9;
    let rss_joined = args.server_pid.and_then(rss_bytes);
    if !args.json {
        eprintln!(
            "connected {connected}/{n}, joined {joined} (all joined within {all_joined_s:.2} s)"
        );
    }

    // ---- run (or hold) ---------------------------------------------------------------------------------------
    let duration = Duration::from_secs_f64(args.duration);
    let warmup = Duration::from_secs_f64(args.warmup);
    let drain = Duration::from_secs_f64(args.drain);
    let mut messages_window = None;
    let mut drained = Duration::ZERO;
    let mut interval = Duration::ZERO;
    if args.rate > 0.0 && joined > 0 {
        interval = Duration::from_secs_f64(joined as f64 / args.rate);
        let lead = Duration::from_millis(100);
        let start = Instant::now() + lead;
        let start_ns = unix_nanos() + lead.as_nanos() as u64;
        let measure_from = start + warmup;
        let until = measure_from + duration;
        let _ = phase_tx.send(Phase::Run {
            start,
            interval,
            measure_from,
            measure_from_ns: start_ns + warmup.as_nanos() as u64,
            until_ns: start_ns + (warmup + duration).as_nanos() as u64,
        });
        let pb = bar(
            args.json,
            (warmup + duration).as_millis() as u64,
            "{elapsed_precise} sending    [{bar:40}] {msg}",
        );
        tick_until(&pb, stats, start, measure_from).await;
        let first = Snap::take(stats);
        tick_until(&pb, stats, start, until).await;
        let second = Snap::take(stats);
        pb.finish_and_clear();
        let _ = phase_tx.send(Phase::Stop);
        messages_window = Some((first, second));
        drained = drain_until_quiet(args.json, stats, drain).await;
    } else if connected == 0 {
        eprintln!("palaver-bench: no client connected; nothing to hold");
    } else {
        if args.rate > 0.0 {
            eprintln!("palaver-bench: no client joined; nothing to send");
        }
        let pb = bar(
            args.json,
            duration.as_millis() as u64,
            "{elapsed_precise} holding    [{bar:40}] {msg}",
        );
        let start = Instant::now();
        let until = start + duration;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            sleep_until((now + Duration::from_millis(250)).min(until)).await;
            pb.set_position(start.elapsed().as_millis() as u64);
            pb.set_message(format!(
                "{} connections open, {} dropped",
                connected.saturating_sub(stats.disconnects.total()),
                stats.disconnects.total()
            ));
        }
        pb.finish_and_clear();
    }
    let rss_end = args.server_pid.and_then(rss_bytes);

    // ---- close and tally -------------------------------------------------------------------------------------
    let _ = phase_tx.send(Phase::Close);
    let mut members: Vec<Member> = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(m) => members.push(m),
            Err(e) => eprintln!("palaver-bench: a client task failed: {e}"),
        }
    }
    let t = tally(&members);
    drop(members);

    let messages = messages_window.map(|(first, second)| {
        let window = (second.at - first.at).as_secs_f64().max(1e-9);
        Messages {
            send_interval_ms: interval.as_secs_f64() * 1000.0,
            sent: Stats::get(&stats.sent),
            sent_per_s: (second.sent - first.sent) as f64 / window,
            acked_ok: Stats::get(&stats.acked_ok),
            send_errors: stats.send_errors.snapshot(),
            send_failures: Stats::get(&stats.send_failures),
            late_acks: Stats::get(&stats.late_acks),
            ack_latency: Percentiles::of(&stats.ack_latency.merged()),
            delivered: Stats::get(&stats.delivered),
            delivered_per_s: Stats::get(&stats.delivered_in_window) as f64
                / duration.as_secs_f64().max(1e-9),
            delivery_latency: Percentiles::of(&stats.delivery_latency.merged()),
            expected_deliveries: t.expected,
            missing_deliveries: t.missing,
            duplicate_deliveries: Stats::get(&stats.duplicates),
            unacked_deliveries: t.unacked,
            misrouted_deliveries: t.misrouted,
            foreign_messages: Stats::get(&stats.foreign),
        }
    });
    let reads = args.read_every.map(|every| {
        let sending = (warmup + duration).as_secs_f64().max(1e-9);
        crate::report::Reads {
            every_s: every,
            sent: Stats::get(&stats.reads_sent),
            sent_per_s: Stats::get(&stats.reads_sent) as f64 / sending,
            acked_ok: Stats::get(&stats.reads_ok),
            errors: stats.read_errors.snapshot(),
            receipts: Stats::get(&stats.receipts),
            receipts_per_s: Stats::get(&stats.receipts) as f64 / sending,
        }
    });
    use crate::report::{Config, Connect, Messages, ServerMemory};
    let server_memory = match (args.server_pid, rss_before, rss_joined) {
        (Some(pid), Some(before), Some(joined_rss)) => Some(ServerMemory {
            pid,
            rss_before_bytes: before,
            rss_joined_bytes: joined_rss,
            rss_end_bytes: rss_end.unwrap_or(0),
            per_connection_bytes: if connected > 0 {
                (joined_rss as f64 - before as f64) / connected as f64
            } else {
                0.0
            },
        }),
        _ => None,
    };
    Ok(Report {
        tool: "palaver-bench",
        version: env!("CARGO_PKG_VERSION"),
        config: Config {
            url: args.url.join(","),
            namespace,
            auth: args.auth.as_str(),
            clients: n,
            rooms: args.rooms,
            rate: args.rate,
            duration_s: args.duration,
            warmup_s: if args.rate > 0.0 { args.warmup } else { 0.0 },
            drain_s: if args.rate > 0.0 { args.drain } else { 0.0 },
            drained_s: drained.as_secs_f64(),
            size: args.size,
            source_addrs: source_count,
            fd_limit,
            run: ctx.run.clone(),
        },
        connect: Connect {
            attempted: u64::from(n),
            connected,
            joined,
            errors: stats.connect_errors.snapshot(),
            join_errors: stats.join_errors.snapshot(),
            all_connected_s,
            all_joined_s,
            connect_rate_per_s: if all_connected_s > 0.0 {
                connected as f64 / all_connected_s
            } else {
                0.0
            },
            latency: Percentiles::of(&stats.connect_latency.merged()),
        },
        messages,
        reads,
        disconnects: stats.disconnects.snapshot(),
        server_memory,
        protocol_errors: stats.protocol_errors.snapshot(),
        elapsed_s: ctx.epoch.elapsed().as_secs_f64(),
    })
}
