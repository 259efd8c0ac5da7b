//! Primitive decoding of dlib's binary serialization (`dlib/serialize.h`).
//!
//! * integers: a control byte (low nibble = byte count 1..=8, bit 7 = negative) followed by the
//!   magnitude in little-endian order;
//! * `float`/`double`: an integer mantissa then an integer exponent, value = mantissa · 2^exponent
//!   (exponents 32000/32001/32002 encode +inf/−inf/NaN);
//! * `bool`: the ASCII byte `'1'` or `'0'`; strings and vectors: an unsigned length then the items;
//! * `resizable_tensor`: version 2, four `long long` dimensions, then raw little-endian `f32`s;
//! * `alias_tensor`: version 1 and four dimensions (a view into the owning layer's parameters).

/// A decoding failure at a byte offset; the caller attaches the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub message: String,
}

pub type DecodeResult<T> = std::result::Result<T, DecodeError>;

/// A cursor over the bytes of a dlib-serialized object.
pub struct DatReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A dense float tensor in dlib's (num_samples, k, nr, nc) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor4 {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

impl Tensor4 {
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Largest tensor we accept (elements); bigger than any shipped model by far, small enough that
/// a corrupt dimension cannot make us allocate the machine away.
const MAX_TENSOR_ELEMS: usize = 1 << 28;

impl<'a> DatReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn error<T>(&self, message: impl Into<String>) -> DecodeResult<T> {
        Err(DecodeError {
            offset: self.pos,
            message: message.into(),
        })
    }

    fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if self.remaining() < n {
            return self.error(format!(
                "unexpected end of data: need {n} bytes, {} left",
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn byte(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }

    /// A signed integer of at most `max_bytes` magnitude bytes.
    fn integer(&mut self, max_bytes: usize, signed: bool) -> DecodeResult<i128> {
        let start = self.pos;
        let ctrl = self.byte()?;
        let n = usize::from(ctrl & 0x0F);
        let negative = ctrl & 0x80 != 0;
        if n == 0 || n > max_bytes || ctrl & 0x70 != 0 {
            self.pos = start;
            return self.error(format!("bad integer control byte 0x{ctrl:02x}"));
        }
        if negative && !signed {
            self.pos = start;
            return self.error("negative value for an unsigned integer");
        }
        let mut v: u64 = 0;
        for (i, b) in self.take(n)?.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        let v = i128::from(v);
        Ok(if negative { -v } else { v })
    }

    /// dlib `int` (4 bytes).
    pub fn int(&mut self) -> DecodeResult<i32> {
        let start = self.pos;
        let v = self.integer(4, true)?;
        i32::try_from(v).or_else(|_| {
            self.pos = start;
            self.error(format!("integer {v} out of range for int"))
        })
    }

    /// dlib `long` / `long long` (8 bytes).
    pub fn long(&mut self) -> DecodeResult<i64> {
        let start = self.pos;
        let v = self.integer(8, true)?;
        i64::try_from(v).or_else(|_| {
            self.pos = start;
            self.error(format!("integer {v} out of range for long"))
        })
    }

    /// dlib `unsigned long` (8 bytes).
    pub fn ulong(&mut self) -> DecodeResult<u64> {
        let v = self.integer(8, false)?;
        // `integer` never yields more than 8 magnitude bytes, so this fits.
        Ok(v as u64)
    }

    /// An unsigned count used as a length or dimension, bounded by `limit`.
    pub fn count(&mut self, limit: usize) -> DecodeResult<usize> {
        let start = self.pos;
        let v = self.ulong()?;
        match usize::try_from(v) {
            Ok(n) if n <= limit => Ok(n),
            _ => {
                self.pos = start;
                self.error(format!("count {v} exceeds the limit {limit}"))
            }
        }
    }

    pub fn bool(&mut self) -> DecodeResult<bool> {
        match self.byte()? {
            b'1' => Ok(true),
            b'0' => Ok(false),
            other => {
                self.pos -= 1;
                self.error(format!("bad bool byte 0x{other:02x}"))
            }
        }
    }

    /// dlib `float` or `double` in the portable mantissa/exponent form.
    pub fn float(&mut self) -> DecodeResult<f64> {
        let first = *self.buf.get(self.pos).ok_or(DecodeError {
            offset: self.pos,
            message: "unexpected end of data reading a float".into(),
        })?;
        if first & 0x70 != 0 {
            return self.error("legacy text float encoding is not supported");
        }
        let mantissa = self.long()?;
        let exponent = self.integer(2, true)?;
        Ok(match exponent {
            32000 => f64::INFINITY,
            32001 => f64::NEG_INFINITY,
            32002 => f64::NAN,
            e => (mantissa as f64) * 2f64.powi(e as i32),
        })
    }

    pub fn string(&mut self, limit: usize) -> DecodeResult<String> {
        let n = self.count(limit)?;
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => {
                self.pos -= n;
                self.error("string is not valid UTF-8")
            }
        }
    }

    fn dims4(&mut self) -> DecodeResult<[usize; 4]> {
        let mut d = [0usize; 4];
        for slot in &mut d {
            let start = self.pos;
            let v = self.long()?;
            *slot = match usize::try_from(v) {
                Ok(n) if n <= MAX_TENSOR_ELEMS => n,
                _ => {
                    self.pos = start;
                    return self.error(format!("bad tensor dimension {v}"));
                }
            };
        }
        Ok(d)
    }

    /// A `resizable_tensor`: version 2, shape, raw `f32` little-endian payload.
    pub fn tensor(&mut self) -> DecodeResult<Tensor4> {
        let start = self.pos;
        let version = self.int()?;
        if version != 2 {
            self.pos = start;
            return self.error(format!("unsupported tensor version {version}"));
        }
        let shape = self.dims4()?;
        let n = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_TENSOR_ELEMS);
        let Some(n) = n else {
            return self.error(format!("tensor shape {shape:?} is too large"));
        };
        let bytes = self.take(n * 4)?;
        let data = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Tensor4 { shape, data })
    }

    /// An `alias_tensor`: version 1 and its shape.
    pub fn alias_tensor(&mut self) -> DecodeResult<[usize; 4]> {
        let start = self.pos;
        let version = self.int()?;
        if version != 1 {
            self.pos = start;
            return self.error(format!("unsupported alias_tensor version {version}"));
        }
        self.dims4()
    }

    /// A `matrix<float>` column vector (`-nr`, `-nc`, then the elements).
    pub fn float_matrix(&mut self, limit: usize) -> DecodeResult<(usize, usize, Vec<f32>)> {
        let start = self.pos;
        // dlib stores the negated sizes; `-i64::MIN` does not exist, so negate with a check
        let (nr, nc) = (self.long()?, self.long()?);
        let neg = |v: i64| v.checked_neg().and_then(|v| usize::try_from(v).ok());
        let (Some(nr), Some(nc)) = (neg(nr), neg(nc)) else {
            self.pos = start;
            return self.error(format!("bad matrix shape {nr}x{nc}"));
        };
        match nr.checked_mul(nc) {
            Some(n) if n <= limit => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.float()? as f32);
                }
                Ok((nr, nc, v))
            }
            _ => {
                self.pos = start;
                self.error(format!("matrix {nr}x{nc} exceeds the limit {limit}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_the_control_byte() {
        // 0 is written as 01 00; -5 as 81 05; 300 as 02 2c 01.
        let mut r = DatReader::new(&[0x01, 0x00, 0x81, 0x05, 0x02, 0x2c, 0x01]);
        assert_eq!(r.int().unwrap(), 0);
        assert_eq!(r.int().unwrap(), -5);
        assert_eq!(r.long().unwrap(), 300);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn bad_control_bytes_are_errors() {
        assert!(DatReader::new(&[0x00]).int().is_err());
        assert!(DatReader::new(&[0x05, 1, 2, 3, 4, 5]).int().is_err());
        assert!(DatReader::new(&[0x81, 0x01]).ulong().is_err());
        let e = DatReader::new(&[0x02, 0x01]).int().unwrap_err();
        assert!(e.message.contains("end of data"), "{e:?}");
    }

    #[test]
    fn floats_are_mantissa_then_exponent() {
        // 3 * 2^-1 = 1.5
        let mut r = DatReader::new(&[0x01, 0x03, 0x81, 0x01]);
        assert_eq!(r.float().unwrap(), 1.5);
        // NaN exponent
        let mut r = DatReader::new(&[0x01, 0x00, 0x02, 0x02, 0x7d]);
        assert!(r.float().unwrap().is_nan());
    }

    #[test]
    fn tensors_read_raw_f32() {
        let mut b = vec![0x01, 0x02]; // version 2
        for d in [1u8, 2, 1, 1] {
            b.extend([0x01, d]);
        }
        b.extend(1.0f32.to_le_bytes());
        b.extend((-2.5f32).to_le_bytes());
        let t = DatReader::new(&b).tensor().unwrap();
        assert_eq!(t.shape, [1, 2, 1, 1]);
        assert_eq!(t.data, vec![1.0, -2.5]);
        // the same tensor cut short
        assert!(DatReader::new(&b[..b.len() - 1]).tensor().is_err());
    }

    #[test]
    fn huge_dimensions_are_refused_without_allocating() {
        let mut b = vec![0x01, 0x02];
        for _ in 0..4 {
            b.extend([0x04, 0xff, 0xff, 0xff, 0x0f]);
        }
        assert!(DatReader::new(&b).tensor().is_err());
    }

    #[test]
    fn a_matrix_size_of_i64_min_is_an_error_not_an_overflow() {
        // -(2^63): control 0x88 and the magnitude 2^63, little-endian; then 1 × 1
        let min = [0x88, 0, 0, 0, 0, 0, 0, 0, 0x80];
        assert_eq!(DatReader::new(&min).long().unwrap(), i64::MIN);
        let mut b = min.to_vec();
        b.extend([0x81, 0x01]);
        let e = DatReader::new(&b).float_matrix(16).unwrap_err();
        assert!(e.message.contains("bad matrix shape"), "{e:?}");
        // and a positive size (dlib writes negated ones) is refused too
        assert!(DatReader::new(&[0x01, 0x02, 0x81, 0x01])
            .float_matrix(16)
            .is_err());
    }
}
