//! Grouping a photo collection by person: every face of every photo described
//! ([`describe_faces`]), clustered with [`uniface_index::cluster`], and written out as one
//! folder of links per cluster with a contact sheet ([`write_clusters`]). What
//! `uniface cluster` runs.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::core::pipeline::par_map_bounded;
use crate::{Descriptor, Error, FaceAnalyzer, FaceBox, Result};

pub use crate::index::cluster::*;

/// Side of a face's square on a contact sheet, in pixels.
pub const THUMBNAIL: u32 = 96;

/// Faces of a contact sheet at most (the first ones of the cluster; the folder has them all).
pub const SHEET_FACES: usize = 100;

/// One face of a photo collection.
#[derive(Debug, Clone)]
pub struct PhotoFace {
    pub image: PathBuf,
    pub bbox: FaceBox,
    pub embedding: Descriptor,
    /// The aligned chip scaled to [`THUMBNAIL`] pixels, when asked for.
    pub thumbnail: Option<RgbImage>,
}

/// Every face of every image, in image order (faces of one image in the detector's order).
/// Images that cannot be read are returned beside them with their error; with `thumbnails`,
/// each face keeps a small copy of its chip for [`write_clusters`]. `progress(1)` per image.
pub fn describe_faces(
    analyzer: &FaceAnalyzer,
    images: &[PathBuf],
    thumbnails: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> (Vec<PhotoFace>, Vec<(PathBuf, Error)>) {
    let results = par_map_bounded(
        images,
        analyzer.batch_memory,
        |p| analyzer.working_set_of_file(p),
        |p| {
            let r = crate::core::image::load_rgb(p).and_then(|img| analyzer.analyze(&img));
            progress(1);
            r
        },
    );
    let (mut faces, mut failed) = (Vec::new(), Vec::new());
    for (path, r) in images.iter().zip(results) {
        match r {
            Ok(found) => faces.extend(found.into_iter().map(|f| PhotoFace {
                image: path.clone(),
                bbox: f.bbox,
                embedding: f.embedding,
                thumbnail: thumbnails.then(|| {
                    image::imageops::resize(
                        &f.chip,
                        THUMBNAIL,
                        THUMBNAIL,
                        image::imageops::FilterType::Triangle,
                    )
                }),
            })),
            Err(e) => failed.push((path.clone(), e.into())),
        }
    }
    (faces, failed)
}

/// Cluster `faces` and number the clusters by size: 0 is the largest (ties in order of
/// first appearance).
pub fn cluster_faces(
    faces: &[PhotoFace],
    options: ClusterOptions,
    progress: ProgressFn<'_>,
) -> Result<Vec<u32>> {
    let flat: Vec<f32> = faces.iter().flat_map(|f| f.embedding).collect();
    let c = Clusterer::fit(&flat, crate::core::embed::DESCRIPTOR_DIM, options, progress)?;
    Ok(by_size(c.labels()))
}

/// Renumber cluster ids by size, largest first (ties in order of first appearance).
pub fn by_size(labels: &[u32]) -> Vec<u32> {
    let first = contiguous(labels);
    let mut sizes = vec![0usize; first.iter().map(|&l| l as usize + 1).max().unwrap_or(0)];
    for &l in &first {
        sizes[l as usize] += 1;
    }
    let mut order: Vec<u32> = (0..sizes.len() as u32).collect();
    order.sort_by_key(|&l| (std::cmp::Reverse(sizes[l as usize]), l));
    let mut rank = vec![0u32; sizes.len()];
    for (r, &l) in order.iter().enumerate() {
        rank[l as usize] = r as u32;
    }
    first.iter().map(|&l| rank[l as usize]).collect()
}

/// The folder name of cluster `label` under `write_clusters`' output.
pub fn cluster_folder(label: u32) -> String {
    format!("cluster-{label:05}")
}

/// Write one folder per cluster under `out` (`cluster-00000`, … by [`cluster_folder`])
/// holding a symbolic link to each photo with a face in it, and beside each folder a contact
/// sheet `cluster-00000.png` of its faces' thumbnails (up to [`SHEET_FACES`]). `out` is
/// created; existing cluster folders in it are an error (never mixed with a new run).
/// Returns the number of clusters written.
pub fn write_clusters(out: &Path, faces: &[PhotoFace], labels: &[u32]) -> Result<usize> {
    if faces.len() != labels.len() {
        return Err(Error::invalid(
            "labels",
            format!("{} labels for {} faces", labels.len(), faces.len()),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let clusters = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); clusters];
    for (i, &l) in labels.iter().enumerate() {
        members[l as usize].push(i);
    }
    for (label, faces_of) in members.iter().enumerate() {
        if faces_of.is_empty() {
            continue;
        }
        let dir = out.join(cluster_folder(label as u32));
        std::fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::invalid(
                "out",
                format!(
                    "{} already exists: give an empty or new folder",
                    dir.display()
                ),
            ),
            _ => Error::io(&dir, e),
        })?;
        let mut linked: Vec<&Path> = Vec::new();
        for &i in faces_of {
            let image = faces[i].image.as_path();
            if linked.contains(&image) {
                continue;
            }
            linked.push(image);
            let target = std::path::absolute(image).map_err(|e| Error::io(image, e))?;
            let name = format!(
                "{:05}-{}",
                linked.len(),
                image
                    .file_name()
                    .map_or_else(|| "photo".into(), |n| n.to_string_lossy().into_owned())
            );
            link(&target, &dir.join(name))?;
        }
        let thumbs: Vec<&RgbImage> = faces_of
            .iter()
            .filter_map(|&i| faces[i].thumbnail.as_ref())
            .take(SHEET_FACES)
            .collect();
        if !thumbs.is_empty() {
            let sheet = contact_sheet(&thumbs);
            let path = out.join(format!("{}.png", cluster_folder(label as u32)));
            sheet
                .save(&path)
                .map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        }
    }
    Ok(members.iter().filter(|m| !m.is_empty()).count())
}

