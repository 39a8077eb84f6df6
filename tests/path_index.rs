//! The in-memory index of the hashes a store holds: a miss is answered from memory, and a path
//! added by another handle or another process is found at once.

mod common;

use std::path::Path;

use common::*;
use grove::nix::compression::Compression;
use grove::read::ReadPath;
use grove::store::Store;

const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

fn stream_of(path: &str, contents: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    export_item(&mut stream, &file_nar(contents), path, &[], "");
    export_end(&mut stream);
    stream
}

fn import(store: &Store, path: &str) {
    let mut importer = store.importer();
    grove::store::export::read(&mut importer, &mut stream_of(path, path.as_bytes()).as_slice(), |_| {}).unwrap();
    importer.commit().unwrap();
}

fn hash(p: &str) -> grove::nix::store_path::StoreHash {
    grove::nix::store_path::parse_spec(p).unwrap()
}

#[test]
fn a_path_added_by_another_handle_is_seen_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    import(&Store::init(&dir).unwrap(), A);
    let read = ReadPath::open(&dir, None, Compression::None)
        .unwrap()
        .with_index()
        .unwrap();
    assert!(read.may_hold(&hash(A)));
    assert!(!read.may_hold(&hash(B)));
    assert!(read.entry(&hash(B)).unwrap().is_none());
    import(&Store::open(&dir).unwrap(), B);
    assert!(read.may_hold(&hash(B)));
    assert_eq!(read.entry(&hash(B)).unwrap().unwrap().info.path.to_string(), B);
}

#[test]
fn a_ref_made_without_announcing_is_seen_by_the_next_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::init(&dir).unwrap();
    import(&store, A);
    // Copy A's ref to B's name behind Grove's back (as a plain `git fetch` would add a ref).
    let oid = store.get(&hash(A)).unwrap().unwrap().commit;
    let repo = git2::Repository::open_bare(&dir).unwrap();
    repo.reference("refs/nix/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", oid, false, "test")
        .unwrap();
    assert!(store.path_index().unwrap().may_hold(&hash(B)));
}

#[test]
fn serve_finds_a_path_another_process_added() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    import(&Store::init(&dir).unwrap(), A);
    let config = tmp.path().join("grove.yaml");
    std::fs::write(&config, format!("store:\n  path: {}\n", dir.display())).unwrap();
    let (url, _guard) = serve(&config, &[]);
    let get = |p: &str| {
        ureq::get(&format!("{url}/{}.narinfo", &p[11..43]))
            .call()
            .map(|r| r.status().as_u16())
    };
    assert_eq!(get(A).unwrap(), 200);
    assert!(get(B).is_err(), "B is not in the store yet");
    let out = grove_on(&dir, &["import", "-"], Some(&stream_of(B, b"b")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get(B).unwrap(), 200);
    assert!(Path::new(&dir).join(grove::store::index::PATHS_LOG).exists());
}

#[test]
fn the_first_path_of_an_empty_store_is_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    Store::init(&dir).unwrap();
    let read = ReadPath::open(&dir, None, Compression::None)
        .unwrap()
        .with_index()
        .unwrap();
    assert!(!read.may_hold(&hash(A)));
    import(&Store::open(&dir).unwrap(), A);
    assert!(read.may_hold(&hash(A)));
}

#[test]
fn a_repack_while_a_batch_is_staged_keeps_its_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::init(&dir).unwrap();
    import(&store, A);
    // A batch whose objects are packed but whose ref does not exist yet...
    let mut batch = store.batch_importer();
    let contents = batch
        .write_contents(&mut file_nar(b"staged while repacking").as_slice())
        .unwrap();
    batch.flush().unwrap();
    // ...survives a full repack, which drops nothing unreachable (it turns it loose).
    store.repack(true).unwrap();
    let info = grove::nix::narinfo::PathInfo {
        path: B.parse().unwrap(),
        nar_hash: contents.nar_hash,
        nar_size: contents.nar_size,
        references: Default::default(),
        deriver: None,
        ca: None,
        sigs: Vec::new(),
    };
    batch.stage(&info, contents).unwrap();
    batch.commit().unwrap();
    let out = grove_on(&dir, &["verify"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(store.object_counts().unwrap().packs, 2);
}
