//! Logs and traces: log lines on stdout as text or JSON (`--log-format`, filtered by `RUST_LOG`), and spans
//! exported over OTLP/HTTP (`--otlp-endpoint`), flushed when the server stops.
//!
//! Spans palaver makes (docs/operations.md, Logs and tracing): one per HTTP request (`request`: method and path,
//! never the query, which carries a Socket.IO 2.x client's token), one per client event (`event`: the event, its
//! socket, user, namespace, room and outcome; see `chat::event_span`), one per store call. All are `debug`: at the
//! default `info` nothing subscribes to them, and a disabled span costs a check of a cached flag.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt, Targets},
    layer::SubscriberExt,
    util::SubscriberInitExt,
};

/// The logging and tracing flags (part of [`crate::Config`]).
#[derive(Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log lines on stdout: `text` for people, `json` (one object a line, with the fields of the spans it happened
    /// in) for a log pipeline. `RUST_LOG` filters either (default `info`).
    #[arg(long, env = "PALAVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export spans over OTLP/HTTP to this collector (e.g. `http://localhost:4318`; `/v1/traces` is appended).
    /// Unset: no export. The exporter also reads OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME and OTEL_BSP_*.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", hide_env_values = true)]
    pub otlp_endpoint: Option<String>,

    /// Encoding of the OTLP export: `http/protobuf` or `http/json`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::HttpProtobuf)]
    pub otlp_protocol: OtlpProtocol,

    /// Which spans are exported, in `RUST_LOG`'s syntax (independent of `RUST_LOG`).
    #[arg(
        long,
        env = "PALAVER_OTLP_FILTER",
        default_value = "palaver=debug,tower_http=debug"
    )]
    pub otlp_filter: String,
}

/// The endpoint may carry credentials (`https://user:pass@collector`); it is shown without them.
impl std::fmt::Debug for TelemetryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryArgs")
            .field("log_format", &self.log_format)
            .field(
                "otlp_endpoint",
                &self.otlp_endpoint.as_deref().map(crate::config::redact_url),
            )
            .field("otlp_protocol", &self.otlp_protocol)
            .field("otlp_filter", &self.otlp_filter)
            .finish()
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The OTLP/HTTP encodings palaver exports in (no gRPC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    #[value(name = "http/json")]
    HttpJson,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("--otlp-filter: {0}")]
    Filter(String),
    #[error("--otlp-endpoint: {0}")]
    Exporter(String),
    #[error("logging is already set up: {0}")]
    Init(String),
}

/// The installed logging; [`Telemetry::shutdown`] exports the spans still buffered.
#[must_use = "call shutdown() when the server stops, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (a blocking call: at most the export timeout).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not flush the OTLP exporter"),
            Err(e) => tracing::warn!(error = %e, "could not flush the OTLP exporter"),
        }
    }
}

/// Dependencies that print raw packets, requests or frames below `info` (socketioxide's CONNECT `auth` with its
/// token, engineioxide's handshake request, WebSocket frames, HTTP client connections): capped at `info` whatever
/// `RUST_LOG` asks, so that no setting puts a token in the log.
fn without_raw_packets() -> Targets {
    const PACKET_DUMPERS: [&str; 7] = [
        "socketioxide",
        "engineioxide",
        "tungstenite",
        "tokio_tungstenite",
        "reqwest",
        "hyper",
        "h2",
    ];
    PACKET_DUMPERS
        .into_iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, c| {
            t.with_target(c, LevelFilter::INFO)
        })
}