#[cfg(unix)]
fn link(target: &Path, at: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, at).map_err(|e| Error::io(at, e))
}

#[cfg(not(unix))]
fn link(target: &Path, at: &Path) -> Result<()> {
    std::fs::copy(target, at)
        .map(|_| ())
        .map_err(|e| Error::io(at, e))
}

/// Thumbnails tiled in rows of up to 10 on a grey background.
pub fn contact_sheet(thumbs: &[&RgbImage]) -> RgbImage {
    const GAP: u32 = 4;
    let columns = thumbs.len().clamp(1, 10) as u32;
    let rows = thumbs.len().div_ceil(columns as usize).max(1) as u32;
    let step = THUMBNAIL + GAP;
    let mut sheet = RgbImage::from_pixel(
        columns * step + GAP,
        rows * step + GAP,
        image::Rgb([64, 64, 64]),
    );
    for (i, t) in thumbs.iter().enumerate() {
        let (x, y) = (i as u32 % columns, i as u32 / columns);
        image::imageops::overlay(
            &mut sheet,
            *t,
            i64::from(GAP + x * step),
            i64::from(GAP + y * step),
        );
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_numbered_by_size() {
        assert_eq!(by_size(&[5, 9, 9, 2, 9, 5]), vec![1, 0, 0, 2, 0, 1]);
        assert_eq!(by_size(&[]), Vec::<u32>::new());
    }

    #[test]
    fn a_contact_sheet_holds_every_thumbnail() {
        let t = RgbImage::from_pixel(THUMBNAIL, THUMBNAIL, image::Rgb([200, 0, 0]));
        let thumbs: Vec<&RgbImage> = std::iter::repeat_n(&t, 12).collect();
        let sheet = contact_sheet(&thumbs);
        assert_eq!(sheet.width(), 10 * (THUMBNAIL + 4) + 4);
        assert_eq!(sheet.height(), 2 * (THUMBNAIL + 4) + 4);
        // the 12th face starts the second row's second square
        let (x, y) = (4 + (THUMBNAIL + 4) + 10, 4 + (THUMBNAIL + 4) + 10);
        assert_eq!(sheet.get_pixel(x, y), &image::Rgb([200, 0, 0]));
        // the 13th square is empty
        assert_eq!(
            sheet.get_pixel(4 + 2 * (THUMBNAIL + 4) + 10, y),
            &image::Rgb([64, 64, 64])
        );
    }
}
