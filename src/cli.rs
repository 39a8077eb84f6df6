//! The `grove` command line.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::narinfo::PathInfo;
use crate::peers::Peers;
use crate::readpath::{narinfo_for, Compression, ReadPath};
use crate::replicate::GitRemote;
use crate::signing::SecretKey;
use crate::store::{Importer, Store};
use crate::{export, filecache, http, localnix, nar};

/// Grove: a Nix binary cache whose store is a Git repository.
#[derive(Debug, Parser)]
#[command(name = "grove", version, about, long_about = None)]
pub struct Cli {
    /// YAML config file (keys: log_level, store.path, store.sign_private_key_path, store.key_name,
    /// store.remotes, store.upstreams, store.negative_ttl_s, store.remote_timeout_s, server.*; see
    /// README.md).
    #[arg(short, long, global = true, env = "GROVE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The store's Git repository (overrides store.path; default ~/.local/share/grove).
    #[arg(long, global = true, env = "GROVE_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Grove's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the store and, if there is none, a signing key; print the public key.
    Init,
    /// Add store paths from the local /nix/store with their whole closures.
    Add {
        /// Store paths (or symlinks to them, such as ./result).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
    },
    /// Add paths from a `nix-store --export` stream, or every path of a file:// binary cache.
    Import {
        /// The export stream; `-` or nothing for standard input.
        #[arg(value_name = "FILE", conflicts_with = "cache")]
        file: Option<PathBuf>,
        /// A directory written by `nix copy --to file://DIR` (xz, zstd, bzip2 or uncompressed).
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
    },
    /// Write a path's NAR to standard output, byte-identical to `nix-store --dump`.
    Nar {
        /// A store path, `<hash>-<name>` or the 32-character hash.
        #[arg(value_name = "PATH|HASH")]
        path: String,
    },
    /// Write a stream that `nix-store --import` accepts.
    Export {
        /// Export the paths' whole closures, references first.
        #[arg(long)]
        closure: bool,
        /// Store paths or hashes.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<String>,
    },
    /// Print a path's narinfo, signed with the cache key.
    Info {
        /// A store path, `<hash>-<name>` or the 32-character hash.
        #[arg(value_name = "PATH|HASH")]
        path: String,
    },
    /// List every store path in the store, one a line.
    List,
    /// Show the cache's keys.
    Key {
        /// Which key.
        #[command(subcommand)]
        which: KeyCommand,
    },
    /// Re-hash every path from Git and compare it with its recorded NarHash and NarSize.
    Verify,
    /// Mount the store read-only with FUSE: DIR/<hash>-<name> for every path, DIR/.nar/<hash>.nar
    /// (virtual NARs) and DIR/.narinfo/<hash>.narinfo.
    Mount {
        /// Where to mount, e.g. /nix/store on a host without Nix.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Detach once mounted (default: stay in the foreground until SIGINT/SIGTERM or
        /// `fusermount3 -u DIR`).
        #[arg(long)]
        daemon: bool,
    },
    /// Fetch paths (with their closures) from the peers (store.remotes, then store.upstreams).
    Fetch {
        /// Store paths, `<hash>-<name>` or 32-character hashes.
        #[arg(required = true, value_name = "PATH|HASH")]
        paths: Vec<String>,
    },
    /// Fetch every path a Git peer has (all of store.remotes without REMOTE). Paths this store
    /// has with other metadata are reported and kept as they are.
    Sync {
        /// A Git URL or path (default: every store.remotes entry).
        #[arg(value_name = "REMOTE")]
        remote: Option<String>,
    },
    /// Push paths with their closures to a Git peer (every path without PATH). Paths the peer
    /// has with other metadata are reported and left as they are: nothing is forced.
    Push {
        /// A Git URL or path.
        #[arg(value_name = "REMOTE")]
        remote: String,
        /// Store paths or hashes.
        #[arg(value_name = "PATH")]
        paths: Vec<String>,
    },
    /// Serve the store to Nix over HTTP: a substituter and, with server.write_token, an upload
    /// target for `nix copy --to` (creates the store and key when missing).
    Serve {
        /// Address to listen on (overrides server.host and server.port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
}

/// `grove key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Print the public key line for `trusted-public-keys`.
    Public,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    init_logging(config.log_level.as_deref());
    // Like git, trust object ids on read: libgit2 would otherwise re-hash (SHA-1DC, slow) every
    // object it inflates. Objects are hashed when written, fetched packs are checked by
    // index-pack with fsckObjects and zlib's checksum catches corruption on disk; `grove verify`
    // keeps the check, on top of re-hashing whole NARs.
    git2::opts::strict_hash_verification(matches!(cli.command, Command::Verify));
    let store_path = config.store_path(cli.store.as_deref());
    let key_path = config.key_path(&store_path);
    match cli.command {
        Command::Init => {
            let key = init_store(&store_path, &key_path, &config)?;
            eprintln!("store: {}", store_path.display());
            println!("{}", key.public());
        }
        Command::Add { paths } => add(&Store::open(&store_path)?, &paths)?,
        Command::Import { cache: Some(dir), .. } => import_cache(&Store::open(&store_path)?, &dir)?,
        Command::Import { file, .. } => import_export(&Store::open(&store_path)?, file.as_deref())?,
        Command::Nar { path } => {
            let store = Store::open(&store_path)?;
            let entry = store.require(&path)?;
            let mut out = BufWriter::with_capacity(1 << 17, io::stdout().lock());
            store.write_nar(&entry.root, &mut out)?;
            out.flush()?;
        }
        Command::Export { closure, paths } => {
            let store = Store::open(&store_path)?;
            let entries = paths.iter().map(|p| store.require(p)).collect::<Result<Vec<_>, _>>()?;
            let entries = if closure {
                store.closure(&entries)?
            } else {
                filecache::sort_by_references(entries, |e| &e.info)
            };
            let mut out = BufWriter::with_capacity(1 << 17, io::stdout().lock());
            export::write(&store, &entries, &mut out)?;
            out.flush()?;
        }
        Command::Info { path } => {
            let store = Store::open(&store_path)?;
            let entry = store.require(&path)?;
            let key = load_key(&key_path)?;
            print!("{}", narinfo_for(entry, Some(&key), Compression::None).render());
        }
        Command::List => {
            let mut out = BufWriter::new(io::stdout().lock());
            for p in Store::open(&store_path)?.list()? {
                writeln!(out, "{p}")?;
            }
            out.flush()?;
        }
        Command::Key {
            which: KeyCommand::Public,
        } => println!("{}", load_key(&key_path)?.public()),
        Command::Verify => verify(&Store::open(&store_path)?)?,
        Command::Mount { dir, daemon } => mount(&store_path, &key_path, &dir, daemon, peers(&store_path, &config)?)?,
        Command::Fetch { paths } => fetch(&store_path, &config, &paths)?,
        Command::Sync { remote } => sync(&Store::open(&store_path)?, &config, remote)?,
        Command::Push { remote, paths } => push(&Store::open(&store_path)?, &remote, &paths)?,
        Command::Serve { listen } => {
            let key = init_store(&store_path, &key_path, &config)?;
            let addr = listen.unwrap_or_else(|| format!("{}:{}", config.server.host, config.server.port));
            eprintln!(
                "store: {} ({} paths); peers: {} Git remotes, {} upstreams",
                store_path.display(),
                Store::open(&store_path)?.list()?.len(),
                config.store.remotes.len(),
                config.store.upstreams.len()
            );
            let server = &config.server;
            let options = http::Options {
                priority: server.priority,
                read_token: server.read_token()?,
                write_token: server.write_token()?,
            };
            let public = key.public();
            let read = ReadPath::open(&store_path, Some(key), server.compression)?
                .with_nar_cache(server.nar_cache_mib << 20)
                .with_peers(peers(&store_path, &config)?);
            http::run(read, options, &addr, |bound| {
                eprintln!("serving on http://{bound}; add these lines to nix.conf to use this cache:");
                println!("substituters = http://{bound}");
                println!("trusted-public-keys = {public}");
            })?;
        }
    }
    Ok(())
}

