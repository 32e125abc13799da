//! The real `api` binary as a child process: what the exporter and edge
//! tests run, so they see exactly what a deployment runs.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

/// One `api` process.
pub(crate) struct ApiProcess {
    pub name: String,
    pub addr: SocketAddr,
    env: Vec<(String, String)>,
    child: Child,
}

impl ApiProcess {
    /// Starts the binary on a free port with only `env` (plus its address)
    /// set, and waits until it is ready.
    pub(crate) async fn start(name: impl Into<String>, env: &[(&str, String)]) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a port");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        let name = name.into();
        let child = spawn(&name, addr, &env);
        let process = Self { name, addr, env, child };
        process.wait_ready().await;
        process
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) async fn metrics(&self) -> String {
        client().get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text")
    }

    /// SIGTERM, then how long the process took to exit (it must exit 0).
    pub(crate) async fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        self.signal("TERM");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: still running 30 s after SIGTERM", self.name))
            .expect("exit status");
        assert!(status.success(), "{}: exited with {status}", self.name);
        started.elapsed()
    }

    /// SIGKILL: the process dies mid-request, as on a crash or an OOM kill.
    pub(crate) async fn kill(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait().await;
    }

    /// Starts the binary again on the same port with the same settings.
    pub(crate) async fn restart(&mut self) {
        self.child = spawn(&self.name, self.addr, &self.env);
        self.wait_ready().await;
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running");
        let sent = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }

    async fn wait_ready(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client.get(self.url("/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "{}: the api did not become ready", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn(name: &str, addr: SocketAddr, env: &[(String, String)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command
        .env_clear()
        .env("HOST", addr.ip().to_string())
        .env("PORT", addr.port().to_string())
        .env("SHUTDOWN_DELAY", "0s")
        .env("RUST_LOG", "error")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .kill_on_drop(true);
    // @template if redis
    if !env.iter().any(|(k, _)| k == "REDIS_URL") {
        command.env("REDIS_URL", "");
    }
    // @template endif
    // @template if worker
    if !env.iter().any(|(k, _)| k == "AMQP_URL") {
        command.env("AMQP_URL", "");
    }
    // @template endif
    command.spawn().unwrap_or_else(|err| panic!("{name}: starting the api binary: {err}"))
}

/// A client for talking to processes directly.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("a client")
}
