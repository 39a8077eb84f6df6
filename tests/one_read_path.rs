//! One read path for every front end: for the same config, a real `grove serve`, a real FUSE
//! `grove mount` and the CLI answer byte-identical narinfo and NARs, in every
//! `server.compression`; and a mount lookup waiting on a slow peer does not hold up others.
//! Needs /dev/fuse and root (as the suite runs); every process and mount is stopped by a guard.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

fn grove(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grove"));
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env_remove("GROVE_STORE")
        .env_remove("RUST_LOG");
    cmd
}

fn ok(out: Output) -> Vec<u8> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A store at `dir/store` holding A and B (B refers to A), and a config naming it.
fn setup(dir: &Path, extra: &str) -> PathBuf {
    let config = dir.join("grove.yaml");
    std::fs::write(
        &config,
        format!("store:\n  path: {}\n{extra}", dir.join("store").display()),
    )
    .unwrap();
    let mut stream = Vec::new();
    let mut tree = Vec::new();
    let mut enc = grove::nix::nar::Encoder::new(&mut tree).unwrap();
    enc.dir_start().unwrap();
    for (name, body) in [("bin", &b"#!/bin/sh\necho b\n"[..]), ("share", &b"data"[..])] {
        enc.entry_start(name.as_bytes()).unwrap();
        enc.file(name == "bin", body.len() as u64, &mut &body[..]).unwrap();
        enc.entry_end().unwrap();
    }
    enc.dir_end().unwrap();
    export_item(&mut stream, &file_nar(b"contents of a"), A, &[], "");
    export_item(&mut stream, &tree, B, &[A], "");
    export_end(&mut stream);
    ok(grove(&config, &["init"]).output().unwrap());
    let mut import = grove(&config, &["import"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(import.stdin.as_mut().unwrap(), &stream).unwrap();
    drop(import.stdin.take());
    assert!(import.wait().unwrap().success());
    config
}

/// `grove mount --daemon` at `dir`.
fn mount(config: &Path, dir: &Path) -> Guard {
    std::fs::create_dir_all(dir).unwrap();
    ok(grove(config, &["mount", "--daemon", dir.to_str().unwrap()])
        .output()
        .unwrap());
    Guard::Mount(dir.to_path_buf())
}

fn get(url: &str) -> Vec<u8> {
    let mut resp = ureq::get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap()
}

#[test]
fn mount_http_and_cli_answer_the_same_bytes_in_every_compression() {
    for compression in ["none", "zstd", "xz"] {
        let tmp = tempfile::tempdir().unwrap();
        let config = setup(tmp.path(), &format!("server:\n  compression: {compression}\n"));
        let (url, _server) = serve(&config, &[]);
        let dir = tmp.path().join("mnt");
        let _mount = mount(&config, &dir);
        for path in [A, B] {
            let hash = &path["/nix/store/".len()..][..32];
            let http = get(&format!("{url}/{hash}.narinfo"));
            let mounted = std::fs::read(dir.join(format!(".narinfo/{hash}.narinfo"))).unwrap();
            let cli = ok(grove(&config, &["info", path]).output().unwrap());
            let text = String::from_utf8_lossy(&http);
            assert!(text.contains(&format!("Compression: {compression}\n")), "{text}");
            assert_eq!(mounted, http, "{compression}: mount and HTTP narinfo of {path} differ");
            assert_eq!(cli, http, "{compression}: CLI and HTTP narinfo of {path} differ");
            let nar = get(&format!("{url}/nar/{hash}.nar"));
            assert_eq!(std::fs::read(dir.join(format!(".nar/{hash}.nar"))).unwrap(), nar);
            assert_eq!(ok(grove(&config, &["nar", path]).output().unwrap()), nar);
        }
        let listed = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(listed, 4, "two paths and .nar, .narinfo");
    }
}

#[test]
fn a_lookup_waiting_on_a_slow_peer_does_not_hold_up_others() {
    // A peer that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = format!("http://{}", silent.local_addr().unwrap());
    let held: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let key = grove::nix::signing::SecretKey::generate("peer-1").unwrap().public();
    let config = setup(
        tmp.path(),
        &format!("  upstreams:\n    - {{ url: \"{peer}\", trusted_public_keys: [ \"{key}\" ], timeout_s: 6 }}\n"),
    );
    let dir = tmp.path().join("mnt");
    let _mount = mount(&config, &dir);
    let missing = dir.join("cccccccccccccccccccccccccccccccc-c");
    let slow = std::thread::spawn(move || {
        let start = Instant::now();
        let found = missing.exists();
        (found, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let mut body = String::new();
    std::fs::File::open(dir.join("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b/share"))
        .unwrap()
        .read_to_string(&mut body)
        .unwrap();
    let fast = start.elapsed();
    assert_eq!(body, "data");
    let (found, waited) = slow.join().unwrap();
    assert!(!found, "the silent peer cannot have the path");
    assert!(
        waited >= Duration::from_secs(3),
        "the lookup did wait for the peer ({waited:?})"
    );
    assert!(
        fast < Duration::from_secs(2),
        "a present path took {fast:?} while a lookup waited"
    );
    drop(held);
}
