//! JSON paths in assertions and extractions: the single-value subset of
//! JSONPath (RFC 9535): `$`, `.name`, `['name']` and `[index]`, e.g.
//! `$.order.items[0].id`.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

#[derive(Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl JsonPath {
    /// Parses `text`; the error says where it stops making sense.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let bad = |why: &str| format!("JSON path {text:?}: {why}");
        let mut rest = text
            .strip_prefix('$')
            .ok_or_else(|| bad("must start with `$`"))?;
        let mut segments = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                if end == 0 {
                    return Err(bad("a `.` must be followed by a name"));
                }
                segments.push(Segment::Key(after[..end].to_owned()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after
                    .find(']')
                    .ok_or_else(|| bad("a `[` is never closed"))?;
                let inner = &after[..end];
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                segments.push(match quoted {
                    Some(key) => Segment::Key(key.to_owned()),
                    None => Segment::Index(
                        inner
                            .parse()
                            .map_err(|_| bad("`[…]` holds an index (0, 1, …) or a quoted name"))?,
                    ),
                });
                rest = &after[end + 1..];
            } else {
                return Err(bad("expected `.name` or `[…]`"));
            }
        }
        Ok(JsonPath {
            text: text.to_owned(),
            segments,
        })
    }

    /// The value at the path, if there is one.
    pub fn find<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(value, |value, segment| match segment {
                Segment::Key(key) => value.as_object()?.get(key),
                Segment::Index(index) => value.as_array()?.get(*index),
            })
    }
}

impl TryFrom<String> for JsonPath {
    type Error = String;

    fn try_from(text: String) -> Result<JsonPath, String> {
        JsonPath::parse(&text)
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_find_nested_values() {
        let body = json!({"order": {"id": "o-1", "items": [{"sku": "a"}, {"sku": "b"}]}, "a b": 1});
        let find = |path: &str| JsonPath::parse(path).unwrap().find(&body).cloned();
        assert_eq!(find("$.order.id"), Some(json!("o-1")));
        assert_eq!(find("$.order.items[1].sku"), Some(json!("b")));
        assert_eq!(find("$['a b']"), Some(json!(1)));
        assert_eq!(find("$[\"order\"].id"), Some(json!("o-1")));
        assert_eq!(find("$"), Some(body.clone()));
        assert_eq!(find("$.order.items[2]"), None);
        assert_eq!(find("$.order.id.more"), None);
    }

    #[test]
    fn malformed_paths_say_why() {
        let error = |path: &str| JsonPath::parse(path).unwrap_err();
        assert_eq!(
            error("order.id"),
            "JSON path \"order.id\": must start with `$`"
        );
        assert_eq!(
            error("$.a[x]"),
            "JSON path \"$.a[x]\": `[…]` holds an index (0, 1, …) or a quoted name"
        );
        assert_eq!(
            error("$..a"),
            "JSON path \"$..a\": a `.` must be followed by a name"
        );
        assert_eq!(error("$.a[0"), "JSON path \"$.a[0\": a `[` is never closed");
    }
}
