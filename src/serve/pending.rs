//! Uploaded NARs waiting for their narinfo.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::nix::cache_file::NarFile;
use crate::store::import::NarFileContents;

/// Uploaded NARs whose narinfo never came are forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(3600);

/// NARs uploaded and parsed, waiting for their narinfo.
#[derive(Default)]
pub struct Pending {
    nars: Mutex<HashMap<NarFile, (NarFileContents, Instant)>>,
}

impl Pending {
    /// Whether `file` was uploaded and waits for its narinfo.
    pub fn contains(&self, file: &NarFile) -> bool {
        self.nars.lock().contains_key(file)
    }

    /// Keeps a parsed NAR (and forgets those that waited too long).
    pub fn insert(&self, file: NarFile, nar: NarFileContents) {
        let mut nars = self.nars.lock();
        nars.retain(|_, (_, created)| created.elapsed() < PENDING_TTL);
        nars.insert(file, (nar, Instant::now()));
    }

    /// The parsed NAR uploaded as `file`, if any. It stays for other uploads of the same path
    /// that race this one (each then finds the path present), until it expires.
    pub fn get(&self, file: &NarFile) -> Option<NarFileContents> {
        self.nars.lock().get(file).map(|(nar, _)| *nar)
    }
}
