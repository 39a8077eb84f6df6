//! The Nix Archive (NAR) format: a strict streaming parser and a streaming encoder.
//!
//! Hand-written rather than taken from a crate: Grove must emit NARs straight from Git objects
//! (and, for the mount, know the byte offset of every token), and must parse uploads strictly
//! while streaming each file into a Git blob. The `nix-nar` crate encodes only from a directory
//! on disk and its decoder does not enforce the canonical form Nix itself produces, so neither
//! half fits. The format is small: every token is a little-endian `u64` length, the bytes, and
//! zero padding to a multiple of 8.
//!
//! ```text
//! nar   = "nix-archive-1" node
//! node  = "(" "type" ( "regular" ["executable" ""] "contents" bytes
//!                    | "symlink" "target" bytes
//!                    | "directory" { "entry" "(" "name" bytes "node" node ")" } ) ")"
//! ```

use std::io::{self, Read, Write};

use super::hash::{HashingReader, NarHash};

/// The magic token a NAR starts with.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// The longest entry name or symlink target the parser accepts (Linux's `PATH_MAX`).
pub const MAX_TOKEN: u64 = 4096;

/// Errors from parsing or writing a NAR.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// Reading or writing the underlying stream failed.
    #[error("{0}")]
    Io(io::Error),
    /// The stream ended inside the archive.
    #[error("truncated NAR: the stream ended inside the archive")]
    Truncated,
    /// A token other than the grammar allows.
    #[error("malformed NAR: expected {expected}, found {found:?}")]
    Unexpected { expected: &'static str, found: String },
    /// Non-zero padding bytes.
    #[error("malformed NAR: non-zero padding")]
    BadPadding,
    /// A name or target longer than [`MAX_TOKEN`].
    #[error("malformed NAR: token of {0} bytes is too long")]
    TooLong(u64),
    /// An entry name that is empty, `.`, `..`, or holds `/` or NUL.
    #[error("malformed NAR: invalid entry name {0:?}")]
    BadName(String),
    /// Directory entries not in strictly ascending byte order (unsorted or duplicated).
    #[error("malformed NAR: entry {0:?} is out of order or duplicated")]
    Unsorted(String),
    /// A symlink with an empty target.
    #[error("malformed NAR: empty symlink target")]
    EmptyTarget,
    /// A file type NAR cannot hold (device, socket, fifo) when dumping from disk.
    #[error("{0}: not a regular file, directory or symlink")]
    BadFileType(String),
    /// The consumer of parsed entries failed (e.g. writing to Git).
    #[error("{0}")]
    Sink(String),
}

impl From<io::Error> for NarError {
    fn from(e: io::Error) -> Self {
        NarError::Io(e)
    }
}

impl NarError {
    fn from_read(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            NarError::Truncated
        } else {
            NarError::Io(e)
        }
    }
}

/// Padding needed after `len` bytes to reach a multiple of 8.
pub fn padding(len: u64) -> u64 {
    (8 - len % 8) % 8
}

/// Size in the NAR of a string token of `len` bytes: length prefix, bytes, padding.
pub fn token_size(len: u64) -> u64 {
    8 + len + padding(len)
}

/// The longest entry name accepted: what Linux file systems (and so Nix) can hold.
pub const MAX_NAME: usize = 255;

/// Checks a directory entry name: 1 to 255 bytes, not `.` or `..`, without `/` or NUL.
pub fn valid_entry_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != b"."
        && name != b".."
        && !name.contains(&b'/')
        && !name.contains(&0)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Writes NAR tokens. Callers drive it in document order; it does no I/O buffering of its own.
pub struct Encoder<W: Write> {
    out: W,
}

impl<W: Write> Encoder<W> {
    /// Starts a NAR on `out` by writing the magic.
    pub fn new(mut out: W) -> io::Result<Self> {
        write_token(&mut out, MAGIC)?;
        Ok(Encoder { out })
    }

