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
        self.render_with(vars, false)
    }

    /// As [`Template::render`], with secrets shown as `***`: for what is
    /// recorded in spans and logs.
    pub fn render_masked(&self, vars: &Vars) -> Result<String, Missing> {
        self.render_with(vars, true)
    }

    fn render_with(&self, vars: &Vars, mask: bool) -> Result<String, Missing> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) if mask && name.starts_with(SECRET) => out.push_str("***"),
                Part::Var(name) => {
                    let value = vars.get(name).ok_or_else(|| Missing(name.clone()))?;
                    match value {
                        Value::String(text) => out.push_str(text),
                        Value::Null => {}
                        other => out.push_str(&other.to_string()),
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
