//! The compressions a binary cache stores NARs in: their narinfo names, file extensions and
//! codecs, in one place.

use std::io::{self, Read, Write};

use serde::Deserialize;

/// How a NAR file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// A plain NAR.
    #[default]
    None,
    /// zstd (`.nar.zst`).
    Zstd,
    /// xz (`.nar.xz`).
    Xz,
    /// bzip2 (`.nar.bz2`).
    Bzip2,
}

/// Every compression, in the order names and extensions are looked up.
const ALL: [Compression; 4] = [
    Compression::None,
    Compression::Zstd,
    Compression::Xz,
    Compression::Bzip2,
];

/// A compression Grove does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported compression '{0}'")]
pub struct UnknownCompression(pub String);

impl Compression {
    /// The narinfo `Compression` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// The file extension after `.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
            Compression::Bzip2 => ".bz2",
        }
    }

    /// The compression a narinfo names; a missing or empty field means none.
    pub fn from_name(name: Option<&str>) -> Result<Self, UnknownCompression> {
        match name.unwrap_or("") {
            "" => Ok(Compression::None),
            n => ALL
                .into_iter()
                .find(|c| c.name() == n)
                .ok_or_else(|| UnknownCompression(n.to_string())),
        }
    }

    /// The compression a NAR file's extension (after `.nar`) names.
    pub fn from_extension(ext: &str) -> Result<Self, UnknownCompression> {
        ALL.into_iter()
            .find(|c| c.extension() == ext)
            .ok_or_else(|| UnknownCompression(ext.to_string()))
    }

    /// A reader of the decompressed bytes of `input` (concatenated streams included).
    pub fn decoder<'a>(self, input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Zstd => Box::new(zstd::Decoder::new(input)?),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        })
    }

    /// Compresses what `body` writes onto `out`, finishing the stream; returns `out`.
    pub fn encode<W: Write, E: From<io::Error>>(
        self,
        mut out: W,
        body: impl FnOnce(&mut dyn Write) -> Result<(), E>,
    ) -> Result<W, E> {
        match self {
            Compression::None => {
                body(&mut out)?;
                Ok(out)
            }
            Compression::Zstd => {
                let mut enc = zstd::Encoder::new(out, 3)?;
                body(&mut enc)?;
                Ok(enc.finish()?)
            }
            Compression::Xz => {
                let mut enc = liblzma::write::XzEncoder::new(out, 6);
                body(&mut enc)?;
                Ok(enc.finish()?)
            }
            Compression::Bzip2 => {
                let mut enc = bzip2::write::BzEncoder::new(out, bzip2::Compression::default());
                body(&mut enc)?;
                Ok(enc.finish()?)
            }
        }
    }
}

/// A compressor fed piece by piece, whose output is taken as it comes (for responses produced
/// a chunk at a time).
pub enum StreamEncoder {
    /// No compression: the input is the output.
    None(Vec<u8>),
    /// zstd.
    Zstd(zstd::Encoder<'static, Vec<u8>>),
    /// xz.
    Xz(liblzma::write::XzEncoder<Vec<u8>>),
    /// bzip2.
    Bzip2(bzip2::write::BzEncoder<Vec<u8>>),
}

impl StreamEncoder {
    /// An encoder for `compression`.
    pub fn new(compression: Compression) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => StreamEncoder::None(Vec::new()),
            Compression::Zstd => StreamEncoder::Zstd(zstd::Encoder::new(Vec::new(), 3)?),
            Compression::Xz => StreamEncoder::Xz(liblzma::write::XzEncoder::new(Vec::new(), 6)),
            Compression::Bzip2 => {
                StreamEncoder::Bzip2(bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default()))
            }
        })
    }

    /// The output so far, taken.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            StreamEncoder::None(v) => v,
            StreamEncoder::Zstd(e) => e.get_mut(),
            StreamEncoder::Xz(e) => e.get_mut(),
            StreamEncoder::Bzip2(e) => e.get_mut(),
        })
    }

    /// Ends the stream; returns the rest of the output.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            StreamEncoder::None(v) => Ok(v),
            StreamEncoder::Zstd(e) => e.finish(),
            StreamEncoder::Xz(e) => e.finish(),
            StreamEncoder::Bzip2(e) => e.finish(),
        }
    }
}

impl Write for StreamEncoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamEncoder::None(v) => v.write(buf),
            StreamEncoder::Zstd(e) => e.write(buf),
            StreamEncoder::Xz(e) => e.write(buf),
            StreamEncoder::Bzip2(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_extensions_and_codecs_agree() {
        let data = b"nix-archive-1 and some more bytes".repeat(100);
        for c in ALL {
            assert_eq!(Compression::from_name(Some(c.name())), Ok(c));
            assert_eq!(Compression::from_extension(c.extension()), Ok(c));
            let packed = c.encode(Vec::new(), |w| w.write_all(&data)).unwrap();
            let mut back = Vec::new();
            c.decoder(&packed[..]).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "{c:?}");
            let mut enc = StreamEncoder::new(c).unwrap();
            let mut streamed = Vec::new();
            for piece in data.chunks(7) {
                enc.write_all(piece).unwrap();
                streamed.extend(enc.take());
            }
            streamed.extend(enc.finish().unwrap());
            let mut back = Vec::new();
            c.decoder(&streamed[..]).unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "streamed {c:?}");
        }
        assert_eq!(Compression::from_name(None), Ok(Compression::None));
        assert!(Compression::from_name(Some("lz4")).is_err());
        assert!(Compression::from_extension(".gz").is_err());
    }
}
