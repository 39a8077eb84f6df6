//! Nix machines reached over ssh (`store.builders`, Gachix's key): `grove add` takes the paths
//! they have as a `nix-store --export` stream of the closure, read through the same importer as
//! `grove import` (which hashes every NAR itself: an export stream carries no NarHash).
//!
//! Gachix speaks the Nix daemon protocol to a `nix-ssh` account; Grove runs `nix-store` over a
//! plain ssh login, so a builder is any machine with Nix that the key can log in to.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::nix::store_path::StorePath;

/// Errors talking to a builder.
#[derive(Debug, thiserror::Error)]
pub enum BuilderError {
    /// The URL is not `ssh://[USER@]HOST[:PORT]`.
    #[error("store.builders entry '{0}' is not ssh://[USER@]HOST[:PORT]")]
    BadUrl(String),
    /// ssh could not be started.
    #[error("cannot run ssh (apt-get install openssh-client): {0}")]
    Spawn(io::Error),
    /// The remote command failed.
    #[error("builder {url}: {why}")]
    Failed {
        /// The builder.
        url: String,
        /// ssh's or nix-store's last words.
        why: String,
    },
}

/// One builder.
#[derive(Debug, Clone)]
pub struct Builder {
    url: String,
    destination: String,
    port: Option<u16>,
    key: Option<PathBuf>,
}

impl Builder {
    /// A builder at `url`, logged in to with `key` (`store.ssh_private_key_path`) if given.
    pub fn parse(url: &str, key: Option<&Path>) -> Result<Self, BuilderError> {
        let bad = || BuilderError::BadUrl(url.to_string());
        let rest = url.strip_prefix("ssh://").ok_or_else(bad)?.trim_end_matches('/');
        let (user, host_port) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
            None => (host_port, None),
        };
        let safe = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.bytes().all(|c| c.is_ascii_alphanumeric() || b".-_[]:".contains(&c))
        };
        if !safe(host) || user.is_some_and(|u| !safe(u)) {
            return Err(bad());
        }
        Ok(Builder {
            url: url.to_string(),
            destination: user.map_or_else(|| host.to_string(), |u| format!("{u}@{host}")),
            port,
            key: key.map(Path::to_path_buf),
        })
    }

    /// The builder's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn ssh(&self, remote: &str) -> Command {
        // Like git's GIT_SSH: another ssh program (or a wrapper with options) if set.
        let program = std::env::var_os("GROVE_SSH").unwrap_or_else(|| "ssh".into());
        let mut cmd = Command::new(program);
        cmd.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]);
        if let Some(key) = &self.key {
            cmd.arg("-i").arg(key).args(["-o", "IdentitiesOnly=yes"]);
        }
        if let Some(port) = self.port {
            cmd.arg("-p").arg(port.to_string());
        }
        cmd.arg("--").arg(&self.destination).arg(remote);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Whether the builder's store has `path`.
    pub fn has(&self, path: &StorePath) -> Result<bool, BuilderError> {
        let out = self
            .ssh(&format!("nix-store --check-validity {path}"))
            .output()
            .map_err(BuilderError::Spawn)?;
        match out.status.code() {
            Some(0) => Ok(true),
            // ssh itself exits 255 when it cannot connect or log in.
            Some(255) | None => Err(self.failed(&out.stderr)),
            Some(_) => Ok(false),
        }
    }

    /// Runs `read` on the export stream of the closure of `paths` (references first), and
    /// fails if ssh or nix-store did.
    pub fn export_closure<T, E: From<BuilderError>>(
        &self,
        paths: &[StorePath],
        read: impl FnOnce(&mut dyn Read) -> Result<T, E>,
    ) -> Result<T, E> {
        let list: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let mut child = self
            .ssh(&format!(
                "nix-store --export $(nix-store --query --requisites {})",
                list.join(" ")
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(BuilderError::Spawn)?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(BuilderError::Spawn(io::Error::other("no pipes to ssh")).into());
        };
        let errors = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stderr.read_to_end(&mut s);
            s
        });
        let result = read(&mut stdout);
        drop(stdout);
        let status = child.wait().map_err(BuilderError::Spawn)?;
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            return Err(self.failed(&errors).into());
        }
        result
    }

    fn failed(&self, stderr: &[u8]) -> BuilderError {
        let text = String::from_utf8_lossy(stderr);
        BuilderError::Failed {
            url: self.url.clone(),
            why: text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("ssh failed")
                .trim()
                .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let b = Builder::parse("ssh://nix@build-1.example:2222", None).unwrap();
        assert_eq!((b.destination.as_str(), b.port), ("nix@build-1.example", Some(2222)));
        let b = Builder::parse("ssh://client", None).unwrap();
        assert_eq!((b.destination.as_str(), b.port), ("client", None));
        for bad in [
            "http://x",
            "ssh://",
            "ssh://-oProxyCommand=x",
            "ssh://a b",
            "ssh://h:port",
            "ssh://u;rm@h",
        ] {
            assert!(Builder::parse(bad, None).is_err(), "{bad}");
        }
    }
}
