//! Static checks of `infra/nginx`: `nginx -t` on the configuration as Compose
//! runs it, rendered the way local runs render it (Compose's `api` host does
//! not resolve here, so its line's address is replaced, parameters kept).

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, bail};

use crate::tools::{self, Tool};

/// NGINX, for `nginx -t` here and for `cargo xtask up`.
pub(crate) const NGINX: Tool = Tool { binary: "nginx", source: tools::Source::Apt("nginx") };

/// `nginx -t` on the rendered configuration.
pub(crate) fn lint_nginx(root: &Path) -> anyhow::Result<()> {
    tools::ensure(&[NGINX])?;
    let nginx = edge_config::binary().context("nginx is not on PATH nor in /usr/sbin")?;
    let prefix = crate::cmd::Scratch::new("nginx")?;
    let replica: SocketAddr = "127.0.0.1:8080".parse()?;
    let listen: SocketAddr = "127.0.0.1:8080".parse()?;
    edge_config::render(
        &root.join("infra/nginx"),
        prefix.path(),
        listen,
        &[edge_config::Upstream::up(replica)],
    )?;
    let mut test = edge_config::command(&nginx, prefix.path(), &["-t", "-q"]);
    eprintln!("$ {}", crate::cmd::describe(&test));
    let output = test.output().context("running nginx -t")?;
    if !output.status.success() {
        bail!("nginx -t failed on infra/nginx/nginx.conf:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    eprintln!("infra/nginx: nginx -t passed");
    Ok(())
}
