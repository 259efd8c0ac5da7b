//! Bilinear resizing exactly as dlib's `resize_image(in, out, interpolate_bilinear)` computes it:
//! sample positions step by (n_in − 1)/(n_out − 1); the bulk of each row runs four columns at a
//! time in single precision (as dlib's SIMD path does, positions accumulated in `f32`, integer
//! parts truncated) and the last columns in double precision.

/// Visit each output pixel of a row with (left, right, lr_frac) as dlib's SIMD + tail loops do.
/// `lanes(c, left, right, frac)` handles one output column.
fn row_positions(
    in_w: usize,
    out_w: usize,
    x_scale: f64,
    mut visit: impl FnMut(usize, usize, usize, Frac),
) {
    let x0 = -4.0 * x_scale;
    let step = (4.0 * x_scale) as f32;
    let mut lanes = [
        x0 as f32,
        (x0 + x_scale) as f32,
        (x0 + 2.0 * x_scale) as f32,
        (x0 + 3.0 * x_scale) as f32,
    ];
    let mut c = 0usize;
    loop {
        for l in &mut lanes {
            *l += step;
        }
        let left: [i64; 4] = lanes.map(|v| v as i64); // truncation, like cvttps
        if left[3] + 1 >= in_w as i64 || c + 4 > out_w {
            break;
        }
        for k in 0..4 {
            let frac = lanes[k] - left[k] as f32;
            visit(
                c + k,
                left[k] as usize,
                left[k] as usize + 1,
                Frac::Single(frac),
            );
        }
        c += 4;
    }
    let mut x = -x_scale + c as f64 * x_scale;
    while c < out_w {
        x += x_scale;
        let left = x.floor() as i64;
        let left = left.max(0) as usize;
        let right = (left + 1).min(in_w - 1);
        visit(c, left, right, Frac::Double(x - left as f64));
        c += 1;
    }
}

#[derive(Clone, Copy)]
enum Frac {
    Single(f32),
    Double(f64),
}

/// For each output row: (row, top source row, bottom source row, vertical fraction), with
/// positions accumulated in double precision as dlib does.
fn source_rows(
    in_h: usize,
    out_h: usize,
    y_scale: f64,
) -> impl Iterator<Item = (usize, usize, usize, f64)> {
    let mut y = -y_scale;
    (0..out_h).map(move |r| {
        y += y_scale;
        let top = (y.floor().max(0.0)) as usize;
        (r, top, (top + 1).min(in_h - 1), y - top as f64)
    })
}

fn scales(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> (f64, f64) {
    (
        (in_w as f64 - 1.0) / (out_w.max(2) - 1) as f64,
        (in_h as f64 - 1.0) / (out_h.max(2) - 1) as f64,
    )
}

/// Resize one `f32` plane (row strides given) — dlib's float-image path.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resize_plane_f32(
    src: &[f32],
    in_w: usize,
    in_h: usize,
    src_stride: usize,
    dst: &mut [f32],
    out_w: usize,
    out_h: usize,
    dst_stride: usize,
) {
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return;
    }
    let (x_scale, y_scale) = scales(in_w, in_h, out_w, out_h);
    for (r, top, bottom, tb) in source_rows(in_h, out_h, y_scale) {
        let (rt, rb) = (&src[top * src_stride..], &src[bottom * src_stride..]);
        let out = &mut dst[r * dst_stride..r * dst_stride + out_w];
        row_positions(in_w, out_w, x_scale, |c, l, rr, frac| {
            out[c] = match frac {
                Frac::Single(f) => {
                    let (tbf, f) = (tb as f32, f);
                    let (itb, ilr) = (1.0 - tbf, 1.0 - f);
                    itb * ilr * rt[l] + itb * f * rt[rr] + tbf * ilr * rb[l] + tbf * f * rb[rr]
                }
                Frac::Double(f) => {
                    let f = f as f32 as f64; // dlib keeps lr_frac in a float here
                    ((1.0 - tb) * ((1.0 - f) * f64::from(rt[l]) + f * f64::from(rt[rr]))
                        + tb * ((1.0 - f) * f64::from(rb[l]) + f * f64::from(rb[rr])))
                        as f32
                }
            };
        });
    }
}

/// Resize interleaved RGB bytes — dlib's RGB path (results truncated to bytes).
pub(crate) fn resize_rgb(
    src: &[u8],
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    let mut dst = vec![0u8; out_w * out_h * 3];
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return dst;
    }
    let (x_scale, y_scale) = scales(in_w, in_h, out_w, out_h);
    for (r, top, bottom, tb) in source_rows(in_h, out_h, y_scale) {
        let (rt, rb) = (&src[top * in_w * 3..], &src[bottom * in_w * 3..]);
        let out = &mut dst[r * out_w * 3..(r + 1) * out_w * 3];
        row_positions(in_w, out_w, x_scale, |c, l, rr, frac| {
            for k in 0..3 {
                let (tl, tr) = (rt[l * 3 + k], rt[rr * 3 + k]);
                let (bl, br) = (rb[l * 3 + k], rb[rr * 3 + k]);
                out[c * 3 + k] = match frac {
                    Frac::Single(f) => {
                        let tbf = tb as f32;
                        let (itb, ilr) = (1.0 - tbf, 1.0 - f);
                        let v = itb * ilr * f32::from(tl)
                            + itb * f * f32::from(tr)
                            + tbf * ilr * f32::from(bl)
                            + tbf * f * f32::from(br);
                        v as i32 as u8
                    }
                    Frac::Double(f) => {
                        let v = (1.0 - tb) * ((1.0 - f) * f64::from(tl) + f * f64::from(tr))
                            + tb * ((1.0 - f) * f64::from(bl) + f * f64::from(br));
                        v as u8
                    }
                };
            }
        });
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_planes_stay_flat_and_corners_are_kept() {
        let src: Vec<f32> = (0..20 * 10).map(|i| (i % 20) as f32).collect();
        let mut dst = vec![0f32; 15 * 8];
        resize_plane_f32(&src, 20, 10, 20, &mut dst, 15, 8, 15);
        assert!((dst[0] - 0.0).abs() < 1e-6);
        assert!((dst[14] - 19.0).abs() < 1e-4, "{}", dst[14]);
        let rgb = vec![77u8; 9 * 7 * 3];
        assert!(resize_rgb(&rgb, 9, 7, 20, 15)
            .iter()
            .all(|&v| v == 77 || v == 76));
    }
}
