//! The `grove` command line: argument parsing and one function per command. Read commands
//! (`nar`, `info`, `export`, `list`) go through the same read path as HTTP and the mount.

mod add;
mod import;
mod keys;
mod mount;
mod progress;
mod replicate;
mod verify;

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::nix::narinfo::sort_by_references;
use crate::nix::signing::SecretKey;
use crate::read::ReadPath;
use crate::serve;
use crate::store::Store;
use keys::{init_store, load_key};

/// Grove: a Nix binary cache whose store is a Git repository.
#[derive(Debug, Parser)]
#[command(name = "grove", version, about, long_about = None)]
pub struct Cli {
    /// YAML config file (keys: log_level, store.path, store.sign_private_key_path, store.key_name,
    /// store.remotes, store.upstreams, store.negative_ttl_s, store.remote_timeout_s,
    /// store.builders, store.use_local_nix_daemon, store.ssh_private_key_path, server.*; see
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
    /// Add store paths with their whole closures, from the local /nix/store or, for paths it
    /// lacks, from the Nix machines in store.builders (over ssh).
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
    /// Repack the repository: every object into one pack with a wide delta search (Git's
    /// own `git repack`), and the refs into packed-refs. Safe while serving.
    Repack,
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
        /// A Git URL or path (default: every store.remotes entry; with --follow, store.follow).
        #[arg(value_name = "REMOTE")]
        remote: Option<String>,
        /// Keep following REMOTE as a read replica: after one whole sync, fetch the paths its
        /// log announces, every --interval seconds, until interrupted.
        #[arg(long)]
        follow: bool,
        /// Seconds between two looks at REMOTE with --follow (default: store.follow_interval_s).
        #[arg(long, value_name = "SECONDS", requires = "follow")]
        interval: Option<f64>,
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
    Store::verify_object_hashes(matches!(cli.command, Command::Verify));
    let store_path = config.store_path(cli.store.as_deref());
    let key_path = config.key_path(&store_path);
    let reader = |key: Option<SecretKey>| -> Result<ReadPath> {
        Ok(ReadPath::open(&store_path, key, config.server.compression)?
            .with_peers(replicate::peers(&store_path, &config)?))
    };
    match cli.command {
        Command::Init => {
            let key = init_store(&store_path, &key_path, &config)?;
            eprintln!("store: {}", store_path.display());
            println!("{}", key.public());
        }
        Command::Add { paths } => add::add(&Store::open(&store_path)?, &config, &paths)?,
        Command::Import { cache: Some(dir), .. } => import::import_cache(&Store::open(&store_path)?, &dir)?,
        Command::Import { file, .. } => import::import_export(&Store::open(&store_path)?, file.as_deref())?,
        Command::Nar { path } => {
            let read = reader(None)?;
            let entry = read.resolve(&path)?;
            let mut out = BufWriter::with_capacity(1 << 17, io::stdout().lock());
            read.write_nar(&entry, &mut out)?;
            out.flush()?;
        }
        Command::Export { closure, paths } => {
            let read = reader(None)?;
            let entries = paths.iter().map(|p| read.resolve(p)).collect::<Result<Vec<_>, _>>()?;
            let entries = if closure {
                read.closure(&entries)?
            } else {
                sort_by_references(entries, |e| &e.info)
            };
            let mut out = BufWriter::with_capacity(1 << 17, io::stdout().lock());
            read.export(&entries, &mut out)?;
            out.flush()?;
        }
        Command::Info { path } => {
            let read = reader(Some(load_key(&key_path)?))?;
            let entry = read.resolve(&path)?;
            print!("{}", read.narinfo_of(entry).render());
        }
        Command::List => {
            let mut out = BufWriter::new(io::stdout().lock());
            let written = reader(None)?
                .list()?
                .iter()
                .try_for_each(|p| writeln!(out, "{p}"))
                .and_then(|()| out.flush());
            match written {
                // A reader that stopped early (`grove list | head`) is not an error.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
        Command::Key {
            which: KeyCommand::Public,
        } => println!("{}", load_key(&key_path)?.public()),
        Command::Verify => verify::verify(&Store::open(&store_path)?)?,
        Command::Repack => {
            let store = Store::open(&store_path)?;
            let before = store.object_counts()?;
            store.repack(true)?;
            let after = store.object_counts()?;
            eprintln!(
                "repacked: {} loose objects and {} packs ({} bytes) -> {} loose objects and {} packs ({} bytes)",
                before.loose, before.packs, before.bytes, after.loose, after.packs, after.bytes
            );
        }
        Command::Mount { dir, daemon } => {
            Store::open(&store_path)?;
            let key = match load_key(&key_path) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!("{e:#}; .narinfo files keep only the signatures paths already have");
                    None
                }
            };
            mount::mount(reader(key)?.with_index()?, &dir, daemon)?
        }
        Command::Fetch { paths } => replicate::fetch(&store_path, &config, &paths)?,
        Command::Sync {
            remote, follow: false, ..
        } => replicate::sync(&Store::open(&store_path)?, &config, remote)?,
        Command::Sync {
            remote,
            follow: true,
            interval,
        } => replicate::follow(&Store::open(&store_path)?, &config, remote, interval)?,
        Command::Push { remote, paths } => replicate::push(&Store::open(&store_path)?, &config, &remote, &paths)?,
        Command::Serve { listen } => {
            let key = init_store(&store_path, &key_path, &config)?;
            let addr = listen.unwrap_or_else(|| format!("{}:{}", config.server.host, config.server.port));
            let server = &config.server;
            let options = serve::Options {
                priority: server.priority,
                read_token: server.read_token()?,
                write_token: server.write_token()?,
                max_upload_bytes: server.max_upload_mib.saturating_mul(1 << 20),
                io_timeout: std::time::Duration::from_secs(server.io_timeout_s.max(1)),
            };
            if options.write_token.is_none() {
                eprintln!("uploads are disabled: set server.write_token (a non-empty token) to allow them");
            }
            let public = key.public();
            let read = reader(Some(key))?
                .with_nar_cache(server.nar_cache_mib << 20)
                .with_index()?;
            eprintln!(
                "store: {} ({} paths); peers: {} Git remotes, {} upstreams",
                store_path.display(),
                read.known_paths()?,
                config.store.remotes.len(),
                config.store.upstreams.len()
            );
            if config.store.repack_interval_s > 0 {
                repack_in_background(&store_path, config.store.repack_interval_s)?;
            }
            if let Some(primary) = &config.store.follow {
                replicate::follow_in_background(&store_path, &config, primary)?;
            }
            serve::run(read, options, &addr, |bound| {
                eprintln!("serving on http://{bound}; add these lines to nix.conf to use this cache:");
                // Whoever started the server may have stopped reading: keep serving.
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "substituters = http://{bound}");
                let _ = writeln!(out, "trusted-public-keys = {public}");
                let _ = out.flush();
            })?;
        }
    }
    Ok(())
}

/// `grove serve`'s maintenance: every `interval_s` seconds, packs loose objects or repacks
/// when the repository has outgrown Git's own thresholds.
fn repack_in_background(store_path: &std::path::Path, interval_s: u64) -> Result<()> {
    let store = Store::open(store_path)?;
    std::thread::Builder::new()
        .name("repack".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(interval_s));
            match store.repack_if_due() {
                Ok(Some(what)) => tracing::info!("maintenance: {what}"),
                Ok(None) => {}
                Err(e) => tracing::warn!("maintenance: {e}"),
            }
        })
        .context("cannot start the maintenance thread")?;
    Ok(())
}

/// Logs to standard error at `level` (`RUST_LOG` overrides; Gachix's `warning` means `warn`).
fn init_logging(level: Option<&str>) {
    let level = match level {
        Some("warning") => Some("warn"),
        other => other,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level.unwrap_or("warn")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
}

/// Prints an error as `error: <what>: <why>`, each cause once (a cause whose text its parent
/// already carries is not repeated).
pub fn report(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    format!("error: {msg}")
}
