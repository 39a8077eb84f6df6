//! What each fuzz target checks, in one place: the fuzz targets (`fuzz/fuzz_targets/*.rs`) and
//! the stable regression tests (`tests/fuzz_regressions.rs`) both import this file, so a saved
//! input is checked exactly as the fuzzer checked it. Every check must never panic on any input;
//! a panic (a failed assertion included) is a finding.

// Each fuzz target uses one of these functions.
#![allow(dead_code)]

use std::io::{self, Read};

use grove::nix::cache_file::{CacheFile, NarFile};
use grove::nix::compression::Compression;
use grove::nix::export::{self, ExportReader, ExportTrailer};
use grove::nix::hash::NarHash;
use grove::nix::nar::{self, Discard, Encoder, NarError, NarVisitor};
use grove::nix::narinfo::{NarInfo, PathInfo};
use grove::nix::store_path::StoreHash;
use grove::serve::error::Reject;
use grove::serve::range::{parse_range, RangeAnswer};
use grove::serve::upload::{receive_nar, receive_narinfo};
use grove::store::raw;
use grove::store::Store;

/// The NAR parser. Whatever it accepts it read exactly (the reported size is the bytes consumed,
/// the hash theirs), whatever the sizes of the reads it is given, and it is canonical: encoding
/// the parsed tree again gives back the same bytes.
pub fn nar(data: &[u8]) {
    let mut rest = data;
    let whole = nar::parse(&mut rest, &mut Discard);
    let consumed = data.len() - rest.len();

    let mut dribble = Dribble { data, at: 0 };
    let trickled = nar::parse(&mut dribble, &mut Discard);
    match (&whole, &trickled) {
        (Ok((_, h1, n1)), Ok((_, h2, n2))) => {
            assert_eq!((h1, n1), (h2, n2), "a NAR parses differently read in small pieces");
            assert_eq!(
                dribble.at, consumed,
                "a NAR read in small pieces consumed another length"
            );
        }
        (Err(e1), Err(e2)) => assert_eq!(e1.to_string(), e2.to_string(), "errors depend on read sizes"),
        _ => panic!("the outcome depends on read sizes: {whole:?} / {trickled:?}"),
    }

    let Ok(((), hash, size)) = whole else { return };
    assert_eq!(size, consumed as u64, "reported NAR size is not the bytes consumed");
    assert_eq!(
        hash,
        NarHash::of(&data[..consumed]),
        "reported NAR hash is not the bytes consumed"
    );
    let (tree, _, _) = nar::parse(&mut &data[..], &mut Tree).expect("accepted with Discard, refused with Tree");
    let mut enc = Encoder::new(Vec::new()).expect("writing to a Vec");
    encode(&tree, &mut enc).expect("writing to a Vec");
    assert!(
        enc.into_inner() == data[..consumed],
        "an accepted NAR is not canonical: encoding its tree gives other bytes"
    );
}

/// The narinfo parser. Whatever parses renders to text that parses to the same narinfo and
/// renders the same again (unknown fields, `Deriver: unknown-deriver` and empty `CA` are
/// dropped on the way, which equality of the parsed values allows).
pub fn narinfo(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(ni) = NarInfo::parse(text) else { return };
    let rendered = ni.render();
    let again =
        NarInfo::parse(&rendered).unwrap_or_else(|e| panic!("a rendered narinfo does not parse ({e}):\n{rendered}"));
    assert_eq!(again, ni, "a narinfo changed through render and parse:\n{rendered}");
    assert_eq!(again.render(), rendered, "rendering is not stable");
    let _ = ni.info.fingerprint();
    if let Some(url) = &ni.url {
        let _ = CacheFile::parse(url);
    }
}

/// The export stream reader, driven as `grove import` drives it: per path, exactly one NAR from
/// [`ExportReader::input`], then the trailer; the first error ends it. A stream read to its end
/// is written again as Grove writes exports and reads back the same.
pub fn export(data: &[u8]) {
    let Some(paths) = read_export(data) else { return };
    let mut out = Vec::new();
    for (nar, hash, t) in &paths {
        let info = PathInfo {
            path: t.path.clone(),
            nar_hash: *hash,
            nar_size: nar.len() as u64,
            references: t.references.clone(),
            deriver: t.deriver.clone(),
            ca: None,
            sigs: Vec::new(),
        };
        export::write_header(&mut out).expect("writing to a Vec");
        out.extend_from_slice(nar);
        export::write_trailer(&mut out, &info).expect("writing to a Vec");
    }
    export::write_end(&mut out).expect("writing to a Vec");
    let again = read_export(&out).expect("an export stream Grove wrote does not read back");
    assert_eq!(again, paths, "an export stream changed through writing and reading");
}

