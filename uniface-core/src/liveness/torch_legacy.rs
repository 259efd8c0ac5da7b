//! Reader for legacy (pre-1.6, non-zip) `torch.save` files holding a `state_dict`.
//!
//! Layout: five pickles in a row — the magic number `0x1950a86a20f9469cfc6c`, the protocol
//! version (1001), a `sys_info` dict, the object itself (tensors appear as
//! `torch._utils._rebuild_tensor_v2` calls whose storage is a persistent id
//! `('storage', <Storage class>, key, location, numel, view)`) and the list of storage keys —
//! followed, for each key in that list's order, by a little-endian `i64` element count and the
//! raw little-endian elements. The pickles are interpreted by candle's pickle machine.

use std::collections::HashMap;
use std::io::Cursor;

use candle_core::pickle::{Object, Stack};
use candle_core::DType;

use crate::{Error, Result};

/// `pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)`.
const MAGIC_PICKLE: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

/// One float tensor of a state dict, contiguous in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn format_error(file: &str, offset: usize, message: impl Into<String>) -> Error {
    Error::ModelFormat {
        file: file.to_owned(),
        offset,
        message: message.into(),
    }
}

fn read_pickle(file: &str, r: &mut Cursor<&[u8]>) -> Result<Object> {
    let at = r.position() as usize;
    let mut stack = Stack::empty();
    stack
        .read_loop(r)
        .map_err(|e| format_error(file, at, format!("bad pickle: {e}")))?;
    stack
        .finalize()
        .map_err(|e| format_error(file, at, format!("bad pickle: {e}")))
}

/// Every float tensor of the state dict in `bytes` by name (a `module.` prefix from
/// `nn.DataParallel` is removed). Integer buffers such as `num_batches_tracked` are skipped.
pub fn read_state_dict(file: &str, bytes: &[u8]) -> Result<HashMap<String, StateTensor>> {
    // The magic number is an 80-bit integer pickle, compared byte for byte (PROTO 2, LONG1 of
    // ten bytes, STOP) rather than decoded.
    if !bytes.starts_with(&MAGIC_PICKLE) {
        return Err(format_error(
            file,
            0,
            "not a legacy torch.save file (bad magic number)",
        ));
    }
    let mut r = Cursor::new(bytes);
    r.set_position(MAGIC_PICKLE.len() as u64);
    let _protocol = read_pickle(file, &mut r)?;
    let _sys_info = read_pickle(file, &mut r)?;
    let root = read_pickle(file, &mut r)?;
    let keys_at = r.position() as usize;
    parse_tensors(file, bytes, root, keys_at)
}

