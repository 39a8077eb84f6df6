//! Reading a `file://` binary cache as `nix copy --to file://DIR` writes it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::hash::HashingWriter;
use crate::narinfo::{NarInfo, PathInfo};
use crate::store::{Contents, Importer, StoreError};
use crate::store_path::StoreHash;

/// Errors reading a file cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file could not be read.
    #[error("{0}: {1}")]
    Io(String, io::Error),
    /// A narinfo does not parse.
    #[error("{0}: {1}")]
    NarInfo(String, crate::narinfo::NarInfoError),
    /// A narinfo names something Grove cannot read.
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// Storing a path failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decompresses a NAR as the narinfo's `Compression` says.
pub fn decompressor<'a>(compression: Option<&str>, input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression.unwrap_or("none") {
        "none" | "" => Box::new(input),
        "xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
        "zstd" => Box::new(zstd::Decoder::new(input)?),
        "bzip2" => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unsupported compression '{other}'"),
            ))
        }
    })
}

/// Reads every narinfo of the cache at `dir`.
pub fn read_narinfos(dir: &Path) -> Result<Vec<NarInfo>, CacheError> {
    let io_err = |p: &Path, e| CacheError::Io(p.display().to_string(), e);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let p = entry.map_err(|e| io_err(dir, e))?.path();
        if p.extension().is_some_and(|x| x == "narinfo") {
            let text = std::fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
            let ni = NarInfo::parse(&text).map_err(|e| CacheError::NarInfo(p.display().to_string(), e))?;
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem != ni.info.path.hash().to_string() {
                return Err(CacheError::Invalid(
                    p.display().to_string(),
                    format!("describes {}", ni.info.path),
                ));
            }
            out.push(ni);
        }
    }
    Ok(out)
}

/// Orders path infos so every path comes after the references it has among them.
pub fn sort_by_references<T>(items: Vec<T>, info: impl Fn(&T) -> &PathInfo) -> Vec<T> {
    let mut by_hash: BTreeMap<StoreHash, T> = items.into_iter().map(|t| (info(&t).path.hash(), t)).collect();
    let keys: Vec<StoreHash> = by_hash.keys().copied().collect();
    let mut order = Vec::with_capacity(keys.len());
    let mut state: BTreeMap<StoreHash, bool> = BTreeMap::new(); // false: visiting, true: done
    for k in keys {
        let mut stack = vec![(k, false)];
        while let Some((h, expanded)) = stack.pop() {
            if expanded {
                state.insert(h, true);
                order.push(h);
                continue;
            }
            if state.contains_key(&h) {
                continue;
            }
            state.insert(h, false);
            stack.push((h, true));
            if let Some(t) = by_hash.get(&h) {
                for r in info(t).other_references() {
                    if by_hash.contains_key(&r.hash()) && !state.contains_key(&r.hash()) {
                        stack.push((r.hash(), false));
                    }
                }
            }
        }
    }
    order.into_iter().filter_map(|h| by_hash.remove(&h)).collect()
}

/// Imports one narinfo's NAR from the cache at `dir`, checking FileHash/FileSize when given and
/// NarHash/NarSize always. Returns whether the path was new.
pub fn import_one(importer: &mut Importer<'_>, dir: &Path, ni: &NarInfo) -> Result<bool, CacheError> {
    let what = ni.info.path.to_string();
    let url = ni
        .url
        .as_deref()
        .ok_or_else(|| CacheError::Invalid(what.clone(), "narinfo has no URL".into()))?;
    if url.starts_with('/') || url.split('/').any(|c| c == "..") {
        return Err(CacheError::Invalid(what, format!("URL '{url}' leaves the cache")));
    }
    let file_path = dir.join(url);
    let file = File::open(&file_path).map_err(|e| CacheError::Io(file_path.display().to_string(), e))?;
    import_nar(importer, ni, &file_path.display().to_string(), BufReader::new(file))
}

/// Imports one narinfo's NAR read (possibly compressed) from `file`, named `source` in errors:
/// [`parse_nar`], then staged (which checks NarHash/NarSize). Returns whether the path was new.
pub fn import_nar(
    importer: &mut Importer<'_>,
    ni: &NarInfo,
    source: &str,
    file: impl Read,
) -> Result<bool, CacheError> {
    let contents = parse_nar(importer, ni, source, file)?;
    Ok(importer.stage(&ni.info, contents)?)
}

/// Parses one narinfo's NAR read (possibly compressed) from `file` into Git objects, checking
/// FileHash/FileSize when given and that nothing follows the NAR. The objects stay unreferenced
/// until the contents are staged, which checks NarHash/NarSize.
pub fn parse_nar(importer: &Importer<'_>, ni: &NarInfo, source: &str, file: impl Read) -> Result<Contents, CacheError> {
    let what = ni.info.path.to_string();
    let mut tee = TeeHash {
        inner: file,
        hash: HashingWriter::new(),
    };
    let io_err = |e: io::Error| CacheError::Io(source.to_string(), e);
    let contents = {
        // At most one byte past NarSize is read: enough to notice trailing data, and a source
        // that sends without end cannot make the import run forever.
        let limit = ni.info.nar_size.saturating_add(1);
        let mut nar = BufReader::new(
            decompressor(ni.compression.as_deref(), &mut tee)
                .map_err(io_err)?
                .take(limit),
        );
        let contents = importer.write_contents(&mut nar)?;
        let mut rest = [0u8; 1];
        if nar.read(&mut rest).map_err(io_err)? != 0 {
            return Err(CacheError::Invalid(what, "trailing data after the NAR".into()));
        }
        contents
    };
    io::copy(&mut tee, &mut io::sink()).map_err(io_err)?;
    let (file_hash, file_size) = tee.hash.finish();
    if ni.file_hash.is_some_and(|h| h != file_hash) || ni.file_size.is_some_and(|s| s != file_size) {
        return Err(CacheError::Invalid(
            what,
            format!("{source} does not match FileHash/FileSize"),
        ));
    }
    Ok(contents)
}

struct TeeHash<R> {
    inner: R,
    hash: HashingWriter,
}

impl<R: Read> Read for TeeHash<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        io::Write::write_all(&mut self.hash, &buf[..n])?;
        Ok(n)
    }
}
