//! `cargo xtask data fetch NAME [--data-dir DIR] [--base-url URL] [--keep-archive]`.
//!
//! The mechanism (download, verification, safe extraction) lives in `breakeven_data::fetch`,
//! where it is tested; this is the command-line face.

use std::path::PathBuf;

use anyhow::Context;
use breakeven_data::fetch::{fetch_with_progress, FetchOptions, FetchOutcome};
use breakeven_data::{data_root, DatasetName};

/// Download, verify and unpack one data set.
#[derive(Debug, clap::Args)]
pub struct DataFetchArgs {
    /// Data set: cifar10, cifar100, mnist, fashion-mnist or tiny-imagenet.
    pub name: String,
    /// Data root to fetch into (default: $BREAKEVEN_DATA, else ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Download every file from BASE_URL/FILE_NAME instead of the publisher's address (a mirror).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Keep the verified archive after unpacking it.
    #[arg(long)]
    pub keep_archive: bool,
}

/// Runs `data fetch`.
pub fn data_fetch(args: &DataFetchArgs) -> anyhow::Result<()> {
    let name: DatasetName = args.name.parse()?;
    let root = data_root(args.data_dir.as_deref());
    let options = FetchOptions {
        base_url: args.base_url.clone(),
        keep_archive: args.keep_archive,
    };
    let outcome = fetch_with_bar(name, &root, &options)
        .with_context(|| format!("fetching {name} into {}", root.display()))?;
    match outcome {
        FetchOutcome::AlreadyPresent(dir) => {
            println!("{name}: already present in {}", dir.display())
        }
        FetchOutcome::Fetched(dir) => {
            println!("{name}: fetched and verified into {}", dir.display())
        }
    }
    Ok(())
}

/// [`breakeven_data::fetch::fetch`] with a progress bar of the download (bytes, rate, ETA).
pub(crate) fn fetch_with_bar(
    name: DatasetName,
    root: &std::path::Path,
    options: &FetchOptions,
) -> Result<FetchOutcome, breakeven_data::fetch::FetchError> {
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}, ETA {eta}",
    ) {
        bar.set_style(style);
    }
    let progress = |file: &str, bytes: u64, total: Option<u64>| {
        bar.set_message(file.to_string());
        if let Some(t) = total {
            bar.set_length(t);
        }
        bar.set_position(bytes);
    };
    let outcome = fetch_with_progress(name, root, options, &progress);
    bar.finish_and_clear();
    outcome
}
