//! The `grove` binary end to end, without Nix: export streams and file caches built by hand,
//! and every kind of bad input refused with one clear line and no change to the store.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use grove::nix::hash::NarHash;
use grove::nix::narinfo::NarInfo;
use grove::nix::signing::PublicKey;

const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        assert!(env.run(&["init"], None).status.success());
        env
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        self.run_in(&self.store(), args, stdin)
    }

    fn run_in(&self, store: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
        grove_on(store, args, stdin)
    }

    fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "grove {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Every ref and its target: the visible state of the store.
    fn refs(&self) -> Vec<(String, String)> {
        let repo = git2::Repository::open_bare(self.store()).unwrap();
        let mut v: Vec<_> = repo
            .references()
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.name().unwrap().to_string(),
                    r.target().map(|o| o.to_string()).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Runs a command that must fail with one `error:` line containing `want`, changing nothing.
    fn refuses(&self, args: &[&str], stdin: Option<&[u8]>, want: &str) {
        let before = self.refs();
        let out = self.run(args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "grove {args:?} succeeded; wanted '{want}'");
        assert_eq!(err.lines().count(), 1, "grove {args:?}: not one line: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(want),
            "grove {args:?}: wanted '{want}', got: {err}"
        );
        assert_eq!(self.refs(), before, "grove {args:?} changed the store");
    }
}

/// An export stream of A (a directory) and B (a file referring to A).
fn two_paths() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        &dir.path().join("a"),
        &Tree::Dir(
            [
                (
                    "bin".to_string(),
                    Tree::File {
                        executable: true,
                        contents: b"#!/bin/sh\necho hi\n".to_vec(),
                    },
                ),
                ("lib".to_string(), Tree::Dir(Default::default())),
                ("link".to_string(), Tree::Symlink("bin".into())),
            ]
            .into(),
        ),
    );
    let nar_a = nix_dump(&dir.path().join("a"));
    let nar_b = file_nar(A.as_bytes());
    let mut stream = Vec::new();
    export_item(&mut stream, &nar_a, A, &[], "");
    export_item(
        &mut stream,
        &nar_b,
        B,
        &[A, B],
        "/nix/store/dddddddddddddddddddddddddddddddd-b.drv",
    );
    export_end(&mut stream);
    (stream, nar_a, nar_b)
}

