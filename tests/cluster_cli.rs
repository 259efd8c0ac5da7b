//! `uniface cluster` and `uniface gallery duplicates` end to end on real LFW photos (linked,
//! not copied, into a temp folder).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{models, ok, shared_data};
use serde_json::Value;

fn uniface() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_uniface"));
    c.env("UNIFACE_MODEL_DIR", &models().dir);
    c
}

/// Link `photos` of LFW (name, number) into `dir/<folder>/`.
fn link(dir: &Path, folder: &str, name: &str, numbers: &[u32]) -> Vec<PathBuf> {
    let lfw = shared_data().join("lfw");
    std::fs::create_dir_all(dir.join(folder)).unwrap();
    numbers
        .iter()
        .map(|n| {
            let f = format!("{name}_{n:04}.jpg");
            let at = dir.join(folder).join(&f);
            std::os::unix::fs::symlink(lfw.join(name).join(&f), &at).unwrap();
            at
        })
        .collect()
}

#[test]
fn cluster_groups_three_people_and_writes_their_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let mut person = HashMap::new();
    // (Adam_Sandler_0004 is left out: 0.46-0.52 from his other photos, it forms a cluster of
    // its own among so few faces)
    for (name, numbers) in [
        ("Alan_Greenspan", &[1, 2, 3, 4, 5][..]),
        ("Adam_Sandler", &[1, 2, 3][..]),
        ("Alastair_Campbell", &[2, 4, 5][..]),
    ] {
        for p in link(&photos, name, name, numbers) {
            person.insert(p, name);
        }
    }
    let out = tmp.path().join("clusters");
    let text = ok(uniface()
        .args(["cluster", "--json", "--out"])
        .arg(&out)
        .arg(&photos));
    // every face of every photo is a line; the face at the centre of each LFW photo is its
    // person's
    let mut cluster_of: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut lines = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        lines += 1;
        let b: Vec<i64> = v["face"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        if b[0] < 125 && b[2] > 125 && b[1] < 125 && b[3] > 125 {
            let image = PathBuf::from(v["image"].as_str().unwrap());
            cluster_of
                .entry(person[&image])
                .or_default()
                .push(v["cluster"].as_u64().unwrap());
        }
    }
    assert!(lines >= 11, "{text}");
    let mut seen = Vec::new();
    for (name, clusters) in &cluster_of {
        assert!(
            clusters.iter().all(|&c| c == clusters[0]),
            "{name}: {clusters:?}"
        );
        assert!(
            !seen.contains(&clusters[0]),
            "{name} shares a cluster: {text}"
        );
        seen.push(clusters[0]);
    }
    assert_eq!(cluster_of.len(), 3);
    // the largest cluster (Greenspan's five) is cluster 0: a folder of links and a sheet
    assert_eq!(cluster_of["Alan_Greenspan"][0], 0);
    let folder = out.join("cluster-00000");
    let links: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(links.len(), 5, "{links:?}");
    for l in &links {
        assert!(std::fs::symlink_metadata(l)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(std::fs::read_link(l)
            .unwrap()
            .to_string_lossy()
            .contains("Alan_Greenspan"));
    }
    let sheet = image::open(out.join("cluster-00000.png")).unwrap();
    assert!(sheet.width() >= 5 * 96 && sheet.height() >= 96);
    // a second run never mixes its folders with the first one's
    let again = uniface()
        .args(["cluster", "--out"])
        .arg(&out)
        .arg(&photos)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn gallery_duplicates_finds_a_person_enrolled_under_two_names() {
    let tmp = tempfile::tempdir().unwrap();
    let people = tmp.path().join("people");
    link(&people, "Alan_Greenspan", "Alan_Greenspan", &[1, 2, 3]);
    link(&people, "Greenspan_again", "Alan_Greenspan", &[4, 5]);
    link(&people, "Adam_Sandler", "Adam_Sandler", &[1, 2, 3, 4]);
    link(
        &people,
        "Alastair_Campbell",
        "Alastair_Campbell",
        &[2, 4, 5],
    );
    let g = tmp.path().join("gallery");
    let gallery = |c: &mut Command| {
        c.arg("gallery").arg("--gallery").arg(&g);
    };
    let mut c = uniface();
    gallery(&mut c);
    ok(c.arg("create"));
    let mut c = uniface();
    gallery(&mut c);
    ok(c.args(["enroll", "--from-dir"]).arg(&people));
    let mut c = uniface();
    gallery(&mut c);
    let text = ok(c.args(["--json", "duplicates", "--fmr", "1e-4"]));
    let pairs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pairs.len(), 1, "{text}");
    assert_eq!(
        pairs[0]["subjects"],
        serde_json::json!(["Alan_Greenspan", "Greenspan_again"])
    );
    assert!(pairs[0]["distance"].as_f64().unwrap() < 0.476, "{text}");
}
