//! The inner loops of comparison, written so that the compiler vectorises them: fixed-width
//! lanes of independent accumulators and no data-dependent branches. Callers run them inside
//! [`pulp::Arch::dispatch`], which compiles the inlined loops for the widest instruction set
//! the CPU offers (AVX2 + FMA on current x86) and falls back to the baseline otherwise.
//!
//! The order of every floating-point operation is fixed by the lane layout, not by the
//! instruction set, so all dispatch paths return bit-identical results. (f16 values are
//! widened exactly in registers.)

/// Independent accumulators per kernel: enough to hide add latency on 256-bit units.
const LANES: usize = 16;

/// Runs `step` over full `LANES`-wide chunks of `a` and `b` (each `b` value widened to f32 by
/// `load`), then once over the zero-padded remainder (padding adds exact zeros, so the result
/// equals a sum over the real values only). Keeping the accumulators in fixed-index arrays
/// lets them live in vector registers.
#[inline(always)]
fn fold_lanes<T: Copy + Default>(
    a: &[f32],
    b: &[T],
    load: impl Fn(T) -> f32,
    step: impl Fn(&mut [f32; LANES], &[f32; LANES], &[f32; LANES]),
) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        if let (Ok(x), Ok(y)) = (<&[f32; LANES]>::try_from(x), <&[T; LANES]>::try_from(y)) {
            let y: [f32; LANES] = std::array::from_fn(|i| load(y[i]));
            step(&mut acc, x, &y);
        }
    }
    if !ra.is_empty() {
        let (mut x, mut y) = ([0f32; LANES], [0f32; LANES]);
        x[..ra.len()].copy_from_slice(ra);
        for (o, &v) in y.iter_mut().zip(rb) {
            *o = load(v);
        }
        step(&mut acc, &x, &y);
    }
    reduce(acc)
}

#[inline(always)]
fn sq_step(acc: &mut [f32; LANES], x: &[f32; LANES], y: &[f32; LANES]) {
    for i in 0..LANES {
        let d = x[i] - y[i];
        acc[i] += d * d;
    }
}

#[inline(always)]
fn dot_step(acc: &mut [f32; LANES], x: &[f32; LANES], y: &[f32; LANES]) {
    for i in 0..LANES {
        acc[i] += x[i] * y[i];
    }
}

/// Σ (a − b)² over two equal-length slices.
#[inline(always)]
pub fn squared_difference(a: &[f32], b: &[f32]) -> f32 {
    fold_lanes(a, b, |v| v, sq_step)
}

/// Σ a·b over two equal-length slices.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    fold_lanes(a, b, |v| v, dot_step)
}

/// Σ (p − widen(q))² of an f32 probe and a row of finite halves, widened in registers;
/// equals [`squared_difference`] against the widened row.
#[inline(always)]
pub fn squared_difference_f16(p: &[f32], q: &[half::f16]) -> f32 {
    fold_lanes(p, q, |h| f16_to_f32(h.to_bits()), sq_step)
}

/// Σ p·widen(q); equals [`dot`] against the widened row.
#[inline(always)]
pub fn dot_f16(p: &[f32], q: &[half::f16]) -> f32 {
    fold_lanes(p, q, |h| f16_to_f32(h.to_bits()), dot_step)
}

#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    // Pairwise in a fixed order; constant bounds so that it unrolls into registers.
    let mut v = acc;
    for i in 0..8 {
        v[i] += v[i + 8];
    }
    for i in 0..4 {
        v[i] += v[i + 4];
    }
    for i in 0..2 {
        v[i] += v[i + 2];
    }
    v[0] + v[1]
}

/// Σ p·q of an i16 probe (i8 values widened once per query) and an i8 row, exact in i32
/// (|p·q| ≤ 127² per term; exact for rows up to 2¹⁷ values).
#[inline(always)]
pub fn dot_i8(p: &[i16], q: &[i8]) -> i32 {
    // A plain integer reduction: the compiler may reorder it freely and maps it onto
    // multiply-add instructions (pmaddwd). (Measured faster than hand-shaped lane arrays and
    // than scoring two rows per pass.)
    p.iter()
        .zip(q)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// IEEE half (bit pattern) → single precision for **finite** halves (every finite value,
/// subnormals included, converts exactly; matrices never store infinity or NaN).
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    // Sign-extend and shift: the mantissa and exponent land in f32 position and the sign in
    // bit 31; the mask clears the sign copies left in the top exponent bits. Multiplying by
    // 2^112 then rebiases the exponent (15 → 127), which also normalises subnormal halves.
    let bits = ((i32::from(h as i16) << 13) as u32) & 0x8fff_ffff;
    f32::from_bits(bits) * f32::from_bits(0x7780_0000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_widening_is_exact_for_every_finite_value() {
        let mut finite = 0;
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            if want.is_finite() {
                assert_eq!(f16_to_f32(bits).to_bits(), want.to_bits(), "{bits:#06x}");
                finite += 1;
            }
        }
        assert_eq!(finite, 65536 - 2 * 1024);
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
        let h: Vec<half::f16> = b.iter().map(|&x| half::f16::from_f32(x)).collect();
        let w: Vec<f32> = h.iter().map(|x| x.to_f32()).collect();
        assert_eq!(squared_difference_f16(&a, &h), squared_difference(&a, &w));
        assert_eq!(dot_f16(&a, &h), dot(&a, &w));
        let qa: Vec<i8> = (0..133).map(|i| (i * 37 % 255 - 127) as i8).collect();
        let qb: Vec<i8> = (0..133).map(|i| (i * 91 % 255 - 127) as i8).collect();
        let exact: i32 = qa
            .iter()
            .zip(&qb)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
        let wide: Vec<i16> = qa.iter().map(|&x| i16::from(x)).collect();
        assert_eq!(dot_i8(&wide, &qb), exact);
        let extreme = vec![-127i8; 128];
        assert_eq!(dot_i8(&[-127i16; 128], &extreme), 127 * 127 * 128);
    }
}
