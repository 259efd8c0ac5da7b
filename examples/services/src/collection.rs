//! Tenancy: every API key (and every JWT, by its `collection` claim) belongs to one collection,
//! and a caller sees the subjects of its own collection only — in every query, not by a filter
//! applied to answers.
//!
//! - **Stored ids.** A subject of collection `c` is stored as `c` + U+001F + its id everywhere
//!   (PostgreSQL's rows, the outbox and its events, the galleries, the sealed templates'
//!   associated data, the images' folders); the default collection (`""`, the keys made before
//!   collections existed) stores the id as it is. Subject ids never hold control characters, so
//!   the two parts cannot be confused, and a handler turns the caller's id into the stored one
//!   before any query: another collection's rows are never read.
//! - **Galleries.** Each replica keeps one gallery per collection, so that an identification
//!   searches its caller's collection alone and the open-set decision counts that collection's
//!   templates only (FPIR is per collection).

use crate::{Error, Result};

/// Between a collection and a subject id in a stored id.
pub const SEPARATOR: char = '\u{1f}';

/// The longest collection name, in bytes.
pub const MAX_COLLECTION: usize = 64;

/// A collection name: empty (the default collection), or 1 to [`MAX_COLLECTION`] ASCII letters,
/// digits, `-`, `_` or `.`.
pub fn check(name: &str) -> Result<()> {
    let ok = name.len() <= MAX_COLLECTION
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "a collection is at most {MAX_COLLECTION} ASCII letters, digits, '-', '_' or '.', got {name:?}"
        )))
    }
}

/// The id `subject` of `collection` is stored under.
pub fn stored(collection: &str, subject: &str) -> String {
    if collection.is_empty() {
        subject.to_owned()
    } else {
        format!("{collection}{SEPARATOR}{subject}")
    }
}

/// The collection and the subject id of a stored id.
pub fn split(stored: &str) -> (&str, &str) {
    stored.split_once(SEPARATOR).unwrap_or(("", stored))
}

/// The stored ids of `collection` begin with this (empty for the default collection, whose ids
/// are the ones without a separator).
pub fn prefix(collection: &str) -> String {
    if collection.is_empty() {
        String::new()
    } else {
        format!("{collection}{SEPARATOR}")
    }
}

/// The folder name of a collection's gallery in a replica (`default`, or `c-` and the name in
/// hex: names are safe as paths anyway, hex keeps it so whatever the rules become).
pub fn folder(collection: &str) -> String {
    if collection.is_empty() {
        "default".to_owned()
    } else {
        format!("c-{}", crate::upstream::hex(collection.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_ids_split_back_and_keep_collections_apart() {
        for (c, s) in [("", "alice"), ("tenant-a", "alice"), ("t.b_2", "a/b c")] {
            let id = stored(c, s);
            assert_eq!(split(&id), (c, s));
            assert!(id.starts_with(&prefix(c)));
        }
        // the same subject id in two collections is two stored ids, neither a prefix of the other
        assert_ne!(stored("a", "x"), stored("", "x"));
        assert!(!stored("ab", "x").starts_with(&prefix("a")));
        assert_eq!(stored("", "x"), "x");
        assert_eq!(folder(""), "default");
        assert_eq!(folder("ab"), "c-6162");
    }

    #[test]
    fn collection_names_are_short_and_plain() {
        for ok in ["", "a", "tenant-1", "A.b_c", &"x".repeat(MAX_COLLECTION)] {
            assert!(check(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "a b",
            "a/b",
            "../x",
            "a\u{1f}b",
            "é",
            "a\0",
            &"x".repeat(MAX_COLLECTION + 1),
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
