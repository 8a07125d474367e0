//! Names as Prometheus takes them: label names `[a-zA-Z_][a-zA-Z0-9_]*`,
//! metric names the same with `:` allowed. Other characters become `_`
//! (`vigil.unit` → `vigil_unit`), as OpenTelemetry's Prometheus exporters
//! write them.

/// `name` as a Prometheus label name.
pub fn label_name(name: &str) -> String {
    legal(name, |c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name` as a Prometheus metric name.
pub fn metric_name(name: &str) -> String {
    legal(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn legal(name: &str, allowed: impl Fn(char) -> bool) -> String {
    let mut legal: String = name
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    if legal.is_empty() || legal.starts_with(|c: char| c.is_ascii_digit()) {
        legal.insert(0, '_');
    }
    legal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_what_prometheus_allows() {
        assert_eq!(label_name("vigil.unit"), "vigil_unit");
        assert_eq!(label_name("9th"), "_9th");
        assert_eq!(label_name(""), "_");
        assert_eq!(label_name("a:b"), "a_b");
        assert_eq!(metric_name("client.app_start"), "client_app_start");
        assert_eq!(metric_name("rpc:rate5m"), "rpc:rate5m");
    }
}
