//! Tree entry names: NAR entry names that Git refuses, or that `git fsck --strict` flags, are
//! stored with a prefix, reversibly.
//!
//! Git treats a name as `.git` (or `.gitmodules`, …) in more spellings than one: any ASCII case,
//! with HFS+'s ignorable code points anywhere in it (`.g\u{200c}it`), with NTFS's trailing dots,
//! spaces and stream suffixes (`.git.`, `.git::$INDEX_ALLOCATION`) and as NTFS short names
//! (`git~1`, `gitmod~1`, `gi7eba~1`). Every name that, with the ignorables removed and
//! lower-cased, starts like one of those is escaped; escaping more than Git flags costs nothing.

/// Prefix that escapes names; names already starting with it are escaped too, so the mapping
/// is reversible.
pub const NAME_ESCAPE: &[u8] = b"grove~";

/// Starts of the names Git's fsck checks (`.git`, `.gitmodules`, `.gitattributes`,
/// `.gitignore`, `.mailmap`, and their NTFS short names).
const FLAGGED_STARTS: &[&[u8]] = &[
    b".git",
    b"git~",
    b"gitmod~",
    b"gi7eba~",
    b"gitatt~",
    b"gi7d29~",
    b"gitign~",
    b"gi250a~",
    b".mailmap",
    b"mailma~",
    b"maba30~",
];

/// UTF-8 encodings of the code points HFS+ ignores in names (as Git's `next_hfs_char` lists
/// them): U+200C–U+200F, U+202A–U+202E, U+206A–U+206F, U+FEFF.
fn hfs_ignorable(rest: &[u8]) -> Option<usize> {
    match rest {
        [0xe2, 0x80, 0x8c..=0x8f, ..] | [0xe2, 0x80, 0xaa..=0xae, ..] | [0xe2, 0x81, 0xaa..=0xaf, ..] => Some(3),
        [0xef, 0xbb, 0xbf, ..] => Some(3),
        _ => None,
    }
}

/// The name as Git compares it: HFS+ ignorables dropped, ASCII lower-cased.
fn folded(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if let Some(n) = hfs_ignorable(&name[i..]) {
            i += n;
            continue;
        }
        out.push(name[i].to_ascii_lowercase());
        i += 1;
    }
    out
}

fn needs_escape(name: &[u8]) -> bool {
    let f = folded(name);
    name.starts_with(NAME_ESCAPE) || FLAGGED_STARTS.iter().any(|s| f.starts_with(s))
}

/// The Git tree entry name for a NAR entry name.
pub fn escape_name(name: &[u8]) -> Vec<u8> {
    if needs_escape(name) {
        [NAME_ESCAPE, name].concat()
    } else {
        name.to_vec()
    }
}

/// The NAR entry name for a Git tree entry name.
pub fn unescape_name(name: &[u8]) -> &[u8] {
    name.strip_prefix(NAME_ESCAPE).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_git_flags_is_escaped_reversibly() {
        for name in [
            ".git",
            ".GIT",
            ".Git",
            ".git.",
            ".git ",
            ".git::$INDEX_ALLOCATION",
            ".g\u{200c}it",
            "\u{feff}.git",
            ".gitmodul\u{200c}es",
            ".GITMODULES",
            "git~1",
            "GIT~2",
            "gitmod~1",
            "gi7eba~3",
            ".gitattributes",
            ".gitignore",
            ".mailmap",
            "grove~x",
            "grove~.git",
        ] {
            let escaped = escape_name(name.as_bytes());
            assert!(escaped.starts_with(NAME_ESCAPE), "{name}");
            assert_eq!(unescape_name(&escaped), name.as_bytes());
        }
        for name in ["git", "a.git", "gitx", "x", "gi7ebaX", "\u{200c}x"] {
            assert_eq!(escape_name(name.as_bytes()), name.as_bytes(), "{name}");
        }
    }
}
