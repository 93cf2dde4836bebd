//! What facematch shows people: [`tables`] for terminals, [`stats`] (the figures of
//! `facematch stats`), JSON for `--json`, progress bars on long work and, with the `photos`
//! feature, the photo commands' reports ([`photos`]). Nothing here changes state.

#[cfg(feature = "photos")]
pub mod photos;
pub mod stats;
pub mod tables;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

/// Prints `value` as pretty JSON on standard output.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints `value` as one line of JSON: what a long-running command streams (JSON Lines).
pub fn print_json_line(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// A progress bar of `total` steps drawn with indicatif's `template`.
pub fn progress_bar(total: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    // The templates are ours and fixed: a bad one is a bug, shown as a plain bar.
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// A `file://` URI under the current directory, shortened to the relative path.
pub fn short_uri(text: &str) -> String {
    match std::env::current_dir() {
        Ok(cwd) => text.replace(&format!("file://{}/", cwd.display()), ""),
        Err(_) => text.to_string(),
    }
}
