//! Writing a batch's objects as Git packs instead of one loose file each.
//!
//! A loose object costs a file: creating, writing and renaming it (and a fan-out directory
//! lookup) takes most of the time of importing a small path, and a million paths would be
//! millions of files. A [`PackSink`] deflates each new object into memory and, every
//! [`FLUSH_AT`] bytes and when the batch commits, writes them as one pack with its index
//! (version 2): the `.pack` is renamed into place first, then the `.idx`, whose arrival makes
//! the objects visible. libgit2 can write a pack only from objects already in a repository
//! (its pack builder, which also searches for deltas) or index one it is given (inflating and
//! re-hashing every object, about a fifth of an import's time); the sink knows every object's
//! id, offset and checksum already, and both formats are a few lines for a pack without
//! deltas, so they are written here.
//!
//! Objects already in the store (by a lookup that does not rescan the pack directory) or
//! already in this sink are not written again.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use flate2::write::ZlibEncoder;
use git2::{ObjectType, Odb, OdbLookupFlags, Repository};
use sha1::{Digest, Sha1};

use super::error::StoreError;
use super::repo::ObjectId;

/// Compressed bytes held before they are written as a pack.
const FLUSH_AT: usize = 64 << 20;

/// New objects of one writer, on their way into packs.
#[derive(Default)]
pub struct PackSink {
    /// Pack entries (type-and-size header, zlib data) not yet written.
    entries: Vec<u8>,
    count: u32,
    /// Every object this sink holds.
    known: HashSet<ObjectId>,
    /// The held objects: id, offset of the entry in the pack, CRC-32 of the entry.
    index: Vec<(ObjectId, u64, u32)>,
}

impl PackSink {
    /// Adds an object and returns its id; it is in the repository after the next
    /// [`PackSink::flush`].
    pub fn add(&mut self, repo: &Repository, kind: ObjectType, data: &[u8]) -> Result<ObjectId, StoreError> {
        let oid = ObjectId::hash_object(kind, data)?;
        if self.known.contains(&oid) || present(&repo.odb()?, oid) {
            return Ok(oid);
        }
        let start = self.entries.len();
        push_entry(&mut self.entries, kind, data)?;
        let crc = crc32fast::hash(&self.entries[start..]);
        self.index.push((oid, PACK_HEADER + start as u64, crc));
        self.count += 1;
        self.known.insert(oid);
        if self.entries.len() >= FLUSH_AT {
            self.flush(repo)?;
        }
        Ok(oid)
    }

    /// Writes what the sink holds as one pack and its index (nothing if it holds nothing).
    pub fn flush(&mut self, repo: &Repository) -> Result<(), StoreError> {
        if self.count == 0 {
            return Ok(());
        }
        let mut head = Vec::with_capacity(PACK_HEADER as usize);
        head.extend_from_slice(b"PACK");
        head.extend_from_slice(&2u32.to_be_bytes());
        head.extend_from_slice(&self.count.to_be_bytes());
        let mut sha = Sha1::new();
        sha.update(&head);
        sha.update(&self.entries);
        let checksum: [u8; 20] = sha.finalize().into();
        let idx = index_bytes(&mut self.index, &checksum);
        let dir = repo.path().join("objects/pack");
        std::fs::create_dir_all(&dir)?;
        let name = format!("pack-{}", hex(&checksum));
        let tmp = |ext: &str| dir.join(format!("tmp_grove_{}_{name}.{ext}", std::process::id()));
        let write = |path: &Path, parts: &[&[u8]]| -> std::io::Result<()> {
            let mut f = std::fs::File::create(path)?;
            for p in parts {
                f.write_all(p)?;
            }
            f.sync_all()
        };
        let (tmp_pack, tmp_idx) = (tmp("pack"), tmp("idx"));
        let written = write(&tmp_pack, &[&head, &self.entries, &checksum])
            .and_then(|()| write(&tmp_idx, &[&idx]))
            .and_then(|()| std::fs::rename(&tmp_pack, dir.join(format!("{name}.pack"))))
            .and_then(|()| std::fs::rename(&tmp_idx, dir.join(format!("{name}.idx"))));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp_pack);
            let _ = std::fs::remove_file(&tmp_idx);
            return Err(e.into());
        }
        self.entries.clear();
        self.index.clear();
        self.count = 0;
        // The store's lookups find them now; `known` need not hold a batch's every object.
        repo.odb()?.refresh()?;
        self.known.clear();
        Ok(())
    }
}

