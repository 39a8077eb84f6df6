//! Writes are closure-safe and recoverable: `kill -9` at any moment of an import or a sync
//! leaves only paths whose references are there, the retry completes, a lock left by a dead
//! writer blocks nobody, quarantine refs of a killed fetch are cleaned by the next one, and a
//! batch holds no file per path (5,000 paths under `ulimit -n 256`).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use grove::store::Store;

/// Paths of the chain the kill tests write: fewer than a packed batch, so their refs are
/// created one by one and a kill can land between two.
const CHAIN: usize = 900;

/// Paths of a batch added to `packed-refs` at once.
const BIG_CHAIN: usize = 5000;
const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// The store path of link `i` of the chain: a valid hash part made from `i`.
fn link(i: usize) -> String {
    let mut hash = String::new();
    let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
    for _ in 0..32 {
        hash.push(NIX32[(x % 32) as usize] as char);
        x = x.rotate_left(5) ^ (x >> 3).wrapping_add(i as u64 + 1);
    }
    format!("/nix/store/{hash}-link-{i}")
}

/// An export stream of `n` small paths, each referring to the one before.
fn chain(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let prev = (i > 0).then(|| link(i - 1));
        let refs: Vec<&str> = prev.iter().map(String::as_str).collect();
        export_item(&mut out, &file_nar(format!("link {i}").as_bytes()), &link(i), &refs, "");
    }
    export_end(&mut out);
    out
}

fn grove(store: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_grove"));
    cmd.arg("--store")
        .arg(store)
        .env_remove("GROVE_CONFIG")
        .env_remove("RUST_LOG");
    cmd
}

/// The visible paths, after checking that each one's references are visible too.
fn closure_complete(store: &Path) -> usize {
    let s = Store::open(store).unwrap();
    let paths = s.list().unwrap();
    let visible: BTreeSet<String> = paths.iter().map(|p| p.to_string()).collect();
    for p in &paths {
        let entry = s.require(&p.to_string()).unwrap();
        for r in entry.info.other_references() {
            assert!(
                visible.contains(&r.to_string()),
                "{p} is visible without its reference {r}"
            );
        }
    }
    paths.len()
}

fn stream_file(dir: &Path) -> PathBuf {
    let file = dir.join("chain.export");
    std::fs::write(&file, chain(CHAIN)).unwrap();
    file
}

#[test]
fn five_thousand_paths_in_one_batch_under_ulimit_256() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.export");
    std::fs::write(&file, chain(BIG_CHAIN)).unwrap();
    let store = tmp.path().join("store");
    assert!(grove(&store).arg("init").output().unwrap().status.success());
    let grove_bin = env!("CARGO_BIN_EXE_grove");
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 256 && exec "$0" --store "$1" import "$2""#)
        .arg(grove_bin)
        .arg(&store)
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(closure_complete(&store), BIG_CHAIN);
}

#[test]
fn kill_9_during_a_large_import_shows_all_or_nothing_and_the_retry_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.export");
    std::fs::write(&file, chain(BIG_CHAIN)).unwrap();
    let store = tmp.path().join("store");
    grove(&store).arg("init").output().unwrap();
    for delay_ms in [20, 60, 120, 200, 300, 450] {
        let mut child = grove(&store)
            .arg("import")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let visible = closure_complete(&store);
        assert!(
            visible == 0 || visible == BIG_CHAIN,
            "{visible} of {BIG_CHAIN} paths visible"
        );
        if visible == BIG_CHAIN {
            break;
        }
    }
    // A lock a killed writer left is taken over once stale; the retry completes.
    let last = grove(&store).arg("import").arg(&file).output().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    assert_eq!(closure_complete(&store), BIG_CHAIN);
    assert!(!store.join("packed-refs.lock").exists());
}

/// How many refs the store has: paths visible so far.
fn refs(store: &Path) -> usize {
    let dir = store.join("refs/nix");
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
        })
        .count()
    })
}

/// Runs `args` on `store` again and again, each time killed with SIGKILL `delay(attempt)`
/// after its first new ref appears, checking after each kill that what is visible is
/// closure-complete; then once more to completion. Returns how many kills left a partial batch.
fn kill_while_writing_refs(store: &Path, args: &[&std::ffi::OsStr], kills: u32) -> u32 {
    let mut partial = 0;
    for attempt in 0..kills {
        let before = refs(store);
        if before == CHAIN {
            break;
        }
        let mut child = grove(store)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while refs(store) == before && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_millis(u64::from(attempt % 4) * 3));
        let _ = child.kill();
        let _ = child.wait();
        let visible = closure_complete(store);
        if visible > before && visible < CHAIN {
            partial += 1;
        }
    }
    let last = grove(store).args(args).output().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    assert_eq!(closure_complete(store), CHAIN);
    partial
}

