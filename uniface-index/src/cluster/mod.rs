//! Clustering templates by identity ("group my photos by person") over a k-nearest-neighbour
//! graph: exact for small collections, built with the gallery's HNSW for large ones, never an
//! N × N matrix.
//!
//! Three methods share the graph ([`Method`]):
//! - [`Method::ChineseWhispers`], as `dlib.chinese_whispers_clustering` runs it: every face
//!   starts with a label of its own, then `iterations × N` times a random face takes the label
//!   most common among itself and its neighbours closer than the threshold (unit weights,
//!   ties to the smallest label).
//! - [`Method::AverageLinkage`]: agglomerative clustering that merges the two groups whose
//!   *average* distance over all their pairs is smallest, while it is under the threshold.
//!   Pairs that are not in the graph are counted at the smallest distance they can have (the
//!   larger of the two groups' mean distance to their k-th neighbour), so a chain of close
//!   pairs cannot join two people the way it does in single-linkage or Chinese Whispers.
//!   The default: it measures best on LFW (`docs/ACCURACY.md`).
//! - [`Method::Components`]: connected components of the thresholded graph (single
//!   linkage), the baseline both others improve on.
//!
//! The threshold is a distance or, with [`Threshold::Fmr`], the calibration table's distance
//! for a false-match rate per comparison, so `fmr = 1e-3` means that two faces of different
//! people fall under it once in a thousand comparisons.
//!
//! A [`Clusterer`] keeps the graph and the labels, so new faces join an existing clustering
//! ([`Clusterer::add`]) without redoing it: each new face joins the group its neighbours
//! vote for (or starts one), and groups it brings under the threshold are merged and
//! reported ([`Additions::merges`]).

mod metrics;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use serde::Serialize;
use uniface_core::calibration::CalibrationTable;
use uniface_core::compare::{Metric, TemplateMatrix};
use uniface_core::template::ElementType;

use crate::hnsw::Hnsw;
use crate::{Error, HnswParams, Result};

pub use metrics::{bcubed, pairwise, ClusterScores};

/// Collections up to this many faces get an exact neighbour graph (a full scan per face);
/// larger ones an HNSW graph whose candidates are re-scored exactly.
pub const EXACT_LIMIT: usize = 10_000;

/// The default false-match rate of the threshold: the best BCubed F of average linkage on
/// LFW (`docs/ACCURACY.md`). Clustering n faces makes about n²/2 comparisons, so this is far
/// stricter than a 1:1 decision needs.
pub const DEFAULT_FMR: f64 = 4e-4;

/// Neighbour ranks (0 the nearest) whose mean distance measures how crowded a face's
/// neighbourhood is, for average linkage's normalised distances: past the few faces of the
/// same person, before the list ends.
pub const DENSITY_RANKS: std::ops::Range<usize> = 10..32;

/// Most values per face.
pub const MAX_DIMENSION: usize = 4096;

/// Most neighbours per face (the graph's `k`).
pub const MAX_NEIGHBOURS: usize = 256;

/// How faces are grouped (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// dlib's Chinese Whispers on the thresholded graph.
    ChineseWhispers,
    /// Average-linkage agglomeration on the neighbour graph (the default).
    #[default]
    AverageLinkage,
    /// Connected components of the thresholded graph (single linkage).
    Components,
}

impl Method {
    /// All methods, in the order reports list them.
    pub const ALL: [Method; 3] = [
        Method::AverageLinkage,
        Method::ChineseWhispers,
        Method::Components,
    ];

    /// The method's name on the command line and in Python ("average_linkage", …).
    pub fn name(self) -> &'static str {
        match self {
            Method::ChineseWhispers => "chinese_whispers",
            Method::AverageLinkage => "average_linkage",
            Method::Components => "components",
        }
    }

    /// The method named `name` (as [`Method::name`] spells it; `-` may stand for `_`).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.replace('-', "_");
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Where two faces count as the same person.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// The calibration table's distance for this false-match rate per comparison.
    Fmr(f64),
    /// A distance (dlib's examples use 0.5 for Chinese Whispers).
    Distance(f32),
}

