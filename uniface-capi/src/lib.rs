//! C API for UniFace (`libuniface_capi.so` / `.a`, header `include/uniface.h`).
//!
//! This first slice defines the status codes and the version query; handles for the analyzer,
//! templates and galleries follow. Every function is safe to call from any thread.

use std::ffi::c_char;

/// Result of every fallible function. Values are explicit and never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum uf_status {
    UF_STATUS_OK = 0,
    UF_STATUS_NULL_PARAMETER = 1,
    UF_STATUS_PANIC = 2,
    UF_STATUS_INVALID_ARGUMENT = 3,
    UF_STATUS_IO = 4,
    UF_STATUS_MODEL = 5,
}

/// The library version as a static NUL-terminated string (e.g. "0.1.0"). Thread-safe.
#[no_mangle]
pub extern "C" fn uf_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A static NUL-terminated description of a status code. Thread-safe.
#[no_mangle]
pub extern "C" fn uf_status_str(status: uf_status) -> *const c_char {
    let s: &'static str = match status {
        uf_status::UF_STATUS_OK => "ok\0",
        uf_status::UF_STATUS_NULL_PARAMETER => "a required pointer argument was NULL\0",
        uf_status::UF_STATUS_PANIC => "internal error (a panic was caught at the API boundary)\0",
        uf_status::UF_STATUS_INVALID_ARGUMENT => "invalid argument\0",
        uf_status::UF_STATUS_IO => "I/O error\0",
        uf_status::UF_STATUS_MODEL => "model file missing, corrupt or unreadable\0",
    };
    s.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: uf_version returns a pointer to a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(uf_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn committed_header_is_current() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/uniface.h"));
        let committed = include_str!("../include/uniface.h");
        assert_eq!(
            committed, generated,
            "include/uniface.h is stale: copy $OUT_DIR/uniface.h over it (cargo build -p uniface-capi)"
        );
    }
}
