//! The path rules, one function used by both sides.
//!
//! A path names a file or folder relative to a namespace root: UTF-8 (guaranteed by `&str`;
//! raw bytes go through [`validate_path_bytes`]), `/`-separated, no empty, `.` or `..`
//! segments, no NUL or backslash, no leading or trailing `/`, at most [`PATH_BYTES_MAX`]
//! bytes, each segment at most [`SEGMENT_BYTES_MAX`] bytes.

use crate::limits::{PATH_BYTES_MAX, SEGMENT_BYTES_MAX};

/// The rule a path broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty string.
    #[error("path is empty")]
    Empty,
    /// Bytes that are not UTF-8.
    #[error("path is not valid UTF-8")]
    NotUtf8,
    /// Longer than [`PATH_BYTES_MAX`].
    #[error("path is {0} bytes, more than the 4096 allowed")]
    TooLong(usize),
    /// Starts with `/`.
    #[error("path must be relative: it starts with '/'")]
    Absolute,
    /// Ends with `/`.
    #[error("path ends with '/'")]
    TrailingSlash,
    /// Two `/` in a row.
    #[error("path has an empty segment ('//')")]
    EmptySegment,
    /// A `.` segment.
    #[error("path has a '.' segment")]
    Dot,
    /// A `..` segment.
    #[error("path has a '..' segment")]
    DotDot,
    /// A NUL character.
    #[error("path contains a NUL character")]
    Nul,
    /// A backslash.
    #[error("path contains a backslash")]
    Backslash,
    /// A segment longer than [`SEGMENT_BYTES_MAX`].
    #[error("path segment is {0} bytes, more than the 255 allowed")]
    SegmentTooLong(usize),
}

/// Checks `path` against every rule; the error names the first rule it breaks.
pub fn validate_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > PATH_BYTES_MAX {
        return Err(PathError::TooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.ends_with('/') {
        return Err(PathError::TrailingSlash);
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(PathError::EmptySegment),
            "." => return Err(PathError::Dot),
            ".." => return Err(PathError::DotDot),
            _ => {}
        }
        if segment.len() > SEGMENT_BYTES_MAX {
            return Err(PathError::SegmentTooLong(segment.len()));
        }
        if segment.contains('\0') {
            return Err(PathError::Nul);
        }
        if segment.contains('\\') {
            return Err(PathError::Backslash);
        }
    }
    Ok(())
}

/// [`validate_path`] for raw bytes, such as a file name read from disk or a journal record.
pub fn validate_path_bytes(path: &[u8]) -> Result<&str, PathError> {
    let s = std::str::from_utf8(path).map_err(|_| PathError::NotUtf8)?;
    validate_path(s)?;
    Ok(s)
}

/// The parent folder of a valid path, or `None` for a path at the root.
pub fn parent(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a",
            "a/b/c.txt",
            "Ünïcödé/日本語/файл.txt",
            "...",
            ".hidden",
            "a/..b/c..",
            "with space/and (parens).txt",
        ] {
            assert_eq!(validate_path(p), Ok(()), "{p}");
        }
        let longest_segment = "x".repeat(255);
        assert_eq!(validate_path(&longest_segment), Ok(()));
        let longest = vec!["y".repeat(255); 16].join("/");
        assert_eq!(longest.len(), 4095);
        assert_eq!(validate_path(&longest), Ok(()));
    }

    #[test]
    fn names_the_rule_broken() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("/a", PathError::Absolute),
            ("a/", PathError::TrailingSlash),
            ("a//b", PathError::EmptySegment),
            ("./a", PathError::Dot),
            ("a/.", PathError::Dot),
            ("a/../b", PathError::DotDot),
            ("..", PathError::DotDot),
            ("a\0b", PathError::Nul),
            ("a\\b", PathError::Backslash),
        ];
        for (p, e) in cases {
            assert_eq!(validate_path(p).as_ref(), Err(e), "{p:?}");
        }
        assert_eq!(
            validate_path(&"x".repeat(256)),
            Err(PathError::SegmentTooLong(256))
        );
        assert_eq!(
            validate_path(&"x/".repeat(2049)[..4097]),
            Err(PathError::TooLong(4097))
        );
        assert_eq!(validate_path_bytes(b"a/\xff"), Err(PathError::NotUtf8));
        assert_eq!(validate_path_bytes(b"a/b"), Ok("a/b"));
    }

    #[test]
    fn parent_of_path() {
        assert_eq!(parent("a/b/c"), Some("a/b"));
        assert_eq!(parent("a"), None);
    }
}
