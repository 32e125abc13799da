//! What each job kind does. A kind's name and input are the contract (in
//! the `jobs` crate); its effect lives here, one file per kind.
//!
//! Adding a kind: its contract in `jobs/src/kinds/` (one line in
//! `jobs::kinds::KINDS`), a file here implementing [`Job`], and one line in
//! [`EFFECTS`]. A test holds the two registries to the same kinds.

pub mod items_report;
pub mod synthetic;

use std::future::Future;
use std::pin::Pin;

use jobs::kinds::{ItemsReport, Kind, Synthetic};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// How a job can fail.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth retrying later (an upstream is down, a lock timed out).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (the input is wrong for the current data).
    #[error("{0}")]
    Permanent(String),
    /// The database failed; transient or not depending on the error.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What a job's effect can use.
pub struct Context<'a> {
    /// The effect's transaction: everything written here commits together
    /// with the job's status, or not at all.
    pub tx: &'a mut PgConnection,
    /// The job's id.
    pub job_id: Uuid,
    /// This attempt's number (1-based; redeliveries count).
    pub attempt: i32,
}

/// One job kind's effect. Jobs are idempotent by construction: the effect
/// runs in a transaction that also marks the job finished, and a finished
/// job is never run again.
pub trait Job: Kind {
    /// Does the work and returns the result to store.
    fn run(input: Self::Input, ctx: &mut Context<'_>)
    -> impl Future<Output = Result<Value, JobError>> + Send;
}

/// A kind's effect, as the registry holds it.
type Effect = for<'a, 'c> fn(
    &'a Value,
    &'a mut Context<'c>,
) -> Pin<Box<dyn Future<Output = Result<Value, JobError>> + Send + 'a>>;

/// Every kind's effect, by name: the one list to extend.
const EFFECTS: &[(&str, Effect)] = &[effect::<ItemsReport>(), effect::<Synthetic>()];

const fn effect<K: Job + 'static>() -> (&'static str, Effect)
where
    K::Input: Send,
{
    (K::NAME, boxed::<K>)
}

fn boxed<'a, K: Job + 'static>(
    input: &'a Value,
    ctx: &'a mut Context<'_>,
) -> Pin<Box<dyn Future<Output = Result<Value, JobError>> + Send + 'a>>
where
    K::Input: Send,
{
    Box::pin(execute::<K>(input, ctx))
}

/// Runs the job of kind `kind`.
pub async fn run(kind: &str, input: &Value, ctx: &mut Context<'_>) -> Result<Value, JobError> {
    match EFFECTS.iter().find(|(name, _)| *name == kind) {
        Some((_, effect)) => effect(input, ctx).await,
        None => Err(JobError::Permanent(format!("unknown job kind {kind:?}"))),
    }
}

async fn execute<K: Job>(input: &Value, ctx: &mut Context<'_>) -> Result<Value, JobError>
where
    K::Input: Send,
{
    let input = K::parse(input).map_err(|violations| {
        let details: Vec<String> =
            violations.iter().map(|v| format!("{}: {}", v.pointer, v.detail)).collect();
        JobError::Permanent(format!("invalid input: {}", details.join("; ")))
    })?;
    K::run(input, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_the_api_accepts_has_exactly_one_effect() {
        let effects: Vec<&str> = EFFECTS.iter().map(|(name, _)| *name).collect();
        let accepted: Vec<&str> = jobs::kinds::names().collect();
        assert_eq!(effects, accepted, "worker/src/kinds.rs EFFECTS and jobs::kinds::KINDS differ");
    }
}
