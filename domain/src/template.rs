//! Templates users write (probe requests, alert annotations, remediation
//! bodies): `{{name}}` is replaced by a variable's value.
//!
//! What the names are is up to the user of a template: a probe's variables
//! and extracted values, an alert's labels and value. `secret.NAME` is a
//! secret (read from the environment when the file loads) and is masked in
//! what is shown. A JSON body is a tree of templates; a string that is a
//! single `{{name}}` takes the variable's JSON value (a number stays a
//! number).

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

/// The prefix of variables read from the environment.
pub const SECRET: &str = "secret.";

/// The variables of one run, by name.
pub type Vars = BTreeMap<String, Value>;

/// A text with `{{name}}` holes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Var(String),
}

/// Why a URL template could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// A variable it needs is not set.
    Missing(String),
    /// A variable's value is `.` or `..`.
    DotSegment(String),
}

/// How a variable's value goes into the text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fill {
    AsIs,
    Masked,
    UrlEncoded,
}

/// Every byte but RFC 3986's unreserved `A-Z a-z 0-9 - . _ ~`.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A variable a template needs and the run does not have (an earlier step
/// that should have extracted it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub String);

impl Template {
    /// Parses `text`; the error says what is wrong with a `{{…}}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("{text:?}: a `{{{{` is never closed"))?;
            let name = after[..close].trim();
            if !is_name(name) {
                return Err(format!(
                    "{text:?}: `{{{{{name}}}}}` is not a variable name (letters, digits, '_', '-', '.')"
                ));
            }
            parts.push(Part::Var(name.to_owned()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The names of the variables it uses.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Var(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The text with every variable filled in.
    pub fn render(&self, vars: &Vars) -> Result<String, Missing> {
        self.render_with(vars, Fill::AsIs)
    }

    /// As [`Template::render`], with secrets shown as `***`: for what is
    /// recorded in spans and logs.
    pub fn render_masked(&self, vars: &Vars) -> Result<String, Missing> {
        self.render_with(vars, Fill::Masked)
    }

    /// As [`Template::render`] for a URL whose values come from telemetry:
    /// each value is percent-encoded (all but RFC 3986's unreserved
    /// characters), so it fills one path segment or query value and can add
    /// no `/`, `?`, `&`, `#` or `@` of its own; a value `.` or `..` (which
    /// URL parsers take as a step up the path, encoded or not) is refused.
    pub fn render_url(&self, vars: &Vars) -> Result<String, UrlError> {
        for part in &self.parts {
            if let Part::Var(name) = part
                && let Some(Value::String(value)) = vars.get(name)
                && matches!(value.as_str(), "." | "..")
            {
                return Err(UrlError::DotSegment(name.clone()));
            }
        }
        self.render_with(vars, Fill::UrlEncoded)
            .map_err(|missing| UrlError::Missing(missing.0))
    }

    /// The text before the first variable (all of it when there is none).
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(text)) => text,
            _ => "",
        }
    }

    fn render_with(&self, vars: &Vars, fill: Fill) -> Result<String, Missing> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) if fill == Fill::Masked && name.starts_with(SECRET) => {
                    out.push_str("***")
                }
                Part::Var(name) => {
                    let value = vars.get(name).ok_or_else(|| Missing(name.clone()))?;
                    let text = match value {
                        Value::String(text) => std::borrow::Cow::Borrowed(text.as_str()),
                        Value::Null => std::borrow::Cow::Borrowed(""),
                        other => std::borrow::Cow::Owned(other.to_string()),
                    };
                    match fill {
                        Fill::UrlEncoded => {
                            out.extend(utf8_percent_encode(&text, NOT_UNRESERVED));
                        }
                        Fill::AsIs | Fill::Masked => out.push_str(&text),
                    }
                }
            }
        }
        Ok(out)
    }

    /// The value of a template that is one variable and nothing else.
    fn whole_variable(&self) -> Option<&str> {
        match &self.parts[..] {
            [Part::Var(name)] => Some(name),
            _ => None,
        }
    }
}

impl TryFrom<String> for Template {
    type Error = String;

    fn try_from(text: String) -> Result<Template, String> {
        Template::parse(&text)
    }
}

