//! The `healthcheck` subcommand: `api healthcheck` and `worker healthcheck`
//! ask their own process's `GET /healthz` over loopback, so a distroless
//! image (no shell, no curl) can still declare a `HEALTHCHECK`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long the whole probe may take; Docker's default check timeout is 30 s.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `Ok` when `GET /healthz` on `127.0.0.1:port` answers 200 within
/// [`PROBE_TIMEOUT`]; otherwise what went wrong.
pub fn probe(port: u16) -> Result<(), String> {
    probe_at(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The healthcheck subcommand's outcome: exit 0 when healthy, else 1 with
/// one line on stderr (nothing on stdout).
pub fn check(port: u16) -> std::process::ExitCode {
    match probe(port) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("unhealthy: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn probe_at(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
        .map_err(|err| format!("cannot connect to {addr}: {err}"))?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|err| format!("{addr}: {err}"))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|err| format!("{addr}: sending the request: {err}"))?;
    // The status line is all that matters; a healthy answer is tiny.
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(err) => return Err(format!("{addr}: reading the answer: {err}")),
        }
    }
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status_line.starts_with("HTTP/1.") && status == "200" {
        Ok(())
    } else {
        Err(format!("{addr}/healthz answered {:?}", status_line.lines().next().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;
    use std::time::Instant;

    use super::{PROBE_TIMEOUT, probe_at};

    /// A one-shot server that answers `reply` (or nothing, if `None`).
    fn server(reply: Option<&'static str>) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let addr = listener.local_addr().expect("an address");
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("a connection");
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request);
            match reply {
                Some(reply) => {
                    let _ = stream.write_all(reply.as_bytes());
                }
                None => std::thread::sleep(PROBE_TIMEOUT * 2),
            }
        });
        addr
    }

    #[test]
    fn only_a_200_is_healthy() {
        assert_eq!(probe_at(server(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"))), Ok(()));
        let unhealthy = probe_at(server(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n")));
        assert!(unhealthy.is_err_and(|e| e.contains("503")));
        assert!(probe_at(server(Some("SSH-2.0-OpenSSH\r\n"))).is_err());
        assert!(probe_at(server(Some(""))).is_err());
    }

    #[test]
    fn nothing_listening_or_a_silent_server_fails_within_the_timeout() {
        let closed = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port");
        assert!(probe_at(closed).is_err_and(|e| e.contains("cannot connect")));
        let started = Instant::now();
        assert!(probe_at(server(None)).is_err());
        assert!(started.elapsed() < PROBE_TIMEOUT + PROBE_TIMEOUT / 2);
    }
}
