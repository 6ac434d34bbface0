//! Checks a JSON value against a schema of an OpenAPI 3.1 document, for
//! tests that hold what a service sends to what its document says. It
//! covers what the documents use — `$ref` to components, `allOf`,
//! `oneOf`/`anyOf`, `type` (one or a list), `enum`, `required`,
//! `properties`, `items`, `minimum`, `format` `uuid`/`date-time` — and is
//! strict: a property the schema does not name is an error unless
//! `additionalProperties` allows it, so a field sent but undocumented
//! fails the test.

use serde_json::Value;

/// Panics, naming the place and the rule, unless `instance` conforms to
/// `schema` (whose `$ref`s resolve in `document`).
pub fn assert_conforms(document: &Value, schema: &Value, instance: &Value) {
    if let Err(why) = check(document, schema, instance, "$") {
        panic!("{why}\nvalue: {instance}\nschema: {schema}");
    }
}

fn check(document: &Value, schema: &Value, instance: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .ok_or_else(|| format!("{at}: only local $refs: {reference}"))?;
        let target = document
            .pointer(pointer)
            .ok_or_else(|| format!("{at}: $ref {reference} resolves to nothing"))?;
        check(document, target, instance, at)?;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            check(document, part, instance, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let errors: Vec<String> = options
                .iter()
                .filter_map(|option| check(document, option, instance, at).err())
                .collect();
            if errors.len() == options.len() {
                return Err(format!("{at}: matches none of {key}: {errors:?}"));
            }
        }
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: a `type` that is neither a name nor a list")),
        };
        if !allowed.iter().any(|kind| is_of_type(instance, kind)) {
            return Err(format!("{at}: {instance} is not {allowed:?}"));
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(instance)
    {
        return Err(format!("{at}: {instance} is not one of {values:?}"));
    }
    if let (Some(minimum), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        instance.as_f64(),
    ) && n < minimum
    {
        return Err(format!("{at}: {n} is below {minimum}"));
    }
    if let (Some(format), Some(text)) = (
        schema.get("format").and_then(Value::as_str),
        instance.as_str(),
    ) {
        let ok = match format {
            "uuid" => uuid::Uuid::parse_str(text).is_ok(),
            "date-time" => {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .is_ok()
            }
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: {text:?} is not a {format}"));
        }
    }
    if let Some(object) = instance.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{at}: `{name}` is required"));
                }
            }
        }
        if let Some(properties) = properties {
            let extra_allowed = schema
                .get("additionalProperties")
                .is_some_and(|extra| extra != &Value::Bool(false));
            for (name, value) in object {
                match properties.get(name) {
                    Some(property) => check(document, property, value, &format!("{at}.{name}"))?,
                    None if extra_allowed => {}
                    None => return Err(format!("{at}: `{name}` is not in the schema")),
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), instance.as_array()) {
        for (index, item) in array.iter().enumerate() {
            check(document, items, item, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}

fn is_of_type(instance: &Value, kind: &str) -> bool {
    match kind {
        "null" => instance.is_null(),
        "boolean" => instance.is_boolean(),
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "number" => instance.is_number(),
        "integer" => instance.is_i64() || instance.is_u64(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document() -> Value {
        json!({"components": {"schemas": {"Data": {
            "type": "object",
            "required": ["user_id"],
            "properties": {
                "user_id": {"type": "string", "format": "uuid"},
                "role": {"type": ["string", "null"]},
            },
        }}}})
    }

    #[test]
    fn a_conforming_value_passes_and_each_broken_rule_is_named() {
        let schema = json!({"$ref": "#/components/schemas/Data"});
        let id = "0195f3c2-8f1e-7c2a-9d1b-4b7c1f3e2a10";
        let doc = document();
        assert!(check(&doc, &schema, &json!({"user_id": id, "role": null}), "$").is_ok());
        for (bad, rule) in [
            (json!({}), "required"),
            (json!({"user_id": "nope"}), "uuid"),
            (json!({"user_id": id, "role": 3}), "is not"),
            (json!({"user_id": id, "extra": 1}), "not in the schema"),
        ] {
            let why = check(&doc, &schema, &bad, "$").unwrap_err();
            assert!(why.contains(rule), "{bad}: {why}");
        }
    }
}
