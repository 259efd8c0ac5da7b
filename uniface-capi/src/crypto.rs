//! Sealed templates: a template encrypted and authenticated under a host key
//! (XChaCha20-Poly1305, `uniface_core::crypto`) for a queue or a host's database.

use uniface_core::crypto::{Key, KEY_LEN, SEAL_OVERHEAD};
use uniface_core::template::Template;

use crate::boundary::{self, uf_status, Failure};
use crate::{boxed, bytes_arg, out_arg, ref_arg, uf_template};

/// Bytes in a key (`uf_key_generate`, `uf_template_seal`).
pub const UF_KEY_LEN: usize = 32;
/// Bytes a sealed template adds to its serialized form.
pub const UF_SEAL_OVERHEAD: usize = 52;
const _: () = assert!(UF_KEY_LEN == KEY_LEN && UF_SEAL_OVERHEAD == SEAL_OVERHEAD);

/// # Safety
/// `key` is NULL or readable for `UF_KEY_LEN` bytes.
pub(crate) unsafe fn key_arg(key: *const u8) -> Result<Key, Failure> {
    // SAFETY: forwarded from this function's contract.
    let bytes = unsafe { bytes_arg(key, UF_KEY_LEN, "key") }?;
    Ok(Key::from_slice(bytes)?)
}

/// # Safety
/// `aad` is NULL (only with `aad_len` 0) or readable for `aad_len` bytes.
unsafe fn aad_arg<'a>(aad: *const u8, aad_len: usize) -> Result<&'a [u8], Failure> {
    if aad.is_null() && aad_len == 0 {
        return Ok(&[]);
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { bytes_arg(aad, aad_len, "aad") }
}

/// Write `UF_KEY_LEN` fresh random bytes (the operating system's source) into `out`: a key
/// for `uf_template_seal`. Keep it as the host keeps its secrets.
#[no_mangle]
pub unsafe extern "C" fn uf_key_generate(out: *mut u8) -> uf_status {
    boundary::run(|| {
        if out.is_null() {
            return Err(Failure::Null("out"));
        }
        let key = Key::generate()?;
        let bytes = key.to_bytes();
        // SAFETY: `out` is non-NULL and writable for `UF_KEY_LEN` bytes (the header's contract).
        unsafe { std::slice::from_raw_parts_mut(out, UF_KEY_LEN) }.copy_from_slice(&bytes[..]);
        Ok(())
    })
}

/// Seal `template` under the `UF_KEY_LEN`-byte `key`, bound to `aad` (`aad_len` bytes, e.g. a
/// subject id and row key; NULL with 0 for none), into `buf` (`len` bytes). `*needed` (if not
/// NULL) receives the size (serialized size + `UF_SEAL_OVERHEAD`); when `len` is smaller the
/// result is `UF_STATUS_BUFFER_TOO_SMALL` and nothing is written. Each call uses a fresh nonce.
#[no_mangle]
pub unsafe extern "C" fn uf_template_seal(
    template: *const uf_template,
    key: *const u8,
    aad: *const u8,
    aad_len: usize,
    buf: *mut u8,
    len: usize,
    needed: *mut usize,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `template` is NULL or a live handle of ours (the header's contract).
        let t = unsafe { ref_arg(template, "template") }?;
        // SAFETY: `key` is NULL or readable for UF_KEY_LEN bytes (the header's contract).
        let key = unsafe { key_arg(key) }?;
        // SAFETY: `aad` is NULL with 0 or readable for `aad_len` bytes (the header's contract).
        let aad = unsafe { aad_arg(aad, aad_len) }?;
        let sealed = t.inner.seal(&key, aad)?;
        // (sealed before `buf` is borrowed: `buf` may overlap `aad`)
        // SAFETY: `buf` is NULL or writable for `len` bytes, `needed` NULL or writable (the
        // header's contract).
        let dst = unsafe { boundary::out_buffer(buf, len, needed, sealed.len()) }?;
        dst.copy_from_slice(&sealed);
        Ok(())
    })
}

/// Open a template sealed by `uf_template_seal` with the same `key` and `aad`. Another key, other
/// associated data or an altered byte give `UF_STATUS_CRYPTO`. Release with
/// `uf_template_free`.
#[no_mangle]
pub unsafe extern "C" fn uf_template_open_sealed(
    key: *const u8,
    aad: *const u8,
    aad_len: usize,
    data: *const u8,
    len: usize,
    out: *mut *mut uf_template,
) -> uf_status {
    boundary::run(|| {
        // SAFETY: `key` is NULL or readable for UF_KEY_LEN bytes (the header's contract).
        let key = unsafe { key_arg(key) }?;
        // SAFETY: `aad` is NULL with 0 or readable for `aad_len` bytes (the header's contract).
        let aad = unsafe { aad_arg(aad, aad_len) }?;
        // SAFETY: `data` is NULL or readable for `len` bytes (the header's contract).
        let data = unsafe { bytes_arg(data, len, "data") }?;
        // SAFETY: `out` is NULL or writable (the header's contract).
        let out = unsafe { out_arg(out, "out") }?;
        let inner = Template::open_sealed(&key, aad, data)?;
        *out = boxed(uf_template { inner });
        Ok(())
    })
}
