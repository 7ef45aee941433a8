//! Progress of long work for people: a bar naming the item being worked on when standard
//! error is a terminal (indicatif), nothing extra otherwise; the lines a command prints
//! go above the bar so that they stay readable.

use std::io::IsTerminal;

/// A progress bar over `total` items, or nothing when standard error is not a terminal.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar of `total` items, labelled `what` (such as `cloning`); hidden when standard
    /// error is not a terminal or there is at most one item.
    pub fn new(total: u64, what: &str) -> Self {
        if total < 2 || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new(total);
        let style =
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        Progress { bar: Some(bar) }
    }

    /// A spinner saying `what` (such as `mirroring api`) while long work of unknown size
    /// runs; nothing when standard error is not a terminal. [`Progress::finish`] removes it.
    pub fn spinner(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    /// One more item done; `name` is shown beside the bar.
    pub fn step(&self, name: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(name.to_string());
            bar.inc(1);
        }
    }

    /// Prints `line` to standard output (above the bar when there is one).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Prints `line` to standard error (above the bar when there is one).
    pub fn eprintln(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
