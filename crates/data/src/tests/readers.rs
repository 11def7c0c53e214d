//! Readers on small files in exactly the official layouts.

use super::*;
use crate::{
    load, load_cifar10, load_cifar100, load_mnist, load_tiny_imagenet, Cifar100Labels, DatasetName,
};

#[test]
fn cifar10_layout_round_trips_pixels_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let mut k = 0;
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ] {
        let recs: Vec<_> = (0..3)
            .map(|_| {
                k += 1;
                (vec![(k % 10) as u8], pattern(k, 3072))
            })
            .collect();
        write_cifar(&dir.join(format!("{name}.bin")), &recs);
    }
    let tt = load(DatasetName::Cifar10, Some(tmp.path())).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (15, 3));
    assert_eq!(
        (tt.train.channels, tt.train.height, tt.train.width),
        (3, 32, 32)
    );
    assert_eq!(tt.train.labels[..3], [1, 2, 3]);
    assert_eq!(tt.train.image(4), pattern(5, 3072).as_slice());
    assert_eq!(tt.test.labels, vec![6, 7, 8]);
    assert_eq!(tt.test.image(2), pattern(18, 3072).as_slice());
    assert_eq!(tt.train.class_names.as_ref().unwrap()[6], "frog");
    tt.train.validate().unwrap();
    assert_eq!(load_cifar10(&dir).unwrap(), tt);
}

#[test]
fn cifar100_reads_fine_by_default_and_coarse_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rec = |i: usize| (vec![(i % 20) as u8, (i * 7 % 100) as u8], pattern(i, 3072));
    write_cifar(&dir.join("train.bin"), &(0..5).map(rec).collect::<Vec<_>>());
    write_cifar(&dir.join("test.bin"), &(5..7).map(rec).collect::<Vec<_>>());
    let fine = load_cifar100(dir, Cifar100Labels::default()).unwrap();
    assert_eq!(fine.train.num_classes, 100);
    assert_eq!(fine.train.labels, vec![0, 7, 14, 21, 28]);
    assert_eq!(fine.test.labels, vec![35, 42]);
    assert_eq!(fine.test.image(1), pattern(6, 3072).as_slice());
    assert!(fine.train.class_names.is_none());
    let names: String = (0..20).map(|c| format!("super{c}\n")).collect();
    std::fs::write(dir.join("coarse_label_names.txt"), names).unwrap();
    let coarse = load_cifar100(dir, Cifar100Labels::Coarse).unwrap();
    assert_eq!(coarse.train.num_classes, 20);
    assert_eq!(coarse.train.labels, vec![0, 1, 2, 3, 4]);
    assert_eq!(coarse.train.class_names.as_ref().unwrap()[3], "super3");
    assert_eq!(coarse.train.images, fine.train.images);
}

#[test]
fn mnist_reads_raw_and_gzipped_idx() {
    for gz in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        write_mnist_dir(tmp.path(), 12, 4, gz);
        let tt = load_mnist(tmp.path()).unwrap();
        assert_eq!((tt.train.len(), tt.test.len()), (12, 4));
        assert_eq!(
            (tt.train.channels, tt.train.height, tt.train.width),
            (1, 28, 28)
        );
        assert_eq!(tt.train.labels[11], 1);
        assert_eq!(tt.test.image(3), pattern(3, 784).as_slice());
        assert_eq!(tt.train.image(7), pattern(7, 784).as_slice());
    }
}

/// Writes a 3-class Tiny ImageNet folder: 2 train images per class, 4 val images, one grayscale.
pub(crate) fn write_tiny_imagenet(root: &Path) -> Vec<(String, [u8; 3])> {
    let wnids = ["n01443537", "n01629819", "n01641577"];
    std::fs::create_dir_all(root.join("val/images")).unwrap();
    std::fs::write(root.join("wnids.txt"), wnids.join("\n") + "\n").unwrap();
    let words = "n00001740\tentity\nn01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander, Salamandra salamandra\nn01641577\tbullfrog, Rana catesbeiana\n";
    std::fs::write(root.join("words.txt"), words).unwrap();
    let side = 64usize;
    let solid = |rgb: [u8; 3]| -> Vec<u8> { (0..side * side).flat_map(|_| rgb).collect() };
    let mut expected = Vec::new();
    for (c, w) in wnids.iter().enumerate() {
        let dir = root.join("train").join(w).join("images");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            root.join("train").join(w).join(format!("{w}_boxes.txt")),
            "",
        )
        .unwrap();
        for k in 0..2 {
            let rgb = [(40 * c + 20) as u8, (100 + 50 * k) as u8, 200];
            std::fs::write(
                dir.join(format!("{w}_{k}.JPEG")),
                jpeg(&solid(rgb), 64, true),
            )
            .unwrap();
            expected.push((w.to_string(), rgb));
        }
    }
    let mut ann = String::new();
    for v in 0..4 {
        let w = wnids[(v + 1) % 3];
        ann.push_str(&format!("val_{v}.JPEG\t{w}\t0\t5\t60\t61\n"));
        let file = root.join("val/images").join(format!("val_{v}.JPEG"));
        if v == 2 {
            std::fs::write(file, jpeg(&vec![90u8; side * side], 64, false)).unwrap();
        } else {
            std::fs::write(file, jpeg(&solid([10, 20 * v as u8, 250]), 64, true)).unwrap();
        }
    }
    std::fs::write(root.join("val/val_annotations.txt"), ann).unwrap();
    expected
}

fn close(a: u8, b: u8) -> bool {
    (i32::from(a) - i32::from(b)).abs() <= 3
}

#[test]
fn tiny_imagenet_layout_with_a_grayscale_jpeg() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tiny-imagenet-200");
    let expected = write_tiny_imagenet(&root);
    let tt = load_tiny_imagenet(&root).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (6, 4));
    assert_eq!(
        (tt.train.channels, tt.train.height, tt.train.width),
        (3, 64, 64)
    );
    assert_eq!(tt.train.labels, vec![0, 0, 1, 1, 2, 2]);
    assert_eq!(tt.test.labels, vec![1, 2, 0, 1]);
    assert_eq!(
        tt.train.class_names.as_ref().unwrap(),
        &["goldfish", "European fire salamander", "bullfrog"]
    );
    let plane = 64 * 64;
    for (i, (_, rgb)) in expected.iter().enumerate() {
        let img = tt.train.image(i);
        for c in 0..3 {
            for p in [0, 1000, plane - 1] {
                assert!(
                    close(img[c * plane + p], rgb[c]),
                    "train {i} channel {c}: {} vs {}",
                    img[c * plane + p],
                    rgb[c]
                );
            }
        }
    }
    let gray = tt.test.image(2);
    for c in 0..3 {
        assert!(close(gray[c * plane + 17], 90), "{}", gray[c * plane + 17]);
    }
    assert!(close(tt.test.image(1)[2 * plane + 5], 250));
    assert_eq!(
        load(DatasetName::TinyImageNet, Some(tmp.path())).unwrap(),
        tt
    );
}
