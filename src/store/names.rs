//! Tree entry names: NAR entry names Git refuses or treats specially are escaped reversibly.

/// Prefix that escapes entry names Git refuses or treats specially (`.git`, `.gitmodules`,
/// NTFS short names like `git~1`); names already starting with it are escaped too, so the
/// mapping is reversible.
pub const NAME_ESCAPE: &[u8] = b"grove~";

fn needs_escape(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with(b".git") || lower.starts_with(b"git~") || name.starts_with(NAME_ESCAPE)
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
