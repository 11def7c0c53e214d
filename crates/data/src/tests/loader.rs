//! The loader: same seed → same batches, resume == uninterrupted, epochs cover every example.

use std::sync::Arc;

use candle_core::{DType, Device};

use super::pattern;
use crate::{
    symmetric_label_noise, write_image, Augment, Dataset, Loader, LoaderConfig, LoaderState, Mixup,
    Normalization, Placement,
};

fn toy(n: usize) -> Arc<Dataset> {
    Arc::new(Dataset {
        name: "toy".into(),
        images: (0..n).flat_map(|i| pattern(i, 3 * 8 * 8)).collect(),
        labels: (0..n).map(|i| (i % 4) as u32).collect(),
        channels: 3,
        height: 8,
        width: 8,
        num_classes: 4,
        class_names: None,
    })
}

fn config(seed: u64) -> LoaderConfig {
    LoaderConfig {
        batch_size: 8,
        shuffle: true,
        drop_last: false,
        augment: Some(Augment::CIFAR),
        normalization: Normalization::new(vec![0.5, 0.4, 0.3], vec![0.2, 0.25, 0.3]).unwrap(),
        mixup: Some(Mixup::new(1.0).unwrap()),
        seed,
    }
}

#[test]
fn same_seed_same_batches_bit_for_bit() {
    let data = toy(50);
    let all: Vec<usize> = (0..50).collect();
    let mut a = Loader::new(data.clone(), all.clone(), config(3)).unwrap();
    let mut b = Loader::new(data.clone(), all.clone(), config(3)).unwrap();
    let mut c = Loader::new(data, all, config(4)).unwrap();
    for _ in 0..20 {
        let (x, y, z) = (
            a.next_host().unwrap(),
            b.next_host().unwrap(),
            c.next_host().unwrap(),
        );
        assert_eq!(x, y);
        assert_ne!(x.images, z.images);
    }
}

#[test]
fn resumed_loader_sees_the_same_batches() {
    let data = toy(50);
    let all: Vec<usize> = (0..50).collect();
    let mut straight = Loader::new(data.clone(), all.clone(), config(9)).unwrap();
    let reference: Vec<_> = (0..17).map(|_| straight.next_host().unwrap()).collect();

    let mut first = Loader::new(data.clone(), all.clone(), config(9)).unwrap();
    for _ in 0..11 {
        first.next_host().unwrap();
    }
    // 7 batches per epoch (6 × 8 + 2), so 11 batches end at position 4 × 8 of epoch 1.
    // Save as JSON, as a checkpoint would, and restore into a fresh loader.
    let saved = serde_json::to_string(&first.state()).unwrap();
    let state: LoaderState = serde_json::from_str(&saved).unwrap();
    assert_eq!(
        state,
        LoaderState {
            seed: 9,
            epoch: 1,
            position: 32
        }
    );
    let mut resumed = Loader::new(data, all, config(9)).unwrap();
    resumed.restore(state).unwrap();
    for expected in &reference[11..] {
        assert_eq!(&resumed.next_host().unwrap(), expected);
    }
}

#[test]
fn epochs_cover_every_example_once_and_reshuffle() {
    let data = toy(50);
    let subset: Vec<usize> = (0..50).filter(|i| i % 5 != 0).collect(); // 40 examples
    let mut cfg = config(1);
    cfg.mixup = None;
    let mut loader = Loader::new(data.clone(), subset.clone(), cfg.clone()).unwrap();
    assert_eq!(loader.batches_per_epoch(), 5);
    let mut orders = Vec::new();
    for epoch in 0..2 {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let b = loader.next_host().unwrap();
            assert_eq!(b.epoch, epoch);
            assert_eq!(
                b.labels,
                b.indices
                    .iter()
                    .map(|&i| data.labels[i])
                    .collect::<Vec<_>>()
            );
            seen.extend(b.indices);
        }
        orders.push(seen.clone());
        seen.sort_unstable();
        assert_eq!(seen, subset);
    }
    assert_ne!(orders[0], orders[1]);
    // A partial last batch, or none with drop_last.
    cfg.batch_size = 16;
    let mut l = Loader::new(data.clone(), subset.clone(), cfg.clone()).unwrap();
    let sizes: Vec<usize> = (0..4)
        .map(|_| l.next_host().unwrap().labels.len())
        .collect();
    assert_eq!(sizes, vec![16, 16, 8, 16]);
    cfg.drop_last = true;
    let mut l = Loader::new(data, subset, cfg).unwrap();
    let b: Vec<_> = (0..3).map(|_| l.next_host().unwrap()).collect();
    assert_eq!(
        (b[2].epoch, b[2].labels.len(), l.batches_per_epoch()),
        (1, 16, 2)
    );
}

