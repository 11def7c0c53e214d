//! Fetch against a local HTTP server (127.0.0.1, bounded, with Range support) serving archives
//! built here: verification, safe extraction, resume and idempotence.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use sha2::Sha256;

use super::download::hex;
use super::*;

/// (path, Range header) of every request the server saw.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A tiny HTTP/1.1 server: GET only, `Range: bytes=N-` honoured when `ranges`, one request per
/// connection. Stops when dropped or after 20 s.
struct Server {
    base: String,
    log: RequestLog,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(files: HashMap<String, Vec<u8>>, ranges: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: RequestLog = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (log2, stop2) = (log.clone(), stop.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("range") {
                        range = Some(v.trim().to_string());
                    }
                }
            }
            log2.lock().unwrap().push((path.clone(), range.clone()));
            let mut out = stream;
            let body = files.get(path.trim_start_matches('/'));
            let start = range
                .as_deref()
                .filter(|_| ranges)
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
            let (head, payload): (String, &[u8]) = match (body, start) {
                (None, _) => ("404 Not Found".into(), b"no such file"),
                (Some(b), Some(s)) if s >= b.len() => ("416 Range Not Satisfiable".into(), b""),
                (Some(b), Some(s)) => (
                    format!(
                        "206 Partial Content\r\nContent-Range: bytes {s}-{}/{}",
                        b.len() - 1,
                        b.len()
                    ),
                    &b[s..],
                ),
                (Some(b), None) => ("200 OK".into(), b.as_slice()),
            };
            let _ = write!(
                out,
                "HTTP/1.1 {head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            );
            let _ = out.write_all(payload);
        }
    });
    Server { base, log, stop }
}

fn remote(base: &str, name: &str, bytes: &[u8]) -> RemoteFile {
    RemoteFile {
        url: format!("{base}/{name}"),
        file_name: name.to_string(),
        md5: hex(&Md5::digest(bytes)),
        sha256: Some(hex(&Sha256::digest(bytes))),
    }
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        // Raw name bytes: `set_path` would itself refuse `..`, and the test needs such entries.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        builder.append(&h, *data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn zip_file(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

const CIFAR: &str = "cifar-10-binary.tar.gz";

fn cifar_archive() -> Vec<u8> {
    tar_gz(&[
        ("cifar-10-batches-bin/data_batch_1.bin", b"batch one"),
        ("cifar-10-batches-bin/readme.html", b"<p>hi</p>"),
    ])
}

fn cifar_source(server: &Server, archive: &[u8]) -> Source {
    Source {
        dataset: DatasetName::Cifar10,
        files: vec![remote(&server.base, CIFAR, archive)],
        unpack: Unpack::TarGz,
    }
}

#[test]
fn tar_gz_is_verified_extracted_and_not_fetched_twice() {
    let archive = cifar_archive();
    let server = serve(HashMap::from([(CIFAR.to_string(), archive.clone())]), true);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let source = cifar_source(&server, &archive);
    let dest = root.join("cifar-10-batches-bin");
    assert_eq!(
        fetch_source(&source, &root, false).unwrap(),
        FetchOutcome::Fetched(dest.clone())
    );
    assert_eq!(
        std::fs::read(dest.join("data_batch_1.bin")).unwrap(),
        b"batch one"
    );
    assert!(dest.join(STAMP_FILE).is_file());
    let mut left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec!["cifar-10-batches-bin"],
        "archive, .part and staging are gone"
    );
    assert_eq!(server.log.lock().unwrap().len(), 1);
    // Idempotent: no second request.
    assert_eq!(
        fetch_source(&source, &root, false).unwrap(),
        FetchOutcome::AlreadyPresent(dest)
    );
    assert_eq!(server.log.lock().unwrap().len(), 1);
}

#[test]
fn progress_reports_growing_byte_counts_up_to_the_archive_size() {
    let archive = cifar_archive();
    let server = serve(HashMap::from([(CIFAR.to_string(), archive.clone())]), true);
    let tmp = tempfile::tempdir().unwrap();
    let seen = Mutex::new(Vec::new());
    let progress = |name: &str, bytes: u64, total: Option<u64>| {
        seen.lock().unwrap().push((name.to_string(), bytes, total));
    };
    fetch_source_with_progress(
        &cifar_source(&server, &archive),
        &tmp.path().join("data"),
        false,
        &progress,
    )
    .unwrap();
    let seen = seen.into_inner().unwrap();
    let size = archive.len() as u64;
    assert!(!seen.is_empty());
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");
    assert_eq!(seen.last().unwrap(), &(CIFAR.to_string(), size, Some(size)));
}

#[test]
fn corrupted_archive_is_rejected_and_nothing_is_extracted() {
    let archive = cifar_archive();
    let mut corrupted = archive.clone();
    let mid = corrupted.len() / 2;
    corrupted[mid] ^= 0xff;
    let server = serve(HashMap::from([(CIFAR.to_string(), corrupted)]), true);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let err = fetch_source(&cifar_source(&server, &archive), &root, false).unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Checksum {
                algorithm: "MD5",
                ..
            }
        ),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(left.is_empty(), "nothing kept: {left:?}");
    // Right MD5 but a wrong SHA-256 is refused too.
    let mut source = cifar_source(&server, &archive);
    source.files[0].md5 = hex(&Md5::digest(server_bytes_flipped(&archive, mid)));
    let err = fetch_source(&source, &root, false).unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::Checksum {
                algorithm: "SHA-256",
                ..
            }
        ),
        "{err}"
    );
    assert!(!root.join("cifar-10-batches-bin").exists());
}