    /// Writes a whole regular file node whose contents come from `contents` (exactly `size` bytes).
    pub fn file(&mut self, executable: bool, size: u64, contents: &mut dyn Read) -> io::Result<()> {
        self.file_header(executable, size)?;
        let copied = io::copy(&mut contents.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while writing: {copied} of {size} bytes"),
            ));
        }
        self.file_trailer(size)
    }

    /// Writes a regular file node up to its contents; the caller writes the `size` bytes next.
    pub fn file_header(&mut self, executable: bool, size: u64) -> io::Result<()> {
        self.tokens(&[b"(", b"type", b"regular"])?;
        if executable {
            self.tokens(&[b"executable", b""])?;
        }
        self.tokens(&[b"contents"])?;
        self.out.write_all(&size.to_le_bytes())
    }

    /// Closes a regular file node after its `size` bytes of contents.
    pub fn file_trailer(&mut self, size: u64) -> io::Result<()> {
        self.out.write_all(&[0u8; 8][..padding(size) as usize])?;
        self.tokens(&[b")"])
    }

    /// Writes a symlink node.
    pub fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        self.tokens(&[b"(", b"type", b"symlink", b"target", target, b")"])
    }

    /// Opens a directory node.
    pub fn dir_start(&mut self) -> io::Result<()> {
        self.tokens(&[b"(", b"type", b"directory"])
    }

    /// Opens an entry of the current directory; its node follows.
    pub fn entry_start(&mut self, name: &[u8]) -> io::Result<()> {
        self.tokens(&[b"entry", b"(", b"name", name, b"node"])
    }

    /// Closes an entry.
    pub fn entry_end(&mut self) -> io::Result<()> {
        self.tokens(&[b")"])
    }

    /// Closes a directory node.
    pub fn dir_end(&mut self) -> io::Result<()> {
        self.tokens(&[b")"])
    }

    /// The underlying writer, e.g. to interleave file contents written elsewhere.
    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn tokens(&mut self, tokens: &[&[u8]]) -> io::Result<()> {
        tokens.iter().try_for_each(|t| write_token(&mut self.out, t))
    }
}

/// Writes one NAR string token: length, bytes, zero padding to 8.
pub fn write_token(out: &mut (impl Write + ?Sized), bytes: &[u8]) -> io::Result<()> {
    out.write_all(&(bytes.len() as u64).to_le_bytes())?;
    out.write_all(bytes)?;
    out.write_all(&[0u8; 8][..padding(bytes.len() as u64) as usize])
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Receives the nodes of a NAR as the parser meets them, children before their directory.
pub trait NarVisitor {
    /// What the visitor makes of a node (e.g. a Git object id).
    type Node;

    /// A regular file; `contents` yields exactly `size` bytes (what is not read is skipped).
    fn file(&mut self, executable: bool, size: u64, contents: &mut dyn Read) -> Result<Self::Node, NarError>;

    /// A symlink with its target.
    fn symlink(&mut self, target: &[u8]) -> Result<Self::Node, NarError>;

    /// A directory, once all its entries (sorted, unique, valid names) are parsed.
    fn directory(&mut self, entries: Vec<(Vec<u8>, Self::Node)>) -> Result<Self::Node, NarError>;
}

/// Parses one NAR from `input`, reading exactly its bytes and nothing after it, and hands its nodes
/// to `visitor`. Returns the root node with the NAR's hash and size.
pub fn parse<V: NarVisitor>(input: &mut dyn Read, visitor: &mut V) -> Result<(V::Node, NarHash, u64), NarError> {
    let mut p = Parser {
        input: HashingReader::new(input),
    };
    p.expect(MAGIC, "the NAR magic 'nix-archive-1'")?;
    let root = p.node(visitor, 0)?;
    let (hash, size) = p.input.finish();
    Ok((root, hash, size))
}

/// A visitor that keeps nothing: for validating and hashing a NAR.
pub struct Discard;

impl NarVisitor for Discard {
    type Node = ();
    fn file(&mut self, _: bool, _: u64, _: &mut dyn Read) -> Result<(), NarError> {
        Ok(())
    }
    fn symlink(&mut self, _: &[u8]) -> Result<(), NarError> {
        Ok(())
    }
    fn directory(&mut self, _: Vec<(Vec<u8>, ())>) -> Result<(), NarError> {
        Ok(())
    }
}

/// File contents as the parser hands them out: errors on a premature end of stream.
struct Contents<'a, 'b> {
    input: &'a mut HashingReader<&'b mut dyn Read>,
    left: u64,
}

impl Read for Contents<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.input.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Directories nest no deeper than this (a guard against stack exhaustion on hostile input).
const MAX_DEPTH: usize = 256;

struct Parser<'a> {
    input: HashingReader<&'a mut dyn Read>,
}

