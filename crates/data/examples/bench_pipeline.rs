//! Benchmark: load CIFAR-10 and time augmented, normalized batches of 128 (median of runs).
//!
//! `cargo run -p breakeven-data --example bench_pipeline [-- DATA_DIR]`; the data is found as
//! everywhere else (`DATA_DIR`, then `$BREAKEVEN_DATA`, then `./data`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use breakeven_data::{load, Augment, DatasetName, Loader, LoaderConfig, Normalization};
use candle_core::Device;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).map(PathBuf::from);
    let mut load_times = Vec::new();
    let mut data = None;
    for _ in 0..3 {
        let t = Instant::now();
        data = Some(load(DatasetName::Cifar10, dir.as_deref())?);
        load_times.push(t.elapsed().as_secs_f64());
    }
    let train = Arc::new(data.expect("loaded three times").train);
    println!(
        "load CIFAR-10 (50,000 + 10,000 images): median {:.3} s over {} runs",
        median(load_times.clone()),
        load_times.len()
    );

    let t = Instant::now();
    let normalization = Normalization::from_dataset(&train, None)?;
    println!(
        "channel statistics of the train split: {:.3} s",
        t.elapsed().as_secs_f64()
    );

    let config = LoaderConfig {
        batch_size: 128,
        shuffle: true,
        drop_last: false,
        augment: Some(Augment::CIFAR),
        normalization,
        mixup: None,
        seed: 0,
    };
    let mut loader = Loader::new(train.clone(), (0..train.len()).collect(), config)?;
    let batches = loader.batches_per_epoch();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..batches {
            let b = loader.next_batch(&Device::Cpu)?;
            std::hint::black_box(&b.images);
        }
        rates.push(batches as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "augmented + normalized f32 batches of 128 (CPU tensors): median {:.0} batches/s over {} epochs of {batches} batches (min {:.0}, max {:.0})",
        median(rates.clone()),
        rates.len(),
        rates.iter().copied().fold(f64::INFINITY, f64::min),
        rates.iter().copied().fold(0.0, f64::max),
    );
    Ok(())
}