#[test]
fn init_creates_a_private_key_once() {
    let env = Env::new();
    let key = env.store().join("grove.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let public = env.ok(&["key", "public"], None);
    let again = env.ok(&["init"], None);
    assert_eq!(public, again, "init must keep the existing key");
    String::from_utf8(public).unwrap().trim().parse::<PublicKey>().unwrap();
}

#[test]
fn import_list_nar_info_export_round_trip() {
    let env = Env::new();
    let (stream, nar_a, nar_b) = two_paths();
    env.ok(&["import", "-"], Some(&stream));
    assert_eq!(
        String::from_utf8(env.ok(&["list"], None)).unwrap(),
        format!("{A}\n{B}\n")
    );
    assert!(env.ok(&["nar", A], None) == nar_a);
    assert!(env.ok(&["nar", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"], None) == nar_b);

    let public: PublicKey = String::from_utf8(env.ok(&["key", "public"], None))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let ni = NarInfo::parse(&String::from_utf8(env.ok(&["info", B], None)).unwrap()).unwrap();
    assert!(ni.info.verify(&[public]), "narinfo signature does not verify");
    assert_eq!(ni.info.nar_hash, NarHash::of(&nar_b));
    assert_eq!(ni.info.nar_size, nar_b.len() as u64);
    assert_eq!(ni.info.references.len(), 2);
    assert_eq!(ni.info.deriver.unwrap().name(), "b.drv");

    // The export stream is deterministic: exporting the closure gives back the input.
    let exported = env.ok(&["export", "--closure", B], None);
    assert!(exported == stream, "export differs from the stream imported");
    let other = env.dir.path().join("other");
    assert!(env.run_in(&other, &["init"], None).status.success());
    assert!(env.run_in(&other, &["import"], Some(&exported)).status.success());
    assert_eq!(env.run_in(&other, &["list"], None).stdout, env.ok(&["list"], None));
    assert!(env.run_in(&other, &["verify"], None).status.success());

    // Importing again adds nothing and changes nothing.
    let before = env.refs();
    env.ok(&["import"], Some(&stream));
    assert_eq!(env.refs(), before);
    env.ok(&["verify"], None);
}

#[test]
fn bad_export_streams_change_nothing() {
    let env = Env::new();
    let (stream, nar_a, _) = two_paths();
    for cut in [1, 8, 100, nar_a.len() / 2, stream.len() - 9, stream.len() - 1] {
        env.refuses(&["import"], Some(&stream[..cut]), "truncated");
    }
    // B without A: a missing reference.
    let mut only_b = Vec::new();
    export_item(&mut only_b, &file_nar(b"x"), B, &[A], "");
    export_end(&mut only_b);
    env.refuses(&["import"], Some(&only_b), "which is not in the store");
    // A good path followed by a bad one: neither is stored.
    for (path, want) in [
        ("/nix/store/cccccccccccccccccccccccccccccccc-a/b", "invalid name"),
        ("/nix/store/cccccccccccccccccccccccccccccccc-..", "invalid name"),
        ("/nix/store/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x", "valid 32-character"),
        ("/tmp/cccccccccccccccccccccccccccccccc-x", "is not in /nix/store"),
    ] {
        let mut s = Vec::new();
        export_item(&mut s, &nar_a, A, &[], "");
        export_item(&mut s, &file_nar(b"x"), path, &[], "");
        export_end(&mut s);
        env.refuses(&["import"], Some(&s), want);
    }
    // Malformed NARs: unsorted entries, a name with '/', '..', wrong magic.
    let dir_nar = |names: &[&[u8]]| {
        let mut buf = Vec::new();
        let mut enc = grove::nix::nar::Encoder::new(&mut buf).unwrap();
        enc.dir_start().unwrap();
        for n in names {
            enc.entry_start(n).unwrap();
            enc.file(false, 0, &mut std::io::empty()).unwrap();
            enc.entry_end().unwrap();
        }
        enc.dir_end().unwrap();
        buf
    };
    let mut wrong_magic = file_nar(b"x");
    wrong_magic[8] = b'X';
    for (nar, want) in [
        (dir_nar(&[b"b", b"a"]), "out of order"),
        (dir_nar(&[b"a", b"a"]), "out of order"),
        (dir_nar(&[b"a/b"]), "invalid entry name"),
        (dir_nar(&[b".."]), "invalid entry name"),
        (dir_nar(&[b"a\0"]), "invalid entry name"),
        (wrong_magic, "malformed NAR"),
    ] {
        let mut s = Vec::new();
        export_item(&mut s, &nar, A, &[], "");
        export_end(&mut s);
        env.refuses(&["import"], Some(&s), want);
    }
    env.refuses(
        &["import"],
        Some(&[2, 0, 0, 0, 0, 0, 0, 0]),
        "not a 'nix-store --export' stream",
    );
    assert!(env.refs().is_empty() || env.refs().iter().all(|(n, _)| !n.starts_with("refs/nix/")));
}

#[test]
fn unknown_paths_keys_and_configs() {
    let env = Env::new();
    env.ok(&["import"], Some(&two_paths().0));
    env.refuses(
        &["nar", "/nix/store/cccccccccccccccccccccccccccccccc-c"],
        None,
        "is not in the store",
    );
    env.refuses(
        &["info", "cccccccccccccccccccccccccccccccc"],
        None,
        "is not in the store",
    );
    env.refuses(&["nar", "not-a-hash"], None, "valid 32-character");
    env.refuses(
        &["export", A, "/nix/store/cccccccccccccccccccccccccccccccc-c"],
        None,
        "is not in the store",
    );
    env.refuses(
        &["import", "/nonexistent/stream"],
        None,
        "cannot open /nonexistent/stream",
    );

    let missing = env.dir.path().join("nowhere");
    let out = env.run_in(&missing, &["list"], None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no Grove store"));
    assert!(!missing.exists(), "a read command must not create a store");

    std::fs::remove_file(env.store().join("grove.key")).unwrap();
    env.refuses(&["info", A], None, "cannot read signing key");
    env.refuses(&["key", "public"], None, "cannot read signing key");
    std::fs::write(env.store().join("grove.key"), "name:notbase64").unwrap();
    env.refuses(&["info", A], None, "bad signing key");

    let cfg = env.dir.path().join("grove.yaml");
    std::fs::write(&cfg, "store:\n  path: /x\n  colour: blue\n").unwrap();
    env.refuses(&["-c", cfg.to_str().unwrap(), "list"], None, "colour");
    env.refuses(&["-c", "/nonexistent.yaml", "list"], None, "cannot read config");
    std::fs::write(&cfg, format!("store:\n  path: {}\n", env.store().display())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_grove"))
        .args(["-c", cfg.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{A}\n{B}\n"),
        "store.path from config"
    );
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "none" => data.to_vec(),
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(data, 3).unwrap(),
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => unreachable!(),
    }
}

/// Writes a file cache holding A and B with NARs compressed as `kind`; `tweak` edits B's narinfo.
fn file_cache(dir: &Path, kind: &str, tweak: impl Fn(&mut NarInfo)) {
    let (_, nar_a, nar_b) = two_paths();
    std::fs::create_dir_all(dir.join("nar")).unwrap();
    for (path, nar, refs) in [(A, &nar_a, vec![]), (B, &nar_b, vec![A, B])] {
        let file = compress(kind, nar);
        let file_hash = NarHash::of(&file);
        let ext = if kind == "none" {
            String::new()
        } else {
            format!(".{}", if kind == "zstd" { "zst" } else { kind })
        };
        let url = format!("nar/{}.nar{ext}", file_hash.to_nix32());
        std::fs::write(dir.join(&url), &file).unwrap();
        let refs = refs
            .iter()
            .map(|r| r.strip_prefix("/nix/store/").unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        let text = format!(
            "StorePath: {path}\nURL: {url}\nCompression: {kind}\nFileHash: {file_hash}\nFileSize: {}\nNarHash: {}\nNarSize: {}\nReferences: {refs}\n",
            file.len(),
            NarHash::of(nar),
            nar.len()
        );
        let mut ni = NarInfo::parse(&text).unwrap();
        if path == B {
            tweak(&mut ni);
        }
        let hash = &path["/nix/store/".len()..][..32];
        std::fs::write(dir.join(format!("{hash}.narinfo")), ni.render()).unwrap();
    }
    std::fs::write(dir.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
}

#[test]
fn file_caches_in_every_compression() {
    for kind in ["none", "xz", "zstd", "bzip2"] {
        let env = Env::new();
        let cache = env.dir.path().join("cache");
        file_cache(&cache, kind, |_| {});
        env.ok(&["import", "--cache", cache.to_str().unwrap()], None);
        assert_eq!(
            String::from_utf8(env.ok(&["list"], None)).unwrap(),
            format!("{A}\n{B}\n"),
            "{kind}"
        );
        assert!(env.ok(&["nar", B], None) == file_nar(A.as_bytes()), "{kind}");
    }
}

#[test]
fn bad_file_caches_change_nothing() {
    let env = Env::new();
    type Tweak = Box<dyn Fn(&mut NarInfo)>;
    let cases: Vec<(&str, Tweak, &str)> = vec![
        (
            "xz",
            Box::new(|n| n.info.nar_hash = NarHash::of(b"other")),
            "NAR hash mismatch",
        ),
        ("none", Box::new(|n| n.info.nar_size += 8), "NAR size mismatch"),
        (
            "zstd",
            Box::new(|n| n.file_hash = Some(NarHash::of(b"other"))),
            "does not match FileHash",
        ),
        (
            "none",
            Box::new(|n| n.url = Some("nar/missing.nar".into())),
            "nar/missing.nar",
        ),
        (
            "none",
            Box::new(|n| n.url = Some("../../etc/passwd".into())),
            "leaves the cache",
        ),
        (
            "none",
            Box::new(|n| n.compression = Some("lz4".into())),
            "unsupported compression 'lz4'",
        ),
        ("xz", Box::new(|n| n.compression = Some("zstd".into())), "B"),
    ];
    for (i, (kind, tweak, want)) in cases.into_iter().enumerate() {
        let cache = env.dir.path().join(format!("cache{i}"));
        file_cache(&cache, kind, tweak);
        let want = if want == "B" { "" } else { want };
        env.refuses(&["import", "--cache", cache.to_str().unwrap()], None, want);
    }
    // A corrupt compressed file.
    let cache = env.dir.path().join("corrupt");
    file_cache(&cache, "xz", |_| {});
    for f in std::fs::read_dir(cache.join("nar")).unwrap() {
        let p = f.unwrap().path();
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    }
    env.refuses(&["import", "--cache", cache.to_str().unwrap()], None, "");
    let bad = env.dir.path().join("badinfo");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("x.narinfo"), "StorePath: nonsense\n").unwrap();
    env.refuses(&["import", "--cache", bad.to_str().unwrap()], None, "x.narinfo");
}