impl Threshold {
    /// The distance this threshold stands for under `table` (the shipped LFW table when
    /// `None`).
    pub fn distance(self, table: Option<&CalibrationTable>) -> Result<f32> {
        match self {
            Threshold::Distance(d) if d.is_finite() && d > 0.0 => Ok(d),
            Threshold::Distance(d) => Err(Error::Invalid {
                what: "threshold",
                message: format!("a distance must be finite and above 0, got {d}"),
            }),
            Threshold::Fmr(fmr) => Ok(match table {
                Some(t) => t.threshold_for_fmr(fmr)?,
                None => uniface_core::calibration::threshold_for_fmr(fmr)?,
            }),
        }
    }
}

/// Options of a clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    pub method: Method,
    pub threshold: Threshold,
    /// Neighbours per face in the graph (`k`, 1..=[`MAX_NEIGHBOURS`]).
    pub neighbours: usize,
    /// Chinese Whispers: passes over the faces (dlib: 100).
    pub iterations: usize,
    /// Seed of Chinese Whispers' random order (the other methods are deterministic).
    pub seed: u64,
    /// The calibration table behind [`Threshold::Fmr`] (the shipped LFW table when `None`).
    pub calibration: Option<CalibrationTable>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            method: Method::AverageLinkage,
            threshold: Threshold::Fmr(DEFAULT_FMR),
            neighbours: 32,
            iterations: 100,
            seed: 0,
            calibration: None,
        }
    }
}

/// How far a clustering has got: `done` of `total` in `stage` ("neighbours", "clustering").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub stage: &'static str,
    pub done: u64,
    pub total: u64,
}

/// A progress callback (called from several threads).
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Sync);

/// A cluster absorbed by another during [`Clusterer::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Merge {
    /// The cluster that no longer exists.
    pub from: u32,
    /// The cluster its faces now belong to.
    pub into: u32,
}

/// What [`Clusterer::add`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Additions {
    /// The cluster of each new face, in order.
    pub labels: Vec<u32>,
    /// How many of those clusters are new.
    pub new_clusters: usize,
    /// Existing clusters joined by the new faces, in the order they happened.
    pub merges: Vec<Merge>,
}

/// A clustering that new faces can join: the faces, their neighbour graph and their labels.
///
/// Cluster ids are stable: a face keeps its cluster's id until a merge reported by
/// [`Clusterer::add`] folds it into another. They are not contiguous (a merged cluster's id is
/// gone); [`contiguous`] renumbers them. `Send + Sync`.
pub struct Clusterer {
    options: ClusterOptions,
    threshold: f32,
    dim: usize,
    /// Every face, row after row.
    faces: Vec<f32>,
    /// Symmetric neighbour lists (face, distance), each sorted by distance.
    adjacency: Vec<Vec<(u32, f32)>>,
    /// Each face's distance to its k-th nearest neighbour (`f32::INFINITY` while it has fewer
    /// than k): no face outside its list is closer.
    radius: Vec<f32>,
    /// Average linkage: each face's mean distance to its neighbours ranked
    /// [`DENSITY_RANKS`] (how crowded its neighbourhood is), and the mean of those at the
    /// first batch.
    density: Vec<f32>,
    mean_density: f32,
    labels: Vec<u32>,
    /// Faces of each cluster id (empty for ids merged away or never used).
    members: Vec<Vec<u32>>,
    /// HNSW graph of every face, once there are more than [`EXACT_LIMIT`].
    graph: Option<Hnsw>,
}

fn invalid(what: &'static str, message: String) -> Error {
    Error::Invalid { what, message }
}

impl Clusterer {
    /// An empty clustering of `dim`-dimensional templates.
    pub fn new(dim: usize, options: ClusterOptions) -> Result<Self> {
        if dim == 0 || dim > MAX_DIMENSION {
            return Err(invalid(
                "dimension",
                format!("{dim}; must lie in 1..={MAX_DIMENSION}"),
            ));
        }
        if !(1..=MAX_NEIGHBOURS).contains(&options.neighbours) {
            return Err(invalid(
                "neighbours",
                format!("{}; must lie in 1..={MAX_NEIGHBOURS}", options.neighbours),
            ));
        }
        if options.iterations > 10_000 {
            return Err(invalid(
                "iterations",
                format!("{}; at most 10000", options.iterations),
            ));
        }
        let threshold = options.threshold.distance(options.calibration.as_ref())?;
        Ok(Self {
            options,
            threshold,
            dim,
            faces: Vec::new(),
            adjacency: Vec::new(),
            radius: Vec::new(),
            density: Vec::new(),
            mean_density: f32::NAN,
            labels: Vec::new(),
            members: Vec::new(),
            graph: None,
        })
    }