/// Names of variables, and of probes, steps and locations: letters,
/// digits, `_`, `-`, `.`; at most 128.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A JSON value whose strings (keys stay as written) are templates.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    Literal(Value),
    Text(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub fn parse(value: &Value) -> Result<JsonTemplate, String> {
        Ok(match value {
            Value::String(text) => JsonTemplate::Text(Template::parse(text)?),
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .map(JsonTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => JsonTemplate::Object(
                fields
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), JsonTemplate::parse(value)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => JsonTemplate::Literal(other.clone()),
        })
    }

    /// The names of the variables it uses.
    pub fn variables(&self) -> Vec<&str> {
        match self {
            JsonTemplate::Literal(_) => Vec::new(),
            JsonTemplate::Text(template) => template.variables().collect(),
            JsonTemplate::Array(items) => items.iter().flat_map(JsonTemplate::variables).collect(),
            JsonTemplate::Object(fields) => fields
                .iter()
                .flat_map(|(_, value)| value.variables())
                .collect(),
        }
    }

    pub fn render(&self, vars: &Vars) -> Result<Value, Missing> {
        Ok(match self {
            JsonTemplate::Literal(value) => value.clone(),
            JsonTemplate::Text(template) => match template.whole_variable() {
                Some(name) if !name.starts_with(SECRET) => vars
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Missing(name.to_owned()))?,
                _ => Value::String(template.render(vars)?),
            },
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.render(vars))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, value)| Ok((key.clone(), value.render(vars)?)))
                    .collect::<Result<_, Missing>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn url_values_are_percent_encoded_and_cannot_step_up() {
        let template =
            Template::parse("https://ops.example/rollback/{{service}}?unit={{unit}}").unwrap();
        assert_eq!(template.literal_prefix(), "https://ops.example/rollback/");
        let vars = |service: &str, unit: &str| {
            Vars::from([
                ("service".to_owned(), Value::from(service)),
                ("unit".to_owned(), Value::from(unit)),
            ])
        };
        assert_eq!(
            template
                .render_url(&vars("pay/../admin", "a&b=c#d"))
                .unwrap(),
            "https://ops.example/rollback/pay%2F..%2Fadmin?unit=a%26b%3Dc%23d"
        );
        assert_eq!(
            template
                .render_url(&vars("pay-1.2_x~", "u 1@évry"))
                .unwrap(),
            "https://ops.example/rollback/pay-1.2_x~?unit=u%201%40%C3%A9vry"
        );
        assert_eq!(
            template.render_url(&vars("..", "u1")),
            Err(UrlError::DotSegment("service".to_owned()))
        );
        assert_eq!(
            template.render_url(&Vars::new()),
            Err(UrlError::Missing("service".to_owned()))
        );
    }

    fn vars() -> Vars {
        Vars::from([
            ("base".to_owned(), json!("http://pay:8081")),
            ("order_id".to_owned(), json!(42)),
            ("secret.TOKEN".to_owned(), json!("s3cr3t")),
        ])
    }

    #[test]
    fn templates_fill_in_variables_and_mask_secrets() {
        let template =
            Template::parse("{{base}}/orders/{{ order_id }}?t={{secret.TOKEN}}").unwrap();
        assert_eq!(
            template.variables().collect::<Vec<_>>(),
            ["base", "order_id", "secret.TOKEN"]
        );
        assert_eq!(
            template.render(&vars()).unwrap(),
            "http://pay:8081/orders/42?t=s3cr3t"
        );
        assert_eq!(
            template.render_masked(&vars()).unwrap(),
            "http://pay:8081/orders/42?t=***"
        );
        let missing = Template::parse("{{base}}/{{refund_id}}").unwrap();
        assert_eq!(missing.render(&vars()), Err(Missing("refund_id".into())));
        assert_eq!(
            Template::parse("plain").unwrap().render(&vars()).unwrap(),
            "plain"
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert_eq!(
            Template::parse("{{base}/x").unwrap_err(),
            "\"{{base}/x\": a `{{` is never closed"
        );
        assert_eq!(
            Template::parse("{{ two words }}").unwrap_err(),
            "\"{{ two words }}\": `{{two words}}` is not a variable name (letters, digits, '_', '-', '.')"
        );
    }

    #[test]
    fn json_bodies_keep_the_types_of_whole_variables() {
        let body = json!({"order": "{{order_id}}", "note": "order {{order_id}}", "n": [1, true]});
        let template = JsonTemplate::parse(&body).unwrap();
        assert_eq!(template.variables(), ["order_id", "order_id"]);
        assert_eq!(
            template.render(&vars()).unwrap(),
            json!({"order": 42, "note": "order 42", "n": [1, true]})
        );
    }
}