/// Bytes before the first entry of a pack.
const PACK_HEADER: u64 = 12;

/// A version 2 pack index of `objects` (sorted here) for the pack whose checksum is `pack`.
fn index_bytes(objects: &mut [(ObjectId, u64, u32)], pack: &[u8; 20]) -> Vec<u8> {
    objects.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = Vec::with_capacity(8 + 1024 + objects.len() * 28 + 40);
    out.extend_from_slice(b"\xfftOc");
    out.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for (oid, _, _) in objects.iter() {
        fanout[oid.as_bytes()[0] as usize] += 1;
    }
    let mut total = 0;
    for n in fanout {
        total += n;
        out.extend_from_slice(&total.to_be_bytes());
    }
    for (oid, _, _) in objects.iter() {
        out.extend_from_slice(oid.as_bytes());
    }
    for (_, _, crc) in objects.iter() {
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for (_, offset, _) in objects.iter() {
        if *offset < 1 << 31 {
            out.extend_from_slice(&(*offset as u32).to_be_bytes());
        } else {
            out.extend_from_slice(&((1u32 << 31) | large.len() as u32).to_be_bytes());
            large.push(*offset);
        }
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack);
    let own: [u8; 20] = Sha1::digest(&out).into();
    out.extend_from_slice(&own);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the object store has `oid` already, without rescanning for new packs.
fn present(odb: &Odb<'_>, oid: ObjectId) -> bool {
    odb.exists_ext(oid, OdbLookupFlags::NO_REFRESH)
}

/// Appends one undeltified pack entry: the type and size header, then the zlib stream.
fn push_entry(out: &mut Vec<u8>, kind: ObjectType, data: &[u8]) -> Result<(), StoreError> {
    let code: u8 = match kind {
        ObjectType::Commit => 1,
        ObjectType::Tree => 2,
        ObjectType::Blob => 3,
        _ => return Err(StoreError::Corrupt("pack".into(), format!("cannot pack a {kind}"))),
    };
    let mut size = data.len() as u64;
    let mut byte = (code << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        out.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    out.push(byte);
    let mut z = ZlibEncoder::new(out, flate2::Compression::default());
    z.write_all(data)?;
    z.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_objects_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(tmp.path()).unwrap();
        let mut sink = PackSink::default();
        let big = vec![7u8; 100_000];
        let a = sink.add(&repo, ObjectType::Blob, b"hello").unwrap();
        let b = sink.add(&repo, ObjectType::Blob, &big).unwrap();
        assert_eq!(sink.add(&repo, ObjectType::Blob, b"hello").unwrap(), a);
        assert_eq!(sink.count, 2);
        sink.flush(&repo).unwrap();
        assert_eq!(repo.find_blob(a).unwrap().content(), b"hello");
        assert_eq!(repo.find_blob(b).unwrap().content(), &big[..]);
        // Present in the store now: not written again.
        assert_eq!(sink.add(&repo, ObjectType::Blob, &big).unwrap(), b);
        assert_eq!(sink.count, 0);
        // Git itself accepts the pack and its index.
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(tmp.path())
            .args(["fsck", "--strict"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(tmp.path())
            .args(["verify-pack", "-v"])
            .arg(
                std::fs::read_dir(tmp.path().join("objects/pack"))
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|e| e == "idx"))
                    .unwrap(),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
