//! Each rule fails on a Compose document that breaks it, and a document
//! that keeps them all passes. No tools, no network.

use super::*;

const GOOD: &str = r#"
name: demo
x-hardening: &hardening
  read_only: true
  tmpfs: ["/tmp:size=16m"]
  cap_drop: [ALL]
  security_opt: ["no-new-privileges:true"]
  user: "65532:65532"
services:
  postgres:
    image: postgres:17-alpine
    environment:
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it in .env}
    healthcheck:
      test: ["CMD", "pg_isready"]
  migrations:
    <<: *hardening
    image: demo-api
    command: ["migrate"]
    environment:
      DATABASE_URL: postgres://demo:${POSTGRES_PASSWORD:?see .env.example/x@y}@postgres:5432/demo
    depends_on:
      postgres:
        condition: service_healthy
  api:
    <<: *hardening
    build: {context: ., target: api}
    image: demo-api
    environment:
      DATABASE_URL: postgres://demo:${POSTGRES_PASSWORD}@postgres:5432/demo
      RATE_LIMIT_REPLICAS: "3"
      RATE_LIMIT_KEY: 50/1s
      TRUSTED_PROXIES: ${SUBNET:-10.1.0.0/24}
      RUST_LOG: ${RUST_LOG:-info}
      PRICE: $$5
    healthcheck:
      test: ["CMD", "/app/api", "healthcheck"]
    depends_on:
      migrations:
        condition: service_completed_successfully
      postgres:
        condition: service_healthy
    deploy:
      replicas: 3
  worker:
    <<: *hardening
    image: demo-worker
    environment:
      - AMQP_URL=amqp://demo:${AMQP_PASSWORD}@rabbitmq:5672/%2f
    healthcheck:
      test: ["CMD", "/app/worker", "healthcheck"]
    deploy:
      replicas: 2
  nginx:
    <<: *hardening
    image: nginx
    volumes:
      - ./infra/nginx:/etc/nginx/demo:ro
    healthcheck:
      test: ["CMD", "wget", "-q", "http://127.0.0.1:8080/healthz"]
    depends_on:
      api:
        condition: service_healthy
networks:
  default:
    ipam:
      config:
        - subnet: ${SUBNET:-10.1.0.0/24}
"#;

const ENV: &str =
    "# local only\nPOSTGRES_PASSWORD=x\nAMQP_PASSWORD=y\n\nSUBNET=10.1.0.0/24\nexport RUST_LOG=info\n";

fn problems(compose: &str) -> Vec<String> {
    check(compose, ENV).expect("parses")
}

/// Replaces `from` (which must occur) in the good document.
fn with(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "the good document lacks {from:?}");
    GOOD.replacen(from, to, 1)
}

#[track_caller]
fn fails(compose: &str, expected: &[&str]) {
    let problems = problems(compose);
    assert!(
        problems.iter().any(|p| expected.iter().all(|e| p.contains(e))),
        "no problem mentions {expected:?}: {problems:#?}"
    );
}

#[test]
fn a_good_document_passes() {
    assert_eq!(problems(GOOD), Vec::<String>::new());
}

#[test]
fn every_long_running_service_has_a_healthcheck() {
    let compose = with("    healthcheck:\n      test: [\"CMD\", \"/app/worker\", \"healthcheck\"]\n", "");
    fails(&compose, &["worker", "no healthcheck"]);
    let compose = with("test: [\"CMD\", \"pg_isready\"]", "disable: true");
    fails(&compose, &["postgres", "disabled"]);
    let compose = with("test: [\"CMD\", \"pg_isready\"]", "test: [\"NONE\"]");
    fails(&compose, &["postgres", "disabled"]);
}

#[test]
fn only_one_shot_services_may_go_without_a_healthcheck() {
    // migrations has none and passes only because api waits for it to complete.
    let compose = with("condition: service_completed_successfully", "condition: service_started");
    fails(&compose, &["migrations", "no healthcheck"]);
}

#[test]
fn every_dependency_has_a_condition() {
    let compose =
        with("    depends_on:\n      api:\n        condition: service_healthy\n", "    depends_on: [api]\n");
    fails(&compose, &["nginx", "short (list) form"]);
    let compose =
        with("      api:\n        condition: service_healthy\n", "      api:\n        restart: true\n");
    fails(&compose, &["nginx", "needs a condition"]);
    let compose = with(
        "      api:\n        condition: service_healthy\n",
        "      apii:\n        condition: service_healthy\n",
    );
    fails(&compose, &["nginx", "`apii`, which is not a service"]);
}

#[test]
fn no_service_that_always_starts_waits_for_an_optional_one() {
    // postgres behind a profile: the api (no profile) would never start without it.
    let compose =
        with("    image: postgres:17-alpine\n", "    image: postgres:17-alpine\n    profiles: [extra]\n");
    fails(&compose, &["api", "`postgres`, which only starts with a profile"]);
    // An optional service may wait for another optional one, or for the core.
    let compose = with("  nginx:\n", "  nginx:\n    profiles: [edge]\n");
    assert_eq!(problems(&compose), Vec::<String>::new());
}

