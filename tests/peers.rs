//! Peers without Nix: Git replication between real repositories (adoption, conflicts,
//! corruption) and lazy fetching from a real `grove serve` on 127.0.0.1 (negative cache, keys,
//! request loops).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use grove::config::{StoreConfig, UpstreamConfig};
use grove::nix::compression::Compression;
use grove::nix::signing::SecretKey;
use grove::nix::store_path::StoreHash;
use grove::peers::git::GitRemote;
use grove::peers::Peers;
use grove::read::ReadPath;
use grove::store::Store;

const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";
const ABSENT: &str = "cccccccccccccccccccccccccccccccc";

fn hash(p: &str) -> StoreHash {
    grove::nix::store_path::parse_spec(p).unwrap()
}

/// A store holding A (a file) and B (a file referring to A); `deriver` varies A's metadata, so
/// two stores made with different ones hold A as different commits.
fn store_with_a_b(dir: &Path, deriver: &str) -> Store {
    let store = Store::init(dir).unwrap();
    let mut stream = Vec::new();
    export_item(&mut stream, &file_nar(b"contents of a"), A, &[], deriver);
    export_item(&mut stream, &file_nar(b"contents of b"), B, &[A], "");
    export_end(&mut stream);
    let mut importer = store.importer();
    grove::store::export::read(&mut importer, &mut stream.as_slice(), |_| {}).unwrap();
    importer.commit().unwrap();
    store
}

fn commit_of(store: &Store, p: &str) -> Option<git2::Oid> {
    store.get(&hash(p)).unwrap().map(|e| e.commit)
}

#[test]
fn sync_adopts_new_paths_and_keeps_conflicting_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let source = store_with_a_b(&tmp.path().join("source"), "");
    let empty = Store::init(&tmp.path().join("empty")).unwrap();
    let remote = GitRemote::new(tmp.path().join("source").to_str().unwrap(), None, None);
    let adopted = remote.sync(&empty).unwrap();
    assert_eq!(adopted.added.len(), 2);
    assert_eq!(commit_of(&empty, B), commit_of(&source, B));
    // No quarantine refs remain.
    assert_eq!(
        git2::Repository::open_bare(tmp.path().join("empty"))
            .unwrap()
            .references_glob("refs/grove/*")
            .unwrap()
            .count(),
        0
    );
    let again = remote.sync(&empty).unwrap();
    assert!(again.added.is_empty() && again.conflicts.is_empty());

    // A store whose A has other metadata keeps its A and still gets B.
    let other = Store::init(&tmp.path().join("other")).unwrap();
    let mut stream = Vec::new();
    export_item(
        &mut stream,
        &file_nar(b"contents of a"),
        A,
        &[],
        "/nix/store/dddddddddddddddddddddddddddddddd-a.drv",
    );
    export_end(&mut stream);
    let mut importer = other.importer();
    grove::store::export::read(&mut importer, &mut stream.as_slice(), |_| {}).unwrap();
    importer.commit().unwrap();
    let own_a = commit_of(&other, A).unwrap();
    assert_ne!(Some(own_a), commit_of(&source, A));
    let adopted = remote.sync(&other).unwrap();
    assert_eq!(adopted.conflicts.len(), 1, "{adopted:?}");
    assert_eq!(adopted.conflicts[0].0.to_string(), A);
    assert_eq!(commit_of(&other, A), Some(own_a));
    assert_eq!(commit_of(&other, B), commit_of(&source, B));
}

