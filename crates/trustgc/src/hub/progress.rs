//! Progress bars on stderr for downloads.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Downloads shorter than this show no progress bar.
const MIN_BAR_BYTES: u64 = 1 << 20;

/// An indicatif progress bar for one download; hidden for small files, cleared when
/// dropped.
pub(super) struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    /// A bar for `name` of `total_bytes`, shown when `show` and the file is large.
    pub(super) fn new(show: bool, name: &str, total_bytes: u64) -> Self {
        let bar = (show && total_bytes >= MIN_BAR_BYTES).then(|| {
            let style = ProgressStyle::with_template(
                "{msg} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_message(name.to_string())
        });
        Self { bar }
    }

    /// `bytes` of the file have arrived.
    pub(super) fn set(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
