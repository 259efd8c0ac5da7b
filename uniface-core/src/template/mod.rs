//! Face templates: a versioned, self-describing binary blob that carries a descriptor together
//! with the contract needed to compare it (which model, which weights, which preprocessing).
//!
//! Byte layout (all integers little-endian; documented for C and Python users in
//! `docs/TEMPLATE_FORMAT.md`):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `UFT\0` |
//! | 4 | 2 | format version (1) |
//! | 6 | 2 | flags: bit 0 = a quality score follows the vector |
//! | 8 | 1 | length L of the model id |
//! | 9 | L | model id, UTF-8 |
//! | 9+L | 32 | SHA-256 of the model weights |
//! | 41+L | 2 | preprocessing version |
//! | 43+L | 4 | dimension D |
//! | 47+L | 1 | element type: 0 = f32, 1 = f16, 2 = i8 |
//! | 48+L | 4 | scale (f32): value = element × scale for i8, 1.0 otherwise |
//! | 52+L | D·size | the vector |
//! | … | 4 | quality score (f32, 0–100), if flag bit 0 |
//! | end−4 | 4 | CRC-32C of every preceding byte |

mod crc32c;

use crate::model_store::RESNET;
use crate::{Error, Result};

pub use crc32c::{crc32c, crc32c_append};

const MAGIC: [u8; 4] = *b"UFT\0";
const VERSION: u16 = 1;
const FLAG_QUALITY: u16 = 1;
/// Largest dimension a template may have (far above any face model).
pub const MAX_DIM: usize = 1 << 16;

/// Symmetric 8-bit quantisation of a vector: `(q, scale)` with `value ≈ q × scale`,
/// `scale = max |v| / 127` (1 for an all-zero vector) and `q` rounded to nearest.
pub fn quantize_i8(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let q = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scale)
}

/// What produced a descriptor: templates compare only within one fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelFingerprint {
    pub model_id: String,
    pub weights_sha256: [u8; 32],
    /// Version of the detection/alignment/normalisation recipe that fed the model.
    pub preprocessing: u16,
}

impl ModelFingerprint {
    /// dlib's ResNet-29 as UniFace runs it (MMOD + 5-point chips of 150 px, padding 0.25).
    pub fn dlib_resnet_v1() -> Self {
        Self::from_hex(RESNET.id, RESNET.sha256, 1).unwrap_or_else(|| Self {
            model_id: RESNET.id.to_owned(),
            weights_sha256: [0; 32],
            preprocessing: 1,
        })
    }

    /// The weights' SHA-256 as 64 lowercase hex digits (how manifests, caches and the
    /// bindings write it).
    pub fn to_hex(&self) -> String {
        self.weights_sha256
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// A fingerprint whose SHA-256 is given as 64 hex digits (either case); `None` when
    /// `sha256_hex` is not that.
    pub fn from_hex(model_id: &str, sha256_hex: &str, preprocessing: u16) -> Option<Self> {
        let hex = sha256_hex.as_bytes();
        if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let mut sha = [0u8; 32];
        for (i, b) in sha.iter_mut().enumerate() {
            let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2]).ok()?;
            *b = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self {
            model_id: model_id.to_owned(),
            weights_sha256: sha,
            preprocessing,
        })
    }
}

/// The purpose a sealed template's envelope is bound to.
const SEALED_PURPOSE: &str = "uniface template v1";

/// How the vector is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    F32,
    F16,
    /// Symmetric 8-bit: value = q × scale.
    I8,
}

impl ElementType {
    fn code(self) -> u8 {
        match self {
            ElementType::F32 => 0,
            ElementType::F16 => 1,
            ElementType::I8 => 2,
        }
    }