#[test]
fn unaugmented_batches_are_normalized_pixels_in_order() {
    let data = toy(10);
    let mut cfg = config(0);
    cfg.shuffle = false;
    cfg.augment = None;
    cfg.mixup = None;
    cfg.batch_size = 4;
    let norm = cfg.normalization.clone();
    let mut loader = Loader::new(data.clone(), (0..10).collect(), cfg).unwrap();
    let batch = loader.next_batch(&Device::Cpu).unwrap();
    assert_eq!(batch.images.dims(), &[4, 3, 8, 8]);
    assert_eq!(batch.images.dtype(), DType::F32);
    assert_eq!(batch.labels.dtype(), DType::U32);
    assert_eq!(batch.labels.to_vec1::<u32>().unwrap(), vec![0, 1, 2, 3]);
    let x = batch
        .images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (k, &v) in x.iter().enumerate() {
        let (i, p) = (k / 192, k % 192);
        let c = p / 64;
        let want = (f64::from(data.image(i)[p]) / 255.0 - norm.mean[c]) / norm.std[c];
        assert!((f64::from(v) - want).abs() < 1e-5, "{k}: {v} vs {want}");
    }
}

#[test]
fn mixup_batches_carry_partner_labels_and_noisy_labels_override() {
    let data = toy(40);
    let noisy = symmetric_label_noise(&data.labels, 4, 0.5, 2).unwrap();
    assert_eq!(noisy.num_noisy(), 20);
    let mut loader = Loader::new(data.clone(), (0..40).collect(), config(5))
        .unwrap()
        .with_labels(noisy.labels.clone())
        .unwrap();
    let host = loader.next_host().unwrap();
    let mix = host.mix.clone().unwrap();
    assert_eq!(
        host.labels,
        host.indices
            .iter()
            .map(|&i| noisy.labels[i])
            .collect::<Vec<_>>()
    );
    for (k, &j) in mix.partner.iter().enumerate() {
        assert_eq!(mix.labels_b[k], host.labels[j]);
    }
    let batch = host.to_device(&Device::Cpu).unwrap();
    let (labels_b, lambda) = batch.mix.unwrap();
    assert_eq!(labels_b.to_vec1::<u32>().unwrap(), mix.labels_b);
    assert_eq!(lambda, mix.lambda);
}

#[test]
fn bad_loader_arguments_are_errors() {
    let data = toy(5);
    let mut cfg = config(0);
    assert!(Loader::new(data.clone(), vec![0, 7], cfg.clone()).is_err());
    assert!(Loader::new(data.clone(), vec![], cfg.clone()).is_err());
    cfg.normalization = Normalization::unit_scale(1);
    assert!(Loader::new(data.clone(), vec![0], cfg.clone()).is_err());
    cfg = config(0);
    cfg.batch_size = 0;
    assert!(Loader::new(data.clone(), vec![0], cfg).is_err());
    let l = Loader::new(data, vec![0, 1], config(0)).unwrap();
    assert!(l.clone().with_labels(vec![0; 4]).is_err());
    assert!(
        l.with_labels(vec![0, 1, 2, 3, 4]).is_err(),
        "label 4 of 4 classes"
    );
}

#[test]
fn every_augmented_image_is_one_valid_crop_and_flip_of_its_source() {
    let data = toy(24);
    let norm = Normalization::new(vec![0.5, 0.4, 0.3], vec![0.2, 0.25, 0.3]).unwrap();
    let tables = norm.lookup_tables();
    let mut loader = Loader::new(
        data.clone(),
        (0..24).collect(),
        LoaderConfig::train(8, norm, 11),
    )
    .unwrap();
    let mut placements = std::collections::HashSet::new();
    for _ in 0..6 {
        let b = loader.next_host().unwrap();
        for (k, &i) in b.indices.iter().enumerate() {
            let got = &b.images[k * 192..(k + 1) * 192];
            // Exactly the placements that reproduce the output (several may, for flat regions).
            let mut matches = Vec::new();
            let mut out = vec![0f32; 192];
            for dy in 0..=8 {
                for dx in 0..=8 {
                    for flip in [false, true] {
                        let p = Placement { dy, dx, flip };
                        write_image(data.image(i), (3, 8, 8), &tables, Some((p, 4)), &mut out);
                        if out == got {
                            matches.push((dy, dx, flip));
                        }
                    }
                }
            }
            assert!(
                !matches.is_empty(),
                "example {i} is no crop/flip of its source"
            );
            placements.insert(matches[0]);
        }
    }
    // 48 draws from 162 placements: not all the same.
    assert!(placements.len() > 20, "{placements:?}");
}
