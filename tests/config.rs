//! Start-up refuses invalid configuration with a message naming the flag, before touching any database.

use std::process::Command;

fn start(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_palaver"))
        .args(args)
        .env("DATABASE_URL", "sqlite::memory:")
        .env("PALAVER_LISTEN", "127.0.0.1:0")
        .output()
        .expect("run palaver");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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
    ] {
        let (ok, stderr) = start(&[flag, "0"]);
        assert!(!ok, "{flag} 0 was accepted");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
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