    /// Cluster `faces` (`n × dim` values, row after row) in one batch.
    pub fn fit(
        faces: &[f32],
        dim: usize,
        options: ClusterOptions,
        progress: ProgressFn<'_>,
    ) -> Result<Self> {
        let mut c = Self::new(dim, options)?;
        let n = c.push_faces(faces)?;
        c.link(0, n, progress)?;
        progress(Progress {
            stage: "clustering",
            done: 0,
            total: n as u64,
        });
        let labels = match c.options.method {
            Method::ChineseWhispers => c.chinese_whispers(progress),
            Method::Components => c.components(),
            Method::AverageLinkage => c.average_linkage(progress),
        };
        c.set_labels(labels);
        Ok(c)
    }

    /// The options this clustering was made with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The distance threshold in force (resolved from [`ClusterOptions::threshold`]).
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// How many faces are clustered.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The cluster id of each face, in the order they were given.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// How many clusters there are.
    pub fn clusters(&self) -> usize {
        self.members.iter().filter(|m| !m.is_empty()).count()
    }

    /// The faces of cluster `id` (empty when there is none).
    pub fn members(&self, id: u32) -> &[u32] {
        self.members.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// A face's neighbours in the graph with their distances, nearest first.
    pub fn neighbours(&self, face: usize) -> &[(u32, f32)] {
        self.adjacency.get(face).map_or(&[], Vec::as_slice)
    }

    /// Add `faces` (`m × dim` values) to the clustering without redoing it: each new face
    /// joins the cluster its graph neighbours make it part of under the method's rule, or
    /// starts one; clusters the new faces bring within the threshold of each other are
    /// merged (average linkage and components; Chinese Whispers only relabels the new faces).
    pub fn add(&mut self, faces: &[f32], progress: ProgressFn<'_>) -> Result<Additions> {
        let start = self.len();
        let added = self.push_faces(faces)?;
        self.link(start, added, progress)?;
        let mut out = Additions::default();
        for face in start..start + added {
            let (label, fresh) = self.join(face);
            out.new_clusters += usize::from(fresh);
            self.labels.push(label);
            self.member_push(label, face as u32);
            if self.options.method != Method::ChineseWhispers {
                self.merge_around(face, &mut out.merges);
            }
            progress(Progress {
                stage: "clustering",
                done: (face - start + 1) as u64,
                total: added as u64,
            });
        }
        // merges may have moved earlier new faces
        out.labels = self.labels[start..].to_vec();
        Ok(out)
    }

    /// Append faces to the matrix (checked: finite, right length); returns how many.
    fn push_faces(&mut self, faces: &[f32]) -> Result<usize> {
        if faces.len() % self.dim != 0 {
            return Err(invalid(
                "faces",
                format!(
                    "{} values is not a whole number of {}-value rows",
                    faces.len(),
                    self.dim
                ),
            ));
        }
        let n = faces.len() / self.dim;
        if self.len() + n > u32::MAX as usize - 1 {
            return Err(invalid(
                "faces",
                format!("{} faces; at most {}", self.len() + n, u32::MAX - 1),
            ));
        }
        if let Some(i) = faces.iter().position(|v| !v.is_finite()) {
            return Err(invalid(
                "faces",
                format!("face {} has a value that is not finite", i / self.dim),
            ));
        }
        self.faces.extend_from_slice(faces);
        Ok(n)
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.faces[i * self.dim..(i + 1) * self.dim]
    }

    fn count(&self) -> usize {
        self.faces.len() / self.dim
    }

    /// Find the neighbours of faces `start..start + n` among every face (earlier ones and
    /// each other) and enter them in the symmetric lists.
    fn link(&mut self, start: usize, n: usize, progress: ProgressFn<'_>) -> Result<()> {
        let total = self.count();
        let k = self.options.neighbours;
        self.adjacency.resize_with(total, Vec::new);
        self.radius.resize(total, f32::INFINITY);
        let done = std::sync::atomic::AtomicU64::new(0);
        let tick = || {
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if d % 256 == 0 || d == n as u64 {
                progress(Progress {
                    stage: "neighbours",
                    done: d,
                    total: n as u64,
                });
            }
        };
        let found: Vec<Vec<(u32, f32)>> = if total <= EXACT_LIMIT {
            let mut matrix = TemplateMatrix::new(self.dim, ElementType::F32);
            matrix.reserve(total);
            for row in self.faces.chunks_exact(self.dim) {
                matrix.push(row)?;
            }
            let matrix = &matrix;
            (start..start + n)
                .into_par_iter()
                .map_init(
                    || vec![0f32; total],
                    |buf, i| {
                        let r = self.exact_neighbours(matrix, i, k, buf);
                        tick();
                        r
                    },
                )
                .collect::<Result<_>>()?
        } else {
            self.index_faces(start)?;
            let graph = self
                .graph
                .as_ref()
                .ok_or_else(|| Error::Usearch("the neighbour graph was not built".into()))?;
            (start..start + n)
                .into_par_iter()
                .map(|i| {
                    let r = self.graph_neighbours(graph, i, k);
                    tick();
                    r
                })
                .collect::<Result<_>>()?
        };
        for (offset, list) in found.into_iter().enumerate() {
            let i = start + offset;
            if list.len() == k {
                self.radius[i] = list[k - 1].1;
            }
            for &(j, d) in &list {
                insert_neighbour(&mut self.adjacency[i], j, d);
                let j = j as usize;
                insert_neighbour(&mut self.adjacency[j], i as u32, d);
                // an earlier face whose k-th neighbour was farther has a new, nearer one
                if j < start && d < self.radius[j] {
                    self.radius[j] = kth_distance(&self.adjacency[j], k);
                }
            }
        }
        self.density.resize(total, 0.0);
        for i in start..total {
            self.density[i] = crowding(&self.adjacency[i]);
        }
        if self.mean_density.is_nan() && total > 0 {
            let known: Vec<f32> = self
                .density
                .iter()
                .copied()
                .filter(|d| d.is_finite())
                .collect();
            self.mean_density = if known.is_empty() {
                0.0
            } else {
                known.iter().sum::<f32>() / known.len() as f32
            };
        }
        for i in start..total {
            if !self.density[i].is_finite() {
                self.density[i] = self.mean_density;
            }
        }
        Ok(())
    }

    /// The distance between faces `i` and `j` as the method weighs it: average linkage
    /// subtracts how crowded both neighbourhoods are (their mean distance at
    /// [`DENSITY_RANKS`]) and adds back the collection's mean, so a face that is close to
    /// everyone (a blurred or tiny face) needs a closer match than one in a sparse
    /// neighbourhood; the other methods use the distance as it is.
    fn weighed(&self, i: usize, j: usize, d: f32) -> f64 {
        if self.options.method != Method::AverageLinkage {
            return f64::from(d);
        }
        let shift = self.mean_density - 0.5 * (self.density[i] + self.density[j]);
        f64::from((d + shift).max(0.0))
    }

    /// The `k` nearest other faces of face `i` by a full scan.
    fn exact_neighbours(
        &self,
        matrix: &TemplateMatrix,
        i: usize,
        k: usize,
        buf: &mut [f32],
    ) -> Result<Vec<(u32, f32)>> {
        matrix.distances_into(self.row(i), Metric::Euclidean, buf)?;
        let mut best: Vec<(u32, f32)> = buf
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(j, &d)| (j as u32, d))
            .collect();
        let by = |a: &(u32, f32), b: &(u32, f32)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
        if best.len() > k {
            best.select_nth_unstable_by(k - 1, by);
            best.truncate(k);
        }
        best.sort_unstable_by(by);
        Ok(best)
    }

