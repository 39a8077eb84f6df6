//! A path's NAR as a sequence of segments — NAR syntax bytes and whole Git blobs — each at its
//! offset, computed from the tree without reading file contents. It answers "which bytes are at
//! offset N" for the mount's virtual NAR files and for NAR byte ranges.

use std::io::{self, Write};

use crate::nix::nar::Encoder;

use crate::nix::hash::{HashingWriter, NarHash};

use super::error::{check_nar, StoreError};
use super::repo::{Entry, Kind, ObjectId, Root, Store};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a run of NAR bytes comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// NAR syntax: tokens, names, symlink targets, padding.
    Syntax(Vec<u8>),
    /// A regular file's contents: the whole blob.
    Blob {
        /// The blob.
        oid: ObjectId,
        /// Its size.
        len: u64,
    },
}

impl Segment {
    /// Number of NAR bytes the segment covers.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Syntax(b) => b.len() as u64,
            Segment::Blob { len, .. } => *len,
        }
    }

    /// Whether it covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The layout of one NAR.
#[derive(Debug, Clone, Default)]
pub struct NarLayout {
    starts: Vec<u64>,
    segments: Vec<Segment>,
    size: u64,
}

impl NarLayout {
    /// The NAR's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The segments from the one holding `offset` on, each with its start offset.
    pub fn from(&self, offset: u64) -> impl Iterator<Item = (u64, &Segment)> {
        let first = self.starts.partition_point(|&s| s <= offset).saturating_sub(1);
        self.starts[first..].iter().copied().zip(&self.segments[first..])
    }

    /// Copies NAR bytes `start..end` to `out`: syntax from the layout, and of each file the
    /// part `from..to` of its blob through `blob(oid, len, from, to, out)`.
    pub fn copy_range<E: From<io::Error>>(
        &self,
        start: u64,
        end: u64,
        out: &mut dyn Write,
        mut blob: impl FnMut(ObjectId, u64, u64, u64, &mut dyn Write) -> Result<(), E>,
    ) -> Result<(), E> {
        for (at, segment) in self.from(start) {
            if at >= end {
                break;
            }
            let from = start.saturating_sub(at);
            let to = segment.len().min(end - at);
            match segment {
                Segment::Syntax(bytes) => out.write_all(&bytes[from as usize..to as usize])?,
                Segment::Blob { oid, len } => blob(*oid, *len, from, to, out)?,
            }
        }
        Ok(())
    }

    fn push(&mut self, segment: Segment) {
        if segment.is_empty() {
            return;
        }
        self.starts.push(self.size);
        self.size += segment.len();
        self.segments.push(segment);
    }
}

/// Collects syntax bytes written through an [`Encoder`] and blob segments put between them.
#[derive(Default)]
struct Builder {
    layout: NarLayout,
    syntax: Vec<u8>,
}

impl Builder {
    fn blob(&mut self, oid: ObjectId, len: u64) {
        let syntax = std::mem::take(&mut self.syntax);
        self.layout.push(Segment::Syntax(syntax));
        self.layout.push(Segment::Blob { oid, len });
    }

    fn finish(mut self) -> NarLayout {
        let syntax = std::mem::take(&mut self.syntax);
        self.layout.push(Segment::Syntax(syntax));
        self.layout
    }
}

impl Write for Builder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.syntax.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Store {
    /// Writes the path's NAR, byte for byte what `nix-store --dump` writes.
    pub fn write_nar(&self, root: &Root, out: &mut dyn Write) -> Result<()> {
        let layout = self.nar_layout(root)?;
        self.write_nar_range(&layout, 0, layout.size(), out)
    }

    /// Writes bytes `start..end` of the NAR with this layout, reading only the blobs they cover.
    pub fn write_nar_range(&self, layout: &NarLayout, start: u64, end: u64, out: &mut dyn Write) -> Result<()> {
        layout.copy_range(start, end, out, |oid, len, from, to, out| {
            self.write_blob_range(oid, len, from, to, out)
        })
    }

    /// Re-hashes a path's NAR from Git.
    pub fn hash_nar(&self, root: &Root) -> Result<(NarHash, u64)> {
        let mut h = HashingWriter::new();
        self.write_nar(root, &mut h)?;
        Ok(h.finish())
    }

    /// Re-hashes an entry's contents and compares them with its recorded NarHash and NarSize.
    pub fn check_contents(&self, entry: &Entry) -> Result<()> {
        let (actual, size) = self.hash_nar(&entry.root)?;
        check_nar(&entry.info, actual, size)
    }

    /// The NAR layout of a path's contents.
    pub fn nar_layout(&self, root: &Root) -> Result<NarLayout, StoreError> {
        let odb = self.repo.odb()?;
        let mut enc = Encoder::new(Builder::default())?;
        self.layout_node(&odb, root, &mut enc)?;
        Ok(enc.into_inner().finish())
    }

    fn layout_node(&self, odb: &git2::Odb<'_>, node: &Root, enc: &mut Encoder<Builder>) -> Result<(), StoreError> {
        match node.kind {
            Kind::Directory => {
                enc.dir_start()?;
                for (name, child) in self.children(node)? {
                    enc.entry_start(&name)?;
                    self.layout_node(odb, &child, enc)?;
                    enc.entry_end()?;
                }
                enc.dir_end()?;
            }
            Kind::Symlink => enc.symlink(self.repo.find_blob(node.oid)?.content())?,
            kind => {
                let (len, _) = odb.read_header(node.oid)?;
                let len = len as u64;
                enc.file_header(kind == Kind::Executable, len)?;
                enc.writer_mut().blob(node.oid, len);
                enc.file_trailer(len)?;
            }
        }
        Ok(())
    }
}
