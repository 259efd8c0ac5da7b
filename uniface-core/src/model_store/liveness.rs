//! The liveness (presentation-attack detection) models: MiniFASNetV2 and MiniFASNetV1SE from
//! `minivision-ai/Silent-Face-Anti-Spoofing` (Apache-2.0). No registry package carries them, so
//! the store fetches each file from the repository at a pinned commit and checks its SHA-256.

use std::path::PathBuf;

use super::archive::hash_file;
use super::card::ModelCard;
use super::{Location, ModelStore};
use crate::{Error, Result};

const COMMIT: &str = "b6d5f04ad78778917853b25c778acef6d5626d15";
const SOURCE: &str = "github.com/minivision-ai/Silent-Face-Anti-Spoofing @ b6d5f04";
const CITATION: &str =
    "Minivision, Silent-Face-Anti-Spoofing (2020), MiniFASNet; models under Apache-2.0";

/// MiniFASNetV2 on crops of 2.7× the face box.
pub const LIVENESS_V2: ModelCard = ModelCard {
    id: "minifasnet-v2-2.7",
    file: "2.7_80x80_MiniFASNetV2.pth",
    sha256: "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
    size: 1_849_453,
    task: "liveness: print/replay attack vs real face, 80x80 crop of 2.7x the face box",
    license: "Apache-2.0",
    source_package: SOURCE,
    citation: CITATION,
    stated_accuracy: "TPR 97.8% at FPR 1e-5 on the vendor's private data (both models fused)",
    calibration: None,
};

/// MiniFASNetV1SE on crops of 4.0× the face box.
pub const LIVENESS_V1SE: ModelCard = ModelCard {
    id: "minifasnet-v1se-4.0",
    file: "4_0_0_80x80_MiniFASNetV1SE.pth",
    sha256: "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
    size: 1_856_130,
    task: "liveness: print/replay attack vs real face, 80x80 crop of 4.0x the face box",
    license: "Apache-2.0",
    source_package: SOURCE,
    citation: CITATION,
    stated_accuracy: "TPR 97.8% at FPR 1e-5 on the vendor's private data (both models fused)",
    calibration: None,
};

pub const LIVENESS_CARDS: [ModelCard; 2] = [LIVENESS_V2, LIVENESS_V1SE];

/// The pinned public URL of a liveness model file.
pub fn liveness_url(card: &ModelCard) -> String {
    format!(
        "https://github.com/minivision-ai/Silent-Face-Anti-Spoofing/raw/{COMMIT}/resources/anti_spoof_models/{}",
        card.file
    )
}

impl ModelStore {
    /// Directory of the liveness models: `UNIFACE_LIVENESS_DIR` when set, else the offline
    /// model directory, else `<home>/models/minifasnet-b6d5f04`.
    pub fn liveness_dir(&self) -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("UNIFACE_LIVENESS_DIR").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        Ok(match self.location() {
            Location::Directory(d) => d.clone(),
            Location::Cache(home) => home.join("models").join("minifasnet-b6d5f04"),
        })
    }

    /// Paths of the two liveness models (V2 2.7×, V1SE 4.0×), each verified by SHA-256;
    /// fetched into the cache first when missing and downloads are possible.
    pub fn liveness_models(&self) -> Result<[PathBuf; 2]> {
        let dir = self.liveness_dir()?;
        let mut out = Vec::new();
        for card in &LIVENESS_CARDS {
            let path = dir.join(card.file);
            if path.is_file() {
                let (sha, _) = hash_file(&path)?;
                if sha != card.sha256 {
                    return Err(Error::HashMismatch {
                        file: path.display().to_string(),
                        expected: card.sha256.into(),
                        actual: sha,
                    });
                }
                out.push(path);
                continue;
            }
            let cache = matches!(self.location(), Location::Cache(_))
                && std::env::var_os("UNIFACE_LIVENESS_DIR").is_none();
            if !cache {
                return Err(Error::MissingModelFile { path });
            }
            out.push(fetch(card, &dir, &self.progress)?);
        }
        match <[PathBuf; 2]>::try_from(out) {
            Ok(a) => Ok(a),
            Err(v) => Err(Error::BufferLength {
                expected: 2,
                got: v.len(),
            }),
        }
    }
}

#[cfg(feature = "download")]
fn fetch(
    card: &ModelCard,
    dir: &std::path::Path,
    progress: &super::DownloadProgress,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let url = liveness_url(card);
    let pkg = super::card::RegistryPackage {
        name: "Silent-Face-Anti-Spoofing",
        version: COMMIT,
        filename: card.file,
        url: Box::leak(url.into_boxed_str()),
        json_api: "",
        sha256: card.sha256,
        size: card.size,
        member_dir: "",
    };
    let part = super::download::download_package(&pkg, dir, progress).map_err(|e| match e {
        // offline: say where the file goes instead
        Error::Network { url, message } => Error::Network {
            url,
            message: format!(
                "{message}; without the network, copy {} into {} or set UNIFACE_LIVENESS_DIR to a \
                 folder holding both liveness models",
                card.file,
                dir.display()
            ),
        },
        e => e,
    })?;
    let dest = dir.join(card.file);
    std::fs::rename(&part, &dest).map_err(|e| Error::io(&dest, e))?;
    Ok(dest)
}

#[cfg(not(feature = "download"))]
fn fetch(
    _card: &ModelCard,
    dir: &std::path::Path,
    _progress: &super::DownloadProgress,
) -> Result<PathBuf> {
    Err(Error::DownloadDisabled {
        dir: dir.to_owned(),
    })
}
