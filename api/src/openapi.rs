//! The paths the API serves, described once: the same table checks each
//! request's parameters and writes `GET /api/v1/openapi.json`.

use serde_json::{Map, Value, json};
use vigil_config::Role;

/// One query-string parameter.
#[derive(Clone, Copy, Debug)]
pub struct Param {
    pub name: &'static str,
    /// JSON Schema type: `string`, `integer` or `boolean`.
    pub kind: &'static str,
    pub required: bool,
    pub description: &'static str,
}

/// What a request does: reads, or changes what the API keeps (silences).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Delete => "delete",
        }
    }
}

/// One method on one path.
#[derive(Debug)]
pub struct Endpoint {
    pub method: Method,
    /// With `{name}` for path parameters, as the router writes it.
    pub path: &'static str,
    pub summary: &'static str,
    /// Path parameters and what they are.
    pub path_params: &'static [(&'static str, &'static str)],
    pub params: &'static [Param],
    /// The name of the schema of the JSON body it takes, in the document's
    /// components.
    pub body: Option<&'static str>,
    /// The least role that may call it, when not the method's.
    pub role: Option<Role>,
}

impl Endpoint {
    /// The least role that may call it: a viewer reads, changes need an
    /// editor.
    pub fn role(&self) -> Role {
        if let Some(role) = self.role {
            return role;
        }
        match self.method {
            Method::Get => Role::Viewer,
            Method::Post | Method::Delete => Role::Editor,
        }
    }

    /// The names of its query parameters, with `tenant`, which every API
    /// path takes.
    pub fn param_names(&self) -> Vec<&'static str> {
        self.params
            .iter()
            .map(|p| p.name)
            .chain([TENANT.name])
            .collect()
    }
}

/// For admin tokens: the tenant to read.
pub const TENANT: Param = Param {
    name: "tenant",
    kind: "string",
    required: false,
    description: "The tenant to read: the token's own, or any for an admin token.",
};
/// The selection of `/api/v1/query` and `/api/v1/localize`.
pub const KIND: Param = Param {
    name: "kind",
    kind: "string",
    required: true,
    description: "span, metric, client, probe, service (every span of a service, per span.kind and deployment labels) or tenant (every span of every service, likewise).",
};
pub const NAME: Param = Param {
    name: "name",
    kind: "string",
    required: false,
    description: "The series name: operation, metric, client signal or probe.",
};
pub const SERVICE: Param = Param {
    name: "service",
    kind: "string",
    required: false,
    description: "The service (the app for client series).",
};
pub const FILTER: Param = Param {
    name: "filter",
    kind: "string",
    required: false,
    description: "Label matchers: key=\"value\",key!=\"value\".",
};
pub const FROM: Param = Param {
    name: "from",
    kind: "string",
    required: false,
    description: "Start: RFC 3339, unix ms, or now-<duration> (now-15m).",
};
pub const TO: Param = Param {
    name: "to",
    kind: "string",
    required: false,
    description: "End (exclusive), in the same forms as from; default now.",
};
pub const LIMIT: Param = Param {
    name: "limit",
    kind: "integer",
    required: false,
    description: "At most this many items, 1 to 1000 (default 100).",
};
pub const CURSOR: Param = Param {
    name: "cursor",
    kind: "string",
    required: false,
    description: "The next_cursor of the previous page.",
};

/// The OpenAPI 3.0 document of `endpoints`.
pub fn document(endpoints: &[&Endpoint]) -> Value {
    let mut paths = Map::new();
    for endpoint in endpoints {
        let mut parameters: Vec<Value> = endpoint
            .path_params
            .iter()
            .map(|(name, description)| {
                json!({"name": name, "in": "path", "required": true,
                       "description": description, "schema": {"type": "string"}})
            })
            .collect();
        parameters.extend(endpoint.params.iter().chain([&TENANT]).map(|p| {
            json!({"name": p.name, "in": "query", "required": p.required,
                   "description": p.description, "schema": {"type": p.kind}})
        }));
        let error = |description: &str| {
            json!({"description": description,
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
        };
        let mut operation = json!({
            "summary": endpoint.summary,
            "security": [{"bearer": []}],
            "parameters": parameters,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "400": error("A parameter or body field is unknown, given twice or invalid; the message names it."),
                "401": error("No token, or an unknown one."),
                "403": error("The token may not read that tenant, or its role may not make this change."),
                "404": error("Nothing has that id or name."),
                "422": error("The answer would pass a limit (api.max_points, api.query_timeout_ms)."),
                "503": error("The store is unavailable; retry later."),
            }
        });
        if let Some(schema) = endpoint.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
            });
        }
        let methods = paths
            .entry(endpoint.path.to_owned())
            .or_insert_with(|| json!({}));
        methods[endpoint.method.as_str()] = operation;
    }
    for (path, methods) in crate::prometheus::openapi_paths() {
        paths.insert(path, methods);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Vigil dashboard API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Services, queries, traces, SLOs, client health, probes, alerts and silences. Times are RFC 3339 or unix ms; durations are ms. The paths tagged prometheus are Prometheus's HTTP API, with its parameters, times (unix seconds) and answers."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Silence": silence_schema(),
                "Approval": {"type": "object", "additionalProperties": false,
                             "properties": {"by": {"type": "string", "description": "Who approves, for the run's record."}}},
                "Pause": {"type": "object", "required": ["paused"], "additionalProperties": false,
                          "properties": {"paused": {"type": "boolean"}, "by": {"type": "string"}}},
                "PrometheusError": {
                    "type": "object",
                    "required": ["status", "errorType", "error"],
                    "properties": {
                        "status": {"type": "string", "enum": ["error"]},
                        "errorType": {"type": "string", "enum": ["bad_data", "execution", "unavailable", "internal"]},
                        "error": {"type": "string"}
                    }
                },
                "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string", "enum": ["unauthenticated", "forbidden", "bad_parameter", "not_found", "conflict", "limit_exceeded", "unavailable", "internal"]},
                        "message": {"type": "string"},
                        "parameter": {"type": "string"},
                        "limit": {"type": "string"}
                    }
                }}
            }}
        }
    })
}

/// What `POST /api/v1/silences` takes.
fn silence_schema() -> Value {
    let time = json!({"oneOf": [{"type": "string"}, {"type": "integer"}],
                      "description": "RFC 3339, unix ms, or now±<duration> (now+2h)"});
    json!({
        "type": "object",
        "required": ["matchers", "ends_at", "created_by"],
        "additionalProperties": false,
        "properties": {
            "id": {"type": "string", "description": "Replaces this silence of the tenant; a new one when absent."},
            "matchers": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["name", "value"],
                "additionalProperties": false,
                "properties": {
                    "name": {"type": "string"},
                    "value": {"type": "string"},
                    "is_equal": {"type": "boolean", "default": true}
                }
            }},
            "starts_at": {"description": "Default now.", "allOf": [time.clone()]},
            "ends_at": time,
            "recurring": {
                "type": "object",
                "required": ["cron", "duration"],
                "additionalProperties": false,
                "description": "Mutes only in the windows that open at each time of cron (UTC) and last duration, between starts_at and ends_at.",
                "properties": {
                    "cron": {"type": "string", "example": "0 2 * * *"},
                    "duration": {"oneOf": [{"type": "string", "example": "90m"}, {"type": "integer"}]}
                }
            },
            "created_by": {"type": "string"},
            "comment": {"type": "string", "default": ""}
        }
    })
}
