//! `promtool check metrics` over a scrape: Prometheus's own parser and
//! linter, so `/metrics` is proven readable by the real thing.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Panics with promtool's findings unless `exposition` passes
/// `promtool check metrics`. `cargo xtask ci` installs promtool (Debian's
/// `prometheus` package); without it this fails and says so.
pub fn check_metrics(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run promtool ({err}): install Debian's `prometheus` package, or run `cargo xtask ci`"
            )
        });
    child.stdin.take().expect("piped").write_all(exposition.as_bytes()).expect("feeding promtool");
    let output = child.wait_with_output().expect("promtool finishes");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- the scrape ---\n{exposition}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
