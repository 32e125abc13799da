//! A TCP proxy that can make the service behind it fail on command.
//!
//! Tests point the code under test at the proxy, not at the service, and
//! switch [`Mode`] to simulate an outage: the shared service keeps running
//! for every other test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the proxy treats connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Reset every open connection and every new one, as a crashed or
    /// restarting server does.
    Refuse,
    /// Accept and hold connections but forward nothing, with no FIN or RST:
    /// a network partition, only detectable by timeouts and heartbeats.
    Blackhole,
    /// Forward everything, each chunk after this pause: a slow or
    /// congested service. Nothing is lost or reordered.
    Delay(Duration),
}

/// A running proxy. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(watch::Sender::new(Mode::Pass));
        let task = tokio::spawn(accept_loop(listener, upstream, mode.clone()));
        Ok(Self { addr, mode, task })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the mode; open connections follow at once.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Every open connection follows the mode: this resets them all.
        self.mode.send_replace(Mode::Refuse);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: Arc<watch::Sender<Mode>>) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(connection(client, upstream, mode.subscribe()));
    }
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Refuse => return reset(&client),
        Mode::Blackhole => return hold(client, mode).await,
        Mode::Pass | Mode::Delay(_) => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else { return reset(&client) };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    let (upstream_mode, downstream_mode) = (mode.clone(), mode.clone());
    let forward = async move {
        tokio::join!(
            pump(client_read, server_write, upstream_mode),
            pump(server_read, client_write, downstream_mode)
        )
    };
    let faulted = tokio::select! {
        _ = forward => false,
        () = wait_until_faulty(&mut mode) => true,
    };
    if faulted {
        if *mode.borrow() == Mode::Blackhole {
            // Keep both ends open and silent until the partition heals.
            drop(server);
            return hold(client, mode).await;
        }
        reset(&server);
        reset(&client);
    }
}

/// Copies one direction, pausing before each chunk while the mode is
/// `Delay`; when the source closes, the destination's write side closes.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mode: watch::Receiver<Mode>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = match *mode.borrow() {
            Mode::Delay(delay) => Some(delay),
            _ => None,
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Completes when the mode turns to `Refuse` or `Blackhole` (or the proxy is gone).
async fn wait_until_faulty(mode: &mut watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| matches!(m, Mode::Refuse | Mode::Blackhole)).await;
}

/// Swallows whatever the client sends and never answers, until the mode
/// leaves `Blackhole`; then the connection is reset.
async fn hold(mut client: TcpStream, mut mode: watch::Receiver<Mode>) {
    let mut sink = [0u8; 4096];
    loop {
        tokio::select! {
            read = client.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { return },
            changed = mode.changed() => if changed.is_err() || *mode.borrow() != Mode::Blackhole {
                return reset(&client);
            },
        }
    }
}

/// Closes with RST rather than FIN, as a dead peer's kernel would.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{FaultProxy, Mode};

    /// A server that echoes whatever it reads.
    async fn echo_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    /// Sends `ping` and waits up to `wait` for the echo.
    async fn round_trip(stream: &mut TcpStream, wait: Duration) -> std::io::Result<Option<Vec<u8>>> {
        stream.write_all(b"ping").await?;
        let mut buffer = [0u8; 4];
        match tokio::time::timeout(wait, stream.read_exact(&mut buffer)).await {
            Ok(Ok(_)) => Ok(Some(buffer.to_vec())),
            Ok(Err(err)) => Err(err),
            Err(_) => Ok(None),
        }
    }

    #[tokio::test]
    async fn pass_forwards_refuse_resets_and_blackhole_swallows_silently() {
        let proxy = FaultProxy::start(echo_server().await).await.expect("proxy");
        let wait = Duration::from_millis(300);

        let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut open, wait).await.expect("io"), Some(b"ping".to_vec()));

        proxy.set_mode(Mode::Refuse);
        // The open connection is reset, and so is a new one.
        assert!(!matches!(round_trip(&mut open, wait).await, Ok(Some(_))));
        let mut refused = TcpStream::connect(proxy.addr()).await.expect("the listener still accepts");
        assert!(!matches!(round_trip(&mut refused, wait).await, Ok(Some(_))));

        proxy.set_mode(Mode::Blackhole);
        let mut partitioned = TcpStream::connect(proxy.addr()).await.expect("connect");
        // No answer, and no FIN or RST either: the read just times out.
        assert_eq!(round_trip(&mut partitioned, wait).await.expect("no error while partitioned"), None);

        proxy.set_mode(Mode::Pass);
        let mut healed = TcpStream::connect(proxy.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut healed, wait).await.expect("io"), Some(b"ping".to_vec()));

        // Delay applies to open connections too, and loses nothing.
        proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
        assert_eq!(round_trip(&mut healed, Duration::from_millis(150)).await.expect("io"), None);
        let mut rest = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), healed.read_exact(&mut rest))
            .await
            .expect("the delayed echo arrives")
            .expect("io");
        assert_eq!(&rest, b"ping");
    }
}