#[test]
fn the_api_and_the_worker_are_replicated() {
    fails(&with("replicas: 3", "replicas: 2"), &["api", "at least 3"]);
    fails(&with("      replicas: 3\n", ""), &["api", "at least 3"]);
    fails(&with("replicas: 2", "replicas: 1"), &["worker", "at least 2"]);
    fails(&with("RATE_LIMIT_REPLICAS: \"3\"", "RATE_LIMIT_REPLICAS: \"1\""), &["RATE_LIMIT_REPLICAS"]);
}

#[test]
fn the_api_trusts_the_network_subnet_only() {
    let compose = with("TRUSTED_PROXIES: ${SUBNET:-10.1.0.0/24}", "TRUSTED_PROXIES: 0.0.0.0/0");
    fails(&compose, &["TRUSTED_PROXIES"]);
    let compose = with("      TRUSTED_PROXIES: ${SUBNET:-10.1.0.0/24}\n", "");
    fails(&compose, &["TRUSTED_PROXIES"]);
}

#[test]
fn secrets_are_never_literal() {
    let compose =
        with("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it in .env}", "POSTGRES_PASSWORD: hunter2");
    fails(&compose, &["postgres", "POSTGRES_PASSWORD", "literal secret"]);
    // A default is a literal secret too.
    let compose = with("${POSTGRES_PASSWORD:?set it in .env}", "${POSTGRES_PASSWORD:-hunter2}");
    fails(&compose, &["postgres", "literal secret"]);
    let compose = with("postgres://demo:${POSTGRES_PASSWORD}@", "postgres://demo:hunter2@");
    fails(&compose, &["api", "DATABASE_URL", "literal password"]);
    let compose = with("amqp://demo:${AMQP_PASSWORD}@", "amqp://demo:x${AMQP_PASSWORD}@");
    fails(&compose, &["worker", "AMQP_URL", "literal password"]);
    let compose = with("      - AMQP_URL=", "      - API_TOKEN=abc\n      - AMQP_URL=");
    fails(&compose, &["worker", "API_TOKEN"]);
}

#[test]
fn our_services_are_hardened() {
    let compose =
        with("    <<: *hardening\n    build:", "    read_only: false\n    <<: *hardening\n    build:");
    fails(&compose, &["api", "read_only: true"]);
    let compose = with("  user: \"65532:65532\"", "  user: root");
    fails(&compose, &["nginx", "numeric non-root user"]);
    let compose = with("  cap_drop: [ALL]\n", "");
    fails(&compose, &["migrations", "cap_drop"]);
    let compose = with("  security_opt: [\"no-new-privileges:true\"]\n", "");
    fails(&compose, &["worker", "no-new-privileges"]);
    let compose = with("  tmpfs: [\"/tmp:size=16m\"]\n", "");
    fails(&compose, &["api", "tmpfs /tmp"]);
}

#[test]
fn nginx_mounts_its_config_read_only() {
    fails(&with("./infra/nginx:/etc/nginx/demo:ro", "./nginx:/etc/nginx/demo:ro"), &["nginx", "must mount"]);
    fails(
        &with("./infra/nginx:/etc/nginx/demo:ro", "./infra/nginx:/etc/nginx/demo"),
        &["nginx", "read-only"],
    );
    let long = "- {type: bind, source: ./infra/nginx/, target: /etc/nginx/demo, read_only: true}";
    assert_eq!(problems(&with("- ./infra/nginx:/etc/nginx/demo:ro", long)), Vec::<String>::new());
}

#[test]
fn env_example_holds_exactly_the_variables_used() {
    let missing = check(GOOD, &ENV.replace("AMQP_PASSWORD=y\n", "")).expect("parses");
    assert!(missing.iter().any(|p| p.contains("${AMQP_PASSWORD} has no default")), "{missing:#?}");
    let extra = check(GOOD, &format!("{ENV}UNUSED=1\n")).expect("parses");
    assert!(extra.iter().any(|p| p.contains("sets UNUSED")), "{extra:#?}");
    // Variables with a default may be left out.
    let optional = check(GOOD, &ENV.replace("SUBNET=10.1.0.0/24\n", "")).expect("parses");
    assert_eq!(optional, Vec::<String>::new());
}

#[test]
fn interpolations_are_parsed_like_compose_does() {
    let (masked, found) = mask("a$$b ${X:?need / it} $Y ${Z:-${W}} $ end");
    assert_eq!(masked, "a$b \u{1} \u{1} \u{1} $ end");
    let names: Vec<(&str, Kind)> = found.iter().map(|i| (i.name.as_str(), i.kind.clone())).collect();
    assert_eq!(names, [("X", Kind::Required), ("Y", Kind::Required), ("Z", Kind::Defaulted)]);
    assert!(interpolated_only("${A}${B:?x}"));
    assert!(!interpolated_only("${A:-x}"));
    assert!(!interpolated_only("pre${A}"));
    assert!(!interpolated_only("plain"));
    assert_eq!(url_password("redis://:${P:?a/b@c}@redis:6379").as_deref(), Some("${P:?a/b@c}"));
    assert_eq!(url_password("postgres://u@host/db"), None);
    assert_eq!(url_password("http://otel-collector:4318"), None);
    assert!(secret_name("GF_SECURITY_ADMIN_PASSWORD"));
    assert!(secret_name("REDISCLI_AUTH"));
    assert!(!secret_name("REDIS_KEY_PREFIX"));
    assert!(!secret_name("POSTGRES_PASSWORD_FILE"));
    assert!(!secret_name("OTEL_SERVICE_NAME"));
}
