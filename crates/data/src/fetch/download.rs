//! Resumable HTTP(S) downloads into `FILE.part` (HTTP Range), and checksum verification.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};

use super::{FetchError, Progress, RemoteFile};

/// Downloads `remote.url` into `part`, continuing after the bytes already there when the server
/// honours `Range` (206), starting over when it does not (200), telling `progress` the bytes of
/// the file so far. Returns the bytes received now.
pub(crate) fn download_resumable(
    remote: &RemoteFile,
    part: &Path,
    progress: Progress,
) -> Result<u64, FetchError> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(root_certs())
                    .build(),
            )
            .build(),
    );
    let mut request = agent.get(&remote.url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let http = |reason: String| FetchError::Http {
        url: remote.url.clone(),
        reason,
    };
    let response = request.call().map_err(|e| http(e.to_string()))?;
    let status = response.status().as_u16();
    let append = match status {
        206 => true,
        200 => false,
        // The partial file is already complete (or longer than the file): let the checksum decide.
        416 if have > 0 => return Ok(0),
        _ => return Err(http(format!("HTTP status {status}"))),
    };
    if have > 0 {
        tracing::info!(url = %remote.url, have, resumed = append, "continuing partial download");
    }
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(|e| FetchError::io(part, e))?;
    let before = if append { have } else { 0 };
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|len| before + len);
    let mut body = response.into_body().into_reader();
    let mut next_report = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = body.read(&mut buf).map_err(|e| http(e.to_string()))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(|e| FetchError::io(part, e))?;
        received += n as u64;
        progress(&remote.file_name, before + received, total);
        if received >= next_report {
            // A line every 10% (or 16 MiB when the size is unknown): big archives take minutes.
            let step = total.map_or(16 << 20, |t| (t / 10).max(1));
            tracing::info!(url = %remote.url, received, total, "downloading");
            next_report = received + step;
        }
    }
    out.flush().map_err(|e| FetchError::io(part, e))?;
    Ok(received)
}

/// The system's trust store (`$SSL_CERT_FILE`, else Debian's bundle), as curl and cargo use, so
/// fetch works where a local CA is installed (e.g. behind a TLS-inspecting proxy); Mozilla's
/// roots (webpki-roots) where there is no readable bundle.
fn root_certs() -> ureq::tls::RootCerts {
    let file = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let Ok(pem) = std::fs::read(&file) else {
        return ureq::tls::RootCerts::WebPki;
    };
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        ureq::tls::RootCerts::WebPki
    } else {
        tracing::debug!(bundle = %file.display(), n = certs.len(), "using the system's root certificates");
        ureq::tls::RootCerts::new_with_certs(&certs)
    }
}

/// Checks MD5 (and SHA-256 when given) of `path` against `remote`.
pub(crate) fn verify(remote: &RemoteFile, path: &Path) -> Result<(), FetchError> {
    let mut file = std::fs::File::open(path).map_err(|e| FetchError::io(path, e))?;
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| FetchError::io(path, e))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        if remote.sha256.is_some() {
            sha.update(&buf[..n]);
        }
    }
    let found = hex(&md5.finalize());
    if !found.eq_ignore_ascii_case(&remote.md5) {
        return Err(FetchError::Checksum {
            path: path.to_path_buf(),
            algorithm: "MD5",
            expected: remote.md5.clone(),
            found,
        });
    }
    if let Some(expected) = &remote.sha256 {
        let found = hex(&sha.finalize());
        if !found.eq_ignore_ascii_case(expected) {
            return Err(FetchError::Checksum {
                path: path.to_path_buf(),
                algorithm: "SHA-256",
                expected: expected.clone(),
                found,
            });
        }
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
