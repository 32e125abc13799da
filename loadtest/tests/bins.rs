//! The benchmark's baselines start and answer. `cargo xtask bench --smoke`
//! (run by `cargo xtask ci` after the tests) uses the binaries this test
//! makes cargo build.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn the_bare_axum_baseline_answers_json() {
    let port = testkit::probe::free_port();
    let _baseline = Running(
        Command::new(env!("CARGO_BIN_EXE_baseline"))
            .env("PORT", port.to_string())
            .env_remove("REDIS_URL")
            .stdout(Stdio::null())
            .spawn()
            .expect("the baseline starts"),
    );
    let started = Instant::now();
    let answer = loop {
        if let Some(answer) = get(port, "/json") {
            break answer;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the baseline never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"price_cents\":1999"), "{answer}");
}

#[test]
fn the_raw_insert_loop_reports_a_rate() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let output = Command::new(env!("CARGO_BIN_EXE_pg-insert"))
        .env("DATABASE_URL", url)
        .env("CONNECTIONS", "2")
        .env("SECONDS", "1")
        .output()
        .expect("pg-insert runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rate: f64 = String::from_utf8_lossy(&output.stdout).trim().parse().expect("a rate");
    assert!(rate > 0.0, "rows per second: {rate}");
}

#[test]
fn the_otlp_sink_prints_its_endpoint() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_otlp-sink"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sink starts");
    let stdout = child.stdout.take().expect("its stdout");
    let sink = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("a line");
    assert!(line.trim().starts_with("http://127.0.0.1:"), "{line}");
    drop(sink);
}
