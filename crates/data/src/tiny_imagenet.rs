//! Tiny ImageNet-200 from its folder layout: `wnids.txt`, `words.txt`, `train/<wnid>/images`, `val/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, TrainTest};
use crate::error::{DataError, Result};
use crate::read::read_file;

/// Side of a Tiny ImageNet image.
pub const TINY_SIDE: usize = 64;

/// Reads the 200-class train split (`train/<wnid>/images/*.JPEG`) and the labelled validation split
/// (`val/images/*.JPEG` with `val/val_annotations.txt`), returned as `test`. The official test split
/// has no labels and is not read. Labels follow the line order of `wnids.txt`; names are the first
/// synonym in `words.txt`. Grayscale JPEGs are copied to 3 channels; CMYK ones are converted.
pub fn load_tiny_imagenet(dir: &Path) -> Result<TrainTest> {
    let wnids_path = dir.join("wnids.txt");
    let wnids: Vec<String> = text_lines(&wnids_path)?
        .into_iter()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if wnids.is_empty() {
        return Err(DataError::format(
            &wnids_path,
            "no class ids, expected one wnid per line",
        ));
    }
    let index: HashMap<&str, u32> = wnids
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i as u32))
        .collect();
    let class_names = read_words(&dir.join("words.txt"), &wnids)?;

    let mut train_files: Vec<(PathBuf, u32)> = Vec::new();
    for (label, wnid) in wnids.iter().enumerate() {
        let images = dir.join("train").join(wnid).join("images");
        let mut files = list_jpegs(&images)?;
        files.sort();
        train_files.extend(files.into_iter().map(|f| (f, label as u32)));
    }

    let ann_path = dir.join("val").join("val_annotations.txt");
    let mut val_files: Vec<(PathBuf, u32)> = Vec::new();
    for (lineno, line) in text_lines(&ann_path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split('\t');
        let (Some(file), Some(wnid)) = (fields.next(), fields.next()) else {
            return Err(DataError::format(
                &ann_path,
                format!("line {}: expected `file<TAB>wnid<TAB>box`", lineno + 1),
            ));
        };
        let label = *index.get(wnid.trim()).ok_or_else(|| {
            DataError::format(
                &ann_path,
                format!("line {}: wnid {wnid:?} is not in wnids.txt", lineno + 1),
            )
        })?;
        val_files.push((dir.join("val").join("images").join(file.trim()), label));
    }
    val_files.sort();

    let classes = wnids.len();
    let mut train = decode_all("tiny-imagenet/train", &train_files, classes)?;
    let mut test = decode_all("tiny-imagenet/val", &val_files, classes)?;
    train.class_names = Some(class_names.clone());
    test.class_names = Some(class_names);
    tracing::info!(train = train.len(), val = test.len(), dir = %dir.display(), "loaded Tiny ImageNet");
    Ok(TrainTest { train, test })
}

fn text_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = read_file(path, "a Tiny ImageNet text file")?;
    let text = String::from_utf8(bytes).map_err(|_| DataError::format(path, "not UTF-8 text"))?;
    Ok(text.lines().map(String::from).collect())
}

/// `words.txt` maps every ImageNet wnid to synonyms; keep the first synonym of each of ours.
fn read_words(path: &Path, wnids: &[String]) -> Result<Vec<String>> {
    let mut words: HashMap<String, String> = HashMap::new();
    for line in text_lines(path)? {
        if let Some((wnid, names)) = line.split_once('\t') {
            let first = names.split(',').next().unwrap_or(names).trim();
            words.insert(wnid.trim().to_string(), first.to_string());
        }
    }
    wnids
        .iter()
        .map(|w| {
            words
                .get(w)
                .cloned()
                .ok_or_else(|| DataError::format(path, format!("no entry for wnid {w}")))
        })
        .collect()
}

fn list_jpegs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::MissingFile {
                path: dir.to_path_buf(),
                expected: "a folder of training JPEGs".to_string(),
            }
        } else {
            DataError::io(dir, e)
        }
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| DataError::io(dir, e))?.path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("jpeg") || e.eq_ignore_ascii_case("jpg"))
        {
            files.push(path);
        }
    }
    Ok(files)
}

/// Decodes every file into a 3×64×64 planar image, on all available cores.
fn decode_all(name: &str, files: &[(PathBuf, u32)], classes: usize) -> Result<Dataset> {
    let per = 3 * TINY_SIDE * TINY_SIDE;
    let mut images = vec![0u8; files.len() * per];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .zip(images.chunks_mut(chunk * per))
            .map(|(fs, out)| {
                s.spawn(move || -> Result<()> {
                    for ((path, _), dst) in fs.iter().zip(out.chunks_exact_mut(per)) {
                        decode_jpeg_planar(path, dst)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(DataError::InvalidArgument(
                    "JPEG decoder thread panicked".into(),
                ))
            })
        })
    })?;
    Ok(Dataset {
        name: name.to_string(),
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
        channels: 3,
        height: TINY_SIDE,
        width: TINY_SIDE,
        num_classes: classes,
        class_names: None,
    })
}

/// Decodes one JPEG into `dst` (3×64×64, planar RGB).
pub(crate) fn decode_jpeg_planar(path: &Path, dst: &mut [u8]) -> Result<()> {
    let bytes = read_file(path, "a 64×64 JPEG image")?;
    let mut decoder = jpeg_decoder::Decoder::new(bytes.as_slice());
    let pixels = decoder
        .decode()
        .map_err(|e| DataError::format(path, format!("JPEG decoding failed: {e}")))?;
    let info = decoder
        .info()
        .ok_or_else(|| DataError::format(path, "JPEG without a frame header"))?;
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    if (w, h) != (TINY_SIDE, TINY_SIDE) {
        return Err(DataError::format(
            path,
            format!("image is {w}×{h}, expected {TINY_SIDE}×{TINY_SIDE}"),
        ));
    }
    let plane = w * h;
    use jpeg_decoder::PixelFormat;
    match info.pixel_format {
        PixelFormat::L8 => {
            for c in 0..3 {
                dst[c * plane..(c + 1) * plane].copy_from_slice(&pixels[..plane]);
            }
        }
        PixelFormat::L16 => {
            // Big-endian 16-bit gray: keep the high byte.
            for i in 0..plane {
                let v = pixels[2 * i];
                dst[i] = v;
                dst[plane + i] = v;
                dst[2 * plane + i] = v;
            }
        }
        PixelFormat::RGB24 => {
            for i in 0..plane {
                for c in 0..3 {
                    dst[c * plane + i] = pixels[3 * i + c];
                }
            }
        }
        PixelFormat::CMYK32 => {
            // jpeg-decoder returns inverted (Adobe) CMYK: RGB = C·K/255 etc.
            for i in 0..plane {
                let k = u32::from(pixels[4 * i + 3]);
                for c in 0..3 {
                    dst[c * plane + i] = ((u32::from(pixels[4 * i + c]) * k) / 255) as u8;
                }
            }
        }
    }
    Ok(())
}
