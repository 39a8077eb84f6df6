//! Helpers shared by the integration tests: random trees on disk and hand-built export streams.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use proptest::prelude::*;

/// A file-system tree as NAR can hold it.
#[derive(Debug, Clone)]
pub enum Tree {
    File { executable: bool, contents: Vec<u8> },
    Symlink(String),
    Dir(BTreeMap<String, Tree>),
}

/// Legal but awkward entry names: Git-special ones, Grove's escape prefix, spaces, unicode.
pub fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != ".."),
        1 => Just(".git".to_string()),
        1 => Just(".GIT".to_string()),
        1 => Just(".gitmodules".to_string()),
        1 => Just("git~1".to_string()),
        1 => Just("grove~x".to_string()),
        1 => Just("grove~.git".to_string()),
        1 => Just("with space".to_string()),
        1 => Just("ünïcødé".to_string()),
        1 => Just("back\\slash".to_string()),
        1 => Just("trailing.".to_string()),
        1 => Just("a".repeat(255)),
        1 => Just("a-".to_string()),
        1 => Just("a".to_string()),
        1 => Just("a.b".to_string()),
    ]
}

pub fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(executable, contents)| Tree::File { executable, contents }),
        "[a-z./]{1,20}".prop_map(Tree::Symlink),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop::collection::btree_map(name(), inner, 0..6).prop_map(Tree::Dir)
    })
}

/// Writes `tree` at `path` (which must not exist).
pub fn write_tree(path: &Path, tree: &Tree) {
    match tree {
        Tree::File { executable, contents } => {
            std::fs::write(path, contents).unwrap();
            let mode = if *executable { 0o555 } else { 0o444 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Tree::Symlink(target) => std::os::unix::fs::symlink(target, path).unwrap(),
        Tree::Dir(entries) => {
            std::fs::create_dir(path).unwrap();
            for (n, t) in entries {
                write_tree(&path.join(n), t);
            }
        }
    }
}

/// `nix-store --dump PATH`: the reference serialiser.
pub fn nix_dump(path: &Path) -> Vec<u8> {
    let out = std::process::Command::new("nix-store")
        .arg("--dump")
        .arg(path)
        .output()
        .expect("nix-store is needed for these tests (apt-get install nix-bin)");
    assert!(
        out.status.success(),
        "nix-store --dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn token(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s);
    out.extend_from_slice(&[0u8; 8][..(8 - s.len() % 8) % 8]);
}

/// One path of a `nix-store --export` stream, built by hand (independently of Grove's writer).
pub fn export_item(out: &mut Vec<u8>, nar: &[u8], path: &str, refs: &[&str], deriver: &str) {
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(nar);
    out.extend_from_slice(&0x4558_494eu64.to_le_bytes());
    token(out, path.as_bytes());
    out.extend_from_slice(&(refs.len() as u64).to_le_bytes());
    for r in refs {
        token(out, r.as_bytes());
    }
    token(out, deriver.as_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
}

/// Ends an export stream.
pub fn export_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&0u64.to_le_bytes());
}

/// A NAR of a single regular file.
pub fn file_nar(contents: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut enc = grove::nix::nar::Encoder::new(&mut buf).unwrap();
    enc.file(false, contents.len() as u64, &mut &contents[..]).unwrap();
    buf
}

/// A deterministic pseudo-random byte stream (xorshift), for large incompressible files.
pub fn write_noise(w: &mut impl Write, mut len: u64, seed: u64) {
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 16];
    while len > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = len.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n]).unwrap();
        len -= n as u64;
    }
}

/// Stops what it holds when dropped, pass or fail: a process, or a mount.
pub enum Guard {
    Process(Child),
    Mount(PathBuf),
}

impl Drop for Guard {
    fn drop(&mut self) {
        match self {
            Guard::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Guard::Mount(dir) => {
                let _ = Command::new("fusermount3").arg("-u").arg(&*dir).status();
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&*dir)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// `grove -c CONFIG serve` on a free port, with `env`: its URL.
pub fn serve(config: &Path, env: &[(&str, &str)]) -> (String, Guard) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grove"))
        .arg("-c")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("GROVE_STORE")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = lines
        .find_map(|l| l.ok()?.strip_prefix("substituters = ").map(String::from))
        .expect("grove serve printed its URL");
    // Keep reading: a closed pipe would fail the server's next line.
    std::thread::spawn(move || lines.for_each(drop));
    (url, Guard::Process(child))
}

/// Runs the grove binary on the store at `store` with `args`, feeding it `stdin`.
pub fn grove_on(store: &Path, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_grove"))
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("GROVE_CONFIG")
        .env_remove("GROVE_STORE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.unwrap_or_default().to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}
