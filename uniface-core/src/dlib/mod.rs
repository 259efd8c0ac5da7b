//! Readers for dlib's serialized model files (`.dat`), parsed directly from the shipped bytes so
//! that the registry package's SHA-256 stays the trust anchor.

pub mod dnn;
pub mod reader;

use std::path::Path;

use crate::{Error, Result};

/// Parse a dlib DNN file held in memory; `name` is used in error messages.
pub fn parse_dnn(
    name: &str,
    bytes: &[u8],
    spec: &[dnn::Node],
    input: dnn::InputSpec,
) -> Result<dnn::DnnFile> {
    dnn::parse(bytes, spec, input).map_err(|e| Error::ModelFormat {
        file: name.to_owned(),
        offset: e.offset,
        message: e.message,
    })
}

/// Read and parse a dlib DNN file from disk.
pub fn read_dnn(path: &Path, spec: &[dnn::Node], input: dnn::InputSpec) -> Result<dnn::DnnFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_dnn(&path.display().to_string(), &bytes, spec, input)
}