/// The paths of an export stream (NAR bytes, NAR hash, trailer), or `None` at the first error.
fn read_export(data: &[u8]) -> Option<Vec<(&[u8], NarHash, ExportTrailer)>> {
    let mut reader = ExportReader::new(data);
    let mut paths = Vec::new();
    while reader.next_path().ok()? {
        let start = data.len() - reader.input().len();
        let ((), hash, size) = nar::parse(reader.input(), &mut Discard).ok()?;
        let nar = &data[start..data.len() - reader.input().len()];
        assert_eq!(nar.len() as u64, size, "reported NAR size is not the bytes consumed");
        paths.push((nar, hash, reader.trailer().ok()?));
    }
    Some(paths)
}

/// The `Range` header parser: the first 8 bytes (little-endian, zero-padded) are the body's
/// size, the rest the header value. A part is never empty nor past the end, and whitespace
/// around the value does not matter.
pub fn range(data: &[u8]) {
    let (head, value) = data.split_at(data.len().min(8));
    let mut size = [0u8; 8];
    size[..head.len()].copy_from_slice(head);
    let size = u64::from_le_bytes(size);
    let value = String::from_utf8_lossy(value);
    let answer = parse_range(&value, size);
    if let RangeAnswer::Part(start, end) = answer {
        assert!(
            start < end && end <= size,
            "{value:?} on {size} bytes gave {start}..{end}"
        );
    }
    assert_eq!(
        parse_range(&format!(" \t{value} "), size),
        answer,
        "whitespace changed {value:?}"
    );
}

/// Cache file names: whatever parses is the canonical name of what it parsed to, so one file
/// has one name.
/// The raw commit and tree readers of listings (bytes from the repository on disk): any
/// answer lies within the input.
pub fn raw_objects(data: &[u8]) {
    if let Some((_, message)) = raw::commit_tree_and_message(data) {
        assert!(data.ends_with(message), "the message is not the commit's tail");
    }
    for name in [&b"out"[..], b"narinfo", b""] {
        if let Some((_, oid)) = raw::tree_entry(data, name) {
            let id = oid.as_bytes();
            assert!(data.windows(id.len()).any(|w| w == id), "an id not in the tree");
        }
    }
}

pub fn cache_file(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else { return };
    let Ok(file) = CacheFile::parse(name) else { return };
    let canonical = match &file {
        CacheFile::CacheInfo => "nix-cache-info".to_string(),
        CacheFile::NarInfo(h) => format!("{h}.narinfo"),
        CacheFile::Listing(h) => format!("{h}.ls"),
        CacheFile::Nar(f) => {
            if let Some(h) = f.store_hash() {
                assert!(name.starts_with(&format!("nar/{h}.nar")), "{name:?} names hash {h}");
            }
            f.to_string()
        }
    };
    assert_eq!(canonical, name, "{name:?} parsed to {file:?}");
    assert_eq!(CacheFile::parse(&canonical).as_ref(), Ok(&file));
}

/// The hash an upload's narinfo is PUT as when the input does not take it from the narinfo.
const FIXED_HASH: &str = "0q43idch209zsdngl8yl79x0y79aajib";
/// The name the NAR is PUT as when the input does not take it from the narinfo's URL.
const FIXED_NAR: &str = "fixed.nar";
/// The most NAR bytes an upload may unpack to (a bound on decompression bombs).
const MAX_NAR: u64 = 16 << 20;

