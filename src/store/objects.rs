//! The bytes of Grove's trees and commits, and where new objects go (loose files, or a
//! [`PackSink`] for batches).
//!
//! Trees and commits are formatted here rather than by libgit2's builders, which check that
//! every object they name is already in the repository: a batch's objects may still be on their
//! way into a pack. The bytes are exactly those libgit2 writes (tests compare them), so the same
//! path with the same metadata is the same commit whichever way it was written.

use std::cell::RefCell;

use git2::{ObjectType, Repository};

use super::error::StoreError;
use super::pack::PackSink;
use super::repo::{Kind, ObjectId, Root};

/// Where a writer's new objects go.
pub enum Target<'r> {
    /// Loose objects, one file each, visible at once.
    Loose(&'r Repository),
    /// A pack sink, visible once flushed.
    Pack(&'r Repository, &'r RefCell<PackSink>),
}

impl Target<'_> {
    /// Writes an object; returns its id.
    pub fn write(&self, kind: ObjectType, data: &[u8]) -> Result<ObjectId, StoreError> {
        match self {
            Target::Loose(repo) => Ok(repo.odb()?.write(kind, data)?),
            Target::Pack(repo, sink) => sink.borrow_mut().add(repo, kind, data),
        }
    }

    /// The repository.
    pub fn repo(&self) -> &Repository {
        match self {
            Target::Loose(repo) | Target::Pack(repo, _) => repo,
        }
    }
}

/// Git's mode text for a kind of node.
fn mode(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Directory => b"40000",
        Kind::Regular => b"100644",
        Kind::Executable => b"100755",
        Kind::Symlink => b"120000",
    }
}

/// A tree of `entries` (names already escaped), in Git's order: by name, a directory's name
/// compared as if it ended in `/`.
pub fn tree_bytes(mut entries: Vec<(Vec<u8>, Root)>) -> Vec<u8> {
    let key = |(name, root): &(Vec<u8>, Root)| {
        let mut k = name.clone();
        if root.kind == Kind::Directory {
            k.push(b'/');
        }
        k
    };
    entries.sort_by_cached_key(key);
    let mut out = Vec::with_capacity(entries.len() * 40);
    for (name, root) in entries {
        out.extend_from_slice(mode(root.kind));
        out.push(b' ');
        out.extend_from_slice(&name);
        out.push(0);
        out.extend_from_slice(root.oid.as_bytes());
    }
    out
}

/// A commit as Grove writes every commit: fixed author and committer ("grove", time 1), the
/// given parents in order and `message`.
pub fn commit_bytes(tree: ObjectId, parents: &[ObjectId], message: &str) -> Vec<u8> {
    let mut out = format!("tree {tree}\n");
    for p in parents {
        out.push_str(&format!("parent {p}\n"));
    }
    out.push_str("author grove <grove@localhost> 1 +0000\n");
    out.push_str("committer grove <grove@localhost> 1 +0000\n\n");
    out.push_str(message);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_and_commits_are_libgit2s() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path()).unwrap();
        let blob = repo.blob(b"x").unwrap();
        let sub = repo.treebuilder(None).unwrap().write().unwrap();
        let entries = vec![
            (
                b"a.b".to_vec(),
                Root {
                    kind: Kind::Regular,
                    oid: blob,
                },
            ),
            (
                b"a".to_vec(),
                Root {
                    kind: Kind::Directory,
                    oid: sub,
                },
            ),
            (
                b"a-".to_vec(),
                Root {
                    kind: Kind::Executable,
                    oid: blob,
                },
            ),
            (
                b"l".to_vec(),
                Root {
                    kind: Kind::Symlink,
                    oid: blob,
                },
            ),
        ];
        let mut tb = repo.treebuilder(None).unwrap();
        for (name, root) in &entries {
            tb.insert(name, root.oid, i32::from(root.kind.mode())).unwrap();
        }
        let theirs = tb.write().unwrap();
        let ours = Target::Loose(&repo)
            .write(ObjectType::Tree, &tree_bytes(entries))
            .unwrap();
        assert_eq!(ours, theirs);

        let tree = repo.find_tree(theirs).unwrap();
        let sig = git2::Signature::new("grove", "grove@localhost", &git2::Time::new(1, 0)).unwrap();
        let p1 = repo.commit(None, &sig, &sig, "p1\n", &tree, &[]).unwrap();
        let p2 = repo.commit(None, &sig, &sig, "p2\n", &tree, &[]).unwrap();
        let parents = [repo.find_commit(p1).unwrap(), repo.find_commit(p2).unwrap()];
        let theirs = repo
            .commit(None, &sig, &sig, "/nix/store/x-y\n", &tree, &[&parents[0], &parents[1]])
            .unwrap();
        let bytes = commit_bytes(tree.id(), &[p1, p2], "/nix/store/x-y\n");
        assert_eq!(ObjectId::hash_object(ObjectType::Commit, &bytes).unwrap(), theirs);
    }
}
