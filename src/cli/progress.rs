//! Transfer progress on stderr, as `docker pull` shows it: one bar per blob
//! on a terminal, one line per blob event otherwise, or nothing.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::image::{Event, Progress, ProgressSink};

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Bars on a terminal, plain lines otherwise.
    Auto,
    /// Bars, even when stderr is not a terminal.
    Ansi,
    /// One line per blob event.
    Plain,
    /// Nothing but errors.
    None,
}

/// What the transfer is, for the words shown: pulls download, pushes upload.
#[derive(Clone, Copy)]
pub enum Direction {
    Download,
    Upload,
}

pub fn sink(mode: Mode, direction: Direction) -> ProgressSink {
    let bars = match mode {
        Mode::None => return ProgressSink::default(),
        Mode::Auto => std::io::stderr().is_terminal(),
        Mode::Ansi => true,
        Mode::Plain => false,
    };
    if bars {
        ProgressSink::new(Arc::new(Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            direction,
            bars: Mutex::default(),
        }))
    } else {
        ProgressSink::new(Arc::new(Lines { direction }))
    }
}

/// The 12 hex digits Docker shows for a blob.
fn short(digest: &str) -> String {
    crate::image::Digest::parse(digest)
        .map_or_else(|_| digest.to_string(), |d| d.short().to_string())
}

fn words(direction: Direction) -> (&'static str, &'static str) {
    match direction {
        Direction::Download => ("Downloading", "Download complete"),
        Direction::Upload => ("Pushing", "Pushed"),
    }
}

struct Bars {
    multi: MultiProgress,
    direction: Direction,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Progress for Bars {
    fn event(&self, event: Event<'_>) {
        let (active, complete) = words(self.direction);
        let mut bars = self.bars.lock().expect("progress lock");
        let finished = |digest: &str, message: &'static str| {
            let bar = self.multi.add(ProgressBar::new(0));
            bar.set_style(ProgressStyle::with_template("{prefix}: {msg}").expect("template"));
            bar.set_prefix(short(digest).to_string());
            bar.finish_with_message(message);
        };
        match event {
            Event::Exists { digest, .. } => finished(digest, "Already exists"),
            Event::Mounted { digest, .. } => finished(digest, "Mounted"),
            Event::Started { digest, size } => {
                let bar = self.multi.add(ProgressBar::new(size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix}: {msg} [{bar:30}] {bytes}/{total_bytes}",
                    )
                    .expect("template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(short(digest).to_string());
                bar.set_message(active);
                bars.insert(digest.to_string(), bar);
            }
            Event::Advanced { digest, bytes } => {
                if let Some(bar) = bars.get(digest) {
                    bar.inc(bytes);
                }
            }
            Event::Done { digest } => {
                if let Some(bar) = bars.remove(digest) {
                    bar.set_style(
                        ProgressStyle::with_template("{prefix}: {msg}").expect("template"),
                    );
                    bar.finish_with_message(complete);
                }
            }
        }
    }
}

struct Lines {
    direction: Direction,
}

impl Progress for Lines {
    fn event(&self, event: Event<'_>) {
        let (active, complete) = words(self.direction);
        match event {
            Event::Exists { digest, .. } => eprintln!("{}: Already exists", short(digest)),
            Event::Mounted { digest, .. } => eprintln!("{}: Mounted", short(digest)),
            Event::Started { digest, size } => {
                eprintln!(
                    "{}: {active} {}",
                    short(digest),
                    super::output::human_size(size)
                )
            }
            Event::Advanced { .. } => {}
            Event::Done { digest } => eprintln!("{}: {complete}", short(digest)),
        }
    }
}
