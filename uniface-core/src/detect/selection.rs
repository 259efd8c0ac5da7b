//! Which face of a photo a one-face operation (assess, verify, enroll, calibrate) uses.

use serde::{Deserialize, Serialize};

use super::FaceBox;

/// The rule that picks one face among those detected in a photo. Every one-face operation
/// takes one (the CLI's `--select`, Python's `selection=`, C's `uf_selection`), and a
/// calibration table records the rule its photos were described with: distances from one rule
/// are calibrated only for that rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaceSelection {
    /// The largest box (by area); among equal areas, the later detection. The default.
    #[default]
    Largest,
    /// The box whose centre is nearest the image centre; among equal distances, the earlier
    /// detection (what portrait sets such as LFW are cropped around).
    NearestCentre,
    /// The most confident detection; among equal scores, the earlier one.
    HighestScore,
}

impl FaceSelection {
    /// Every rule, in declaration order.
    pub const ALL: [Self; 3] = [Self::Largest, Self::NearestCentre, Self::HighestScore];

    /// The stable name: `largest`, `nearest_centre`, `highest_score`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Largest => "largest",
            Self::NearestCentre => "nearest_centre",
            Self::HighestScore => "highest_score",
        }
    }

    /// The rule of a [`FaceSelection::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Index of the chosen face in `faces` (detected in a `width`×`height` image); `None` when
    /// `faces` is empty.
    pub fn pick(self, faces: &[FaceBox], width: u32, height: u32) -> Option<usize> {
        let indexed = faces.iter().enumerate();
        match self {
            Self::Largest => indexed.max_by_key(|(_, f)| f.rect().area()).map(|(i, _)| i),
            Self::HighestScore => indexed
                .rev()
                .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
                .map(|(i, _)| i),
            Self::NearestCentre => {
                let (cx, cy) = (f64::from(width) / 2.0, f64::from(height) / 2.0);
                let d = |f: &FaceBox| {
                    let x = (f.left + f.right) as f64 / 2.0;
                    let y = (f.top + f.bottom) as f64 / 2.0;
                    (x - cx).powi(2) + (y - cy).powi(2)
                };
                indexed
                    .min_by(|a, b| d(a.1).total_cmp(&d(b.1)))
                    .map(|(i, _)| i)
            }
        }
    }
}

impl std::fmt::Display for FaceSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for FaceSelection {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        Self::from_name(s).ok_or_else(|| crate::Error::InvalidArgument {
            name: "selection",
            message: format!("{s:?} is not one of largest, nearest_centre, highest_score"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(left: i64, top: i64, side: i64, score: f32) -> FaceBox {
        FaceBox {
            left,
            top,
            right: left + side,
            bottom: top + side,
            score,
        }
    }

    #[test]
    fn each_rule_picks_its_face() {
        // 200x100 image, centre (100, 50)
        let faces = [b(0, 0, 60, 0.5), b(80, 30, 40, 0.9), b(150, 50, 50, 0.2)];
        assert_eq!(FaceSelection::Largest.pick(&faces, 200, 100), Some(0));
        assert_eq!(FaceSelection::NearestCentre.pick(&faces, 200, 100), Some(1));
        assert_eq!(FaceSelection::HighestScore.pick(&faces, 200, 100), Some(1));
        for s in FaceSelection::ALL {
            assert_eq!(s.pick(&[], 200, 100), None);
            assert_eq!(FaceSelection::from_name(s.name()), Some(s));
            assert_eq!(s.to_string().parse::<FaceSelection>().unwrap(), s);
        }
        assert!("centre".parse::<FaceSelection>().is_err());
    }

    #[test]
    fn ties_break_the_documented_way() {
        let faces = [b(0, 0, 10, 0.5), b(50, 0, 10, 0.5)];
        assert_eq!(FaceSelection::Largest.pick(&faces, 60, 10), Some(1));
        assert_eq!(FaceSelection::HighestScore.pick(&faces, 60, 10), Some(0));
        // both centres 25 px from (30, 5)
        assert_eq!(FaceSelection::NearestCentre.pick(&faces, 60, 10), Some(0));
    }

    #[test]
    fn names_serialise_as_snake_case() {
        let j = serde_json::to_string(&FaceSelection::NearestCentre).unwrap();
        assert_eq!(j, "\"nearest_centre\"");
    }
}