fn peers(store_path: &Path, config: &Config) -> Result<Arc<Peers>> {
    Ok(Arc::new(Peers::from_config(store_path, &config.store)?))
}

fn fetch(store_path: &Path, config: &Config, specs: &[String]) -> Result<()> {
    Store::open(store_path)?;
    let peers = Peers::from_config(store_path, &config.store)?;
    if peers.is_empty() {
        bail!("no peers: set store.remotes or store.upstreams in the config");
    }
    let mut missing = Vec::new();
    for spec in specs {
        let hash = Store::parse_spec(spec)?;
        match peers.fetch_now(&hash) {
            Some(_) => println!("{}", Store::open(store_path)?.require(&hash.to_string())?.info.path),
            None => missing.push(spec.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!("no peer has {}", missing.join(", "));
    }
    Ok(())
}

fn sync(store: &Store, config: &Config, remote: Option<String>) -> Result<()> {
    let remotes = match remote {
        Some(r) => vec![r],
        None if config.store.remotes.is_empty() => bail!("no REMOTE given and store.remotes is empty"),
        None => config.store.remotes.clone(),
    };
    for url in &remotes {
        let adopted = GitRemote::new(url, None)
            .sync(store)
            .with_context(|| format!("cannot sync from {url}"))?;
        for (path, ours, theirs) in &adopted.conflicts {
            eprintln!("conflict: {path}: {url} has commit {theirs}, this store {ours}; kept this store's");
        }
        for (path, why) in &adopted.rejected {
            eprintln!("refused: {path}: {why}");
        }
        eprintln!(
            "{url}: {} new paths, {} present, {} conflicts, {} refused",
            adopted.added.len(),
            adopted.present,
            adopted.conflicts.len(),
            adopted.rejected.len()
        );
    }
    Ok(())
}

fn push(store: &Store, remote: &str, specs: &[String]) -> Result<()> {
    let roots = if specs.is_empty() {
        store
            .list()?
            .iter()
            .map(|p| store.require(&p.to_string()))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        specs.iter().map(|s| store.require(s)).collect::<Result<Vec<_>, _>>()?
    };
    let closure = store.closure(&roots)?;
    let pushed = GitRemote::new(remote, None)
        .push(store, &closure)
        .with_context(|| format!("cannot push to {remote}"))?;
    for (path, ours, theirs) in &pushed.conflicts {
        eprintln!("conflict: {path}: {remote} has commit {theirs}, this store {ours}; left as it is");
    }
    eprintln!(
        "{remote}: {} paths pushed, {} present, {} conflicts",
        pushed.pushed.len(),
        pushed.present,
        pushed.conflicts.len()
    );
    Ok(())
}

fn mount(store_path: &Path, key_path: &Path, dir: &Path, daemon: bool, peers: Arc<Peers>) -> Result<()> {
    Store::open(store_path)?;
    if !dir.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    let key = match load_key(key_path) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::warn!("{e:#}; .narinfo files keep only the signatures paths already have");
            None
        }
    };
    let ready = if daemon { Some(daemonize()?) } else { None };
    let read = ReadPath::open(store_path, key, Compression::None)?.with_peers(peers);
    crate::fuse::mount(read, dir, || {
        if let Some(mut tell_parent) = ready {
            let _ = tell_parent.write_all(b"1");
            detach_stdio();
        }
    })
}

