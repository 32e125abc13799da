//! NGINX in front of real replicas, for the end-to-end tests: the edge
//! configuration of `infra/nginx`, rendered as `cargo xtask up` renders it,
//! run as a child process with its JSON access log captured.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncBufReadExt as _;
use tokio::process::Child;
use tokio::time::Instant;

use edge_config as config;

pub use edge_config::Upstream;

/// `infra/nginx` of this workspace.
pub fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/nginx")
}

/// `client_max_body_size` of `infra/nginx/nginx.conf`, in bytes.
pub fn body_limit() -> anyhow::Result<u64> {
    let conf = std::fs::read_to_string(source().join("nginx.conf")).context("reading nginx.conf")?;
    config::body_limit(&conf).context("nginx.conf sets no client_max_body_size")
}

/// A running NGINX edge.
pub struct Edge {
    addr: SocketAddr,
    prefix: PathBuf,
    nginx: PathBuf,
    child: Child,
    log: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Edge {
    /// Renders the configuration for `replicas` into a fresh prefix and
    /// starts NGINX on a free port; returns once it accepts connections.
    pub async fn start(replicas: &[SocketAddr]) -> anyhow::Result<Self> {
        let nginx = config::binary().context(
            "nginx is not installed (on Debian: apt-get install nginx; `cargo xtask ci` installs it as root)",
        )?;
        let prefix = std::env::temp_dir().join(format!("edge-{}", uuid::Uuid::now_v7().simple()));
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::probe::free_port()));
        let upstreams: Vec<Upstream> = replicas.iter().copied().map(Upstream::up).collect();
        config::render(&source(), &prefix, addr, &upstreams).context("rendering the edge configuration")?;
        let mut child = tokio::process::Command::from(config::foreground(&nginx, &prefix))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().context("nginx's stdout")?;
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str(&line) {
                    Ok(entry) => sink.lock().expect("the log").push(entry),
                    Err(err) => panic!("an access log line that is not JSON ({err}): {line}"),
                }
            }
        });
        let edge = Self { addr, prefix, nginx, child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {addr} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(edge)
    }

    /// Where the edge listens.
    pub const fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `path` at the edge.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every access log entry, once NGINX has written those of the
    /// requests answered so far (it logs just after answering): the log has
    /// not grown for 150 ms.
    pub async fn access_log(&self) -> Vec<serde_json::Value> {
        let len = || self.log.lock().expect("the log").len();
        loop {
            let before = len();
            tokio::time::sleep(Duration::from_millis(150)).await;
            if len() == before {
                return self.log.lock().expect("the log").clone();
            }
        }
    }

    /// Replaces the upstream list and reloads, returning once every worker
    /// of the old configuration has finished its requests and exited: from
    /// then on no request can reach a replica that was removed or marked down.
    pub async fn set_upstreams(&self, replicas: &[Upstream]) -> anyhow::Result<()> {
        config::write_upstreams(&source(), &self.prefix, replicas)?;
        let check = config::command(&self.nginx, &self.prefix, &["-t", "-q"]).output()?;
        if !check.status.success() {
            bail!("the new upstream list is invalid: {}", String::from_utf8_lossy(&check.stderr));
        }
        let master = self.child.id().context("nginx has exited")?;
        let old = children(master);
        signal(master, "HUP")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = children(master);
            if !now.is_empty() && now.is_disjoint(&old) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the old nginx workers did not exit within 30 s of the reload");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        // SIGKILL to the master alone would leave its workers serving.
        if let Some(pid) = self.child.id() {
            let _ = signal(pid, "TERM");
            // The prefix goes once NGINX is done with it.
            for _ in 0..100 {
                if self.child.try_wait().is_ok_and(|s| s.is_some()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// The processes whose parent is `master` (Linux `/proc`).
fn children(master: u32) -> HashSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return HashSet::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces, so read after ')'.
            let parent: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            (parent == master).then_some(child)
        })
        .collect()
}