/// Installs the global subscriber: log lines on stdout in `args.log_format`, filtered by `RUST_LOG`, and the OTLP
/// export when `args.otlp_endpoint` is set.
pub fn init(args: &TelemetryArgs) -> Result<Telemetry, TelemetryError> {
    let from_env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    }
    .with_filter(from_env.and(without_raw_packets()));

    let (provider, export) = match &args.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let filter = EnvFilter::builder()
                .with_default_directive(LevelFilter::OFF.into())
                .parse(&args.otlp_filter)
                .map_err(|e| TelemetryError::Filter(e.to_string()))?;
            let provider = tracer_provider(endpoint, args.otlp_protocol)?;
            // The exporter's own diagnostics stay out of the spans it exports.
            let own = Targets::new()
                .with_default(LevelFilter::TRACE)
                .with_target("opentelemetry", LevelFilter::OFF);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("palaver"))
                .with_threads(false)
                .with_filter(filter.and(without_raw_packets()).and(own));
            (Some(provider), Some(layer))
        }
    };
    Registry::default()
        .with(lines)
        .with(export)
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    Ok(Telemetry { provider })
}

/// A tracer provider exporting in batches (on the SDK's own thread, through reqwest's blocking client) to
/// `<endpoint>/v1/traces`.
fn tracer_provider(
    endpoint: &str,
    protocol: OtlpProtocol,
) -> Result<SdkTracerProvider, TelemetryError> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .with_protocol(match protocol {
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
            OtlpProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
        })
        .build()
        .map_err(|e| match e {
            // Its text would repeat the endpoint, credentials and all.
            opentelemetry_otlp::ExporterBuildError::InvalidUri(_, why) => {
                TelemetryError::Exporter(format!("not a URL: {why}"))
            }
            other => TelemetryError::Exporter(other.to_string()),
        })?;
    let mut resource = Resource::builder();
    // OTEL_SERVICE_NAME, read by the SDK, names the service when set.
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("palaver");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The HTTP layer's type: [`http_trace`].
pub type HttpTrace = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&axum::http::Request<axum::body::Body>) -> tracing::Span,
    tower_http::trace::DefaultOnRequest,
    fn(&axum::response::Response, std::time::Duration, &tracing::Span),
    tower_http::trace::DefaultOnBodyChunk,
    tower_http::trace::DefaultOnEos,
    tower_http::trace::DefaultOnFailure,
>;

/// A `request` span around every HTTP request (the Socket.IO handshake and long-polling included): its method,
/// path and status. Never the query (a Socket.IO 2.x client's `?token=`, a plain WebSocket's `?token=`) nor a
/// header (`Authorization`, `Cookie`).
pub fn http_trace() -> HttpTrace {
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&_) -> _)
        .on_response(request_done as fn(&_, _, &_))
        // A 5xx is answered and, when palaver's own, logged once where it happens (src/error.rs); /readyz
        // answers 503 on every probe while the database is away.
        .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG))
}

fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let path = request.uri().path();
    // The route (`/api/rooms/{room}/messages`) names the span where axum matched one: few distinct names.
    let route = match request.extensions().get::<axum::extract::MatchedPath>() {
        Some(matched) => matched.as_str(),
        None if path.starts_with("/socket.io") => "/socket.io/",
        None => "",
    };
    tracing::debug_span!(
        "request",
        otel.name = %format_args!("{} {route}", request.method()),
        otel.kind = "server",
        method = %request.method(),
        path,
        status = tracing::field::Empty,
    )
}

fn request_done(
    response: &axum::response::Response,
    latency: std::time::Duration,
    span: &tracing::Span,
) {
    let status = response.status().as_u16();
    span.record("status", status);
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(status, latency_ms, "answered");
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::without_raw_packets;

    #[test]
    fn packet_dumping_dependencies_stay_at_info() {
        let targets = without_raw_packets();
        for target in [
            "socketioxide::client",
            "engineioxide::service::parser",
            "tungstenite::protocol",
            "reqwest::connect",
        ] {
            assert!(!targets.would_enable(target, &Level::DEBUG), "{target}");
            assert!(targets.would_enable(target, &Level::INFO), "{target}");
        }
        for target in [
            "palaver::chat",
            "sqlx::query",
            "tower_http::trace::on_request",
        ] {
            assert!(targets.would_enable(target, &Level::TRACE), "{target}");
        }
    }
}