    /// The `k` nearest other faces of face `i` from the HNSW graph, re-scored exactly.
    fn graph_neighbours(&self, graph: &Hnsw, i: usize, k: usize) -> Result<Vec<(u32, f32)>> {
        let v = self.row(i);
        let mut best = Vec::with_capacity(k + 1);
        for (j, _) in graph.search(v, k + 1, |j| j as usize != i)? {
            let d = uniface_core::compare::euclidean(v, self.row(j as usize))?;
            best.push((j as u32, d));
        }
        best.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        best.truncate(k);
        Ok(best)
    }

    /// Put faces `from..` into the HNSW graph (every face, the first time there are more
    /// than [`EXACT_LIMIT`]).
    fn index_faces(&mut self, from: usize) -> Result<()> {
        let total = self.count();
        let first = if self.graph.is_none() {
            // f16 copies: i8 loses too much of face-like vectors for a neighbour graph
            // (recall@k 0.84 against 0.99+ in the tests); candidates are re-scored in f32
            let params = HnswParams {
                dimensions: self.dim,
                expansion_search: (4 * self.options.neighbours).max(128),
                graph: ElementType::F16,
                ..HnswParams::default()
            };
            self.graph = Some(Hnsw::new(&params)?);
            0
        } else {
            from
        };
        let Some(graph) = self.graph.as_mut() else {
            return Ok(());
        };
        graph.reserve(total - first)?;
        let graph = &*graph;
        let (faces, dim) = (&self.faces, self.dim);
        (first..total)
            .into_par_iter()
            .try_for_each(|i| graph.add(i as u64, &faces[i * dim..(i + 1) * dim]))
    }

