//! Static checks of `infra/k8s` (filled in by the Kubernetes work).

use std::path::Path;

/// Every static check of the Kubernetes manifests.
pub fn lint_k8s(_root: &Path) -> anyhow::Result<()> {
    Ok(())
}
