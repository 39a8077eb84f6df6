//! NAR round-trips on random trees: disk → NAR (checked against `nix-store --dump`) → Git →
//! NAR again, byte for byte.

mod common;

use std::collections::BTreeSet;
use std::io::{BufReader, BufWriter, Write};

use common::*;
use grove::nix::nar;
use grove::nix::narinfo::PathInfo;
use grove::nix::store_path::StorePath;
use grove::sources::localnix;
use grove::store::Store;
use proptest::prelude::*;

fn info_for(nar: &[u8], name: &str) -> PathInfo {
    let (_, nar_hash, nar_size) = nar::parse(&mut &nar[..], &mut nar::Discard).unwrap();
    PathInfo {
        path: format!("/nix/store/{}-{name}", "1".repeat(32)).parse().unwrap(),
        nar_hash,
        nar_size,
        references: BTreeSet::new(),
        deriver: None,
        ca: None,
        sigs: vec![],
    }
}

/// Imports `nar` as `info` and synthesises it back from Git.
fn through_git(store: &Store, info: &PathInfo, nar: &[u8]) -> Vec<u8> {
    let mut imp = store.importer();
    assert!(imp.add(info, &mut &nar[..]).unwrap(), "path was present already");
    imp.commit().unwrap();
    let entry = store.get(&info.path.hash()).unwrap().unwrap();
    assert_eq!(store.hash_nar(&entry.root).unwrap(), (info.nar_hash, info.nar_size));
    let mut back = Vec::new();
    store.write_nar(&entry.root, &mut back).unwrap();
    back
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(t in tree()) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        write_tree(&root, &t);
        let mut ours = Vec::new();
        localnix::dump_path(&root, &mut ours).unwrap();
        prop_assert!(ours == nix_dump(&root), "dump_path differs from nix-store --dump");

        let store = Store::init(&dir.path().join("repo")).unwrap();
        let info = info_for(&ours, "t");
        let back = through_git(&store, &info, &ours);
        prop_assert!(back == ours, "NAR from Git differs");

        // Any byte range from the layout equals that slice of the NAR.
        let entry = store.get(&info.path.hash()).unwrap().unwrap();
        let layout = store.nar_layout(&entry.root).unwrap();
        prop_assert_eq!(layout.size(), ours.len() as u64);
        let n = ours.len() as u64;
        for (a, b) in [(0, n), (0, 1), (n - 1, n), (n / 3, n / 2), (7, n - 9), (n / 2, n / 2 + 1)] {
            let mut range = Vec::new();
            store.write_nar_range(&layout, a, b, &mut range).unwrap();
            prop_assert!(range[..] == ours[a as usize..b as usize], "range {}..{} of {}", a, b, n);
        }
    }
}

#[test]
fn deep_nesting_and_empty_things() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut deep = root.clone();
    for i in 0..100 {
        deep = deep.join(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("empty"), b"").unwrap();
    std::fs::create_dir(root.join("emptydir")).unwrap();
    std::os::unix::fs::symlink("d0/../emptydir", root.join("link")).unwrap();
    let nar_bytes = nix_dump(&root);
    let store = Store::init(&dir.path().join("repo")).unwrap();
    let info = info_for(&nar_bytes, "deep");
    let mut imp = store.importer();
    imp.add(&info, &mut &nar_bytes[..]).unwrap();
    imp.commit().unwrap();
    let mut back = Vec::new();
    store
        .write_nar(&store.get(&info.path.hash()).unwrap().unwrap().root, &mut back)
        .unwrap();
    assert!(back == nar_bytes);
}

#[test]
fn single_file_and_symlink_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::init(&dir.path().join("repo")).unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let link = dir.path().join("l");
    std::os::unix::fs::symlink("/nix/store/somewhere", &link).unwrap();
    for (i, p) in [file, link].iter().enumerate() {
        let nar_bytes = nix_dump(p);
        let mut info = info_for(&nar_bytes, "single");
        info.path = format!("/nix/store/{}-single", i.to_string().repeat(32))
            .parse::<StorePath>()
            .unwrap();
        let mut imp = store.importer();
        imp.add(&info, &mut &nar_bytes[..]).unwrap();
        imp.commit().unwrap();
        let mut back = Vec::new();
        store
            .write_nar(&store.get(&info.path.hash()).unwrap().unwrap().root, &mut back)
            .unwrap();
        assert!(back == nar_bytes, "path {i}");
    }
}

/// A 100 MB file streams through the parser into Git and back without mismatch.
#[test]
fn hundred_megabyte_file() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let mut f = BufWriter::new(std::fs::File::create(&big).unwrap());
    write_noise(&mut f, 100_000_000, 42);
    f.flush().unwrap();
    drop(f);
    let (nar_hash, nar_size) = localnix::hash_path(&big).unwrap();
    let store = Store::init(&dir.path().join("repo")).unwrap();
    let info = PathInfo {
        nar_hash,
        nar_size,
        ..info_for(&file_nar(b""), "big")
    };
    let (reader, writer) = std::io::pipe().unwrap();
    let mut imp = store.importer();
    std::thread::scope(|s| {
        let big = &big;
        s.spawn(move || localnix::dump_path(big, BufWriter::new(writer)).unwrap());
        imp.add(&info, &mut BufReader::new(reader)).unwrap();
    });
    imp.commit().unwrap();
    let entry = store.get(&info.path.hash()).unwrap().unwrap();
    assert_eq!(store.hash_nar(&entry.root).unwrap(), (nar_hash, nar_size));
    assert_eq!(nar_size, 100_000_000 + 112);
}
