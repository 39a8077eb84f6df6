//! `grove serve` against clients that misbehave: they never read, send nothing, never send the
//! body they announced, climb out of `/git/`, or upload the same path all at once. Each test
//! keeps a well-behaved client's requests answered and the server's resources bounded.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SMALL: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-small";
const LARGE: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-large";
const LARGE_BYTES: u64 = 32 << 20;

/// One test at a time: each measures the server under its own load on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn hash(path: &str) -> &str {
    &path["/nix/store/".len()..][..32]
}

/// A store with a small path and a 32 MiB one, and a config: `io_timeout_s` and a write token.
fn setup(dir: &Path, io_timeout_s: u64) -> PathBuf {
    let store = dir.join("store");
    let config = dir.join("grove.yaml");
    std::fs::write(
        &config,
        format!(
            "store:\n  path: {}\nserver:\n  write_token: s3cret\n  io_timeout_s: {io_timeout_s}\n",
            store.display()
        ),
    )
    .unwrap();
    let grove = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_grove"));
        cmd.arg("-c").arg(&config).args(args).env_remove("GROVE_STORE");
        cmd
    };
    assert!(grove(&["init"]).output().unwrap().status.success());
    let mut large = Vec::new();
    write_noise(&mut large, LARGE_BYTES, 7);
    let mut stream = Vec::new();
    export_item(&mut stream, &file_nar(b"small"), SMALL, &[], "");
    export_item(&mut stream, &file_nar(&large), LARGE, &[], "");
    export_end(&mut stream);
    let mut import = grove(&["import"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    import.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(import.wait().unwrap().success());
    config
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Sends a raw request and returns the status code of the answer.
fn raw_status(url: &str, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr(url)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

/// Times a GET with a fresh connection; returns (status, body length, time).
fn timed_get(url: &str) -> (u16, usize, Duration) {
    let start = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut resp = agent.get(url).call().unwrap();
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap();
    (status, body.len(), start.elapsed())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn server_pid(guard: &Guard) -> u32 {
    match guard {
        Guard::Process(child) => child.id(),
        Guard::Mount(_) => unreachable!(),
    }
}

#[test]
fn six_hundred_clients_that_never_read_do_not_hold_up_others() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), 30);
    let (url, server) = serve(&config, &[]);
    let before = rss_kib(server_pid(&server));
    let request = format!("GET /nar/{}.nar HTTP/1.1\r\nHost: x\r\n\r\n", hash(LARGE));
    let mut stuck = Vec::new();
    for _ in 0..600 {
        let mut s = TcpStream::connect(addr(&url)).unwrap();
        // A small receive buffer: the server soon has nowhere to write.
        s.write_all(request.as_bytes()).unwrap();
        stuck.push(s);
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let (status, _, miss) = timed_get(&format!("{url}/cccccccccccccccccccccccccccccccc.narinfo"));
        assert_eq!(status, 404);
        let (status, len, nar) = timed_get(&format!("{url}/nar/{}.nar", hash(SMALL)));
        assert_eq!((status, len), (200, file_nar(b"small").len()));
        worst = worst.max(miss).max(nar);
    }
    let during = rss_kib(server_pid(&server));
    eprintln!("600 non-reading clients: worst answer {worst:?}; RSS {before} KiB before, {during} KiB during");
    assert!(worst < Duration::from_millis(500), "a normal client waited {worst:?}");
    // Each stuck client costs at most a few chunks, not its NAR: well under 600 × 32 MiB.
    assert!(during < before + 600 * 2048, "RSS grew from {before} to {during} KiB");
    drop(stuck);
}

/// Holds `n` idle connections to `addr` open from a process of its own (the open-files limit
/// of one process is 20,000 here) until its standard input closes; says "ready" when they are.
fn idle_holder(addr: &str, n: usize) -> std::process::Child {
    let script = r#"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.connect((host, int(port)))
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, addr, &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the holder could not open {n} connections");
    child
}

#[test]
fn nineteen_thousand_idle_connections_are_closed_and_a_new_client_gets_in() {
    let _serial = one_at_a_time();
    // The open-files limit is 20,000 here, for the server too (less 256 kept for files): idle
    // connections up to that cap, held by two processes of their own.
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), 2);
    let (url, _server) = serve(&config, &[]);
    let holders: Vec<_> = (0..2)
        .map(|_| Guard::Process(idle_holder(&addr(&url), 9_700)))
        .collect();
    let (status, _, took) = timed_get(&format!("{url}/{}.narinfo", hash(SMALL)));
    assert_eq!(status, 200);
    eprintln!("a new client behind 19,400 idle connections was answered in {took:?}");
    assert!(took < Duration::from_secs(6), "a new client waited {took:?}");
    // After the I/O timeout the server has closed idle connections: this one, too.
    let mut idle = TcpStream::connect(addr(&url)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let mut b = [0u8; 1];
    let start = Instant::now();
    assert!(matches!(idle.read(&mut b), Ok(0)), "an idle connection stayed open");
    assert!(start.elapsed() < Duration::from_secs(8));
    drop(holders);
}

#[test]
fn an_upload_whose_body_never_comes_times_out_with_408() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), 2);
    let (url, _server) = serve(&config, &[]);
    let mut s = TcpStream::connect(addr(&url)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = "Authorization: Bearer s3cret\r\n";
    s.write_all(format!("PUT /nar/abc.nar HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1000\r\n\r\nnix").as_bytes())
        .unwrap();
    let start = Instant::now();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[9..12], b"408", "{}", String::from_utf8_lossy(&head));
    assert!(start.elapsed() < Duration::from_secs(6));
    // The same for a narinfo.
    let status = {
        let mut s = TcpStream::connect(addr(&url)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let h = hash(SMALL);
        s.write_all(format!("PUT /{h}.narinfo HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n").as_bytes())
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).into_owned()
    };
    assert_eq!(status, "408");
}

