//! Start-up refuses invalid configuration with a message naming the flag, before touching any database.

use std::process::Command;

fn start(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_palaver"))
        .args(args)
        .env("DATABASE_URL", "sqlite::memory:")
        .env("PALAVER_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run palaver");
    // clap prints to stderr, palaver's own log (a refused configuration file) to stdout.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    (output.status.success(), said)
}

#[test]
fn zero_budgets_and_limits_are_refused_naming_the_flag() {
    for flag in [
        "--send-rate",
        "--send-burst",
        "--join-rate",
        "--read-burst",
        "--typing-rate",
        "--user-budget-factor",
        "--max-queued-events",
        "--room-quota",
        "--max-rooms-per-socket",
        "--db-pool-size",
        "--max-payload",
        "--auth-hook-timeout-ms",
        "--auth-hook-concurrency",
    ] {
        let (ok, stderr) = start(&[flag, "0"]);
        assert!(!ok, "{flag} 0 was accepted");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

#[test]
fn a_connect_hook_without_its_secret_is_refused() {
    let (ok, said) = start(&["--auth-hook-url", "http://127.0.0.1:9/hook"]);
    assert!(!ok, "started without --auth-hook-secret");
    assert!(said.contains("--auth-hook-secret"), "{said}");
}

#[test]
fn session_settings_that_cannot_work_are_refused() {
    let secret = "0123456789abcdef-token";
    for (args, flag) in [
        (vec!["--token-secret", "short"], "--token-secret"),
        (
            vec!["--token-secret", secret, "--jwt-secret", secret],
            "--jwt-secret",
        ),
        (
            vec!["--token-secret", secret, "--session-notice-secs", "900"],
            "--session-notice-secs",
        ),
        (
            vec!["--cookie-same-site", "none", "--cookie-secure", "false"],
            "--cookie-secure",
        ),
    ] {
        let (ok, said) = start(&args);
        assert!(!ok, "{args:?} was accepted");
        assert!(said.contains(flag), "{args:?}: {said}");
    }
}

#[test]
fn webhooks_without_their_secret_or_with_an_unknown_event_are_refused() {
    let (ok, said) = start(&["--webhook-url", "http://127.0.0.1:9/hooks"]);
    assert!(!ok, "started without --webhook-secret");
    assert!(said.contains("--webhook-secret"), "{said}");
    let (ok, said) = start(&["--webhook-events", "message.created,message.deleted"]);
    assert!(!ok, "started with an unknown event");
    assert!(said.contains("--webhook-events"), "{said}");
    assert!(said.contains("message.deleted"), "{said}");
    for flag in ["--webhook-max-attempts", "--webhook-timeout-ms"] {
        let (ok, said) = start(&[flag, "0"]);
        assert!(!ok, "{flag} 0 was accepted");
        assert!(said.contains(flag), "{flag}: {said}");
    }
}

#[test]
fn a_negative_or_non_numeric_rate_is_refused() {
    let (ok, stderr) = start(&["--send-rate=-3"]);
    assert!(!ok);
    assert!(stderr.contains("--send-rate"), "{stderr}");
    let (ok, stderr) = start(&["--join-burst", "lots"]);
    assert!(!ok);
    assert!(stderr.contains("--join-burst"), "{stderr}");
}

/// Writes a profile into a temp dir; returns the dir (kept alive by the caller) and the file's path.
fn profile_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.toml");
    std::fs::write(&path, text).expect("write profile");
    let path = path.to_str().expect("utf-8 path").to_owned();
    (dir, path)
}

#[test]
fn a_broken_profile_stops_start_up_naming_the_file_and_the_line() {
    let cases = [
        // A key that does not exist, on line 8.
        (
            "[rooms]\ndefault = \"lobby\"\n\n[[on]]\nevent = \"chat message\"\nop = \"send\"\ntext = \"$0\"\nbogus = 1\n",
            ":8",
            "unknown field `bogus`",
        ),
        // An operation that does not exist (line 3).
        (
            "[[on]]\nevent = \"x\"\nop = \"sned\"\n",
            ":3",
            "unknown variant `sned`",
        ),
        // A template naming an unknown variable (the [[emit]] starting on line 6).
        (
            "[rooms]\ndefault = \"lobby\"\n[[on]]\nevent = \"m\"\nop = \"send\"\ntext = \"$0\"\n[[emit]]\non = \"message\"\nevent = \"m\"\nargs = [\"{txt}\"]\n",
            ":7",
            "unknown variable {txt}",
        ),
        // A name taken from the client without saying it is trusted (the rule on line 3).
        (
            "[rooms]\ndefault = \"lobby\"\n[[on]]\nevent = \"m\"\nop = \"send\"\ntext = \"$0.text\"\nname = \"$0.user\"\n",
            ":3",
            "trust_client_names",
        ),
        // A send with nowhere to go.
        (
            "[[on]]\nevent = \"m\"\nop = \"send\"\ntext = \"$0\"\n",
            ":1",
            "has no room",
        ),
    ];
    for (text, line, what) in cases {
        let (_dir, path) = profile_file(text);
        let (ok, stderr) = start(&["--profile", &path]);
        assert!(!ok, "accepted: {text}");
        assert!(
            stderr.contains(&format!("{path}{line}")),
            "{line}: {stderr}"
        );
        assert!(stderr.contains(what), "{what}: {stderr}");
    }
}

#[test]
fn a_profile_in_the_namespaces_file_is_found_next_to_it_and_checked() {
    let (dir, _) = profile_file(
        "[[on]]\nevent = \"m\"\nop = \"ignore\"\n\n[[emit]]\non = \"leave\"\nevent = \"bye\"\nargs = [\"{user.nam}\"]\n",
    );
    let namespaces = dir.path().join("namespaces.toml");
    std::fs::write(
        &namespaces,
        "[[namespace]]\npath = \"/app\"\nprofile = \"app.toml\"\n",
    )
    .expect("write namespaces");
    let (ok, stderr) = start(&["--namespaces", namespaces.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(stderr.contains("app.toml:5"), "{stderr}");
    assert!(stderr.contains("unknown variable {user.nam}"), "{stderr}");
}

#[test]
fn the_shipped_profiles_are_valid() {
    for profile in ["socketio-tutorial", "bdg-chat", "live-ws"] {
        let path = format!("{}/profiles/{profile}.toml", env!("CARGO_MANIFEST_DIR"));
        if let Err(e) = palaver::profile::load(std::path::Path::new(&path)) {
            panic!("{profile}: {e}");
        }
    }
}