#[test]
fn fetching_beside_the_store_adopts_new_paths_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let source = store_with_a_b(&tmp.path().join("source"), "");
    let remote = GitRemote::new(tmp.path().join("source").to_str().unwrap(), None, None);
    let dir = tmp.path().join("replica");
    let replica = Store::init(&dir).unwrap();
    // A scratch directory of a process that is gone (pid_max is at most 4194304).
    std::fs::create_dir(dir.join("grove-fetch-4194305-0")).unwrap();
    let a = remote.fetch_path(&replica, &hash(A)).unwrap().unwrap();
    assert_eq!(a.added.len(), 1);

    // B with A's commit as the one have: only B comes, and is adopted.
    let have = commit_of(&replica, A).unwrap();
    let adopted = remote.fetch_paths_beside(&replica, &[hash(B)], &[have]).unwrap();
    assert_eq!(adopted.added.len(), 1, "{adopted:?}");
    assert_eq!(adopted.added[0].to_string(), B);
    assert_eq!(commit_of(&replica, B), commit_of(&source, B));

    // Without haves the peer sends the whole closure; what is held is reported present.
    let fresh = Store::init(&tmp.path().join("fresh")).unwrap();
    let adopted = remote.fetch_paths_beside(&fresh, &[hash(B)], &[]).unwrap();
    assert_eq!(adopted.added.len(), 2, "{adopted:?}");
    assert_eq!(commit_of(&fresh, A), commit_of(&source, A));

    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("grove-fetch-"))
        .collect();
    assert!(left.is_empty(), "scratch directories left: {left:?}");
}

#[test]
fn push_creates_missing_refs_only() {
    let tmp = tempfile::tempdir().unwrap();
    let source = store_with_a_b(&tmp.path().join("source"), "");
    let target_dir = tmp.path().join("target");
    let target = store_with_a_b(&target_dir, "/nix/store/dddddddddddddddddddddddddddddddd-a.drv");
    let target_repo = git2::Repository::open_bare(&target_dir).unwrap();
    let mut refs = target_repo.find_reference(&format!("refs/nix/{}", hash(B))).unwrap();
    refs.delete().unwrap();
    let before_a = commit_of(&target, A);
    let closure = source.closure(&[source.get(&hash(B)).unwrap().unwrap()]).unwrap();
    let pushed = GitRemote::new(target_dir.to_str().unwrap(), None, None)
        .push(&source, &closure)
        .unwrap();
    assert_eq!(pushed.added.len(), 1);
    assert_eq!(pushed.conflicts.len(), 1);
    assert_eq!(commit_of(&target, A), before_a);
    assert_eq!(commit_of(&target, B), commit_of(&source, B));
}

#[test]
fn a_lazy_git_fetch_of_a_corrupt_path_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let source = store_with_a_b(&tmp.path().join("source"), "");
    // Rewrite B's commit so that its narinfo claims another NarHash (same parents).
    let repo = git2::Repository::open_bare(tmp.path().join("source")).unwrap();
    let entry = source.get(&hash(B)).unwrap().unwrap();
    let commit = repo.find_commit(entry.commit).unwrap();
    let tree = commit.tree().unwrap();
    let text = std::str::from_utf8(
        repo.find_blob(tree.get_name("narinfo").unwrap().id())
            .unwrap()
            .content(),
    )
    .unwrap()
    .to_string();
    let good_a = source.get(&hash(A)).unwrap().unwrap().info.nar_hash.to_string();
    let nar_hash_line = text.lines().find(|l| l.starts_with("NarHash: ")).unwrap().to_string();
    let forged = text.replace(&nar_hash_line, &format!("NarHash: {good_a}"));
    let blob = repo.blob(forged.as_bytes()).unwrap();
    let mut tb = repo.treebuilder(Some(&tree)).unwrap();
    tb.insert("narinfo", blob, 0o100644).unwrap();
    let new_tree = repo.find_tree(tb.write().unwrap()).unwrap();
    let parents: Vec<git2::Commit> = commit.parents().collect();
    let parent_refs: Vec<&git2::Commit> = parents.iter().collect();
    let sig = commit.author();
    let forged_commit = repo
        .commit(None, &sig, &sig, commit.message().unwrap(), &new_tree, &parent_refs)
        .unwrap();
    repo.reference(&format!("refs/nix/{}", hash(B)), forged_commit, true, "forge")
        .unwrap();

    let empty = Store::init(&tmp.path().join("empty")).unwrap();
    let remote = GitRemote::new(tmp.path().join("source").to_str().unwrap(), None, None);
    let err = remote.fetch_path(&empty, &hash(B)).unwrap_err();
    assert!(err.to_string().contains("NAR hash mismatch"), "{err}");
    assert_eq!(empty.list().unwrap().len(), 0, "nothing, not even A, is adopted");
    assert!(remote.fetch_path(&empty, &hash(ABSENT)).unwrap().is_none());
    // A sync takes A and refuses B.
    let adopted = remote.sync(&empty).unwrap();
    assert_eq!(adopted.added.len(), 1);
    assert_eq!(adopted.rejected.len(), 1);
    assert_eq!(adopted.rejected[0].0.to_string(), B);
}

