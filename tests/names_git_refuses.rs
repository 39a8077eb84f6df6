//! Names Git refuses or flags are stored escaped, so `git fsck --strict` stays clean and sync
//! works; names no file system holds are refused; a reference must name a stored path exactly.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

/// Every spelling Git treats as `.git`, `.gitmodules` and friends, on Linux, HFS+ or NTFS.
const FLAGGED: &[&str] = &[
    ".git",
    ".GIT",
    ".git.",
    ".git ",
    ".g\u{200c}it",
    "\u{feff}.git",
    "git~1",
    ".gitmodules",
    ".gitmodul\u{200c}es",
    ".GitModules",
    "gitmod~1",
    "gi7eba~1",
    ".gitattributes",
    ".gitignore",
    ".mailmap",
    "grove~already",
];

fn grove(store: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    grove_on(store, args, stdin)
}

/// A directory NAR with every flagged name three times: as a file, a symlink and a directory.
fn flagged_tree() -> Vec<u8> {
    let mut entries: Vec<(String, u8)> = Vec::new();
    for name in FLAGGED {
        entries.push((name.to_string(), 0));
        entries.push((format!("{name}-link"), 1));
        entries.push((format!("{name}-dir"), 2));
    }
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut nar = Vec::new();
    let mut enc = grove::nix::nar::Encoder::new(&mut nar).unwrap();
    enc.dir_start().unwrap();
    for (name, kind) in &entries {
        enc.entry_start(name.as_bytes()).unwrap();
        match kind {
            0 => enc.file(false, 4, &mut &b"file"[..]).unwrap(),
            1 => enc.symlink(b"target").unwrap(),
            _ => {
                enc.dir_start().unwrap();
                enc.entry_start(FLAGGED[0].as_bytes()).unwrap();
                enc.symlink(b"x").unwrap();
                enc.entry_end().unwrap();
                enc.dir_end().unwrap();
            }
        }
        enc.entry_end().unwrap();
    }
    enc.dir_end().unwrap();
    nar
}

fn fsck_strict(store: &Path) {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(store)
        .args(["fsck", "--strict", "--no-dangling"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "git fsck --strict failed: {text}");
    assert!(
        !text.lines().any(|l| l.starts_with("warning") || l.starts_with("error")),
        "{text}"
    );
}

#[test]
fn names_git_flags_are_escaped_fsck_stays_clean_and_sync_works() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    grove(&store, &["init"], None);
    let nar = flagged_tree();
    let mut stream = Vec::new();
    export_item(&mut stream, &nar, A, &[], "");
    export_end(&mut stream);
    let out = grove(&store, &["import"], Some(&stream));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(grove(&store, &["nar", A], None).stdout, nar, "NAR not byte-identical");
    fsck_strict(&store);
    // Another Grove fetches it with fetch.fsckObjects on.
    let other = tmp.path().join("other");
    grove(&other, &["init"], None);
    let out = grove(&other, &["sync", store.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(grove(&other, &["nar", A], None).stdout, nar);
    fsck_strict(&other);
}

#[test]
fn names_no_file_system_holds_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    grove(&store, &["init"], None);
    for (len, ok) in [(255, true), (256, false), (4096, false)] {
        let name = "n".repeat(len);
        let mut nar = Vec::new();
        let mut enc = grove::nix::nar::Encoder::new(&mut nar).unwrap();
        enc.dir_start().unwrap();
        enc.entry_start(name.as_bytes()).unwrap();
        enc.file(false, 1, &mut &b"x"[..]).unwrap();
        enc.entry_end().unwrap();
        enc.dir_end().unwrap();
        let path = format!(
            "/nix/store/{}-n{len}",
            "c".repeat(32).replacen('c', &(len % 10).to_string(), 1)
        );
        let mut stream = Vec::new();
        export_item(&mut stream, &nar, &path, &[], "");
        export_end(&mut stream);
        let out = grove(&store, &["import"], Some(&stream));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), ok, "{len}: {err}");
        if !ok {
            assert!(err.contains("invalid entry name"), "{err}");
        }
    }
}

#[test]
fn a_reference_must_name_a_stored_path_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    grove(&store, &["init"], None);
    let mut stream = Vec::new();
    export_item(&mut stream, &file_nar(b"a"), A, &[], "");
    export_end(&mut stream);
    assert!(grove(&store, &["import"], Some(&stream)).status.success());
    let before = grove(&store, &["list"], None).stdout;
    // B refers to A's hash under another name.
    let impostor = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-other";
    let mut stream = Vec::new();
    export_item(&mut stream, &file_nar(b"b"), B, &[impostor], "");
    export_end(&mut stream);
    let out = grove(&store, &["import"], Some(&stream));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("by another name"), "{err}");
    // The same hash with another name, as a path of its own.
    let mut stream = Vec::new();
    export_item(&mut stream, &file_nar(b"a"), impostor, &[], "");
    export_end(&mut stream);
    let out = grove(&store, &["import"], Some(&stream));
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(grove(&store, &["list"], None).stdout, before, "nothing changed");
}
