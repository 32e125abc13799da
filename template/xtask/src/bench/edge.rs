//! `cargo xtask bench --edge`: what the edge costs and how replicas scale
//! behind it. The api (release, authenticated GETs, so the micro-cache is
//! bypassed and every request reaches a replica) and bare axum each run 1,
//! 2 and 3 replicas behind their own NGINX with the `infra/nginx`
//! configuration; wrk loads every target in turn, round after round.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use anyhow::Context;

use super::{Args, Guard, NEVER_LIMITED, api_key, create_item, median, start_api, wait_ready, wrk_with};
use crate::checks::nginx::NGINX;
use crate::http::free_port;
use crate::{cmd, tools};

const MAX_REPLICAS: usize = 3;

/// NGINX in front of `ports`; dropped, it stops, then its prefix goes.
struct Edge {
    port: u16,
    _process: Guard,
    _prefix: cmd::Scratch,
}

fn start_edge(nginx: &std::path::Path, name: &str, ports: &[u16]) -> anyhow::Result<Edge> {
    let port = free_port()?;
    let prefix = cmd::Scratch::new(&format!("bench-edge-{name}"))?;
    let upstreams: Vec<_> =
        ports.iter().map(|p| edge_config::Upstream::up(SocketAddr::from(([127, 0, 0, 1], *p)))).collect();
    edge_config::render(
        &cmd::root().join("infra/nginx"),
        prefix.path(),
        SocketAddr::from(([127, 0, 0, 1], port)),
        &upstreams,
    )?;
    let process = Guard(
        edge_config::foreground(nginx, prefix.path())
            .stdout(Stdio::null())
            .spawn()
            .context("starting nginx")?,
    );
    wait_ready(port, "/healthz")?;
    Ok(Edge { port, _process: process, _prefix: prefix })
}

/// Runs the edge benchmark (the release binaries are built).
pub(super) fn run(args: &Args) -> anyhow::Result<()> {
    tools::ensure(&[NGINX])?;
    let nginx = edge_config::binary().context("nginx is not on PATH nor in /usr/sbin")?;
    let target = cmd::target_dir();
    let api_binary = target.join("release/api");
    let key = api_key(&api_binary, args)?;

    // One runtime thread per replica: three replicas, NGINX's two workers
    // and wrk already share two cores.
    let single = [("TOKIO_WORKER_THREADS", "1"), ("RATE_LIMIT_KEY", NEVER_LIMITED)];
    let apis = (0..MAX_REPLICAS)
        .map(|_| start_api(&api_binary, args, "api replica", &single))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut bare = Vec::new();
    for _ in 0..MAX_REPLICAS {
        let port = free_port()?;
        bare.push((
            port,
            Guard(
                Command::new(target.join("release/baseline"))
                    .env("PORT", port.to_string())
                    .env("TOKIO_WORKER_THREADS", "1")
                    .stdout(Stdio::null())
                    .spawn()
                    .context("starting the baseline")?,
            ),
        ));
        wait_ready(port, "/json")?;
    }
    let id = create_item(apis[0].port, &key)?;

    let mut edges = Vec::new();
    let mut targets = Vec::new();
    for n in 1..=MAX_REPLICAS {
        let api_ports: Vec<u16> = apis[..n].iter().map(|a| a.port).collect();
        let bare_ports: Vec<u16> = bare[..n].iter().map(|(p, _)| *p).collect();
        let api_edge = start_edge(&nginx, &format!("api{n}"), &api_ports)?;
        let bare_edge = start_edge(&nginx, &format!("bare{n}"), &bare_ports)?;
        targets.push((
            format!("api x{n} via NGINX"),
            format!("http://127.0.0.1:{}/v1/items/{id}", api_edge.port),
            true,
        ));
        targets.push((
            format!("bare axum x{n} via NGINX"),
            format!("http://127.0.0.1:{}/v1/baseline", bare_edge.port),
            true,
        ));
        edges.push(api_edge);
        edges.push(bare_edge);
    }
    // Anonymous: the same GET, answered from the micro-cache.
    let cached = format!("http://127.0.0.1:{}/v1/items/{id}", edges[edges.len() - 2].port);
    targets.push(("api x3 via NGINX, anonymous (micro-cache)".to_owned(), cached, false));
    let authorization = [format!("authorization: Bearer {key}")];
    let mut rps: Vec<Vec<f64>> = targets.iter().map(|_| Vec::new()).collect();
    let mut p99: Vec<Vec<f64>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.rounds {
        let mut line = format!("round {round}:");
        for (i, (name, url, authenticated)) in targets.iter().enumerate() {
            let run = wrk_with(url, args, if *authenticated { &authorization } else { &[] })?;
            let _ = write!(line, "  {name} {:.0}", run.requests_per_second);
            rps[i].push(run.requests_per_second);
            p99[i].push(run.p99_ms);
        }
        eprintln!("{line}");
    }
    println!(
        "Through NGINX (infra/nginx): GET /v1/items/{{id}} with an API key (past the micro-cache, \
         Redis-cached item) against GET /v1/baseline (the same body) on bare axum; each replica 1 tokio thread; \
         wrk -t2 -c{} -d{}s, {} rounds alternating, medians",
        args.connections, args.seconds, args.rounds
    );
    let medians: Vec<(f64, f64)> = rps.into_iter().zip(p99).map(|(r, p)| (median(r), median(p))).collect();
    for n in 1..=MAX_REPLICAS {
        let (api, api_p99) = medians[2 * (n - 1)];
        let (bare, bare_p99) = medians[2 * (n - 1) + 1];
        println!(
            "  {n} replica(s): api {api:>8.0} req/s (p99 {api_p99:>6.2} ms, x{:.2} of 1 replica)   \
             bare axum {bare:>8.0} req/s (p99 {bare_p99:>6.2} ms, x{:.2})   api/bare {:.3}",
            api / medians[0].0,
            bare / medians[1].0,
            api / bare
        );
    }
    let (cached, cached_p99) = medians[2 * MAX_REPLICAS];
    println!(
        "  micro-cache: anonymous GET {cached:.0} req/s (p99 {cached_p99:.2} ms), x{:.2} of 3 replicas without it",
        cached / medians[2 * (MAX_REPLICAS - 1)].0
    );
    Ok(())
}
