use super::*;

/// `people` identities of `per` faces each: unit-norm centres in `dim` dimensions, faces
/// within `spread` of their centre (a small LCG, so the test needs no dependency).
fn synthetic(
    people: usize,
    per: usize,
    dim: usize,
    spread: f32,
    seed: u64,
) -> (Vec<f32>, Vec<u32>) {
    let mut rng = SplitMix64(seed);
    let mut uniform = || (rng.next() >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
    let mut faces = Vec::new();
    let mut truth = Vec::new();
    for p in 0..people {
        let mut centre: Vec<f32> = (0..dim).map(|_| uniform()).collect();
        let norm = centre.iter().map(|v| v * v).sum::<f32>().sqrt();
        centre.iter_mut().for_each(|v| *v /= norm);
        for _ in 0..per {
            let noise: Vec<f32> = (0..dim).map(|_| uniform()).collect();
            let nn = noise.iter().map(|v| v * v).sum::<f32>().sqrt();
            faces.extend(centre.iter().zip(&noise).map(|(c, e)| c + e / nn * spread));
            truth.push(p as u32);
        }
    }
    (faces, truth)
}

fn options(method: Method, threshold: f32) -> ClusterOptions {
    ClusterOptions {
        method,
        threshold: Threshold::Distance(threshold),
        neighbours: 8,
        ..Default::default()
    }
}

#[test]
fn every_method_recovers_well_separated_identities() {
    // faces 0.25 from their centre (pairs at most 0.5 apart); centres about 1.4 apart
    let (faces, truth) = synthetic(30, 5, 64, 0.25, 1);
    for method in Method::ALL {
        let labels = cluster(&faces, 64, options(method, 0.7)).unwrap();
        let s = bcubed(&truth, &labels);
        assert_eq!((s.precision, s.recall), (1.0, 1.0), "{}", method.name());
    }
}

#[test]
fn average_linkage_does_not_follow_a_chain_that_single_linkage_and_whispers_follow() {
    // two groups of 6 bridged by a chain of faces 0.4 apart; a threshold of 0.5 lets
    // single linkage walk the chain, while the groups' average distance is far above it
    let dim = 2;
    let mut faces = Vec::new();
    for i in 0..6 {
        faces.extend([0.0, i as f32 * 0.01]);
    }
    for step in 1..=4 {
        faces.extend([step as f32 * 0.4, 0.0]);
    }
    for i in 0..6 {
        faces.extend([2.0, i as f32 * 0.01]);
    }
    let single = cluster(&faces, dim, options(Method::Components, 0.5)).unwrap();
    assert!(single.iter().all(|&l| l == 0), "{single:?}");
    let average = cluster(&faces, dim, options(Method::AverageLinkage, 0.5)).unwrap();
    assert_ne!(average[0], average[faces.len() / dim - 1], "{average:?}");
    assert!(average[..6].iter().all(|&l| l == average[0]));
    assert!(average[10..].iter().all(|&l| l == average[10]));
}

#[test]
fn chinese_whispers_is_deterministic_for_a_seed_and_varies_with_it() {
    let (faces, _) = synthetic(40, 4, 8, 0.45, 2);
    let run = |seed| {
        let opts = ClusterOptions {
            seed,
            ..options(Method::ChineseWhispers, 0.9)
        };
        cluster(&faces, 8, opts).unwrap()
    };
    assert_eq!(run(7), run(7));
    // overlapping identities: the random order matters somewhere
    assert!((0..8).any(|s| run(s) != run(7)));
}

#[test]
fn chinese_whispers_ties_go_to_the_smallest_label_as_in_dlib() {
    // two faces within the threshold: each counts itself and the other once; a tie, so the
    // first pick takes label 0 (dlib's std::map order) and both end in cluster 0
    let faces = [0.0, 0.0, 0.1, 0.0];
    let labels = cluster(&faces, 2, options(Method::ChineseWhispers, 0.5)).unwrap();
    assert_eq!(labels, vec![0, 0]);
}

#[test]
fn the_graph_search_finds_the_exact_scans_neighbours() {
    // above EXACT_LIMIT the graph is HNSW; its neighbour lists must be those of a scan
    let (faces, truth) = synthetic(EXACT_LIMIT / 4 + 50, 4, 32, 0.35, 3);
    let n = truth.len();
    assert!(n > EXACT_LIMIT);
    let c = Clusterer::fit(&faces, 32, options(Method::AverageLinkage, 0.8), &|_| {}).unwrap();
    let mut matrix = TemplateMatrix::new(32, ElementType::F32);
    for row in faces.chunks_exact(32) {
        matrix.push(row).unwrap();
    }
    let mut buf = vec![0f32; n];
    let (mut found, mut wanted) = (0usize, 0usize);
    for i in (0..n).step_by(97) {
        let exact = c.exact_neighbours(&matrix, i, 8, &mut buf).unwrap();
        let got = c.neighbours(i);
        wanted += exact.len();
        found += exact
            .iter()
            .filter(|e| got.iter().any(|g| g.0 == e.0))
            .count();
    }
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.99, "graph recall {recall}");
    let s = bcubed(&truth, c.labels());
    assert!(s.f > 0.999, "{s:?}");
}

