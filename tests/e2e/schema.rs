//! A small JSON Schema validator: the subset docs/events.schema.json uses (type, const,
//! enum, required, properties, additionalProperties: false, minimum, allOf, if/then,
//! format: date-time). Enough to hold every `--json` event to the documented schema.

use serde_json::Value;

/// Every way `value` breaks `schema`, as `path: why` lines.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, "$", &mut errors);
    errors
}

fn check(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    for (keyword, rule) in schema {
        match keyword.as_str() {
            "type" => {
                let allowed: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => vec![],
                };
                if !allowed.iter().any(|t| has_type(value, t)) {
                    errors.push(format!("{at}: expected {allowed:?}, got {value}"));
                }
            }
            "const" if value != rule => errors.push(format!("{at}: expected {rule}, got {value}")),
            "enum" if !rule.as_array().is_some_and(|a| a.contains(value)) => {
                errors.push(format!("{at}: {value} is not one of {rule}"));
            }
            "minimum" => {
                if let (Some(min), Some(v)) = (rule.as_f64(), value.as_f64())
                    && v < min
                {
                    errors.push(format!("{at}: {v} < {min}"));
                }
            }
            "format" if rule == "date-time" && !is_date_time(value) => {
                errors.push(format!("{at}: {value} is not an RFC 3339 date-time"));
            }
            "required" => {
                if let (Some(names), Some(object)) = (rule.as_array(), value.as_object()) {
                    for name in names.iter().filter_map(Value::as_str) {
                        if !object.contains_key(name) {
                            errors.push(format!("{at}: `{name}` is required"));
                        }
                    }
                }
            }
            "properties" => {
                if let (Some(props), Some(object)) = (rule.as_object(), value.as_object()) {
                    for (name, sub) in props {
                        if let Some(v) = object.get(name) {
                            check(sub, v, &format!("{at}.{name}"), errors);
                        }
                    }
                }
            }
            "additionalProperties" if rule == &Value::Bool(false) => {
                let known = schema.get("properties").and_then(Value::as_object);
                if let Some(object) = value.as_object() {
                    for name in object.keys() {
                        if !known.is_some_and(|k| k.contains_key(name)) {
                            errors.push(format!("{at}: unexpected `{name}`"));
                        }
                    }
                }
            }
            "allOf" => {
                for sub in rule.as_array().into_iter().flatten() {
                    check(sub, value, at, errors);
                }
            }
            "if" => {
                let mut failed = Vec::new();
                check(rule, value, at, &mut failed);
                if failed.is_empty()
                    && let Some(then) = schema.get("then")
                {
                    check(then, value, at, errors);
                }
            }
            _ => {}
        }
    }
}

fn is_date_time(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

#[test]
fn the_validator_catches_what_the_schema_forbids() {
    let schema: Value =
        serde_json::from_str(include_str!("../../docs/events.schema.json")).unwrap();
    let good = serde_json::json!({"schema": 1, "time": "2026-11-24T04:05:12.345Z", "event": "step", "host": "a", "step": "upload", "status": "ok", "elapsed_ms": 3, "data": {"bytes": 10}});
    assert_eq!(validate(&schema, &good), Vec::<String>::new());
    for bad in [
        serde_json::json!({"schema": 2, "time": "2026-11-24T04:05:12Z", "event": "info", "message": "x"}),
        serde_json::json!({"schema": 1, "time": "yesterday", "event": "info", "message": "x"}),
        serde_json::json!({"schema": 1, "time": "2026-11-24T04:05:12Z", "event": "step", "host": "a"}),
        serde_json::json!({"schema": 1, "time": "2026-11-24T04:05:12Z", "event": "info", "message": "x", "extra": 1}),
        serde_json::json!({"schema": 1, "time": "2026-11-24T04:05:12Z", "event": "result", "status": "ok", "message": "", "elapsed_ms": 1, "data": {"exit_class": "maybe", "result": {}}}),
        serde_json::json!({"schema": 1, "time": "2026-11-24T04:05:12Z", "event": "step", "host": "a", "step": "upload", "status": "ok", "elapsed_ms": -1}),
    ] {
        assert!(!validate(&schema, &bad).is_empty(), "{bad}");
    }
}
