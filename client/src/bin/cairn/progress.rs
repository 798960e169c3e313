//! Progress on stderr for the long commands (submit, receipt, erase, export, verify-export),
//! drawn by `indicatif` (ADR 020): a bar with the rate and the time left where the total is
//! known, a spinner with the time spent where it is not. indicatif draws only when stderr
//! is a terminal, so scripts that capture stderr get the messages, not the bars.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often a spinner or bar is redrawn while nothing else moves it.
const TICK: Duration = Duration::from_millis(120);

/// A bar counting `total` things named `what` (for example "readings stored").
pub fn bar(total: u64, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {what}, {{per_sec}}, eta {{eta}}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(total).with_style(style);
    bar.enable_steady_tick(TICK);
    bar
}

/// A spinner showing `message` and the time spent, for one long request.
pub fn spinner(message: &str) -> ProgressBar {
    let style =
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap_or_else(|_| ProgressStyle::default_spinner());
    let spinner = ProgressBar::new_spinner().with_style(style);
    spinner.set_message(message.to_string());
    spinner.enable_steady_tick(TICK);
    spinner
}
