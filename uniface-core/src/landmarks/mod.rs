//! Five facial landmarks with dlib's ensemble of regression trees
//! (`shape_predictor_5_face_landmarks.dat`; Kazemi & Sullivan, CVPR 2014; CC0-1.0 weights).
//!
//! Points, in dlib's order: 0/1 = outer/inner corner of the eye on the image's right, 2/3 =
//! outer/inner corner of the eye on the image's left, 4 = bottom of the nose. Positions are
//! rounded to whole pixels as dlib returns them.
//!
//! Inference: start from the mean shape placed in the face box; for each of the 15 cascades,
//! sample 800 grey pixels at offsets from landmarks (warped by the similarity between the mean
//! and the current shape), walk 500 depth-4 trees on pixel differences and add their leaves.

use std::path::Path;

use ::image::RgbImage;

use crate::dlib::reader::{DatReader, DecodeResult};
use crate::geometry::{similarity_transform, Point, Rect};
use crate::{Error, Result};

/// Number of landmarks of the shipped model.
pub const NUM_LANDMARKS: usize = 5;

/// The five landmarks of one face, in pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Landmarks {
    pub points: [Point; NUM_LANDMARKS],
}

#[derive(Debug, Clone)]
struct Tree {
    /// (idx1, idx2, threshold) in heap order.
    splits: Vec<(u32, u32, f32)>,
    /// `leaves[i]` has 2·P values (dx0, dy0, dx1, ...).
    leaves: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Cascade {
    trees: Vec<Tree>,
    anchors: Vec<u32>,
    deltas: Vec<[f32; 2]>,
}

/// dlib's shape predictor. `Send + Sync`; prediction takes `&self`.
#[derive(Debug, Clone)]
pub struct ShapePredictor {
    initial: Vec<f32>,
    cascades: Vec<Cascade>,
}

const LIMIT: usize = 1 << 20;

impl ShapePredictor {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Parse the serialized predictor; `name` appears in errors.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        parse(bytes).map_err(|e| Error::ModelFormat {
            file: name.to_owned(),
            offset: e.offset,
            message: e.message,
        })
    }

    pub fn num_landmarks(&self) -> usize {
        self.initial.len() / 2
    }

    /// Predict the landmarks of the face in `rect` (dlib's inclusive box).
    pub fn predict(&self, img: &RgbImage, rect: &Rect) -> Landmarks {
        let n = self.num_landmarks();
        let mut shape = self.initial.clone();
        let (w, h) = (i64::from(img.width()), i64::from(img.height()));
        let area = Rect::new(0, 0, w - 1, h - 1);
        // unnormalizing transform: the unit square onto the box corners
        let sx = (rect.right - rect.left) as f64;
        let sy = (rect.bottom - rect.top) as f64;
        let (ox, oy) = (rect.left as f64, rect.top as f64);
        let mut features: Vec<f32> = Vec::new();
        let to_points = |s: &[f32]| -> Vec<Point> {
            s.chunks_exact(2)
                .map(|p| Point::new(f64::from(p[0]), f64::from(p[1])))
                .collect()
        };
        let reference = to_points(&self.initial);
        for cascade in &self.cascades {
            let t = similarity_transform(&reference, &to_points(&shape));
            let m = [
                [t.m[0][0] as f32, t.m[0][1] as f32],
                [t.m[1][0] as f32, t.m[1][1] as f32],
            ];
            features.clear();
            for (anchor, d) in cascade.anchors.iter().zip(&cascade.deltas) {
                let a = *anchor as usize;
                let px = m[0][0] * d[0] + m[0][1] * d[1] + shape[2 * a];
                let py = m[1][0] * d[0] + m[1][1] * d[1] + shape[2 * a + 1];
                let p = Point::new(sx * f64::from(px) + ox, sy * f64::from(py) + oy);
                let (x, y) = p.rounded();
                features.push(if area.contains(x, y) {
                    let px = img.get_pixel(x as u32, y as u32).0;
                    ((u32::from(px[0]) + u32::from(px[1]) + u32::from(px[2])) / 3) as f32
                } else {
                    0.0
                });
            }
            for tree in &cascade.trees {
                let mut i = 0usize;
                while i < tree.splits.len() {
                    let (a, b, th) = tree.splits[i];
                    i = if features[a as usize] - features[b as usize] > th {
                        2 * i + 1
                    } else {
                        2 * i + 2
                    };
                }
                let leaf = i - tree.splits.len();
                let values = &tree.leaves[leaf * 2 * n..(leaf + 1) * 2 * n];
                shape.iter_mut().zip(values).for_each(|(s, v)| *s += v);
            }
        }
        let mut points = [Point::default(); NUM_LANDMARKS];
        for (i, p) in points.iter_mut().enumerate().take(n) {
            let q = Point::new(
                sx * f64::from(shape[2 * i]) + ox,
                sy * f64::from(shape[2 * i + 1]) + oy,
            );
            let (x, y) = q.rounded();
            *p = Point::new(x as f64, y as f64);
        }
        Landmarks { points }
    }
}

