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
        }
        assert_eq!(Compression::from_name(None), Ok(Compression::None));
        assert!(Compression::from_name(Some("lz4")).is_err());
        assert!(Compression::from_extension(".gz").is_err());
    }
}
