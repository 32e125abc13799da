//! A RabbitMQ node of the test's own, on free ports and with its own data
//! directory, that the test may kill and restart: outage tests never touch
//! the shared node (`rabbit@localhost` on port 5672).
//!
//! The node is a second, independent RabbitMQ on the same machine. Its
//! environment is built from scratch so nothing of the shared node's setup
//! leaks in: its own node name, cookie (`HOME`), `rabbitmq.conf`,
//! `rabbitmq-env.conf`, plugin list (none), database and log directories. It
//! only shares `epmd`, the Erlang name registry, where it registers under its
//! own name; it never connects to the shared node.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a boot may take; a cold first boot takes about 10 s.
const START_TIMEOUT: Duration = Duration::from_mins(1);
/// How long a graceful stop may take before the node is killed instead.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the node's processes, port and name may take to vanish.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);
/// The line the node logs once it is fully booted (listeners up, queues recovered).
const BOOTED: &str = "Server startup complete";
/// The real start script, which runs the node in the foreground as the
/// caller. `/usr/sbin/rabbitmq-server` on Debian is a wrapper that `su`s to
/// the `rabbitmq` user, and is used only when this one is missing.
const SERVER_SCRIPT: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
/// Where `epmd` listens.
const EPMD_PORT: u16 = 4369;

