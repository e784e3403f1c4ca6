//! The `palaver` command line: without a subcommand it serves (every flag of [`Config`]); `migrate`, `check-config`
//! and `user erase` are for deploy pipelines and operators, and take the same flags and environment.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, redact_url};
use crate::server::Error;
use crate::store::{self, Erasure, Migrations, NamespaceErasure};

/// `palaver [FLAGS]` serves; `palaver <COMMAND> [FLAGS]` runs a command and exits.
#[derive(Parser)]
#[command(
    name = "palaver",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Applies the database's pending migrations and exits (start the servers with `--migrate false` to leave
    /// migrating to this step).
    Migrate {
        #[command(flatten)]
        config: Box<Config>,
    },
    /// Checks flags, environment, the namespaces file and every profile exactly as the server does at start-up,
    /// prints a summary (secrets hidden), and exits non-zero on the first mistake.
    CheckConfig {
        /// Also connect to the database (and Redis): reachable, and which migrations are pending.
        #[arg(long)]
        connect: bool,
        #[command(flatten)]
        config: Box<Config>,
    },
    /// A user's data.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Erases a user (the id the host's tokens carry in `sub`): their messages become tombstones; their reactions,
    /// memberships, read state, invitations, roles, sanctions, blocks and sessions are deleted. Prints what was
    /// removed. Safe while servers run on the same database.
    Erase {
        /// The user's id.
        id: String,
        /// Only in this namespace (e.g. `/game`); default: every namespace, and the user's sessions.
        #[arg(long = "namespace")]
        namespace: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: Box<Config>,
    },
}

