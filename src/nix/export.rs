//! The `nix-store --export` / `--import` stream.
//!
//! Hand-written: no maintained crate reads or writes it, and it is a thin wrapper around NARs.
//! For each path: `u64 1`, the NAR, `u64 0x4558494e` ("NIXE"), the path, the reference count and
//! references, the deriver (or ""), and `u64 0` (no legacy signature); after the last path,
//! `u64 0`. Strings use NAR's encoding (length, bytes, zero padding to 8).
//!
//! The reader leaves the NAR itself to its caller ([`ExportReader::input`]), so that it can be
//! parsed straight into wherever it goes.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use super::nar::{padding, write_token};
use super::narinfo::PathInfo;
use super::store_path::StorePath;

/// Marks the metadata after each NAR.
pub const EXPORT_MAGIC: u64 = 0x4558_494e;

/// The longest string (path, deriver, signature) the reader accepts.
const MAX_STRING: u64 = 4096;

/// More references than any real path has.
const MAX_REFERENCES: u64 = 1 << 20;

/// Errors of the export format.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The stream does not follow the format.
    #[error("not a 'nix-store --export' stream: {0}")]
    Format(String),
    /// The stream ended early.
    #[error("truncated export stream")]
    Truncated,
    /// Reading the stream failed.
    #[error("reading the export stream: {0}")]
    Io(io::Error),
}

impl From<io::Error> for ExportError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ExportError::Truncated
        } else {
            ExportError::Io(e)
        }
    }
}

/// What follows a path's NAR in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTrailer {
    /// The store path.
    pub path: StorePath,
    /// Its references.
    pub references: BTreeSet<StorePath>,
    /// Its deriver, if the stream names one.
    pub deriver: Option<StorePath>,
}

/// Reads an export stream path by path.
pub struct ExportReader<R> {
    input: R,
}

impl<R: Read> ExportReader<R> {
    /// A reader of the stream `input`.
    pub fn new(input: R) -> Self {
        ExportReader { input }
    }

    /// Whether another path follows (its NAR is next: read exactly it from
    /// [`ExportReader::input`], then call [`ExportReader::trailer`]), or the stream has ended.
    pub fn next_path(&mut self) -> Result<bool, ExportError> {
        match read_u64(&mut self.input)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(ExportError::Format(format!("expected 0 or 1 before a path, found {n}"))),
        }
    }

    /// The stream, positioned at the current NAR.
    pub fn input(&mut self) -> &mut R {
        &mut self.input
    }

    /// Reads the metadata after the current NAR.
    pub fn trailer(&mut self) -> Result<ExportTrailer, ExportError> {
        let input = &mut self.input;
        if read_u64(input)? != EXPORT_MAGIC {
            return Err(ExportError::Format("missing 'NIXE' marker after a NAR".into()));
        }
        let path = read_path(input)?;
        let count = read_u64(input)?;
        if count > MAX_REFERENCES {
            return Err(ExportError::Format(format!("{count} references is implausible")));
        }
        let references = (0..count)
            .map(|_| read_path(input))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let deriver = read_string(input)?;
        let deriver = if deriver.is_empty() {
            None
        } else {
            Some(
                deriver
                    .parse()
                    .map_err(|e| ExportError::Format(format!("deriver: {e}")))?,
            )
        };
        match read_u64(input)? {
            0 => {}
            1 => {
                read_string(input)?;
            }
            n => {
                return Err(ExportError::Format(format!(
                    "expected 0 or 1 before a signature, found {n}"
                )))
            }
        }
        Ok(ExportTrailer {
            path,
            references,
            deriver,
        })
    }
}

/// Starts a path: the caller writes its NAR next, then [`write_trailer`].
pub fn write_header(out: &mut dyn Write) -> io::Result<()> {
    out.write_all(&1u64.to_le_bytes())
}

/// Writes the metadata after a path's NAR.
pub fn write_trailer(out: &mut dyn Write, info: &PathInfo) -> io::Result<()> {
    out.write_all(&EXPORT_MAGIC.to_le_bytes())?;
    write_token(out, info.path.to_string().as_bytes())?;
    out.write_all(&(info.references.len() as u64).to_le_bytes())?;
    for r in &info.references {
        write_token(out, r.to_string().as_bytes())?;
    }
    let deriver = info.deriver.as_ref().map(|d| d.to_string()).unwrap_or_default();
    write_token(out, deriver.as_bytes())?;
    out.write_all(&0u64.to_le_bytes())
}

/// Ends the stream.
pub fn write_end(out: &mut dyn Write) -> io::Result<()> {
    out.write_all(&0u64.to_le_bytes())
}

fn read_u64(r: &mut impl Read) -> Result<u64, ExportError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(r: &mut impl Read) -> Result<String, ExportError> {
    let len = read_u64(r)?;
    if len > MAX_STRING {
        return Err(ExportError::Format(format!("string of {len} bytes is too long")));
    }
    let mut b = vec![0u8; (len + padding(len)) as usize];
    r.read_exact(&mut b)?;
    if b[len as usize..].iter().any(|&x| x != 0) {
        return Err(ExportError::Format("non-zero padding".into()));
    }
    b.truncate(len as usize);
    String::from_utf8(b).map_err(|_| ExportError::Format("string is not UTF-8".into()))
}

fn read_path(r: &mut impl Read) -> Result<StorePath, ExportError> {
    read_string(r)?.parse().map_err(|e| ExportError::Format(format!("{e}")))
}