    fn size(self) -> usize {
        match self {
            ElementType::F32 => 4,
            ElementType::F16 => 2,
            ElementType::I8 => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Storage {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    I8 { values: Vec<i8>, scale: f32 },
}

/// A face template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    fingerprint: ModelFingerprint,
    storage: Storage,
    quality: Option<f32>,
}

fn format_error(message: impl Into<String>) -> Error {
    Error::TemplateFormat {
        message: message.into(),
    }
}

impl Template {
    /// A full-precision template. Every value must be finite.
    pub fn new(fingerprint: ModelFingerprint, vector: &[f32]) -> Result<Self> {
        if vector.is_empty() || vector.len() > MAX_DIM {
            return Err(format_error(format!(
                "dimension {} out of range",
                vector.len()
            )));
        }
        if let Some(i) = vector.iter().position(|v| !v.is_finite()) {
            return Err(format_error(format!("value {i} is not finite")));
        }
        if fingerprint.model_id.len() > 255 {
            return Err(format_error("model id longer than 255 bytes"));
        }
        Ok(Self {
            fingerprint,
            storage: Storage::F32(vector.to_vec()),
            quality: None,
        })
    }

    /// Attach a quality score (0–100).
    pub fn with_quality(mut self, quality: f32) -> Result<Self> {
        if !(0.0..=100.0).contains(&quality) {
            return Err(format_error(format!("quality {quality} outside 0–100")));
        }
        self.quality = Some(quality);
        Ok(self)
    }

    /// The same template stored as `element` (f16 or symmetric i8 quantisation).
    pub fn converted(&self, element: ElementType) -> Self {
        let v = self.vector();
        let storage = match element {
            ElementType::F32 => Storage::F32(v),
            ElementType::F16 => Storage::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect()),
            ElementType::I8 => {
                let (values, scale) = quantize_i8(&v);
                Storage::I8 { values, scale }
            }
        };
        Self {
            fingerprint: self.fingerprint.clone(),
            storage,
            quality: self.quality,
        }
    }

    pub fn fingerprint(&self) -> &ModelFingerprint {
        &self.fingerprint
    }

    pub fn quality(&self) -> Option<f32> {
        self.quality
    }

    pub fn element_type(&self) -> ElementType {
        match self.storage {
            Storage::F32(_) => ElementType::F32,
            Storage::F16(_) => ElementType::F16,
            Storage::I8 { .. } => ElementType::I8,
        }
    }

    pub fn dimension(&self) -> usize {
        match &self.storage {
            Storage::F32(v) => v.len(),
            Storage::F16(v) => v.len(),
            Storage::I8 { values, .. } => values.len(),
        }
    }

    /// The vector in f32 (dequantised where stored in f16 or i8).
    pub fn vector(&self) -> Vec<f32> {
        match &self.storage {
            Storage::F32(v) => v.clone(),
            Storage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Storage::I8 { values, scale } => values.iter().map(|&q| f32::from(q) * scale).collect(),
        }
    }

    /// Euclidean distance to another template of the same fingerprint and dimension.
    pub fn distance(&self, other: &Template) -> Result<f32> {
        if self.fingerprint != other.fingerprint {
            return Err(Error::FingerprintMismatch {
                left: self.fingerprint.model_id.clone(),
                right: other.fingerprint.model_id.clone(),
            });
        }
        if self.dimension() != other.dimension() {
            return Err(Error::BufferLength {
                expected: self.dimension(),
                got: other.dimension(),
            });
        }
        Ok(self
            .vector()
            .iter()
            .zip(other.vector())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt())
    }

    /// The template sealed under `key` ([`crate::crypto::seal`], XChaCha20-Poly1305): for a
    /// queue or a host's database. `aad` binds it to its context (a subject id, a row key):
    /// [`Template::open_sealed`] needs the same bytes, so a sealed template moved to another
    /// row does not open.
    pub fn seal(&self, key: &crate::crypto::Key, aad: &[u8]) -> Result<Vec<u8>> {
        crate::crypto::seal(key, SEALED_PURPOSE, aad, &self.to_bytes())
    }

    /// A template from [`Template::seal`]'s bytes: the key, the context and every byte are
    /// checked (typed errors: [`Error::WrongKey`], [`Error::Crypto`], then the template's own
    /// checksum).
    pub fn open_sealed(key: &crate::crypto::Key, aad: &[u8], sealed: &[u8]) -> Result<Self> {
        Self::from_bytes(&crate::crypto::open(key, SEALED_PURPOSE, aad, sealed)?)
    }

    /// Serialise (layout in the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let id = self.fingerprint.model_id.as_bytes();
        let mut out = Vec::with_capacity(56 + id.len() + self.dimension() * 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let flags = if self.quality.is_some() {
            FLAG_QUALITY
        } else {
            0
        };
        out.extend_from_slice(&flags.to_le_bytes());
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.fingerprint.weights_sha256);
        out.extend_from_slice(&self.fingerprint.preprocessing.to_le_bytes());
        out.extend_from_slice(&(self.dimension() as u32).to_le_bytes());
        out.push(self.element_type().code());
        let scale = match &self.storage {
            Storage::I8 { scale, .. } => *scale,
            _ => 1.0,
        };
        out.extend_from_slice(&scale.to_le_bytes());
        match &self.storage {
            Storage::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::F16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Storage::I8 { values, .. } => out.extend(values.iter().map(|&q| q as u8)),
        }
        if let Some(q) = self.quality {
            out.extend_from_slice(&q.to_le_bytes());
        }
        let crc = crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parse and verify a serialised template. Any damage is a typed error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 4 + 52 {
            return Err(format_error(format!(
                "{} bytes is too short for a template",
                bytes.len()
            )));
        }
        if bytes[..4] != MAGIC {
            return Err(format_error("not a UniFace template (bad magic)"));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let actual = crc32c(body);
        if stored != actual {
            return Err(Error::TemplateChecksum { stored, actual });
        }
        let mut r = Cursor { b: body, p: 4 };
        let version = u16::from_le_bytes(r.take::<2>()?);
        if version != VERSION {
            return Err(format_error(format!(
                "unsupported template format version {version}"
            )));
        }
        let flags = u16::from_le_bytes(r.take::<2>()?);
        if flags & !FLAG_QUALITY != 0 {
            return Err(format_error(format!("unknown flags 0x{flags:04x}")));
        }
        let id_len = usize::from(r.take::<1>()?[0]);
        let model_id = std::str::from_utf8(r.slice(id_len)?)
            .map_err(|_| format_error("model id is not UTF-8"))?
            .to_owned();
        let weights_sha256 = r.take::<32>()?;
        let preprocessing = u16::from_le_bytes(r.take::<2>()?);
        let dim = u32::from_le_bytes(r.take::<4>()?) as usize;
        if dim == 0 || dim > MAX_DIM {
            return Err(format_error(format!("dimension {dim} out of range")));
        }
        let code = r.take::<1>()?[0];
        let scale = f32::from_le_bytes(r.take::<4>()?);
        let element = match code {
            0 => ElementType::F32,
            1 => ElementType::F16,
            2 => ElementType::I8,
            c => return Err(format_error(format!("unknown element type {c}"))),
        };
        if element != ElementType::I8 && scale != 1.0 {
            return Err(format_error(format!(
                "scale must be 1.0 for {} templates, found {scale}",
                element.name()
            )));
        }
        let raw = r.slice(dim * element.size())?;
        let storage = match element {
            ElementType::F32 => Storage::F32(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            ElementType::F16 => Storage::F16(
                raw.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            ElementType::I8 => {
                if !(scale.is_finite() && scale > 0.0) {
                    return Err(format_error(format!("invalid i8 scale {scale}")));
                }
                Storage::I8 {
                    values: raw.iter().map(|&b| b as i8).collect(),
                    scale,
                }
            }
        };
        let quality = if flags & FLAG_QUALITY != 0 {
            Some(f32::from_le_bytes(r.take::<4>()?))
        } else {
            None
        };
        if r.p != body.len() {
            return Err(format_error(format!(
                "{} unexpected trailing bytes",
                body.len() - r.p
            )));
        }
        let t = Self {
            fingerprint: ModelFingerprint {
                model_id,
                weights_sha256,
                preprocessing,
            },
            storage,
            quality,
        };
        if t.vector().iter().any(|v| !v.is_finite()) {
            return Err(format_error("vector holds a non-finite value"));
        }
        if quality.is_some_and(|q| !(0.0..=100.0).contains(&q)) {
            return Err(format_error("quality outside 0–100"));
        }
        Ok(t)
    }
}

/// The human-readable serde form (JSON, YAML, TOML): the same fields as the binary layout,
/// without the checksum. `vector` holds the stored elements (i8 values as integers, f16
/// values widened exactly); binary serde formats carry [`Template::to_bytes`] instead.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format_version: u16,
    model_id: String,
    weights_sha256: String,
    preprocessing: u16,
    element_type: String,
    scale: f32,
    vector: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quality: Option<f32>,
}

impl ElementType {
    /// "f32", "f16" or "i8" (the names used in JSON templates, manifests and the CLI).
    pub fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "f32",
            ElementType::F16 => "f16",
            ElementType::I8 => "i8",
        }
    }