    fn set_labels(&mut self, labels: Vec<u32>) {
        self.members = vec![Vec::new(); self.len().max(labels.len())];
        for (i, &l) in labels.iter().enumerate() {
            self.members[l as usize].push(i as u32);
        }
        self.labels = labels;
    }

    fn member_push(&mut self, label: u32, face: u32) {
        let l = label as usize;
        if self.members.len() <= l {
            self.members.resize_with(l + 1, Vec::new);
        }
        self.members[l].push(face);
    }

    /// dlib's Chinese Whispers over the graph's edges under the threshold.
    fn chinese_whispers(&self, progress: ProgressFn<'_>) -> Vec<u32> {
        let n = self.adjacency.len();
        let mut labels: Vec<u32> = (0..n as u32).collect();
        if n == 0 {
            return labels;
        }
        let mut rng = SplitMix64(self.options.seed);
        let steps = n as u64 * self.options.iterations as u64;
        let mut votes: Vec<(u32, u32)> = Vec::new();
        for step in 0..steps {
            let i = rng.below(n as u64) as usize;
            labels[i] = self.vote(i, labels[i], &labels, &mut votes);
            if step % (1 << 20) == 0 || step + 1 == steps {
                progress(Progress {
                    stage: "clustering",
                    done: step + 1,
                    total: steps,
                });
            }
        }
        labels
    }

    /// The label most common among face `i` (its label `own`, counted once as dlib's
    /// self-edge does) and its neighbours under the threshold (those in `labels`); ties go to
    /// the smallest label.
    fn vote(&self, i: usize, own: u32, labels: &[u32], votes: &mut Vec<(u32, u32)>) -> u32 {
        votes.clear();
        let mut count = |l: u32| match votes.iter_mut().find(|(label, _)| *label == l) {
            Some(v) => v.1 += 1,
            None => votes.push((l, 1)),
        };
        count(own);
        for &(j, d) in &self.adjacency[i] {
            if d >= self.threshold {
                break;
            }
            // (faces added later in the same batch have no label yet)
            if let Some(&l) = labels.get(j as usize) {
                count(l);
            }
        }
        votes
            .iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map_or(own, |v| v.0)
    }

    /// Connected components of the edges under the threshold (each labelled by its smallest
    /// face).
    fn components(&self) -> Vec<u32> {
        let n = self.adjacency.len();
        let mut parent: Vec<u32> = (0..n as u32).collect();
        for (i, list) in self.adjacency.iter().enumerate() {
            for &(j, d) in list {
                if d >= self.threshold {
                    break;
                }
                union(&mut parent, i as u32, j);
            }
        }
        (0..n as u32).map(|i| find(&mut parent, i)).collect()
    }

