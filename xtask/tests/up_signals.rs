//! `cargo xtask up` stops every process it started on SIGTERM and on
//! SIGHUP, as it does on Ctrl-C: sent to the `xtask up` process alone (a
//! `kill`, a closed terminal, a supervisor), either signal used to end it
//! and leave the replicas, the worker and NGINX running on their ports.
//!
//! Needs what `cargo xtask up` needs: Postgres, Redis, RabbitMQ and nginx
//! (`cargo xtask ci` provides them), and the debug binaries, which the
//! workspace build of `cargo xtask ci` has made.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(300)).is_ok()
}

fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {} s", within.as_secs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `xtask up`, waits until NGINX serves, sends `signal` to the xtask
/// process only, and checks that it exits 0 and every port closes.
fn stops_everything_on(signal: &str) {
    let (public, replica) = (free_port(), free_port());
    // @template if worker
    let worker = free_port();
    let ports = [public, replica, worker];
    // @template endif
    // @template if not worker
    // let ports = [public, replica];
    // @template endif
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    // A database of this run's own, which `xtask up` creates and migrates:
    // one left by another project (another variant's migrations) would make
    // the migrations refuse to run.
    let name = format!("xtask_up_{}_{}", signal.to_lowercase(), std::process::id());
    let database = format!("{}/{name}", base.rsplit_once('/').map_or(base.as_str(), |(b, _)| b));
    let xtask = PathBuf::from(env!("CARGO_BIN_EXE_xtask"));
    let built = xtask.with_file_name("api").exists();
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"));
    let mut command = Command::new(&xtask);
    command
        .args(["up", "--replicas", "1"])
        .args(["--port", &public.to_string(), "--replica-port", &replica.to_string()])
        .env("DATABASE_URL", &database)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // A file, not the harness's pipe: children orphaned by a regression
        // must not keep the test's output open.
        .stderr(std::fs::File::create(&log).expect("the log file"));
    // @template if worker
    command.args(["--worker-port", &worker.to_string()]);
    // @template endif
    if built {
        command.arg("--no-build");
    }
    let mut up = command.spawn().expect("starting xtask up");
    wait("NGINX serving /healthz", Duration::from_mins(5), || {
        assert!(up.try_wait().expect("polling xtask up").is_none(), "xtask up exited during start-up");
        listening(public)
    });
    for &port in &ports {
        assert!(listening(port), "port {port} is not served");
    }
    let sent =
        Command::new("kill").arg(format!("-{signal}")).arg(up.id().to_string()).status().expect("kill");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_mins(1);
    let status = loop {
        if let Some(status) = up.try_wait().expect("polling xtask up") {
            break status;
        }
        if Instant::now() > deadline {
            up.kill().expect("killing xtask up");
            panic!("xtask up was still running 60 s after SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "xtask up exited with {status} after SIG{signal}; its log: {}", log.display());
    // The children are gone, not orphaned: their ports are free again.
    wait("every port free again", Duration::from_secs(10), || ports.iter().all(|p| !listening(*p)));
    // Dropped where a Postgres client is at hand; else it stays, named by run.
    let _ = Command::new("psql")
        .arg(&base)
        .args(["-q", "-c", &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// Both signals in one test: `xtask up` keeps NGINX's prefix in one place
// (target/up/nginx), so two runs must not overlap.
#[test]
fn sigterm_and_sighup_stop_every_child() {
    stops_everything_on("TERM");
    stops_everything_on("HUP");
}
