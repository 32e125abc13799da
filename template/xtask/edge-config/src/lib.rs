//! The edge's configuration for a run on this machine: `infra/nginx/nginx.conf`
//! as it is, next to an `upstream.conf` listing local replicas and a
//! `listen.conf` with a local port. `cargo xtask up`, `cargo xtask lint-infra`
//! and the end-to-end tests all render it here, so they run the file Compose
//! runs. Standard library only, so that xtask builds it in a moment.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of `infra/nginx` that every environment shares.
const SHARED: &[&str] = &["nginx.conf"];

/// One replica in the upstream list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    /// Where the replica listens.
    pub addr: SocketAddr,
    /// Marked `down`: NGINX sends it nothing (a replica being drained).
    pub down: bool,
}

impl Upstream {
    /// A replica in service.
    pub const fn up(addr: SocketAddr) -> Self {
        Self { addr, down: false }
    }
}

/// Writes the configuration into `prefix` (created if missing): the shared
/// files from `source` (`infra/nginx`), the listen port and the replicas.
pub fn render(source: &Path, prefix: &Path, listen: SocketAddr, replicas: &[Upstream]) -> io::Result<()> {
    std::fs::create_dir_all(prefix)?;
    // NGINX started as root runs its workers as `nobody`; they must reach
    // the cache and temp folders it creates here.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(prefix, std::fs::Permissions::from_mode(0o755))?;
    }
    for file in SHARED {
        std::fs::copy(source.join(file), prefix.join(file))?;
    }
    std::fs::write(prefix.join("listen.conf"), format!("listen {listen};\n"))?;
    write_upstreams(source, prefix, replicas)
}

/// Rewrites `upstream.conf` in `prefix`: one line per replica, each with the
/// parameters of the line in `source/upstream.conf` (`max_fails`,
/// `fail_timeout`), so local runs keep Compose's health checking.
pub fn write_upstreams(source: &Path, prefix: &Path, replicas: &[Upstream]) -> io::Result<()> {
    let template = std::fs::read_to_string(source.join("upstream.conf"))?;
    let parameters = server_parameters(&template).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "upstream.conf has no `server ADDRESS ...;` line")
    })?;
    if replicas.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the upstream needs at least one replica"));
    }
    let mut out = String::from("# Written for a local run from upstream.conf; do not edit.\n");
    for replica in replicas {
        let down = if replica.down { " down" } else { "" };
        let _ = writeln!(out, "server {}{parameters}{down};", replica.addr);
    }
    std::fs::write(prefix.join("upstream.conf"), out)
}

/// The parameters after the address on the first `server` line, with a
/// leading space (` max_fails=1 fail_timeout=5s`), or `None`.
fn server_parameters(upstream_conf: &str) -> Option<String> {
    let line = upstream_conf.lines().map(str::trim).find(|l| l.starts_with("server "))?;
    let body = line.strip_prefix("server ")?.trim_end_matches(';');
    let mut words = body.split_whitespace();
    words.next()?;
    Some(words.fold(String::new(), |mut out, word| {
        out.push(' ');
        out.push_str(word);
        out
    }))
}

/// An NGINX size (`65536`, `64k`, `1m`, `1g`), in bytes.
pub fn size_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, factor) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 1024),
        'm' | 'M' => (&text[..text.len() - 1], 1024 * 1024),
        'g' | 'G' => (&text[..text.len() - 1], 1024 * 1024 * 1024),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

/// `client_max_body_size` in an `nginx.conf`, in bytes.
pub fn body_limit(nginx_conf: &str) -> Option<u64> {
    let value = nginx_conf.lines().find_map(|l| l.trim().strip_prefix("client_max_body_size "))?;
    size_bytes(value.trim_end_matches(';'))
}

/// The `nginx` binary: on PATH, or where Debian puts it (`/usr/sbin` is not
/// on a normal user's PATH).
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"));
    on_path.chain([PathBuf::from("/usr/sbin/nginx")]).find(|p| p.is_file())
}

/// `nginx` with `prefix` and its `nginx.conf`, errors to stderr, plus `args`.
pub fn command(nginx: &Path, prefix: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(nginx);
    command.arg("-p").arg(prefix).arg("-c").arg(prefix.join("nginx.conf")).args(["-e", "stderr"]).args(args);
    command
}

/// The command that runs NGINX in the foreground (until SIGQUIT, SIGTERM or
/// SIGINT).
pub fn foreground(nginx: &Path, prefix: &Path) -> Command {
    command(nginx, prefix, &["-g", "daemon off;"])
}

#[cfg(test)]
mod tests {
    use super::{body_limit, server_parameters, size_bytes};

    #[test]
    fn sizes_are_read_as_nginx_reads_them() {
        assert_eq!(size_bytes("64k"), Some(65_536));
        assert_eq!(size_bytes("65536"), Some(65_536));
        assert_eq!(size_bytes("1m"), Some(1_048_576));
        assert_eq!(size_bytes("lots"), None);
        assert_eq!(body_limit("http {\n    client_max_body_size 64k;\n}"), Some(65_536));
        assert_eq!(body_limit("http {}"), None);
    }

    #[test]
    fn the_parameters_of_the_compose_line_are_kept() {
        let conf = "# replicas\nserver api:8080 max_fails=2 fail_timeout=5s;\n";
        assert_eq!(server_parameters(conf).as_deref(), Some(" max_fails=2 fail_timeout=5s"));
        assert_eq!(server_parameters("server api:8080;").as_deref(), Some(""));
        assert_eq!(server_parameters("# nothing"), None);
    }
}