    /// Average-linkage agglomeration (see the module documentation); each cluster is
    /// labelled by one of its faces.
    fn average_linkage(&self, progress: ProgressFn<'_>) -> Vec<u32> {
        let n = self.adjacency.len();
        let mut groups: Vec<Group> = (0..n)
            .map(|i| Group {
                size: 1,
                radius_sum: self.radius_of(i),
                stamp: 0,
                links: self.adjacency[i]
                    .iter()
                    .map(|&(j, d)| Link {
                        to: j,
                        sum: self.weighed(i, j as usize, d),
                        count: 1,
                    })
                    .collect(),
            })
            .collect();
        let mut parent: Vec<u32> = (0..n as u32).collect();
        let mut heap = BinaryHeap::new();
        for (a, g) in groups.iter().enumerate() {
            for l in &g.links {
                if (a as u32) < l.to {
                    let linkage = linkage(g, &groups[l.to as usize], l);
                    if linkage < f64::from(self.threshold) {
                        heap.push(Candidate::new(linkage, a as u32, l.to, 0, 0));
                    }
                }
            }
        }
        let mut merged = 0u64;
        while let Some(c) = heap.pop() {
            let (a, b) = (c.a as usize, c.b as usize);
            if groups[a].size == 0
                || groups[b].size == 0
                || groups[a].stamp != c.stamp_a
                || groups[b].stamp != c.stamp_b
            {
                continue;
            }
            // keep the group with more links; fold the other into it
            let (keep, gone) = if groups[a].links.len() >= groups[b].links.len() {
                (a, b)
            } else {
                (b, a)
            };
            let gone_group = std::mem::take(&mut groups[gone]);
            // (a taken group has size 0: entries naming it are dropped)
            parent[gone] = keep as u32;
            let keep_links = std::mem::take(&mut groups[keep].links);
            let mut links = combine_links(keep_links, gone_group.links, keep as u32, gone as u32);
            groups[keep].size += gone_group.size;
            groups[keep].radius_sum += gone_group.radius_sum;
            groups[keep].stamp += 1;
            // neighbours see one link to the merged group instead of two
            for l in &links {
                repoint(
                    &mut groups[l.to as usize].links,
                    keep as u32,
                    gone as u32,
                    l,
                );
            }
            links.shrink_to_fit();
            groups[keep].links = links;
            for l in &groups[keep].links {
                let other = &groups[l.to as usize];
                let linkage = linkage(&groups[keep], other, l);
                if linkage < f64::from(self.threshold) {
                    heap.push(Candidate::new(
                        linkage,
                        keep as u32,
                        l.to,
                        groups[keep].stamp,
                        other.stamp,
                    ));
                }
            }
            merged += 1;
            if merged % 4096 == 0 {
                progress(Progress {
                    stage: "clustering",
                    done: merged,
                    total: n as u64,
                });
            }
        }
        progress(Progress {
            stage: "clustering",
            done: n as u64,
            total: n as u64,
        });
        (0..n as u32).map(|i| find(&mut parent, i)).collect()
    }

    /// Face `i`'s k-th neighbour distance, weighed as [`Clusterer::weighed`] weighs a pair
    /// (no face outside its list is closer).
    fn radius_of(&self, i: usize) -> f64 {
        let r = self.radius[i];
        if self.options.method == Method::AverageLinkage && r.is_finite() {
            return f64::from((r + self.mean_density - self.density[i]).max(0.0));
        }
        f64::from(r)
    }