/// A running RabbitMQ node. Dropping it kills the node and deletes its
/// directory (kept, and its path printed, when the test is panicking).
///
/// The node's start script is a child in the test's own process group, so
/// Ctrl-C, or a test runner's timeout, which signal the whole group, stop
/// the node too even when `Drop` never runs.
#[derive(Debug)]
pub struct RabbitServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RabbitServer {
    /// Starts a RabbitMQ node (the `rabbitmq-server` package must be
    /// installed) on a free loopback port, with a fresh data directory, and
    /// waits until it has fully booted and speaks AMQP.
    pub async fn start() -> anyhow::Result<Self> {
        let port = node_port()?;
        let dir = std::env::temp_dir().join(format!("testkit-rabbitmq-{port}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing the stale {}", dir.display()))?;
        }
        fs::create_dir_all(dir.join("home")).with_context(|| format!("creating {}", dir.display()))?;
        let mut server = Self { port, dir, child: None };
        server.write_config()?;
        server.spawn().await?;
        Ok(server)
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f` (the default vhost).
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// The AMQP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the node (SIGKILL to every one of its processes: no goodbye to
    /// clients, nothing flushed) and waits until its processes are gone, its
    /// port is closed and `epmd` has forgotten its name. What it had written
    /// to disk stays, as after a real crash: durable queues and the messages
    /// it confirmed come back with [`restart`](Self::restart).
    ///
    /// One thing is waited for first, up to 3 s: Ra's registry of quorum
    /// queue members (`names.dets`) reaching disk. RabbitMQ 3.10 (Ra 2.2)
    /// writes it lazily, about a second after a quorum queue is declared,
    /// and a queue whose member is missing from it comes back without a
    /// leader, for good, its messages out of reach.
    pub async fn kill(&mut self) {
        if self.child.is_none() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.ra_names_saved() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pids = self.kill_processes();
        self.wait_gone(&pids, GONE_TIMEOUT).await;
    }

    /// Stops the node gracefully (SIGTERM, as `docker stop` would), and
    /// waits until it is gone. Kills it if it takes longer than 30 s.
    pub async fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        let pids = descendants(child.id());
        signal("TERM", &[child.id()]);
        if !self.wait_gone(&pids, STOP_TIMEOUT).await {
            signal("KILL", &pids);
            self.kill().await;
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// Starts it again, on the same port and with the same data, and waits
    /// until it is ready. Kills it first if it is still running.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.spawn().await
    }

    fn nodename(&self) -> String {
        format!("test-{}@localhost", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("rabbitmq.log")
    }

    /// `rabbitmq.conf`, an empty `rabbitmq-env.conf` (so the shared node's,
    /// which names the node `rabbit@localhost`, is not read) and an empty
    /// plugin list (the management plugin would open more ports).
    fn write_config(&self) -> anyhow::Result<()> {
        let config = format!(
            "listeners.tcp.1 = 127.0.0.1:{port}\n\
             log.console = true\n\
             log.console.level = info\n\
             log.console.use_colors = off\n\
             log.file = false\n",
            port = self.port
        );
        let write = |name: &str, contents: &str| {
            let path = self.dir.join(name);
            fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
        };
        write("rabbitmq.conf", &config)?;
        write("rabbitmq-env.conf", "")?;
        write("enabled_plugins", "[].\n")
    }

    /// The node's whole environment. Nothing is inherited but `PATH`, so no
    /// `RABBITMQ_*` or `ERL_*` variable of the caller's reaches it.
    fn env(&self, dist_port: u16) -> Vec<(&'static str, String)> {
        let dir = |name: &str| self.dir.join(name).display().to_string();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned());
        vec![
            ("PATH", path),
            ("LANG", "C.UTF-8".to_owned()),
            // Its own Erlang cookie, created at first boot in $HOME.
            ("HOME", dir("home")),
            ("RABBITMQ_NODENAME", self.nodename()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".to_owned()),
            ("RABBITMQ_NODE_PORT", self.port.to_string()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_CONF_ENV_FILE", dir("rabbitmq-env.conf")),
            ("RABBITMQ_CONFIG_FILE", dir("rabbitmq.conf")),
            ("RABBITMQ_CONFIG_FILES", dir("conf.d")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", dir("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", dir("enabled_plugins")),
            ("RABBITMQ_MNESIA_BASE", dir("mnesia")),
            ("RABBITMQ_LOG_BASE", dir("log")),
            ("RABBITMQ_PID_FILE", dir("rabbitmq.pid")),
            // Distribution on loopback only, like the shared node; and should
            // this node be the one to start epmd, on loopback too.
            ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}".to_owned()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".to_owned()),
        ]
    }

    /// Starts the node in the foreground, its output appended to
    /// `rabbitmq.log`, and waits until it has booted and answers the AMQP
    /// protocol header.
    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let offset = log.metadata()?.len();
        let script = if Path::new(SERVER_SCRIPT).exists() { SERVER_SCRIPT } else { "rabbitmq-server" };
        // The distribution port need not survive a restart: a fresh one each
        // time, so that losing the old one cannot stop the node from booting.
        let dist_port = node_port()?;
        let child = Command::new(script)
            .env_clear()
            .envs(self.env(dist_port))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rabbitmq-server (install it: apt-get install rabbitmq-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let exited = self.child.as_mut().map(Child::try_wait).transpose()?.flatten();
            if let Some(status) = exited {
                self.child = None;
                bail!(
                    "RabbitMQ node {} exited ({status}) before it was ready; {}",
                    self.nodename(),
                    log_tail(&log_path, offset)
                );
            }
            if log_since(&log_path, offset).contains(BOOTED) && amqp_ready(self.port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill().await;
                bail!(
                    "RabbitMQ node {} was not ready on port {} within {} s; {}",
                    self.nodename(),
                    self.port,
                    START_TIMEOUT.as_secs(),
                    log_tail(&log_path, offset)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs the node: `beam.smp` and every other process descending
    /// from the start script, found in `/proc` (`erl_child_setup` and the
    /// port programs it forks run in sessions of their own: no process
    /// group holds them all). They are stopped first so that nothing forks
    /// unseen while they are listed. The script is spared so that it reaps
    /// `beam.smp` (an init that does not reap would keep a defunct
    /// `beam.smp` around), then reaped in turn. Returns the pids killed.
    fn kill_processes(&mut self) -> Vec<u32> {
        let Some(mut child) = self.child.take() else { return Vec::new() };
        let script = child.id();
        let mut pids = descendants(script);
        signal("STOP", &pids);
        for pid in descendants(script) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        signal("STOP", &pids);
        pids.retain(|&pid| pid != script);
        signal("KILL", &pids);
        signal("CONT", &[script]);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        pids
    }

    /// Whether Ra's `names.dets` files (one per Ra system: quorum queues,
    /// stream coordination) are saved: DETS sets the 32-bit word at offset
    /// 8 of the file to 1 when it has written everything, to 0 when a change
    /// is pending.
    fn ra_names_saved(&self) -> bool {
        let node = self.nodename();
        ["quorum", "coordination"].iter().all(|system| {
            let path = self.dir.join("mnesia").join(&node).join(system).join(&node).join("names.dets");
            let mut word = [0u8; 4];
            let read = File::open(path).and_then(|mut file| {
                file.seek(SeekFrom::Start(8))?;
                file.read_exact(&mut word)
            });
            read.is_err() || word == [0, 0, 0, 1]
        })
    }

    /// Waits until `pids` are gone, the AMQP port is closed and epmd no
    /// longer knows the node's name (so a restart can take it again).
    async fn wait_gone(&mut self, pids: &[u32], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                // Reaps the start script once it exits after a stop.
                let _ = child.try_wait();
            }
            if !pids.iter().any(|&pid| alive(pid))
                && TcpStream::connect(("127.0.0.1", self.port)).await.is_err()
                && !epmd_knows(&self.nodename()).await
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        let pids = self.kill_processes();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pids.iter().any(|&pid| alive(pid)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if std::thread::panicking() {
            eprintln!("keeping the RabbitMQ node's directory for a look: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// A free loopback port below the kernel's ephemeral range, never handed out
/// twice by one process. Below that range because the port must still be
/// free when the node comes back: there, no other test's `bind(0)` takes it
/// meanwhile, and no client reconnecting to the dead node connects to itself
/// (its source port comes from the ephemeral range and could be this port).
fn node_port() -> anyhow::Result<u16> {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    // Ports other services on a developer machine expect to be theirs.
    const KNOWN: [u16; 6] = [4369, 5671, 5672, 15672, 15692, 25672];
    const LOWEST: u16 = 10_000;
    let ephemeral = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    if ephemeral > LOWEST + 1000 {
        let span = ephemeral - LOWEST;
        let seed = RandomState::new().hash_one((std::process::id(), SystemTime::now(), given.len()));
        for step in 0..span {
            let offset = u16::try_from(seed.wrapping_add(u64::from(step)) % u64::from(span))?;
            let port = LOWEST + offset;
            if KNOWN.contains(&port) || given.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return Ok(port);
            }
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    given.push(port);
    Ok(port)
}

/// Sends `kill -s <signal>` to `pids`, some of which may be gone already.
fn signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-s", signal, "--"])
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `root` and every process descending from it, from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(ppid) = stat(pid).and_then(|(_, ppid)| ppid.parse().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = vec![root];
    let mut seen = HashSet::from([root]);
    let mut next = 0;
    while let Some(&pid) = found.get(next) {
        next += 1;
        for &child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child) {
                found.push(child);
            }
        }
    }
    found
}

/// The state letter and parent pid of `pid`, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, String)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...", where comm may hold spaces and parentheses.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.next()?.to_owned()))
}

/// Whether `pid` still runs (a zombie has stopped running).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X'))
}

/// Whether epmd has a node of this name (`name@host`) registered.
async fn epmd_knows(nodename: &str) -> bool {
    let name = nodename.split('@').next().unwrap_or(nodename);
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", EPMD_PORT)).await?;
        // NAMES_REQ: a 2-byte length, then 110. The answer: epmd's port (4
        // bytes), then a line "name <name> at port <port>" per node.
        stream.write_all(&[0, 1, 110]).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let names = String::from_utf8_lossy(answer.get(4..).unwrap_or_default()).into_owned();
        std::io::Result::Ok(names.lines().any(|line| line.starts_with(&format!("name {name} at port "))))
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Ok(true)))
}

/// Whether an AMQP 0-9-1 server answers on `port`: after the protocol
/// header it must send `connection.start` (a method frame on channel 0,
/// class 10, method 10). A port that merely accepts TCP is not enough.
async fn amqp_ready(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await?;
        // type (1), channel (2), payload size (4), class id (2), method id (2)
        let mut frame = [0u8; 11];
        stream.read_exact(&mut frame).await?;
        std::io::Result::Ok(frame[0] == 1 && frame[1..3] == [0, 0] && frame[7..11] == [0, 10, 0, 10])
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Ok(true)))
}

/// What the node has logged since `offset`.
fn log_since(path: &Path, offset: u64) -> String {
    let log = fs::read(path).unwrap_or_default();
    let from = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
    String::from_utf8_lossy(&log[from..]).into_owned()
}

/// The last lines the node has logged since `offset`, for an error message.
fn log_tail(path: &Path, offset: u64) -> String {
    let log = log_since(path, offset);
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    format!("the end of its log ({}):\n{tail}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn it_can_be_killed_and_restarted_on_the_same_port() {
        let mut server = RabbitServer::start().await.expect("a RabbitMQ node starts");
        let port = server.port();
        assert!(amqp_ready(port).await, "the node speaks AMQP once started");
        server.kill().await;
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "the port is closed once killed");
        server.restart().await.expect("the node restarts");
        assert_eq!(server.port(), port);
        assert!(amqp_ready(port).await, "the node speaks AMQP again once restarted");
    }
}