/// Forks: the parent waits until the child reports the mount ready (exit 0) or fails (exit 1);
/// the child, in a new session, gets the pipe to report on.
fn daemonize() -> Result<io::PipeWriter> {
    let (mut reader, writer) = io::pipe()?;
    // SAFETY: called before this process starts any thread, so the child is a complete copy.
    match unsafe { libc::fork() } {
        -1 => bail!("fork failed: {}", io::Error::last_os_error()),
        0 => {
            drop(reader);
            // SAFETY: setsid has no memory effects; it detaches from the terminal's session.
            unsafe { libc::setsid() };
            Ok(writer)
        }
        _ => {
            drop(writer);
            let mut byte = [0u8; 1];
            let ok = matches!(reader.read(&mut byte), Ok(1));
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn init_logging(level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level.unwrap_or("warn")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
}

/// Creates the store if needed and the key if missing (mode 0600); returns the key.
fn init_store(store_path: &Path, key_path: &Path, config: &Config) -> Result<SecretKey> {
    Store::init(store_path).with_context(|| format!("creating store at {}", store_path.display()))?;
    if key_path.exists() {
        return load_key(key_path);
    }
    let key = SecretKey::generate(&config.key_name()).map_err(|e| anyhow::anyhow!("generating a signing key: {e}"))?;
    write_secret(key_path, &key.to_string())?;
    eprintln!("created signing key {}", key_path.display());
    Ok(key)
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn load_key(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read signing key {} (run 'grove init')", path.display()))?;
    text.parse()
        .with_context(|| format!("bad signing key in {}", path.display()))
}

fn progress(len: u64, bytes: bool) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = if bytes {
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}

fn add(store: &Store, args: &[String]) -> Result<()> {
    let roots = args
        .iter()
        .map(|a| localnix::resolve_arg(a))
        .collect::<Result<Vec<_>, _>>()?;
    let infos = filecache::sort_by_references(localnix::query_closure(&roots)?, |i| i);
    let mut imp = store.importer();
    let todo: Vec<&PathInfo> = infos.iter().filter(|i| !imp.has(&i.path).unwrap_or(false)).collect();
    let bar = progress(todo.iter().map(|i| i.nar_size).sum(), true);
    for info in &todo {
        bar.set_message(info.path.name().to_string());
        add_from_disk(&mut imp, info, &bar).with_context(|| format!("adding {}", info.path))?;
    }
    let added = imp.commit()?;
    bar.finish_and_clear();
    eprintln!(
        "added {} paths ({} already present)",
        added.len(),
        infos.len() - added.len()
    );
    Ok(())
}

/// Streams a path from disk as a NAR (in a thread) into the importer, which checks it against
/// Nix's NarHash.
fn add_from_disk(imp: &mut Importer<'_>, info: &PathInfo, bar: &ProgressBar) -> Result<bool> {
    let (reader, writer) = io::pipe()?;
    let disk = localnix::on_disk(&info.path);
    std::thread::scope(|s| {
        let dumper = s.spawn(move || {
            let mut w = BufWriter::with_capacity(1 << 18, writer);
            nar::dump_path(&disk, &mut w)?;
            w.flush().map_err(nar::NarError::Io)
        });
        let added = imp.add(info, &mut bar.wrap_read(BufReader::with_capacity(1 << 18, reader)));
        let dumped = dumper.join().expect("dump thread panicked");
        dumped?;
        Ok(added?)
    })
}

fn import_export(store: &Store, file: Option<&Path>) -> Result<()> {
    let input: Box<dyn Read> = match file {
        None => Box::new(io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(io::stdin().lock()),
        Some(p) => Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
    };
    let bar = progress(0, false);
    let mut input = BufReader::with_capacity(1 << 18, input);
    let mut imp = store.importer();
    let paths = export::read(&mut imp, &mut input, |p| {
        bar.inc(1);
        bar.set_message(p.name().to_string());
    })?;
    let added = imp.commit()?;
    bar.finish_and_clear();
    eprintln!(
        "imported {} paths ({} already present)",
        added.len(),
        paths.len() - added.len()
    );
    Ok(())
}

fn import_cache(store: &Store, dir: &Path) -> Result<()> {
    let infos = filecache::sort_by_references(filecache::read_narinfos(dir)?, |n| &n.info);
    let bar = progress(infos.len() as u64, false);
    let mut imp = store.importer();
    for ni in &infos {
        bar.set_message(ni.info.path.name().to_string());
        filecache::import_one(&mut imp, dir, ni)?;
        bar.inc(1);
    }
    let added = imp.commit()?;
    bar.finish_and_clear();
    eprintln!(
        "imported {} paths ({} already present)",
        added.len(),
        infos.len() - added.len()
    );
    Ok(())
}

fn verify(store: &Store) -> Result<()> {
    let paths = store.list()?;
    let bar = progress(paths.len() as u64, false);
    let mut bad = Vec::new();
    for p in &paths {
        bar.set_message(p.name().to_string());
        match check(store, p) {
            Ok(()) => {}
            Err(why) => {
                bar.suspend(|| eprintln!("MISMATCH {p}: {why:#}"));
                bad.push(p);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !bad.is_empty() {
        bail!("{} of {} paths failed verification", bad.len(), paths.len());
    }
    eprintln!("verified {} paths", paths.len());
    Ok(())
}

fn check(store: &Store, path: &crate::store_path::StorePath) -> Result<()> {
    let entry = store.require(&path.to_string())?;
    store.check_contents(&entry)?;
    for r in entry.info.other_references() {
        if store.get(&r.hash())?.is_none() {
            bail!("reference {r} is missing");
        }
    }
    Ok(())
}
