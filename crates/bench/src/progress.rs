//! Progress bars on stderr for long runs: only on a terminal, never with `--json`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns progress on or off for the process.
pub(crate) fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// A bar of `len` steps (hidden when progress is off).
pub(crate) fn bar(len: u64, what: &str) -> ProgressBar {
    if !ENABLED.load(Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
    ) {
        pb.set_style(style);
    }
    pb.set_prefix(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}
