//! Reading Grove's commits and trees from their raw bytes, past libgit2's parsers and its
//! object cache: listing every path reads each commit and tree once, and through the cache
//! that kept hundreds of megabytes at 100,000 paths.

use git2::Oid;

/// The tree and the message of a commit, from its raw bytes (which start with its tree).
pub fn commit_tree_and_message(bytes: &[u8]) -> Option<(Oid, &[u8])> {
    let hex = bytes.strip_prefix(b"tree ")?.get(..40)?;
    let tree = Oid::from_str(std::str::from_utf8(hex).ok()?).ok()?;
    let body = bytes.windows(2).position(|w| w == b"\n\n")? + 2;
    Some((tree, &bytes[body..]))
}

/// The mode and object of the entry `name` of a tree, from the tree's raw bytes (entries of
/// `<octal mode> <name>\0<20-byte id>`).
pub fn tree_entry(bytes: &[u8], name: &[u8]) -> Option<(i32, Oid)> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let nul = space + rest[space..].iter().position(|&b| b == 0)?;
        let id = rest.get(nul + 1..nul + 21)?;
        if &rest[space + 1..nul] == name {
            let mode = i32::from_str_radix(std::str::from_utf8(&rest[..space]).ok()?, 8).ok()?;
            return Some((mode, Oid::from_bytes(id).ok()?));
        }
        rest = &rest[nul + 21..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::Repository;

    #[test]
    fn libgit2s_commits_and_trees_parse() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path()).unwrap();
        let blob = repo.blob(b"x").unwrap();
        let sub = repo.treebuilder(None).unwrap().write().unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("out", sub, 0o040000).unwrap();
        tb.insert("narinfo", blob, 0o100644).unwrap();
        tb.insert("run", blob, 0o100755).unwrap();
        tb.insert("link", blob, 0o120000).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let sig = git2::Signature::new("grove", "grove@localhost", &git2::Time::new(1, 0)).unwrap();
        let parent = repo.commit(None, &sig, &sig, "p\n", &tree, &[]).unwrap();
        let parent = repo.find_commit(parent).unwrap();
        let commit = repo
            .commit(None, &sig, &sig, "/nix/store/x-y\nmore\n", &tree, &[&parent])
            .unwrap();

        let odb = repo.odb().unwrap();
        let raw = odb.read(commit).unwrap().data().to_vec();
        assert_eq!(
            commit_tree_and_message(&raw),
            Some((tree.id(), &b"/nix/store/x-y\nmore\n"[..]))
        );
        let raw_tree = odb.read(tree.id()).unwrap().data().to_vec();
        for entry in tree.iter() {
            assert_eq!(
                tree_entry(&raw_tree, entry.name_bytes()),
                Some((entry.filemode(), entry.id()))
            );
        }
        assert_eq!(tree_entry(&raw_tree, b"absent"), None);
        // Cut anywhere: an answer or none, never a panic.
        for cut in 0..raw_tree.len() {
            let _ = tree_entry(&raw_tree[..cut], b"run");
        }
        for cut in 0..raw.len() {
            let _ = commit_tree_and_message(&raw[..cut]);
        }
    }
}