#[test]
fn git_paths_that_leave_the_repository_are_refused_never_500() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path(), 30);
    let (url, _server) = serve(&config, &[]);
    for path in [
        "/git/../HEAD",
        "/git/./HEAD",
        "/git/%2e%2e/HEAD",
        "/git/..%2fconfig",
        "/git/objects/../../grove.key",
    ] {
        let status = raw_status(&url, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
    assert_eq!(raw_status(&url, "GET /git/HEAD HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
}

#[test]
fn four_writers_of_the_same_paths_all_succeed_and_one_adds() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let source = setup(tmp.path(), 30);
    // The NAR and narinfo of SMALL, as `nix copy --to` would upload them.
    let nar = file_nar(b"small");
    let (_, nar_hash, nar_size) = grove::nix::nar::parse(&mut &nar[..], &mut grove::nix::nar::Discard).unwrap();
    let narinfo = format!(
        "StorePath: {SMALL}\nURL: nar/{h}.nar\nCompression: none\nNarHash: {nar_hash}\nNarSize: {nar_size}\nReferences: \n",
        h = nar_hash.to_nix32()
    );
    drop(source);
    let target = tmp.path().join("target");
    std::fs::create_dir_all(&target).unwrap();
    let config = target.join("grove.yaml");
    std::fs::write(
        &config,
        format!(
            "store:\n  path: {}\nserver:\n  write_token: s3cret\n",
            target.join("store").display()
        ),
    )
    .unwrap();
    let (url, _server) = serve(&config, &[]);
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (url, nar, narinfo) = (url.clone(), nar.clone(), narinfo.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let put = |path: &str, body: &[u8]| {
                    let mut r = agent
                        .put(&format!("{url}/{path}"))
                        .header("Authorization", "Bearer s3cret")
                        .send(body)
                        .unwrap();
                    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
                };
                let nar_name = format!("nar/{}.nar", nar_hash.to_nix32());
                let a = put(&nar_name, &nar);
                let b = put(&format!("{}.narinfo", hash(SMALL)), narinfo.as_bytes());
                (a, b)
            })
        })
        .collect();
    let answers: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for (nar, narinfo) in &answers {
        assert_eq!(nar.0, 200, "{nar:?}");
        assert_eq!(narinfo.0, 200, "{narinfo:?}");
    }
    let added = answers.iter().filter(|(_, n)| n.1.trim() == "added").count();
    let present = answers.iter().filter(|(_, n)| n.1.trim() == "present").count();
    assert_eq!((added, present), (1, 3), "{answers:?}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn sixteen_downloads_of_a_200_mb_packed_file_in_bounded_memory() {
    let _serial = one_at_a_time();
    const BIG: &str = "/nix/store/dddddddddddddddddddddddddddddddd-big";
    const SIZE: u64 = 200 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let config = tmp.path().join("grove.yaml");
    std::fs::write(&config, format!("store:\n  path: {}\n", store.display())).unwrap();
    let grove = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_grove"));
        cmd.arg("-c").arg(&config).args(args).env_remove("GROVE_STORE");
        cmd
    };
    assert!(grove(&["init"]).output().unwrap().status.success());
    // The export stream, written to a file without holding 200 MB: header, NAR, trailer.
    let file = tmp.path().join("big.export");
    let mut nar_head = Vec::new();
    let mut enc = grove::nix::nar::Encoder::new(&mut nar_head).unwrap();
    enc.file_header(false, SIZE).unwrap();
    let mut nar_tail = Vec::new();
    export_item(&mut nar_tail, &[], BIG, &[], "");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        out.write_all(&1u64.to_le_bytes()).unwrap();
        out.write_all(&nar_head).unwrap();
        write_noise(&mut out, SIZE, 11);
        // The file node's trailer (SIZE is a multiple of 8: no padding), then the metadata.
        let mut close = Vec::new();
        close.extend_from_slice(&1u64.to_le_bytes());
        close.extend_from_slice(b")\0\0\0\0\0\0\0");
        out.write_all(&close).unwrap();
        out.write_all(&nar_tail[8..]).unwrap();
        out.write_all(&0u64.to_le_bytes()).unwrap();
    }
    let out = grove(&["import", file.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&file).unwrap();
    let gc = Command::new("git")
        .arg("--git-dir")
        .arg(&store)
        .args(["gc", "-q"])
        .status()
        .unwrap();
    assert!(gc.success());
    assert!(
        std::fs::read_dir(store.join("objects/pack")).unwrap().count() > 0,
        "not packed"
    );
    let (url, server) = serve(&config, &[]);
    let pid = server_pid(&server);
    let nar_url = format!("{url}/nar/{}.nar", hash(BIG));
    let sizes: Vec<usize> = (0..16)
        .map(|_| {
            let nar_url = nar_url.clone();
            std::thread::spawn(move || timed_get(&nar_url).1)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let nar_size = nar_head.len() as u64 + SIZE + 16;
    assert!(sizes.iter().all(|&n| n as u64 == nar_size), "{sizes:?}");
    // A one-byte range at the end of the file.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(&nar_url).header("Range", "bytes=-17").call().unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.body_mut().read_to_vec().unwrap().len(), 17);
    let peak = peak_rss_kib(pid);
    eprintln!("16 concurrent downloads of a 200 MiB packed file: peak RSS {peak} KiB");
    assert!(peak < 128 * 1024, "peak RSS {peak} KiB");
}