impl Parser<'_> {
    fn u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.input.read_exact(&mut b).map_err(NarError::from_read)?;
        Ok(u64::from_le_bytes(b))
    }

    fn pad(&mut self, len: u64) -> Result<(), NarError> {
        let n = padding(len) as usize;
        let mut b = [0u8; 8];
        self.input.read_exact(&mut b[..n]).map_err(NarError::from_read)?;
        if b[..n].iter().any(|&x| x != 0) {
            return Err(NarError::BadPadding);
        }
        Ok(())
    }

    fn token(&mut self) -> Result<Vec<u8>, NarError> {
        let len = self.u64()?;
        if len > MAX_TOKEN {
            return Err(NarError::TooLong(len));
        }
        let mut b = vec![0u8; len as usize];
        self.input.read_exact(&mut b).map_err(NarError::from_read)?;
        self.pad(len)?;
        Ok(b)
    }

    fn expect(&mut self, want: &[u8], expected: &'static str) -> Result<(), NarError> {
        let got = self.token()?;
        if got != want {
            return Err(NarError::Unexpected {
                expected,
                found: String::from_utf8_lossy(&got).into_owned(),
            });
        }
        Ok(())
    }

    fn node<V: NarVisitor>(&mut self, v: &mut V, depth: usize) -> Result<V::Node, NarError> {
        if depth > MAX_DEPTH {
            return Err(NarError::Sink(format!(
                "malformed NAR: directories nested deeper than {MAX_DEPTH}"
            )));
        }
        self.expect(b"(", "'('")?;
        self.expect(b"type", "'type'")?;
        let kind = self.token()?;
        let node = match kind.as_slice() {
            b"regular" => {
                let mut tag = self.token()?;
                let executable = tag == b"executable";
                if executable {
                    self.expect(b"", "an empty token after 'executable'")?;
                    tag = self.token()?;
                }
                if tag != b"contents" {
                    return Err(NarError::Unexpected {
                        expected: "'contents'",
                        found: String::from_utf8_lossy(&tag).into_owned(),
                    });
                }
                let size = self.u64()?;
                let mut contents = Contents {
                    input: &mut self.input,
                    left: size,
                };
                let node = v.file(executable, size, &mut contents).map_err(|e| match e {
                    NarError::Io(io) => NarError::from_read(io),
                    e => e,
                })?;
                io::copy(&mut contents, &mut io::sink()).map_err(NarError::from_read)?;
                self.pad(size)?;
                node
            }
            b"symlink" => {
                self.expect(b"target", "'target'")?;
                let target = self.token()?;
                if target.is_empty() {
                    return Err(NarError::EmptyTarget);
                }
                v.symlink(&target)?
            }
            b"directory" => {
                let mut entries: Vec<(Vec<u8>, V::Node)> = Vec::new();
                loop {
                    let tag = self.token()?;
                    match tag.as_slice() {
                        b")" => return v.directory(entries),
                        b"entry" => {}
                        other => {
                            return Err(NarError::Unexpected {
                                expected: "'entry' or ')'",
                                found: String::from_utf8_lossy(other).into_owned(),
                            })
                        }
                    }
                    self.expect(b"(", "'('")?;
                    self.expect(b"name", "'name'")?;
                    let name = self.token()?;
                    if !valid_entry_name(&name) {
                        return Err(NarError::BadName(String::from_utf8_lossy(&name).into_owned()));
                    }
                    if entries
                        .last()
                        .is_some_and(|(prev, _)| prev.as_slice() >= name.as_slice())
                    {
                        return Err(NarError::Unsorted(String::from_utf8_lossy(&name).into_owned()));
                    }
                    self.expect(b"node", "'node'")?;
                    let child = self.node(v, depth + 1)?;
                    self.expect(b")", "')'")?;
                    entries.push((name, child));
                }
            }
            other => {
                return Err(NarError::Unexpected {
                    expected: "'regular', 'symlink' or 'directory'",
                    found: String::from_utf8_lossy(other).into_owned(),
                })
            }
        };
        self.expect(b")", "')'")?;
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nar_of(build: impl FnOnce(&mut Encoder<&mut Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf).unwrap();
        build(&mut enc).unwrap();
        buf
    }

    #[test]
    fn single_file_layout() {
        let nar = nar_of(|e| e.file(false, 3, &mut &b"abc"[..]));
        // magic(8+16) "("(16) "type"(16) "regular"(16) "contents"(16) 3(8) abc+pad(8) ")"(16)
        assert_eq!(nar.len(), 24 + 16 * 4 + 8 + 8 + 16);
        parse(&mut &nar[..], &mut Discard).unwrap();
    }

    #[test]
    fn parser_reads_exactly_the_nar() {
        let mut nar = nar_of(|e| e.symlink(b"target"));
        let len = nar.len();
        nar.extend_from_slice(b"trailing");
        let mut r = &nar[..];
        let (_, _, size) = parse(&mut r, &mut Discard).unwrap();
        assert_eq!(size as usize, len);
        assert_eq!(r, b"trailing");
    }

    fn dir(entries: &[&[u8]]) -> Vec<u8> {
        nar_of(|e| {
            e.dir_start()?;
            for n in entries {
                e.entry_start(n)?;
                e.file(false, 0, &mut io::empty())?;
                e.entry_end()?;
            }
            e.dir_end()
        })
    }

    #[test]
    fn rejects_bad_directories() {
        assert!(parse(&mut &dir(&[b"a", b"b"])[..], &mut Discard).is_ok());
        for (names, what) in [
            (&[&b"b"[..], b"a"][..], "unsorted"),
            (&[b"a", b"a"], "duplicate"),
            (&[b"a/b"], "slash"),
            (&[b".."], "dotdot"),
            (&[b"."], "dot"),
            (&[b""], "empty"),
            (&[b"a\0"], "nul"),
        ] {
            let err = parse(&mut &dir(names)[..], &mut Discard).unwrap_err();
            assert!(
                matches!(err, NarError::BadName(_) | NarError::Unsorted(_)),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn rejects_truncation_and_padding() {
        let nar = nar_of(|e| e.file(true, 5, &mut &b"hello"[..]));
        for cut in [0, 7, 20, nar.len() - 20, nar.len() - 1] {
            let err = parse(&mut &nar[..cut], &mut Discard).unwrap_err();
            assert!(matches!(err, NarError::Truncated), "cut {cut}: {err}");
        }
        let mut bad = nar.clone();
        let pad_at = nar.len() - 16 - 1; // last padding byte of the contents
        bad[pad_at] = 1;
        assert!(matches!(parse(&mut &bad[..], &mut Discard), Err(NarError::BadPadding)));
        let mut wrong_magic = nar;
        wrong_magic[8] = b'X';
        assert!(matches!(
            parse(&mut &wrong_magic[..], &mut Discard),
            Err(NarError::Unexpected { .. })
        ));
    }
}