    /// The element type named `name` ("f32", "f16" or "i8").
    pub fn from_name(name: &str) -> Option<Self> {
        [ElementType::F32, ElementType::F16, ElementType::I8]
            .into_iter()
            .find(|e| e.name() == name)
    }
}

impl From<&Template> for Wire {
    fn from(t: &Template) -> Self {
        let (vector, scale) = match &t.storage {
            Storage::F32(v) => (v.clone(), 1.0),
            Storage::F16(v) => (v.iter().map(|x| x.to_f32()).collect(), 1.0),
            Storage::I8 { values, scale } => {
                (values.iter().map(|&q| f32::from(q)).collect(), *scale)
            }
        };
        Wire {
            format_version: VERSION,
            model_id: t.fingerprint.model_id.clone(),
            weights_sha256: t
                .fingerprint
                .weights_sha256
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            preprocessing: t.fingerprint.preprocessing,
            element_type: t.element_type().name().to_owned(),
            scale,
            vector,
            quality: t.quality,
        }
    }
}

impl TryFrom<Wire> for Template {
    type Error = Error;

    fn try_from(w: Wire) -> Result<Self> {
        if w.format_version != VERSION {
            return Err(format_error(format!(
                "unsupported template format version {}",
                w.format_version
            )));
        }
        let hex = w.weights_sha256.as_bytes();
        if hex.len() != 64 || !w.weights_sha256.is_ascii() {
            return Err(format_error("weights_sha256 must be 64 hex digits"));
        }
        let mut sha = [0u8; 32];
        for (i, b) in sha.iter_mut().enumerate() {
            *b = u8::from_str_radix(&w.weights_sha256[2 * i..2 * i + 2], 16)
                .map_err(|_| format_error("weights_sha256 must be 64 hex digits"))?;
        }
        let fingerprint = ModelFingerprint {
            model_id: w.model_id,
            weights_sha256: sha,
            preprocessing: w.preprocessing,
        };
        // Validates dimension, finiteness and the model id.
        let mut t = Template::new(fingerprint, &w.vector)?;
        if w.element_type != "i8" && w.scale != 1.0 {
            return Err(format_error(format!(
                "scale must be 1.0 for {} templates",
                w.element_type
            )));
        }
        t.storage = match w.element_type.as_str() {
            "f32" => t.storage,
            "f16" => {
                let v: Vec<half::f16> = w.vector.iter().map(|&x| half::f16::from_f32(x)).collect();
                if v.iter().zip(&w.vector).any(|(h, &x)| h.to_f32() != x) {
                    return Err(format_error("an f16 value is not representable in f16"));
                }
                Storage::F16(v)
            }
            "i8" => {
                if !(w.scale.is_finite() && w.scale > 0.0) {
                    return Err(format_error(format!("invalid i8 scale {}", w.scale)));
                }
                if w.vector
                    .iter()
                    .any(|&x| x.fract() != 0.0 || !(-127.0..=127.0).contains(&x))
                {
                    return Err(format_error("i8 values must be integers in -127..=127"));
                }
                Storage::I8 {
                    values: w.vector.iter().map(|&x| x as i8).collect(),
                    scale: w.scale,
                }
            }
            other => return Err(format_error(format!("unknown element type {other:?}"))),
        };
        if t.vector().iter().any(|v| !v.is_finite()) {
            return Err(format_error("vector holds a non-finite value"));
        }
        match w.quality {
            Some(q) => t.with_quality(q),
            None => Ok(t),
        }
    }
}