#[test]
fn kill_9_during_import_leaves_closed_prefixes_and_the_retry_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = stream_file(tmp.path());
    let store = tmp.path().join("store");
    grove(&store).arg("init").output().unwrap();
    let partial = kill_while_writing_refs(&store, &["import".as_ref(), file.as_os_str()], 8);
    assert!(partial >= 4, "only {partial} of 8 kills landed while refs were written");
}

#[test]
fn a_lock_left_by_a_dead_writer_blocks_nobody_and_verify_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    grove(&store).arg("init").output().unwrap();
    let stream = chain(3);
    let file = tmp.path().join("three");
    std::fs::write(&file, &stream).unwrap();
    // A writer died holding the lock of link 1's ref.
    let hash = &link(1)["/nix/store/".len()..][..32];
    let lock = store.join(format!("refs/nix/{hash}.lock"));
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "0000000000000000000000000000000000000000\n").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let verify = grove(&store).arg("verify").output().unwrap();
    let text = String::from_utf8_lossy(&verify.stderr);
    assert!(text.contains("STALE LOCK") && text.contains(hash), "{text}");
    let out = grove(&store).arg("import").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(closure_complete(&store), 3);
    assert!(!lock.exists());
    let verify = grove(&store).arg("verify").output().unwrap();
    assert!(verify.status.success());
    assert!(!String::from_utf8_lossy(&verify.stderr).contains("STALE"));
}

#[test]
fn kill_9_during_sync_leaves_closed_prefixes_and_the_next_sync_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    grove(&source).arg("init").output().unwrap();
    let file = stream_file(tmp.path());
    assert!(grove(&source)
        .arg("import")
        .arg(&file)
        .output()
        .unwrap()
        .status
        .success());
    let store = tmp.path().join("store");
    grove(&store).arg("init").output().unwrap();
    // Killed while git fetches: no git left running, and the quarantine goes with the next sync.
    for delay in [20, 60, 150] {
        let mut child = grove(&store)
            .arg("sync")
            .arg(&source)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(2);
        let pattern = format!("--git-dir {} ", store.display());
        loop {
            let left = Command::new("pgrep").arg("-f").arg(&pattern).output().unwrap();
            if left.stdout.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "git still running after the kill: {}",
                String::from_utf8_lossy(&left.stdout)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        closure_complete(&store);
    }
    let partial = kill_while_writing_refs(&store, &["sync".as_ref(), source.as_os_str()], 8);
    assert!(partial >= 4, "only {partial} of 8 kills landed while refs were written");
    let quarantine = Store::open(&store).unwrap().quarantine_refs().unwrap();
    assert!(quarantine.is_empty(), "left: {quarantine:?}");
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_reported_leaves_closed_prefixes_and_the_retry_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&tmp.path().join("disk"), "40m");
    let store = disk.0.join("store");
    grove(&store).arg("init").output().unwrap();
    // Leave about 128 KiB free: less than the batch's pack.
    let junk = disk.0.join("junk");
    let free = {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&disk.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let mut f = std::fs::File::create(&junk).unwrap();
    write_noise(&mut f, free - (128 << 10), 3);
    drop(f);
    let file = tmp.path().join("chain");
    std::fs::write(&file, chain(1000)).unwrap();
    let out = grove(&store).arg("import").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the import fit in 128 KiB");
    assert!(err.contains("no space left on device"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    closure_complete(&store);
    // Over HTTP the same is 507, which Nix retries.
    let config = tmp.path().join("grove.yaml");
    std::fs::write(
        &config,
        format!("store:\n  path: {}\nserver:\n  write_token: t\n", store.display()),
    )
    .unwrap();
    let (url, server) = serve(&config, &[]);
    let mut big = Vec::new();
    write_noise(&mut big, 4 << 20, 9);
    let nar = file_nar(&big);
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let resp = agent
        .put(&format!("{url}/nar/big.nar"))
        .header("Authorization", "Bearer t")
        .send(&nar[..])
        .unwrap();
    assert_eq!(resp.status().as_u16(), 507);
    drop(server);
    // Space freed, the retry completes.
    std::fs::remove_file(&junk).unwrap();
    let out = grove(&store).arg("import").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(closure_complete(&store), 1000);
}
