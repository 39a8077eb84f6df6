//! Progress bars for long commands: drawn on a terminal, silent otherwise.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items, or bytes if `bytes`.
pub fn bar(len: u64, bytes: bool) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = if bytes {
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}"
    } else {
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