impl serde::Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            serde::Serialize::serialize(&Wire::from(self), s)
        } else {
            s.serialize_bytes(&self.to_bytes())
        }
    }
}

struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Template;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the bytes of a UniFace template")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Template, E> {
        Template::from_bytes(v).map_err(E::custom)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Template, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Template::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if d.is_human_readable() {
            let w = <Wire as serde::Deserialize>::deserialize(d)?;
            Template::try_from(w).map_err(serde::de::Error::custom)
        } else {
            d.deserialize_bytes(BytesVisitor)
        }
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cursor<'a> {
    fn slice(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.p.checked_add(n).filter(|&e| e <= self.b.len());
        let Some(end) = end else {
            return Err(format_error("template ends early"));
        };
        let s = &self.b[self.p..end];
        self.p = end;
        Ok(s)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.slice(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Template {
        let v: Vec<f32> = (0..128).map(|i| ((i as f32) * 0.37).sin() * 0.2).collect();
        Template::new(ModelFingerprint::dlib_resnet_v1(), &v).unwrap()
    }

    #[test]
    fn sealed_templates_hide_their_values_and_open_only_in_context() {
        use crate::crypto::Key;
        let key = Key::generate().unwrap();
        for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
            let t = sample().converted(element);
            let sealed = t.seal(&key, b"subject-7").unwrap();
            assert_eq!(
                Template::open_sealed(&key, b"subject-7", &sealed).unwrap(),
                t
            );
            // no 16-byte window of the plain form survives in the envelope
            let plain = t.to_bytes();
            for w in plain[plain.len() - 64..].windows(16) {
                assert!(!sealed.windows(16).any(|s| s == w), "{element:?}");
            }
            let wrong = Key::generate().unwrap();
            assert!(matches!(
                Template::open_sealed(&wrong, b"subject-7", &sealed),
                Err(Error::WrongKey { .. })
            ));
            assert!(matches!(
                Template::open_sealed(&key, b"subject-8", &sealed),
                Err(Error::Crypto { .. })
            ));
            let mut flipped = sealed.clone();
            let last = flipped.len() - 20;
            flipped[last] ^= 0x10;
            assert!(matches!(
                Template::open_sealed(&key, b"subject-7", &flipped),
                Err(Error::Crypto { .. })
            ));
            // a plain template is not an envelope
            assert!(Template::open_sealed(&key, b"subject-7", &plain).is_err());
        }
    }

    #[test]
    fn every_element_type_round_trips() {
        for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
            for quality in [None, Some(73.5)] {
                let mut t = sample().converted(element);
                if let Some(q) = quality {
                    t = t.with_quality(q).unwrap();
                }
                let back = Template::from_bytes(&t.to_bytes()).unwrap();
                assert_eq!(back, t, "{element:?} {quality:?}");
                // quantisation error stays small against the full-precision vector
                let err = sample().distance(&back).unwrap();
                assert!(err < 0.01, "{element:?}: {err}");
            }
        }
    }

    #[test]
    fn serde_round_trips_in_text_and_binary_formats() {
        for element in [ElementType::F32, ElementType::F16, ElementType::I8] {
            let t = sample().converted(element).with_quality(55.0).unwrap();
            let json = serde_json::to_string(&t).unwrap();
            assert!(json.contains(&format!("\"element_type\":\"{}\"", element.name())));
            let back: Template = serde_json::from_str(&json).unwrap();
            assert_eq!(back, t, "{element:?}");
            let bin = postcard::to_allocvec(&t).unwrap();
            let back: Template = postcard::from_bytes(&bin).unwrap();
            assert_eq!(back, t, "{element:?}");
        }
        // damaged or invalid input is an error, never a panic or a silent change
        let t = sample().converted(ElementType::I8);
        let mut bin = postcard::to_allocvec(&t).unwrap();
        let n = bin.len();
        bin[n / 2] ^= 4;
        assert!(postcard::from_bytes::<Template>(&bin).is_err());
        let json = serde_json::to_string(&t).unwrap();
        for (from, to) in [
            ("\"i8\"", "\"i4\""),
            ("\"format_version\":1", "\"format_version\":9"),
            ("\"scale\":", "\"scale\":-"),
        ] {
            let bad = json.replacen(from, to, 1);
            assert!(
                serde_json::from_str::<Template>(&bad).is_err(),
                "{from} -> {to}"
            );
        }
        let not_int = json.replacen("\"vector\":[", "\"vector\":[0.5,", 1);
        assert!(serde_json::from_str::<Template>(&not_int).is_err());
        let f16 = serde_json::to_string(&sample().converted(ElementType::F16)).unwrap();
        let inexact = f16.replacen("\"vector\":[", "\"vector\":[0.1000001,", 1);
        assert!(serde_json::from_str::<Template>(&inexact).is_err());
    }

    #[test]
    fn arbitrary_bodies_with_a_valid_checksum_never_panic() {
        // Fix the CRC after mutating, so that every structural check is reached.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let valid = sample()
            .converted(ElementType::F16)
            .with_quality(1.0)
            .unwrap()
            .to_bytes();
        let mut accepted = 0;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = valid[..valid.len() - 4].to_vec();
            match x % 4 {
                0 => b.truncate((x >> 8) as usize % b.len()),
                1 => b.extend((0..(x >> 8) % 9).map(|i| i as u8)),
                _ => {
                    for k in 0..1 + (x >> 60) {
                        let at = (x >> (8 + k)) as usize % b.len();
                        b[at] ^= (x >> (16 + k)) as u8 | 1;
                    }
                }
            }
            let crc = crc32c(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            if let Ok(t) = Template::from_bytes(&b) {
                // whatever parses must be a valid template that re-serialises identically
                assert_eq!(t.to_bytes(), b);
                assert!(t.vector().iter().all(|v| v.is_finite()));
                accepted += 1;
            }
        }
        assert!(accepted < 50_000);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = sample().converted(ElementType::I8).to_bytes();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Template::from_bytes(&b).is_err(), "bit {i} flip accepted");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let valid = sample().to_bytes();
        for round in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 700) as usize;
            let mut buf: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8 ^ i as u8).collect();
            if round % 3 == 0 && len > 8 {
                // start from a real header so the parser gets deeper
                let n = len.min(valid.len());
                buf[..n].copy_from_slice(&valid[..n]);
                buf[(x as usize) % n] ^= 0x41;
            }
            let _ = Template::from_bytes(&buf);
        }
    }

    #[test]
    fn different_fingerprints_do_not_compare() {
        let a = sample();
        let mut fp = ModelFingerprint::dlib_resnet_v1();
        fp.preprocessing = 2;
        let b = Template::new(fp, &a.vector()).unwrap();
        assert!(matches!(
            a.distance(&b),
            Err(Error::FingerprintMismatch { .. })
        ));
        assert_eq!(a.distance(&a).unwrap(), 0.0);
    }

    #[test]
    fn non_finite_vectors_are_refused() {
        let fp = ModelFingerprint::dlib_resnet_v1();
        assert!(Template::new(fp.clone(), &[1.0, f32::NAN]).is_err());
        assert!(Template::new(fp, &[]).is_err());
    }
}