    /// The cluster a new face joins (and whether it is a new one).
    fn join(&self, face: usize) -> (u32, bool) {
        let own = face as u32;
        match self.options.method {
            Method::ChineseWhispers => {
                let l = self.vote(face, own, &self.labels, &mut Vec::new());
                (l, l == own)
            }
            Method::Components => {
                let best = self.adjacency[face]
                    .iter()
                    .find(|&&(j, d)| d < self.threshold && (j as usize) < self.labels.len());
                best.map_or((own, true), |&(j, _)| (self.labels[j as usize], false))
            }
            Method::AverageLinkage => {
                // linkage of the one-face group to each neighbouring cluster
                let mut stats: Vec<(u32, f64, u32)> = Vec::new();
                for &(j, d) in &self.adjacency[face] {
                    let Some(&l) = self.labels.get(j as usize) else {
                        continue;
                    };
                    match stats.iter_mut().find(|s| s.0 == l) {
                        Some(s) => {
                            s.1 += self.weighed(face, j as usize, d);
                            s.2 += 1;
                        }
                        None => stats.push((l, self.weighed(face, j as usize, d), 1)),
                    }
                }
                let me = (1u64, self.radius_of(face));
                let best = stats
                    .iter()
                    .map(|&(l, sum, count)| {
                        let size = self.members(l).len() as u64;
                        let r: f64 = self
                            .members(l)
                            .iter()
                            .map(|&m| self.radius_of(m as usize))
                            .sum();
                        (l, average(me, (size, r), sum, count))
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                match best {
                    Some((l, linkage)) if linkage < f64::from(self.threshold) => (l, false),
                    _ => (own, true),
                }
            }
        }
    }

    /// Merge the cluster of `face` with neighbouring clusters now under the threshold, until
    /// none is (the merges are appended to `out`).
    fn merge_around(&mut self, face: usize, out: &mut Vec<Merge>) {
        loop {
            let mine = self.labels[face];
            let mut others: Vec<u32> = Vec::new();
            for &m in self.members(mine) {
                for &(j, d) in &self.adjacency[m as usize] {
                    if let Some(&l) = self.labels.get(j as usize) {
                        let close =
                            self.weighed(m as usize, j as usize, d) < f64::from(self.threshold);
                        if l != mine && !others.contains(&l) && close {
                            others.push(l);
                        }
                    }
                }
                if others.len() > 64 {
                    break;
                }
            }
            let best = others
                .into_iter()
                .map(|l| (l, self.cluster_linkage(mine, l)))
                .filter(|&(_, x)| x < f64::from(self.threshold))
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            let Some((other, _)) = best else {
                return;
            };
            // the larger cluster keeps its id
            let (into, from) = if self.members(mine).len() >= self.members(other).len() {
                (mine, other)
            } else {
                (other, mine)
            };
            let moved = std::mem::take(&mut self.members[from as usize]);
            for &m in &moved {
                self.labels[m as usize] = into;
            }
            self.members[into as usize].extend(moved);
            out.push(Merge { from, into });
        }
    }

    /// The linkage of two clusters under the method (average or single).
    fn cluster_linkage(&self, a: u32, b: u32) -> f64 {
        let (small, other) = if self.members(a).len() <= self.members(b).len() {
            (a, b)
        } else {
            (b, a)
        };
        let (mut sum, mut count, mut nearest) = (0f64, 0u32, f64::INFINITY);
        for &m in self.members(small) {
            for &(j, d) in &self.adjacency[m as usize] {
                if self.labels.get(j as usize) == Some(&other) {
                    sum += self.weighed(m as usize, j as usize, d);
                    count += 1;
                    nearest = nearest.min(f64::from(d));
                }
            }
        }
        if self.options.method == Method::Components {
            return nearest;
        }
        let group = |l: u32| {
            let m = self.members(l);
            (
                m.len() as u64,
                m.iter().map(|&i| self.radius_of(i as usize)).sum::<f64>(),
            )
        };
        average(group(small), group(other), sum, count)
    }
}

/// Renumber cluster ids to 0, 1, 2, … in the order they first appear.
pub fn contiguous(labels: &[u32]) -> Vec<u32> {
    let mut map = std::collections::HashMap::new();
    labels
        .iter()
        .map(|l| {
            let next = map.len() as u32;
            *map.entry(*l).or_insert(next)
        })
        .collect()
}

/// Cluster `faces` (`n × dim` values) and return one label per face, numbered 0, 1, 2, … in
/// order of first appearance.
///
/// ```
/// use uniface_index::cluster::{cluster, ClusterOptions, Threshold};
/// // two tight pairs far apart
/// let faces = [0.0, 0.0, 0.01, 0.0, 1.0, 1.0, 1.0, 1.01];
/// let opts = ClusterOptions { threshold: Threshold::Distance(0.1), ..Default::default() };
/// assert_eq!(cluster(&faces, 2, opts).unwrap(), vec![0, 0, 1, 1]);
/// ```
pub fn cluster(faces: &[f32], dim: usize, options: ClusterOptions) -> Result<Vec<u32>> {
    let c = Clusterer::fit(faces, dim, options, &|_| {})?;
    Ok(contiguous(c.labels()))
}

/// Enter `(j, d)` in a neighbour list kept sorted by distance (no duplicates).
fn insert_neighbour(list: &mut Vec<(u32, f32)>, j: u32, d: f32) {
    if list.iter().any(|&(x, _)| x == j) {
        return;
    }
    let at = list.partition_point(|&(x, e)| e < d || (e == d && x < j));
    list.insert(at, (j, d));
}

/// Mean distance of a sorted neighbour list at [`DENSITY_RANKS`] (of what there is past
/// the first ranks when it is shorter; NaN when empty).
fn crowding(list: &[(u32, f32)]) -> f32 {
    let from = DENSITY_RANKS.start.min(list.len().saturating_sub(1));
    let part = &list[from.min(list.len())..DENSITY_RANKS.end.min(list.len())];
    if part.is_empty() {
        return f32::NAN;
    }
    part.iter().map(|e| e.1).sum::<f32>() / part.len() as f32
}

/// The k-th smallest distance of a sorted list (infinite when shorter).
fn kth_distance(list: &[(u32, f32)], k: usize) -> f32 {
    list.get(k - 1).map_or(f32::INFINITY, |e| e.1)
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let p = parent[i as usize];
        parent[i as usize] = parent[p as usize];
        i = p;
    }
    i
}

fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = (ra.min(rb), ra.max(rb));
        parent[hi as usize] = lo;
    }
}

