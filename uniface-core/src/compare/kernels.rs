//! The inner loops of comparison, written so that the compiler vectorises them: fixed-width
//! lanes of independent accumulators and no data-dependent branches. Callers run them inside
//! [`pulp::Arch::dispatch`], which compiles the inlined loops for the widest instruction set
//! the CPU offers (AVX2 + FMA on current x86) and falls back to the baseline otherwise.
//!
//! The order of every floating-point operation is fixed by the lane layout, not by the
//! instruction set, so all dispatch paths return bit-identical results.

const LANES: usize = 16;

/// Σ (a − b)² over two equal-length slices.
#[inline(always)]
pub fn squared_difference(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        let d = x - y;
        acc[i] += d * d;
    }
    reduce(acc)
}

/// Σ a·b over two equal-length slices.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    reduce(acc)
}

#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    // pairwise, in a fixed order
    let mut v = acc;
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            v[i] += v[i + w];
        }
    }
    v[0]
}

/// Σ a·b over two i8 slices, exact in i32 (|a·b| ≤ 127² per term; exact up to 2¹⁷ terms).
#[inline(always)]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += i32::from(*x) * i32::from(*y);
    }
    acc.iter().sum()
}

/// IEEE half → single precision without branches (exact for every input, NaN payloads kept).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let magnitude = h & 0x7fff;
    // Shift exponent and mantissa into place, then rebias by multiplying with 2^112; this also
    // normalises subnormal halves. Infinity and NaN (exponent all ones) are patched after.
    let scaled = f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000);
    let special = if magnitude >= 0x7c00 {
        0x7f80_0000 | ((magnitude & 0x03ff) << 13)
    } else {
        scaled.to_bits()
    };
    f32::from_bits(sign | special)
}

/// Widen a block of halves into `out` (same length).
#[inline(always)]
pub fn widen_f16(src: &[u16], out: &mut [f32]) {
    for (o, &h) in out.iter_mut().zip(src) {
        *o = f16_to_f32(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversion_matches_the_half_crate_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn kernels_agree_with_plain_sums() {
        let a: Vec<f32> = (0..133)
            .map(|i| ((i * 7) % 11) as f32 / 8.0 - 0.6)
            .collect();
        let b: Vec<f32> = (0..133)
            .map(|i| ((i * 5) % 13) as f32 / 9.0 - 0.7)
            .collect();
        let plain_sq: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum();
        let plain_dot: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
        assert!((f64::from(squared_difference(&a, &b)) - plain_sq).abs() < 1e-4);
        assert!((f64::from(dot(&a, &b)) - plain_dot).abs() < 1e-4);
        let qa: Vec<i8> = (0..133).map(|i| (i * 37 % 255 - 127) as i8).collect();
        let qb: Vec<i8> = (0..133).map(|i| (i * 91 % 255 - 127) as i8).collect();
        let exact: i32 = qa
            .iter()
            .zip(&qb)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
        assert_eq!(dot_i8(&qa, &qb), exact);
        let extreme = vec![-127i8; 128];
        assert_eq!(dot_i8(&extreme, &extreme), 127 * 127 * 128);
    }
}
