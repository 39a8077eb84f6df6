//! The one ref transaction: store paths become visible by their `refs/nix/<hash>` refs, created
//! together or not at all. A ref that exists already is never moved.

use crate::nix::store_path::StorePath;

use super::error::StoreError;
use super::repo::{ObjectId, Store, REF_PREFIX};

/// What creating refs did.
#[derive(Debug, Default)]
pub struct RefOutcome {
    /// Paths whose ref was created.
    pub added: Vec<StorePath>,
    /// Paths whose ref existed with the same commit.
    pub present: usize,
    /// Paths whose ref existed with another commit (left as it is): path, existing, offered.
    pub conflicts: Vec<(StorePath, ObjectId, ObjectId)>,
}

impl Store {
    /// Creates `refs/nix/<hash>` for each path and commit, in one transaction.
    pub fn create_refs(&self, refs: &[(StorePath, ObjectId)], message: &str) -> Result<RefOutcome, StoreError> {
        let mut tx = self.repo.transaction()?;
        let mut outcome = RefOutcome::default();
        for (path, oid) in refs {
            let name = format!("{REF_PREFIX}{}", path.hash());
            tx.lock_ref(&name)?;
            match self.repo.refname_to_id(&name) {
                Ok(existing) if existing != *oid => outcome.conflicts.push((path.clone(), existing, *oid)),
                Ok(_) => outcome.present += 1,
                Err(_) => {
                    tx.set_target(&name, *oid, None, message)?;
                    outcome.added.push(path.clone());
                }
            }
        }
        tx.commit()?;
        Ok(outcome)
    }
}
