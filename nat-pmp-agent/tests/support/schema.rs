//! The JSON schemas in docs/: every live report the suite reads from a real
//! agent, and every replay report, is checked against report.schema.json;
//! every `audit --json` against audit.schema.json; with the `jsonschema`
//! crate.

use std::sync::OnceLock;

use serde_json::Value;

/// The validator of docs/`name`.
fn load(name: &str) -> jsonschema::Validator {
    let path = format!("{}/../docs/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let schema: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{path} is not a valid JSON Schema: {e}"))
}

/// The report schema's validator, built once.
pub fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| load("report.schema.json"))
}

/// The audit schema's validator, built once.
pub fn audit_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| load("audit.schema.json"))
}

/// Panics naming every place `value` breaks the schema of `validator`.
fn assert_in(validator: &jsonschema::Validator, name: &str, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not in the schema (docs/{name}): {errors:#?}\n{value:#}"
    );
}

/// Panics naming every place `report` breaks the report schema.
pub fn assert_valid(report: &Value) {
    assert_in(validator(), "report.schema.json", report);
}

/// Panics naming every place `audit` breaks the audit schema.
pub fn assert_valid_audit(audit: &Value) {
    assert_in(audit_validator(), "audit.schema.json", audit);
}