/// Serves `store` with `grove serve`'s server on a free port in a background thread.
fn serve(store: &Path) -> (String, String) {
    let key: SecretKey = std::fs::read_to_string(store.join("grove.key"))
        .unwrap_or_else(|_| {
            let k = SecretKey::generate("test-1").unwrap().to_string();
            std::fs::write(store.join("grove.key"), &k).unwrap();
            k
        })
        .trim()
        .parse()
        .unwrap();
    let public = key.public().to_string();
    let read = ReadPath::open(store, Some(key), Compression::None).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let options = grove::serve::Options::default();
        grove::serve::run(read, options, "127.0.0.1:0", |addr| tx.send(addr).unwrap()).unwrap();
    });
    (format!("http://{}", rx.recv().unwrap()), public)
}

fn upstream_config(url: &str, key: &str, negative_ttl_s: u64) -> StoreConfig {
    StoreConfig {
        upstreams: vec![UpstreamConfig {
            url: url.to_string(),
            trusted_public_keys: vec![key.to_string()],
            timeout_s: 5,
        }],
        negative_ttl_s,
        ..StoreConfig::default()
    }
}

#[test]
fn read_through_from_an_http_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    store_with_a_b(&tmp.path().join("source"), "");
    let (url, key) = serve(&tmp.path().join("source"));
    let dir = tmp.path().join("local");
    Store::init(&dir).unwrap();
    let peers = Arc::new(Peers::from_config(&dir, &upstream_config(&url, &key, 60)).unwrap());
    let read = ReadPath::open(&dir, None, Compression::None)
        .unwrap()
        .with_peers(peers.clone());
    let b = read.entry(&hash(B)).unwrap().expect("fetched");
    assert_eq!(b.info.path.to_string(), B);
    assert!(read.entry(&hash(A)).unwrap().is_some(), "the closure came along");
    assert_eq!(peers.fetch_count(), 1);
    // Absent paths are asked for once within the negative TTL.
    assert!(read.entry(&hash(ABSENT)).unwrap().is_none());
    assert!(read.entry(&hash(ABSENT)).unwrap().is_none());
    assert_eq!(peers.fetch_count(), 2);
    assert!(!peers.is_loop("someone,else"));

    // Without a negative cache, every miss asks again.
    let dir2 = tmp.path().join("local2");
    Store::init(&dir2).unwrap();
    let peers2 = Peers::from_config(&dir2, &upstream_config(&url, &key, 0)).unwrap();
    assert!(!peers2.fetch(&hash(ABSENT), ""));
    assert!(!peers2.fetch(&hash(ABSENT), ""));
    assert_eq!(peers2.fetch_count(), 2);
    // A request that already passed through this Grove is answered from its store alone.
    let via = format!("other, {}", peers2.id());
    assert!(peers2.is_loop(&via));
    assert!(!peers2.fetch(&hash(B), &via));
    assert_eq!(peers2.fetch_count(), 2);
    assert!(peers2.fetch(&hash(B), "other"));
    assert_eq!(peers2.fetch_count(), 3);
}

