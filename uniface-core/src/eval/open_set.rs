//! Open-set 1:N identification: the search list, rank-1 rate and FNIR at FPIR.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// What a line of an identification list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Enrolled in the gallery.
    Gallery,
    /// A probe of an enrolled identity.
    Mated,
    /// A probe of someone not enrolled.
    Nonmated,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gallery => "gallery",
            Self::Mated => "mated",
            Self::Nonmated => "nonmated",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Gallery, Self::Mated, Self::Nonmated]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// One line of an identification list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub role: Role,
    pub identity: String,
    pub path: PathBuf,
}

/// Parse an identification list: tab-separated with the header `role identity path`; paths
/// are relative to `root`.
pub fn parse_list(text: &str, root: &Path) -> Result<Vec<ListEntry>> {
    let bad = |m: String| Error::InvalidArgument {
        name: "list",
        message: m,
    };
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("role\tidentity\tpath") {
        return Err(bad("the header must be `role<TAB>identity<TAB>path`".into()));
    }
    let mut out = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [role, identity, path] = f.as_slice() else {
            return Err(bad(format!(
                "line {}: expected 3 tab-separated fields",
                i + 2
            )));
        };
        let role = Role::from_name(role)
            .ok_or_else(|| bad(format!("line {}: unknown role {role:?}", i + 2)))?;
        out.push(ListEntry {
            role,
            identity: (*identity).to_owned(),
            path: root.join(path),
        });
    }
    Ok(out)
}

/// [`parse_list`] of a file; errors name the file.
pub fn read_list(list: &Path, root: &Path) -> Result<Vec<ListEntry>> {
    let text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
    parse_list(&text, root).map_err(|e| match e {
        Error::InvalidArgument { name, message } => Error::InvalidArgument {
            name,
            message: format!("{}: {message}", list.display()),
        },
        e => e,
    })
}

/// The outcome of a mated search: whether the rank-1 candidate is the mate, and its distance
/// (`+inf` when the search returned nothing).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MatedSearch {
    pub rank1_hit: bool,
    pub distance: f32,
}

/// FNIR at an FPIR target, and the threshold that gives it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FnirAtFpir {
    pub fpir: f64,
    pub fnir: f64,
    pub threshold: f32,
}

/// A search "alarms" when its best distance is below the threshold. The threshold is the
/// `⌊fpir × N⌋`-th smallest non-mated best distance (0-based), so at most that many non-mated
/// searches alarm; a mated search is missed when it does not alarm or its rank-1 candidate is
/// not the mate.
pub fn fnir_at_fpir(mated: &[MatedSearch], nonmated: &[f32], fpir: f64) -> FnirAtFpir {
    let mut nm = nonmated.to_vec();
    nm.sort_by(f32::total_cmp);
    let allowed = (fpir * nm.len() as f64).floor() as usize;
    let threshold = nm.get(allowed).copied().unwrap_or(f32::INFINITY);
    FnirAtFpir {
        fpir,
        fnir: fnir_at(mated, threshold),
        threshold,
    }
}

/// The share of mated searches missed at `threshold`.
pub fn fnir_at(mated: &[MatedSearch], threshold: f32) -> f64 {
    let misses = mated
        .iter()
        .filter(|m| !m.rank1_hit || m.distance >= threshold)
        .count();
    misses as f64 / mated.len().max(1) as f64
}

/// The share of non-mated searches that alarm at `threshold`.
pub fn fpir_at(nonmated: &[f32], threshold: f32) -> f64 {
    nonmated.iter().filter(|d| **d < threshold).count() as f64 / nonmated.len().max(1) as f64
}

/// The share of mated searches whose rank-1 candidate is the mate.
pub fn rank1_rate(mated: &[MatedSearch]) -> f64 {
    mated.iter().filter(|m| m.rank1_hit).count() as f64 / mated.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rank1_hit: bool, distance: f32) -> MatedSearch {
        MatedSearch {
            rank1_hit,
            distance,
        }
    }

    #[test]
    fn fnir_at_fpir_by_hand() {
        let mated = [m(true, 0.2), m(true, 0.5), m(false, 0.1), m(true, 0.45)];
        // non-mated best distances sorted: 0.3 0.4 0.6 0.8; FPIR 0.25 allows one alarm → the
        // threshold is the second smallest, 0.4 (only 0.3 alarms)
        let nonmated = [0.8, 0.3, 0.6, 0.4];
        let r = fnir_at_fpir(&mated, &nonmated, 0.25);
        assert_eq!(r.threshold, 0.4);
        assert_eq!(fpir_at(&nonmated, r.threshold), 0.25);
        // missed: 0.5 and 0.45 (not below 0.4) and the wrong rank-1 → 3 of 4
        assert_eq!(r.fnir, 0.75);
        assert_eq!(rank1_rate(&mated), 0.75);
        // no alarm allowed: the smallest non-mated distance
        assert_eq!(fnir_at_fpir(&mated, &nonmated, 0.1).threshold, 0.3);
    }

    #[test]
    fn lists_parse_and_refuse() {
        let root = Path::new("/r");
        let ok = "role\tidentity\tpath\ngallery\tA\ta/1.jpg\n\nnonmated\tB\tb/1.jpg\n";
        let l = parse_list(ok, root).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[1].role, Role::Nonmated);
        assert_eq!(l[0].path, root.join("a/1.jpg"));
        assert!(parse_list("role identity path\n", root).is_err());
        assert!(parse_list("role\tidentity\tpath\nprobe\tA\ta.jpg\n", root).is_err());
        assert!(parse_list("role\tidentity\tpath\ngallery\tA\n", root).is_err());
    }
}
