//! `uniface quality`: the enrollment/verification gate (quality measures, reason codes and
//! liveness) on each photo.

use std::path::PathBuf;

use clap::ValueEnum;
use serde_json::json;
use uniface::core::liveness::LivenessDetector;
use uniface::core::quality::Policy;

#[derive(Clone, Copy, ValueEnum)]
pub enum PolicyArg {
    Enrollment,
    Verification,
}

pub fn run(
    images: &[PathBuf],
    json_out: bool,
    policy: PolicyArg,
    no_liveness: bool,
    select: uniface::FaceSelection,
) -> uniface::Result<()> {
    let mut policy = match policy {
        PolicyArg::Enrollment => Policy::enrollment(),
        PolicyArg::Verification => Policy::verification(),
    };
    let analyzer = crate::analyzer()?.with_selection(select);
    let liveness = if no_liveness {
        policy.require_live = false;
        None
    } else {
        Some(LivenessDetector::from_store(&crate::store()?)?)
    };
    let mut failed = 0;
    for path in images {
        let result = uniface::core::image::load_rgb(path)
            .and_then(|img| analyzer.assess(&img, &policy, liveness.as_ref()));
        match result {
            Ok(a) if json_out => {
                let mut v = serde_json::to_value(&a).unwrap_or_default();
                v["image"] = json!(path);
                println!("{v}");
            }
            Ok(a) => {
                let reasons: Vec<&str> = a.reasons.iter().map(|r| r.name()).collect();
                println!(
                    "{}: {} ({} face(s)){}",
                    path.display(),
                    if a.accepted { "ACCEPTED" } else { "REFUSED" },
                    a.faces_found,
                    if reasons.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", reasons.join(", "))
                    }
                );
                if let Some(q) = &a.quality {
                    println!(
                        "  eyes {:.0} px, inside {:.2}, yaw {:+.0}° pitch {:+.0}° roll {:+.0}°, sharpness {:.0}, luminance {:.2}±{:.2}, under {:.2} over {:.2}, range {:.2}{}",
                        q.inter_eye_distance.raw, q.face_inside.raw, q.yaw.raw, q.pitch.raw,
                        q.roll.raw, q.sharpness.raw, q.luminance_mean.raw, q.luminance_std.raw,
                        q.under_exposure.raw, q.over_exposure.raw, q.dynamic_range.raw,
                        q.unified.map(|u| format!(", unified {:.3} ({:.0}/100)", u.raw, u.scalar)).unwrap_or_default()
                    );
                }
                if let Some(l) = &a.liveness {
                    println!(
                        "  liveness {:.3} ({})",
                        l.score,
                        if l.is_live { "live" } else { "attack" }
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e}", path.display());
            }
        }
    }
    crate::failures(failed, images.len(), "assessed")
}
