//! The drain state of one service instance. Shutdown flips it first, before
//! anything stops, so readiness answers 503 and load balancers (NGINX,
//! Kubernetes endpoints) stop routing here while in-flight work finishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the instance is draining; cheap to clone, shared by the readiness
/// handler and the code that drains.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    draining: Arc<AtomicBool>,
}

impl Lifecycle {
    /// Readiness answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