#[test]
fn an_upstream_signed_by_another_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    store_with_a_b(&tmp.path().join("source"), "");
    let (url, _) = serve(&tmp.path().join("source"));
    let other = SecretKey::generate("test-1").unwrap().public().to_string();
    let dir = tmp.path().join("local");
    Store::init(&dir).unwrap();
    let peers = Peers::from_config(&dir, &upstream_config(&url, &other, 60)).unwrap();
    assert!(!peers.fetch(&hash(B), ""));
    assert!(Store::open(&dir).unwrap().list().unwrap().is_empty());
}

#[test]
fn upstream_config_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    for (url, keys, why) in [
        ("http://127.0.0.1:1", vec![], "no trusted_public_keys"),
        ("ftp://x", vec!["k-1:AAAA".to_string()], "not http:// or https://"),
        ("http://x", vec!["no-colon".to_string()], "trusted key 'no-colon'"),
    ] {
        let mut config = upstream_config(url, "", 60);
        config.upstreams[0].trusted_public_keys = keys;
        let err = Peers::from_config(dir.path(), &config).err().unwrap().to_string();
        assert!(err.contains(why), "{err}");
    }
}

/// Serves the files below `dir` over plain HTTP/1.1 (404 for anything else), one connection at
/// a time, closing each: a static binary cache, as nginx would serve one.
fn serve_dir(dir: &Path) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line
                .split(' ')
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            let file = (!path.contains("..")).then(|| std::fs::read(dir.join(&path)));
            let response = match file {
                Some(Ok(body)) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&body);
                    r
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    url
}

/// Flips one bit of the byte in the middle of a file (twice restores it).
fn flip_middle_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn one_bad_nar_in_a_closure_stores_nothing_of_it() {
    const T: &str = "/nix/store/dddddddddddddddddddddddddddddddd-top";
    let tmp = tempfile::tempdir().unwrap();
    let source_dir = tmp.path().join("source");
    let store = store_with_a_b(&source_dir, "");
    let mut stream = Vec::new();
    export_item(&mut stream, &file_nar(b"contents of top"), T, &[A, B], "");
    export_end(&mut stream);
    let mut importer = store.importer();
    grove::store::export::read(&mut importer, &mut stream.as_slice(), |_| {}).unwrap();
    importer.commit().unwrap();
    // A static copy of what the source serves, with one byte of B's NAR flipped.
    let (url, key) = serve(&source_dir);
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(cache.join("nar")).unwrap();
    let get = |what: &str| {
        let mut resp = ureq::get(&format!("{url}/{what}")).call().unwrap();
        resp.body_mut().read_to_vec().unwrap()
    };
    std::fs::write(cache.join("nix-cache-info"), get("nix-cache-info")).unwrap();
    let mut b_nar_url = String::new();
    for p in [A, B, T] {
        let h = hash(p);
        let narinfo = String::from_utf8(get(&format!("{h}.narinfo"))).unwrap();
        let nar_url = narinfo
            .lines()
            .find_map(|l| l.strip_prefix("URL: "))
            .unwrap()
            .to_string();
        std::fs::write(cache.join(&nar_url), get(&nar_url)).unwrap();
        if p == B {
            flip_middle_byte(&cache.join(&nar_url));
            b_nar_url = nar_url;
        }
        std::fs::write(cache.join(format!("{h}.narinfo")), narinfo).unwrap();
    }
    let static_url = serve_dir(&cache);

    let dir = tmp.path().join("local");
    Store::init(&dir).unwrap();
    let peers = Peers::from_config(&dir, &upstream_config(&static_url, &key, 0)).unwrap();
    assert!(!peers.fetch(&hash(T), ""), "a closure with a bad NAR is refused");
    assert!(
        Store::open(&dir).unwrap().list().unwrap().is_empty(),
        "not even A is kept"
    );
    // A alone is good, and arrives; with B's NAR repaired the whole closure does.
    assert!(peers.fetch(&hash(A), ""));
    assert_eq!(Store::open(&dir).unwrap().list().unwrap().len(), 1);
    flip_middle_byte(&cache.join(&b_nar_url));
    assert!(peers.fetch(&hash(T), ""));
    assert_eq!(Store::open(&dir).unwrap().list().unwrap().len(), 3);
}