/// The upload path, a NAR file then its narinfo, into a fresh store. The input is a flags byte
/// (bit 0: PUT the narinfo as its own StorePath's hash, else as [`FIXED_HASH`]; bit 1: PUT the
/// NAR as the narinfo's URL, else as [`FIXED_NAR`]), the narinfo text, `\0\0\0\0`, and the NAR
/// file. Refusals are fine; a panic or an internal error (a 500) is a finding. An uncompressed
/// NAR file is stored exactly when it is one valid NAR (what the parser accepts, Git can hold),
/// and then was hashed and measured as sent; a path that is added reads back with
/// the narinfo's metadata and gives back a NAR of its NarHash and NarSize (byte for byte the
/// upload, when uncompressed); its narinfo sent again is "present".
pub fn upload(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (text, file_bytes) = match rest.windows(4).position(|w| w == b"\0\0\0\0") {
        Some(i) => (&rest[..i], &rest[i + 4..]),
        None => (rest, &[][..]),
    };
    let parsed = std::str::from_utf8(text).ok().and_then(|t| NarInfo::parse(t).ok());
    let hash: StoreHash = match &parsed {
        Some(ni) if flags & 1 != 0 => ni.info.path.hash(),
        _ => FIXED_HASH.parse().expect("a valid hash"),
    };
    let file = parsed
        .as_ref()
        .filter(|_| flags & 2 != 0)
        .and_then(|ni| match CacheFile::parse(ni.url.as_deref()?) {
            Ok(CacheFile::Nar(f)) => Some(f),
            _ => None,
        })
        .unwrap_or_else(|| NarFile::parse(FIXED_NAR).expect("a valid NAR file name"));

    // A fresh store per input, so an input does the same whatever ran before it.
    let dir = scratch_dir();
    let store = Store::init(dir.path()).expect("creating a store");
    // Named through `receive_narinfo`'s signature, wherever the type lives.
    let pending = Default::default();
    let put_narinfo = || receive_narinfo(&store, hash, text, &pending);

    let received = receive_nar(&store, &file, file_bytes, MAX_NAR);
    if file.compression == Compression::None {
        let mut rest = file_bytes;
        let valid = nar::parse(&mut rest, &mut Discard).is_ok() && rest.is_empty();
        assert_eq!(
            received.is_ok(),
            valid,
            "a plain NAR file that is exactly one valid NAR is not stored, or the reverse: {:?}",
            received.as_ref().err()
        );
    }
    match received {
        Ok(nar) => {
            if file.compression == Compression::None {
                let sent = (NarHash::of(file_bytes), file_bytes.len() as u64);
                assert_eq!((nar.file_hash, nar.file_size), sent, "FileHash/FileSize of a plain NAR");
                assert_eq!(
                    (nar.contents.nar_hash, nar.contents.nar_size),
                    sent,
                    "NarHash/NarSize of a plain NAR"
                );
            }
            pending.insert(file.clone(), nar);
        }
        Err(Reject::Internal(why)) => panic!("uploading a NAR failed inside: {why}"),
        Err(_) => {}
    }

    match put_narinfo() {
        Ok(true) => {
            let ni = parsed.expect("an accepted narinfo parses");
            let entry = store
                .get(&hash)
                .expect("reading the store")
                .expect("an added path is in the store");
            assert_eq!(entry.info, ni.info, "an added path reads back with other metadata");
            let mut nar = Vec::new();
            store
                .write_nar(&entry.root, &mut nar)
                .expect("writing the NAR from Git");
            assert_eq!(
                (NarHash::of(&nar), nar.len() as u64),
                (ni.info.nar_hash, ni.info.nar_size),
                "an added path gives back another NAR"
            );
            if file.compression == Compression::None {
                assert!(nar == file_bytes, "an added path gives back another NAR than uploaded");
            }
            assert!(
                matches!(put_narinfo(), Ok(false)),
                "a narinfo sent again is not 'present'"
            );
        }
        Ok(false) => panic!("a path is 'present' in a fresh store"),
        Err(Reject::Internal(why)) => panic!("uploading a narinfo failed inside: {why}"),
        Err(_) => {}
    }
}

/// A fresh directory for one input's store, in memory where there is `/dev/shm`.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix("grove-fuzz-");
    if shm.is_dir() { b.tempdir_in(shm) } else { b.tempdir() }.expect("a scratch directory")
}

/// Hands out its bytes a few at a time (1 to 7, cycling), as a network stream might.
struct Dribble<'a> {
    data: &'a [u8],
    at: usize,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.at).min(1 + self.at % 7);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A NAR's tree, kept whole.
#[derive(Debug)]
enum Node {
    File(bool, Vec<u8>),
    Symlink(Vec<u8>),
    Directory(Vec<(Vec<u8>, Node)>),
}

struct Tree;

impl NarVisitor for Tree {
    type Node = Node;

    fn file(&mut self, executable: bool, size: u64, contents: &mut dyn Read) -> Result<Node, NarError> {
        let mut buf = Vec::new();
        contents.read_to_end(&mut buf)?;
        assert_eq!(buf.len() as u64, size, "a file's contents are not its size");
        Ok(Node::File(executable, buf))
    }

    fn symlink(&mut self, target: &[u8]) -> Result<Node, NarError> {
        Ok(Node::Symlink(target.to_vec()))
    }

    fn directory(&mut self, entries: Vec<(Vec<u8>, Node)>) -> Result<Node, NarError> {
        Ok(Node::Directory(entries))
    }
}

fn encode(node: &Node, enc: &mut Encoder<Vec<u8>>) -> io::Result<()> {
    match node {
        Node::File(executable, contents) => enc.file(*executable, contents.len() as u64, &mut &contents[..]),
        Node::Symlink(target) => enc.symlink(target),
        Node::Directory(entries) => {
            enc.dir_start()?;
            for (name, child) in entries {
                enc.entry_start(name)?;
                encode(child, enc)?;
                enc.entry_end()?;
            }
            enc.dir_end()
        }
    }
}