/// Runs a subcommand: what it prints goes to stdout, logs and errors to stderr.
pub async fn run(command: Command) -> ExitCode {
    let result = match command {
        Command::Migrate { config } => migrate(&config).await.map(|applied| {
            if applied.is_empty() {
                "the database is up to date\n".to_owned()
            } else {
                format!("applied migrations: {}\n", applied.join(", "))
            }
        }),
        Command::CheckConfig { connect, config } => check_config(&config, connect).await,
        Command::User {
            command:
                UserCommand::Erase {
                    id,
                    namespace,
                    json,
                    config,
                },
        } => erase_user(&config, &id, namespace.as_deref())
            .await
            .and_then(|erasure| {
                if json {
                    serde_json::to_string_pretty(&erasure)
                        .map(|text| text + "\n")
                        .map_err(|e| Error::Io(e.into()))
                } else {
                    Ok(erasure_text(&erasure))
                }
            }),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("palaver: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `palaver migrate`: the migrations it applied.
pub async fn migrate(config: &Config) -> Result<Vec<String>, Error> {
    let (_, applied) = store::open_with(&config.database_url, 1, 1, Migrations::Apply).await?;
    Ok(applied)
}

/// `palaver user erase`: what was removed.
pub async fn erase_user(config: &Config, id: &str, ns: Option<&str>) -> Result<Erasure, Error> {
    if id.trim().is_empty() {
        return Err(Error::Usage("the user id is empty".to_owned()));
    }
    if let Some(ns) = ns {
        // A namespace that is not served has nothing of the user, and a typo must not report "nothing removed".
        let served = config.namespaces()?;
        if !served.iter().any(|s| s.path == ns) {
            let paths: Vec<&str> = served.iter().map(|s| s.path.as_str()).collect();
            return Err(Error::Usage(format!(
                "--namespace {ns:?} is not served (namespaces: {})",
                paths.join(", ")
            )));
        }
    }
    // The server's schema, never migrated behind its back.
    let (store, _) = store::open_with(&config.database_url, 2, 1, Migrations::Require).await?;
    Ok(store.erase_user(id, ns, store::now()).await?)
}

/// The report of an erasure, for a person.
pub fn erasure_text(erasure: &Erasure) -> String {
    let mut out = format!("erased user {:?}\n", erasure.user);
    let line = |out: &mut String, ns: &NamespaceErasure| {
        let _ = writeln!(
            out,
            "  messages turned into tombstones: {}\n  earlier tombstones unnamed: {}\n  reactions removed: {}\n  \
             memberships removed (with their read state): {}\n  invitations removed: {}\n  invitations sent, \
             unnamed: {}\n  moderator roles removed: {}\n  bans and mutes removed: {}\n  moderation log entries \
             removed: {}, unnamed: {}\n  blocks removed: {}\n  rooms created, now without owner: {}\n  rooms \
             whose clients catch up on tombstones: {}",
            ns.messages_tombstoned,
            ns.tombstones_scrubbed,
            ns.reactions_removed,
            ns.memberships_removed,
            ns.invitations_removed,
            ns.invitations_unnamed,
            ns.roles_removed,
            ns.sanctions_removed,
            ns.moderation_entries_removed,
            ns.moderation_entries_unnamed,
            ns.blocks_removed,
            ns.rooms_disowned,
            if ns.rooms_changed.is_empty() {
                "none".to_owned()
            } else {
                ns.rooms_changed.join(", ")
            },
        );
    };
    for ns in &erasure.namespaces {
        let _ = writeln!(out, "namespace {}:", ns.namespace);
        line(&mut out, ns);
    }
    if erasure.namespaces.is_empty() {
        out.push_str("the database holds no namespace\n");
    }
    let _ = writeln!(
        out,
        "palaver sessions (refresh tokens) removed: {}",
        erasure.refresh_tokens_removed
    );
    out
}

/// `palaver check-config`: the summary it prints, or the first mistake.
pub async fn check_config(config: &Config, connect: bool) -> Result<String, Error> {
    let checked = crate::server::check_config(config)?;
    let mut out = String::from("configuration OK\n");
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let set = |v: &Option<String>| if v.is_some() { "<set>" } else { "unset" };
    let _ = writeln!(out, "listen: {}", config.listen_addr());
    let _ = writeln!(
        out,
        "database: {} (pool {}; migrations {})",
        redact_url(&config.database_url),
        config.db_pool_size,
        if config.migrate {
            "applied at start-up"
        } else {
            "required before start-up (palaver migrate)"
        }
    );
    match &config.redis_url {
        Some(url) => {
            let _ = writeln!(
                out,
                "redis: {} (prefix {:?}): one node of several",
                redact_url(url),
                config.redis_prefix
            );
        }
        None => out.push_str("redis: none: a single node\n"),
    }
    let _ = writeln!(
        out,
        "auth: guests {}; JWT secret {}; JWT public key {}; auth hook {}; palaver sessions {}; admin claim {:?}",
        if config.anonymous {
            "admitted"
        } else {
            "refused"
        },
        set(&config.jwt_secret),
        config
            .jwt_public_key
            .as_ref()
            .map_or("unset".to_owned(), |p| format!(
                "{} ({:?})",
                p.display(),
                config.jwt_algorithm
            )),
        config.auth_hook_url.as_deref().unwrap_or("unset"),
        yes_no(checked.sessions.is_some()),
        config.admin_claim,
    );
    let _ = writeln!(
        out,
        "server API keys: {} (<redacted>)",
        config.api_keys.len()
    );
    match &config.webhook_url {
        Some(url) => {
            let _ = writeln!(
                out,
                "webhooks: {url} (secret <redacted>; events {})",
                if config.webhook_events.is_empty() {
                    "all".to_owned()
                } else {
                    config.webhook_events.join(", ")
                }
            );
        }
        None => out.push_str("webhooks: off\n"),
    }
    let _ = writeln!(out, "CORS origins: {}", config.cors_origins.join(", "));
    out.push_str("namespaces:\n");
    for ns in &checked.namespaces {
        let _ = writeln!(
            out,
            "  {}: guests {}, history {}, max message length {}, read receipts {}, retention {}{}{}",
            ns.path,
            if ns.anonymous { "admitted" } else { "refused" },
            if ns.history { "kept" } else { "not kept" },
            ns.max_message_length,
            if ns.read_receipts { "on" } else { "off" },
            ns.retention_days
                .filter(|_| ns.history)
                .map_or("forever".to_owned(), |d| format!("{d} days")),
            if ns.profile.is_some() {
                ", compatibility profile"
            } else {
                ""
            },
            if ns.websocket {
                ", plain WebSocket endpoint"
            } else {
                ""
            },
        );
    }
    if connect {
        check_connections(config, &mut out).await?;
    }
    Ok(out)
}

/// `check-config --connect`: whether the database and Redis answer, and what migrations are pending. Creates
/// nothing: a SQLite file that does not exist yet is reported, not made.
async fn check_connections(config: &Config, out: &mut String) -> Result<(), Error> {
    let url = &config.database_url;
    let sqlite_file = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default());
    match sqlite_file {
        Some(path) if !path.is_empty() && !std::path::Path::new(path).exists() => {
            let _ = writeln!(
                out,
                "database: {path} does not exist yet (the server or palaver migrate creates it)"
            );
        }
        _ => {
            let (_, pending) = store::open_with(url, 1, 1, Migrations::Inspect).await?;
            if pending.is_empty() {
                out.push_str("database: reachable, schema up to date\n");
            } else {
                let _ = writeln!(
                    out,
                    "database: reachable, migrations pending: {}",
                    pending.join(", ")
                );
            }
        }
    }
    if let Some(redis) = &config.redis_url {
        let link = tokio::time::timeout(
            Duration::from_secs(5),
            crate::cluster::RedisLink::connect(redis, &config.redis_prefix),
        )
        .await
        .map_err(|_| Error::Redis(format!("{}: no answer within 5 s", redact_url(redis))))?
        .map_err(|e| Error::Redis(e.to_string()))?;
        drop(link);
        out.push_str("redis: reachable\n");
    }
    Ok(())
}
