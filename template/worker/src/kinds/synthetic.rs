//! `synthetic`: costs `work_ms` and fails as its input says (load tests
//! and fault drills).

use std::time::Duration;

use jobs::kinds::Synthetic;
use jobs::kinds::synthetic::{Fail, Input};
use serde_json::{Value, json};

use super::{Context, Job, JobError};

impl Job for Synthetic {
    async fn run(input: Input, ctx: &mut Context<'_>) -> Result<Value, JobError> {
        tokio::time::sleep(Duration::from_millis(input.work_ms)).await;
        match input.fail {
            Fail::Never => Ok(json!({ "worked_ms": input.work_ms })),
            Fail::Transient if ctx.attempt <= i32::try_from(input.failures).unwrap_or(i32::MAX) => {
                Err(JobError::Transient(format!("synthetic transient failure on attempt {}", ctx.attempt)))
            }
            Fail::Transient => Ok(json!({ "worked_ms": input.work_ms, "succeeded_on_attempt": ctx.attempt })),
            Fail::Permanent => Err(JobError::Permanent("synthetic permanent failure".to_owned())),
            Fail::Panic => panic!("synthetic poison job {}", ctx.job_id),
        }
    }
}