/// Resolve the tensors of the root dict against the storages that follow the key list (each
/// storage's element size comes from the tensors that view it).
fn parse_tensors(
    file: &str,
    bytes: &[u8],
    root: Object,
    keys_at: usize,
) -> Result<HashMap<String, StateTensor>> {
    let mut r = Cursor::new(bytes);
    r.set_position(keys_at as u64);
    let keys = match read_pickle(file, &mut r)? {
        Object::List(v) | Object::Tuple(v) => v,
        _ => return Err(format_error(file, keys_at, "storage key list missing")),
    };
    let entries = match root {
        Object::Dict(d) => d,
        Object::Reduce { args, .. } => match *args {
            // OrderedDict([...]) pickled as a reduce over a list of pairs
            Object::Tuple(mut t) if !t.is_empty() => match t.remove(0) {
                Object::List(items) => items
                    .into_iter()
                    .filter_map(|i| match i {
                        Object::Tuple(mut kv) if kv.len() == 2 => {
                            let v = kv.remove(1);
                            Some((kv.remove(0), v))
                        }
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        Object::Build { callable, args } => match (*callable, *args) {
            (_, Object::Dict(d)) => d,
            (Object::Reduce { .. }, _) => Vec::new(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let mut infos = Vec::new();
    for (name, value) in entries {
        let name_str = match name.clone().unicode() {
            Ok(n) => n,
            Err(_) => continue,
        };
        match value.into_tensor_info(name, std::path::Path::new("")) {
            Ok(Some(info)) => infos.push((name_str, info)),
            Ok(None) => {}
            Err(e) => return Err(format_error(file, keys_at, format!("{name_str}: {e}"))),
        }
    }
    if infos.is_empty() {
        return Err(format_error(file, keys_at, "no tensors in the state dict"));
    }
    // Element size of each storage, from the tensors that view it.
    let mut elem_size: HashMap<String, usize> = HashMap::new();
    for (_, info) in &infos {
        let key = info.path.trim_start_matches('/').to_owned();
        elem_size.insert(key, info.dtype.size_in_bytes());
    }
    let mut data: HashMap<String, &[u8]> = HashMap::new();
    let mut pos = r.position() as usize;
    for key in keys {
        let key = key
            .unicode()
            .map_err(|_| format_error(file, keys_at, "storage key is not a string"))?;
        let count = bytes
            .get(pos..pos + 8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .ok_or_else(|| format_error(file, pos, format!("storage {key}: truncated")))?;
        let size = *elem_size.get(&key).unwrap_or(&4);
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(size))
            .ok_or_else(|| format_error(file, pos, format!("storage {key}: bad count {count}")))?;
        let end = (pos + 8).checked_add(len);
        let body = end.and_then(|end| bytes.get(pos + 8..end)).ok_or_else(|| {
            format_error(
                file,
                pos,
                format!("storage {key}: {len} bytes run past the end"),
            )
        })?;
        data.insert(key, body);
        pos += 8 + len;
    }
    if pos != bytes.len() {
        return Err(format_error(
            file,
            pos,
            format!("{} trailing bytes", bytes.len() - pos),
        ));
    }
    let mut out = HashMap::new();
    for (name, info) in infos {
        if info.dtype != DType::F32 {
            continue;
        }
        let key = info.path.trim_start_matches('/');
        let raw = data
            .get(key)
            .ok_or_else(|| format_error(file, keys_at, format!("{name}: storage {key} missing")))?;
        let shape = info.layout.shape().dims().to_vec();
        // The shape is the file's word: checked against the storage before anything is
        // allocated for it (a view never holds more values than its storage).
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= raw.len() / 4)
            .ok_or_else(|| {
                format_error(
                    file,
                    keys_at,
                    format!(
                        "{name}: shape {shape:?} holds more values than its {}-byte storage",
                        raw.len()
                    ),
                )
            })?;
        let offset = info.layout.start_offset();
        let stride = info.layout.stride();
        let mut values = Vec::with_capacity(numel);
        // Gather in row-major order through the (possibly non-contiguous) strides.
        let mut index = vec![0usize; shape.len()];
        let outside = || format_error(file, keys_at, format!("{name}: view outside its storage"));
        for _ in 0..numel {
            let at = index
                .iter()
                .zip(stride)
                .try_fold(0usize, |acc, (i, s)| acc.checked_add(i.checked_mul(*s)?))
                .and_then(|elem| elem.checked_mul(4)?.checked_add(offset))
                .ok_or_else(outside)?;
            let b = at
                .checked_add(4)
                .and_then(|end| raw.get(at..end))
                .ok_or_else(outside)?;
            values.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            for d in (0..shape.len()).rev() {
                index[d] += 1;
                if index[d] < shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        let name = name.strip_prefix("module.").unwrap_or(&name).to_owned();
        out.insert(name, StateTensor { shape, values });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_shapes_are_checked_against_the_storage() {
        // Legacy torch.save files written by a script with a stand-in `torch` module: one
        // float tensor `w` over a storage of six floats 0..6, declared (2, 3) with strides
        // (3, 1); then (2^31 − 1, 2^31 − 1); then (2, 3) with a stride of 2^30.
        fn unhex(h: &str) -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        }
        let good = unhex(GOOD);
        let t = read_state_dict("good.pth", &good).unwrap();
        assert_eq!(t["w"].shape, [2, 3]);
        assert_eq!(t["w"].values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // a shape far past the storage: refused before allocating 2^62 values
        let e = read_state_dict("huge.pth", &unhex(HUGE))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds more values"), "{e}");
        // a stride that leaves the storage: refused
        let e = read_state_dict("stride.pth", &unhex(STRIDE))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside its storage"), "{e}");
    }

    const GOOD: &str = "80028a0a6cfc9c46f9206aa850192e80024de9032e80027d710028581000000070726f746f636f6c5f76657273696f6e71014de903580d0000006c6974746c655f656e6469616e710288752e80027d7100580100000077710163746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a71022828580700000073746f72616765710363746f7263680a466c6f617453746f726167650a71045801000000307105580300000063707571064b06747107514b004b024b038671084b034b018671098963636f6c6c656374696f6e730a4f726465726564446963740a710a2952710b74710c52710d732e80025d71005801000000307101612e0600000000000000000000000000803f0000004000004040000080400000a040";
    const HUGE: &str = "80028a0a6cfc9c46f9206aa850192e80024de9032e80027d710028581000000070726f746f636f6c5f76657273696f6e71014de903580d0000006c6974746c655f656e6469616e710288752e80027d7100580100000077710163746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a71022828580700000073746f72616765710363746f7263680a466c6f617453746f726167650a71045801000000307105580300000063707571064b06747107514b004affffff7f4affffff7f8671084affffff7f4b018671098963636f6c6c656374696f6e730a4f726465726564446963740a710a2952710b74710c52710d732e80025d71005801000000307101612e0600000000000000000000000000803f0000004000004040000080400000a040";
    const STRIDE: &str = "80028a0a6cfc9c46f9206aa850192e80024de9032e80027d710028581000000070726f746f636f6c5f76657273696f6e71014de903580d0000006c6974746c655f656e6469616e710288752e80027d7100580100000077710163746f7263682e5f7574696c730a5f72656275696c645f74656e736f725f76320a71022828580700000073746f72616765710363746f7263680a466c6f617453746f726167650a71045801000000307105580300000063707571064b06747107514b004b024b038671084a000000404b018671098963636f6c6c656374696f6e730a4f726465726564446963740a710a2952710b74710c52710d732e80025d71005801000000307101612e0600000000000000000000000000803f0000004000004040000080400000a040";

    #[test]
    fn garbage_is_a_format_error() {
        for bytes in [&b""[..], b"\x80\x02K\x01.", b"not a pickle at all"] {
            assert!(matches!(
                read_state_dict("x.pth", bytes),
                Err(Error::ModelFormat { .. })
            ));
        }
    }
}