fn server_bytes_flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 0xff;
    b
}

#[test]
fn entries_escaping_the_target_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let evil_tar = tar_gz(&[
        ("cifar-10-batches-bin/data_batch_1.bin", b"x"),
        ("../evil.txt", b"owned"),
    ]);
    let evil_zip = zip_file(&[
        ("tiny-imagenet-200/wnids.txt", b"n1\n"),
        ("../evil.txt", b"owned"),
    ]);
    let server = serve(
        HashMap::from([
            (CIFAR.to_string(), evil_tar.clone()),
            ("tiny-imagenet-200.zip".to_string(), evil_zip.clone()),
        ]),
        true,
    );
    let err = fetch_source(&cifar_source(&server, &evil_tar), &root, false).unwrap_err();
    assert!(
        matches!(&err, FetchError::UnsafeEntry { entry, .. } if entry == "../evil.txt"),
        "{err}"
    );
    let zip_source = Source {
        dataset: DatasetName::TinyImageNet,
        files: vec![remote(&server.base, "tiny-imagenet-200.zip", &evil_zip)],
        unpack: Unpack::Zip,
    };
    let err = fetch_source(&zip_source, &root, false).unwrap_err();
    assert!(matches!(err, FetchError::UnsafeEntry { .. }), "{err}");
    assert!(!tmp.path().join("evil.txt").exists() && !root.join("evil.txt").exists());
    assert!(!root.join("cifar-10-batches-bin").exists());
    assert!(!root.join("tiny-imagenet-200").exists());
}

#[test]
fn zip_archive_is_extracted() {
    let good = zip_file(&[
        ("tiny-imagenet-200/wnids.txt", b"n1\n"),
        ("tiny-imagenet-200/val/x.txt", b"v"),
    ]);
    let server = serve(HashMap::from([("t.zip".to_string(), good.clone())]), true);
    let tmp = tempfile::tempdir().unwrap();
    let source = Source {
        dataset: DatasetName::TinyImageNet,
        files: vec![remote(&server.base, "t.zip", &good)],
        unpack: Unpack::Zip,
    };
    let dest = tmp.path().join("tiny-imagenet-200");
    assert_eq!(
        fetch_source(&source, tmp.path(), true).unwrap(),
        FetchOutcome::Fetched(dest.clone())
    );
    assert_eq!(std::fs::read(dest.join("val/x.txt")).unwrap(), b"v");
    assert!(tmp.path().join("t.zip").is_file(), "kept on request");
}

#[test]
fn partial_download_is_resumed_with_a_range_request() {
    let archive = cifar_archive();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let part = root.join(format!("{CIFAR}.part"));
    std::fs::write(&part, &archive[..100]).unwrap();
    let server = serve(HashMap::from([(CIFAR.to_string(), archive.clone())]), true);
    fetch_source(&cifar_source(&server, &archive), root, false).unwrap();
    assert_eq!(
        server.log.lock().unwrap().clone(),
        vec![(format!("/{CIFAR}"), Some("bytes=100-".to_string()))]
    );
    assert!(root.join("cifar-10-batches-bin/data_batch_1.bin").is_file());

    // A server without Range support answers 200: the download starts over, still correct.
    let tmp = tempfile::tempdir().unwrap();
    let part = tmp.path().join(format!("{CIFAR}.part"));
    std::fs::write(&part, b"garbage that is not the archive's prefix").unwrap();
    let plain = serve(HashMap::from([(CIFAR.to_string(), archive.clone())]), false);
    fetch_source(&cifar_source(&plain, &archive), tmp.path(), false).unwrap();
    assert!(tmp
        .path()
        .join("cifar-10-batches-bin/readme.html")
        .is_file());
}

#[test]
fn gzipped_idx_files_are_kept_and_readable() {
    let staging = tempfile::tempdir().unwrap();
    crate::tests::write_mnist_dir(staging.path(), 6, 3, true);
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    let files: HashMap<String, Vec<u8>> = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read(staging.path().join(n)).unwrap(),
            )
        })
        .collect();
    let server = serve(files.clone(), true);
    let source = Source {
        dataset: DatasetName::Mnist,
        files: names
            .iter()
            .map(|n| remote(&server.base, n, &files[*n]))
            .collect(),
        unpack: Unpack::Keep,
    };
    let tmp = tempfile::tempdir().unwrap();
    let FetchOutcome::Fetched(dir) = fetch_source(&source, tmp.path(), false).unwrap() else {
        panic!("expected a fetch");
    };
    let tt = crate::load(DatasetName::Mnist, Some(tmp.path())).unwrap();
    assert_eq!((tt.train.len(), tt.test.len()), (6, 3));
    assert_eq!(dir, tmp.path().join("mnist"));
}

#[test]
fn missing_file_is_an_http_error_and_official_urls_can_be_redirected() {
    let server = serve(HashMap::new(), true);
    let tmp = tempfile::tempdir().unwrap();
    let options = FetchOptions {
        base_url: Some(format!("{}/mirror/", server.base)),
        keep_archive: false,
    };
    let err = fetch(DatasetName::Cifar100, tmp.path(), &options).unwrap_err();
    assert!(
        matches!(&err, FetchError::Http { url, reason } if url.ends_with("/mirror/cifar-100-binary.tar.gz") && reason.contains("404")),
        "{err}"
    );
    assert!(!tmp.path().join("cifar-100-binary").exists());
    let official = Source::official(DatasetName::Cifar10);
    assert_eq!(
        official.files[0].url,
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    );
    assert!(official.files[0].sha256.is_some());
}
