//! Output formats: aligned text tables and a minimal JSON writer.
//!
//! serde_json is not a dependency of this crate, so JSON is built as a small value tree
//! and written with full string escaping (RFC 8259 §7).

use std::fmt::{self, Write as _};

/// A JSON value. Objects keep their keys in insertion order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn str(s: impl Into<String>) -> Self {
        Self::Str(s.into())
    }

    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Json)>) -> Self {
        Self::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn ints(values: &[i32]) -> Self {
        Self::Array(values.iter().map(|&v| Self::Int(v.into())).collect())
    }

    pub fn opt_int(value: Option<i64>) -> Self {
        value.map_or(Self::Null, Self::Int)
    }

    pub fn opt_str(value: Option<&str>) -> Self {
        value.map_or(Self::Null, Self::str)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Int(i) => write!(f, "{i}"),
            Json::Str(s) => write_json_string(f, s),
            Json::Array(items) => {
                f.write_char('[')?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_char(']')
            }
            Json::Object(fields) => {
                f.write_char('{')?;
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write_json_string(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_char('}')
            }
        }
    }
}

fn write_json_string(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if u32::from(c) < 0x20 || c == '\u{7f}' => write!(f, "\\u{:04x}", u32::from(c))?,
            // U+2028/2029 are valid JSON but break JavaScript embedding; escape them too.
            '\u{2028}' | '\u{2029}' => write!(f, "\\u{:04x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Left-aligned columns separated by two spaces, with no trailing spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A list of broker ids as `1,2,3`.
pub fn id_list(ids: &[i32]) -> String {
    let ids: Vec<String> = ids.iter().map(i32::to_string).collect();
    ids.join(",")
}

/// A table cell for an offset or size that may be unknown: `-` when it is.
pub fn optional_cell(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A table cell for a partition leader: `none` for Kafka's -1 (no leader).
pub fn leader_cell(leader: i32) -> String {
    if leader < 0 {
        "none".to_owned()
    } else {
        leader.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let value = Json::str("a\"b\\c\nd\te\u{1}f\u{7f}é\u{2028}");
        assert_eq!(value.to_string(), r#""a\"b\\c\nd\te\u0001f\u007fé\u2028""#);
    }

    #[test]
    fn json_nests_objects_and_arrays() {
        let value = Json::object([
            ("name", Json::str("t")),
            ("replicas", Json::ints(&[1, 2])),
            ("end", Json::opt_int(None)),
            ("internal", Json::Bool(false)),
            ("configs", Json::object([("k\"", Json::opt_str(Some("v")))])),
            ("empty", Json::Array(vec![])),
        ]);
        assert_eq!(
            value.to_string(),
            r#"{"name":"t","replicas":[1,2],"end":null,"internal":false,"configs":{"k\"":"v"},"empty":[]}"#
        );
    }

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let rows = vec![
            vec!["orders".to_owned(), "12".to_owned()],
            vec!["a".to_owned(), "1".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "PARTITIONS"], &rows),
            "NAME    PARTITIONS\norders  12\na       1\n"
        );
    }

    #[test]
    fn id_lists_are_comma_separated() {
        assert_eq!(id_list(&[1, 2, 3]), "1,2,3");
        assert_eq!(id_list(&[]), "");
    }
}
