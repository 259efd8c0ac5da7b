//! Bilinear resizing exactly as dlib's `resize_image(in, out, interpolate_bilinear)` computes it:
//! sample positions step by (n_in − 1)/(n_out − 1); the bulk of each row runs four columns at a
//! time in single precision (as dlib's SIMD path does, positions accumulated in `f32`, integer
//! parts truncated) and the last columns in double precision.

use rayon::prelude::*;

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

/// Source rows `[first, last)` that output rows `rows` of a resize from `in_h` to `out_h` rows
/// read.
pub(crate) fn source_span(
    in_h: usize,
    out_h: usize,
    rows: std::ops::Range<usize>,
) -> (usize, usize) {
    let (_, y_scale) = scales(2, in_h, 2, out_h);
    let mut span = (usize::MAX, 0);
    for (_, top, bottom, _) in source_rows(in_h, out_h, y_scale)
        .skip(rows.start)
        .take(rows.len())
    {
        span = (span.0.min(top), span.1.max(bottom + 1));
    }
    if span.0 > span.1 {
        (0, 0)
    } else {
        span
    }
}

/// Rows `rows` of one resized `f32` plane — dlib's float-image path — from the source rows
/// `first..` held in `src` (contiguous, `in_w` values a row; at least the rows
/// [`source_span`] names). Values are those of resizing the whole plane: row positions are
/// accumulated from row 0 as dlib accumulates them. `dst` receives `rows.len()` rows of
/// `out_w` values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resize_plane_rows_f32(
    src: &[f32],
    first: usize,
    in_w: usize,
    in_h: usize,
    dst: &mut [f32],
    out_w: usize,
    out_h: usize,
    rows: std::ops::Range<usize>,
) {
    if in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return;
    }
    let (x_scale, y_scale) = scales(in_w, in_h, out_w, out_h);
    // Row positions in order (they accumulate), then the rows on every core. The workers
    // only write into `dst`: nothing is allocated on their threads, where glibc would keep
    // the memory in per-thread arenas and the process would grow.
    let positions: Vec<(usize, usize, f64)> = source_rows(in_h, out_h, y_scale)
        .skip(rows.start)
        .take(rows.len())
        .map(|(_, top, bottom, tb)| (top, bottom, tb))
        .collect();
    let row = |(out, &(top, bottom, tb)): (&mut [f32], &(usize, usize, f64))| {
        let (rt, rb) = (
            &src[(top - first) * in_w..],
            &src[(bottom - first) * in_w..],
        );
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
    };
    let out = &mut dst[..positions.len() * out_w];
    if out.len() >= PAR_VALUES {
        out.par_chunks_mut(out_w).zip(&positions).for_each(row);
    } else {
        out.chunks_mut(out_w).zip(&positions).for_each(row);
    }
}

/// Output values above which a resize runs its rows in parallel.
const PAR_VALUES: usize = 1 << 16;

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

/// Shrink interleaved RGB bytes by area averaging (each output pixel is the mean of the input
/// area it covers, partial pixels weighted), one output row at a time: memory is the output
/// plus one row of sums, whatever the input's size. `out_w ≤ in_w` and `out_h ≤ in_h`.
pub(crate) fn shrink_rgb(
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
    // (first input index, weight) spans of each output index along one axis
    let spans = |n_in: usize, n_out: usize| -> Vec<Vec<(usize, f32)>> {
        let step = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|o| {
                let (a, b) = (o as f64 * step, ((o + 1) as f64 * step).min(n_in as f64));
                let mut v = Vec::new();
                let mut i = a.floor() as usize;
                while (i as f64) < b && i < n_in {
                    let w = (b.min(i as f64 + 1.0) - a.max(i as f64)) / step;
                    if w > 0.0 {
                        v.push((i, w as f32));
                    }
                    i += 1;
                }
                v
            })
            .collect()
    };
    let (xs, ys) = (spans(in_w, out_w), spans(in_h, out_h));
    let mut row = vec![0f32; out_w * 3];
    let mut acc = vec![0f32; out_w * 3];
    for (oy, ylist) in ys.iter().enumerate() {
        acc.iter_mut().for_each(|v| *v = 0.0);
        for &(iy, wy) in ylist {
            let line = &src[iy * in_w * 3..(iy + 1) * in_w * 3];
            for (ox, xlist) in xs.iter().enumerate() {
                let mut px = [0f32; 3];
                for &(ix, wx) in xlist {
                    for (k, p) in px.iter_mut().enumerate() {
                        *p += wx * f32::from(line[ix * 3 + k]);
                    }
                }
                row[ox * 3..ox * 3 + 3].copy_from_slice(&px);
            }
            for (a, r) in acc.iter_mut().zip(&row) {
                *a += wy * r;
            }
        }
        for (d, a) in dst[oy * out_w * 3..(oy + 1) * out_w * 3]
            .iter_mut()
            .zip(&acc)
        {
            *d = a.round().clamp(0.0, 255.0) as u8;
        }
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
        resize_plane_rows_f32(&src, 0, 20, 10, &mut dst, 15, 8, 0..8);
        assert!((dst[0] - 0.0).abs() < 1e-6);
        assert!((dst[14] - 19.0).abs() < 1e-4, "{}", dst[14]);
        let rgb = vec![77u8; 9 * 7 * 3];
        assert!(resize_rgb(&rgb, 9, 7, 20, 15)
            .iter()
            .all(|&v| v == 77 || v == 76));
    }

    #[test]
    fn rows_from_a_window_equal_the_whole_resize() {
        let (iw, ih, ow, oh) = (37, 91, 31, 76);
        let src: Vec<f32> = (0..iw * ih)
            .map(|i| ((i * 7919) % 255) as f32 / 3.0)
            .collect();
        let mut whole = vec![0f32; ow * oh];
        resize_plane_rows_f32(&src, 0, iw, ih, &mut whole, ow, oh, 0..oh);
        for (a, b) in [(0, 1), (5, 17), (40, 76), (75, 76)] {
            let (c, d) = source_span(ih, oh, a..b);
            let mut part = vec![0f32; (b - a) * ow];
            resize_plane_rows_f32(&src[c * iw..d * iw], c, iw, ih, &mut part, ow, oh, a..b);
            assert_eq!(part, whole[a * ow..b * ow], "rows {a}..{b}");
        }
    }

    #[test]
    fn shrinking_averages_areas() {
        // 4x2 → 2x1: each output pixel is the mean of a 2x2 block
        let src: Vec<u8> = [0u8, 10, 20, 30, 40, 50, 60, 70]
            .iter()
            .flat_map(|&v| [v, v, 255 - v])
            .collect();
        let out = shrink_rgb(&src, 4, 2, 2, 1);
        assert_eq!(out, vec![25, 25, 230, 45, 45, 210]);
        // a non-integer ratio keeps a flat image flat
        let flat = vec![200u8; 7 * 5 * 3];
        assert!(shrink_rgb(&flat, 7, 5, 3, 2).iter().all(|&v| v == 200));
    }
}