#[test]
fn added_faces_join_their_clusters_and_report_merges() {
    let (faces, truth) = synthetic(20, 6, 64, 0.25, 4);
    let dim = 64;
    // the first 4 faces of each identity in one batch, the other 2 added
    let mut first = Vec::new();
    let mut later = Vec::new();
    let mut later_truth = Vec::new();
    for (i, row) in faces.chunks_exact(dim).enumerate() {
        if i % 6 < 4 {
            first.extend_from_slice(row);
        } else {
            later.extend_from_slice(row);
            later_truth.push(truth[i]);
        }
    }
    for method in Method::ALL {
        let mut c = Clusterer::fit(&first, dim, options(method, 0.7), &|_| {}).unwrap();
        assert_eq!(c.clusters(), 20);
        let added = c.add(&later, &|_| {}).unwrap();
        assert_eq!(added.new_clusters, 0, "{}", method.name());
        assert!(added.merges.is_empty());
        assert_eq!(c.clusters(), 20);
        // each added face is in the cluster of its identity's first face
        for (j, &l) in added.labels.iter().enumerate() {
            let identity = later_truth[j] as usize;
            assert_eq!(l, c.labels()[identity * 4], "{}", method.name());
        }
    }
    // a face between two clusters joins them when they come within the threshold
    let two = [0.0f32, 0.0, 0.0, 0.1, 0.0, 0.8, 0.0, 0.9];
    let mut c = Clusterer::fit(&two, 2, options(Method::Components, 0.5), &|_| {}).unwrap();
    assert_eq!(c.clusters(), 2);
    let added = c.add(&[0.0, 0.45], &|_| {}).unwrap();
    assert_eq!(added.merges.len(), 1);
    assert_eq!(c.clusters(), 1);
    assert_eq!(added.labels, vec![added.merges[0].into]);
}

#[test]
fn bad_input_is_a_typed_error() {
    let bad = |faces: &[f32], dim, opts| Clusterer::fit(faces, dim, opts, &|_| {}).err();
    let d = ClusterOptions::default();
    assert!(matches!(
        bad(&[0.0; 5], 2, d.clone()),
        Some(Error::Invalid { .. })
    ));
    assert!(matches!(
        bad(&[f32::NAN, 0.0], 2, d.clone()),
        Some(Error::Invalid { .. })
    ));
    assert!(matches!(
        bad(&[0.0; 4], 0, d.clone()),
        Some(Error::Invalid { .. })
    ));
    let k0 = ClusterOptions {
        neighbours: 0,
        ..d.clone()
    };
    assert!(matches!(bad(&[0.0; 4], 2, k0), Some(Error::Invalid { .. })));
    let t = ClusterOptions {
        threshold: Threshold::Distance(-1.0),
        ..d.clone()
    };
    assert!(matches!(bad(&[0.0; 4], 2, t), Some(Error::Invalid { .. })));
    let fmr = ClusterOptions {
        threshold: Threshold::Fmr(2.0),
        ..d
    };
    assert!(bad(&[0.0; 4], 2, fmr).is_some());
    // nothing to cluster is an empty answer
    assert_eq!(
        cluster(&[], 4, ClusterOptions::default()).unwrap(),
        Vec::<u32>::new()
    );
}

#[test]
fn a_threshold_from_the_calibration_is_the_tables_distance() {
    let t = Threshold::Fmr(1e-3).distance(None).unwrap();
    assert_eq!(
        t,
        uniface_core::calibration::threshold_for_fmr(1e-3).unwrap()
    );
}

#[test]
fn clusterers_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Clusterer>();
}

#[test]
fn method_names_round_trip() {
    for m in Method::ALL {
        assert_eq!(Method::from_name(m.name()), Some(m));
    }
    assert_eq!(
        Method::from_name("average-linkage"),
        Some(Method::AverageLinkage)
    );
    assert_eq!(Method::from_name("kmeans"), None);
}
