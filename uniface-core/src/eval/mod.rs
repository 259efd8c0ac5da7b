//! Evaluation: every figure of `docs/ACCURACY.md` and `docs/QUALITY.md` as library calls, so a
//! Rust, Python or C host measures its own data the way we measure ours.
//!
//! The metrics are pure functions over distances, labels and scores, each tested on small
//! inputs worked by hand:
//! * [`pairs`]: pair protocols — the LFW `pairs.txt` list, k-fold threshold selection, ROC,
//!   TAR at FAR, EER;
//! * [`det`]: the DET over every pair of a labelled set;
//! * [`edc`]: error-versus-discard (ISO/IEC 29794-1) and its partial area;
//! * [`open_set`]: open-set identification — rank-1, FNIR at FPIR;
//! * [`held_out`]: the held-out check of a calibration, with an identity-level bootstrap.
//!
//! The runs put them together over photo folders (what `uniface eval …` and `uniface
//! calibrate` print): [`corpus`] (one descriptor per photo, a descriptor cache, calibrating a
//! folder), [`lfw`] (the View 2 protocol), [`quality`] (EDC on LFW), [`held_out::held_out_lfw`];
//! [`plot`] draws their charts.
//!
//! ```
//! use uniface_core::eval::pairs::{k_fold, ScoredPair};
//! let scored: Vec<ScoredPair> = [(0.3, true, 0), (0.8, false, 0), (0.4, true, 1), (0.7, false, 1)]
//!     .into_iter()
//!     .map(|(distance, same, fold)| ScoredPair { distance, same, fold })
//!     .collect();
//! let k = k_fold(&scored);
//! assert_eq!(k.accuracy_mean, 1.0);
//! ```

pub mod corpus;
pub mod det;
pub mod edc;
pub mod held_out;
pub mod lfw;
pub mod open_set;
pub mod pairs;
pub mod plot;
pub mod quality;