/// A group of faces during average linkage.
#[derive(Default)]
struct Group {
    size: u64,
    /// Sum of its faces' k-th neighbour distances.
    radius_sum: f64,
    /// Changes at each merge: heap entries made before are stale.
    stamp: u32,
    links: Vec<Link>,
}

/// The graph's edges between two groups: their distances' sum and count.
#[derive(Clone, Copy)]
struct Link {
    to: u32,
    sum: f64,
    count: u32,
}

/// Average distance over all pairs of two groups of `(size, radius sum)`: `count` pairs
/// summing to `sum` are known; the others are at least as far as the larger of the groups'
/// mean k-th neighbour distance.
fn average(a: (u64, f64), b: (u64, f64), sum: f64, count: u32) -> f64 {
    let pairs = (a.0 * b.0) as f64;
    let unseen = pairs - f64::from(count);
    if unseen <= 0.0 {
        return sum / pairs;
    }
    let floor = (a.1 / a.0 as f64).max(b.1 / b.0 as f64);
    if !floor.is_finite() {
        // a face with fewer than k neighbours has seen every other face
        return sum / f64::from(count.max(1));
    }
    (sum + unseen * floor) / pairs
}

fn linkage(a: &Group, b: &Group, link: &Link) -> f64 {
    average(
        (a.size, a.radius_sum),
        (b.size, b.radius_sum),
        link.sum,
        link.count,
    )
}

/// The links of a merged group: both lists, with links to the same group added up and
/// those between the two dropped.
fn combine_links(mut keep: Vec<Link>, gone: Vec<Link>, k: u32, g: u32) -> Vec<Link> {
    keep.retain(|l| l.to != g && l.to != k);
    keep.sort_unstable_by_key(|l| l.to);
    for l in gone {
        if l.to == k || l.to == g {
            continue;
        }
        match keep.binary_search_by_key(&l.to, |x| x.to) {
            Ok(i) => {
                keep[i].sum += l.sum;
                keep[i].count += l.count;
            }
            Err(i) => keep.insert(i, l),
        }
    }
    keep
}

/// In a neighbour group's links, replace those to `keep` and `gone` by one to `keep` with
/// the merged figures.
fn repoint(links: &mut Vec<Link>, keep: u32, gone: u32, merged: &Link) {
    links.retain(|l| l.to != keep && l.to != gone);
    links.push(Link {
        to: keep,
        sum: merged.sum,
        count: merged.count,
    });
}

/// A heap entry: two groups and their linkage when it was computed.
struct Candidate {
    linkage: f64,
    a: u32,
    b: u32,
    stamp_a: u32,
    stamp_b: u32,
}

impl Candidate {
    fn new(linkage: f64, a: u32, b: u32, stamp_a: u32, stamp_b: u32) -> Self {
        let (a, b, stamp_a, stamp_b) = if a < b {
            (a, b, stamp_a, stamp_b)
        } else {
            (b, a, stamp_b, stamp_a)
        };
        Self {
            linkage,
            a,
            b,
            stamp_a,
            stamp_b,
        }
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate {
    /// The smallest linkage is the heap's greatest (then the smallest ids).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .linkage
            .total_cmp(&self.linkage)
            .then_with(|| (other.a, other.b).cmp(&(self.a, self.b)))
    }
}

/// SplitMix64: a small, seedable generator (Chinese Whispers' random order).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so no value is favoured.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next();
            if x < zone {
                return x % n;
            }
        }
    }
}

#[cfg(test)]
mod tests;