fn parse(bytes: &[u8]) -> DecodeResult<ShapePredictor> {
    let mut r = DatReader::new(bytes);
    let version = r.int()?;
    if version != 1 {
        return r.error(format!("unsupported shape_predictor version {version}"));
    }
    let (_, nc, initial) = r.float_matrix(1024)?;
    if nc != 1 || initial.len() != 2 * NUM_LANDMARKS {
        return r.error(format!(
            "initial shape has {} values, expected {} (a {NUM_LANDMARKS}-point model)",
            initial.len(),
            2 * NUM_LANDMARKS
        ));
    }
    let dim = initial.len();
    let n_cascades = r.count(1024)?;
    let mut cascades = Vec::with_capacity(n_cascades);
    for _ in 0..n_cascades {
        let n_trees = r.count(LIMIT)?;
        let mut trees = Vec::with_capacity(n_trees);
        for _ in 0..n_trees {
            let n_splits = r.count(LIMIT)?;
            let mut splits = Vec::with_capacity(n_splits);
            for _ in 0..n_splits {
                let a = r.count(u32::MAX as usize)? as u32;
                let b = r.count(u32::MAX as usize)? as u32;
                splits.push((a, b, r.float()? as f32));
            }
            let n_leaves = r.count(LIMIT)?;
            if n_leaves != n_splits + 1 {
                return r.error(format!("tree with {n_splits} splits has {n_leaves} leaves"));
            }
            let mut leaves = Vec::with_capacity(n_leaves * dim);
            for _ in 0..n_leaves {
                let (_, _, v) = r.float_matrix(dim)?;
                if v.len() != dim {
                    return r.error(format!("leaf with {} values, expected {dim}", v.len()));
                }
                leaves.extend(v);
            }
            trees.push(Tree { splits, leaves });
        }
        cascades.push(Cascade {
            trees,
            anchors: Vec::new(),
            deltas: Vec::new(),
        });
    }
    let n_anchor_sets = r.count(1024)?;
    if n_anchor_sets != cascades.len() {
        return r.error("anchor sets do not match the cascades");
    }
    for c in &mut cascades {
        let n = r.count(LIMIT)?;
        for _ in 0..n {
            let a = r.count(NUM_LANDMARKS - 1)?;
            c.anchors.push(a as u32);
        }
    }
    let n_delta_sets = r.count(1024)?;
    if n_delta_sets != cascades.len() {
        return r.error("delta sets do not match the cascades");
    }
    for c in &mut cascades {
        let n = r.count(LIMIT)?;
        if n != c.anchors.len() {
            return r.error("deltas do not match anchors");
        }
        for _ in 0..n {
            c.deltas.push([r.float()? as f32, r.float()? as f32]);
        }
        let features = c.anchors.len();
        for t in &c.trees {
            if t.splits
                .iter()
                .any(|&(a, b, _)| a as usize >= features || b as usize >= features)
            {
                return r.error("split refers to a feature pixel that does not exist");
            }
        }
    }
    if r.remaining() != 0 {
        return r.error(format!("{} trailing bytes", r.remaining()));
    }
    Ok(ShapePredictor { initial, cascades })
}
