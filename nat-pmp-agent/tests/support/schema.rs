//! The report schema (docs/report.schema.json): every live report the
//! suite reads from a real agent, and every replay report, is checked
//! against it with the `jsonschema` crate.

use std::sync::OnceLock;

use serde_json::Value;

/// The schema's validator, built once.
pub fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.schema.json");
        let text = std::fs::read_to_string(path).expect("reading docs/report.schema.json");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
    })
}

/// Panics naming every place `report` breaks the schema.
pub fn assert_valid(report: &Value) {
    let errors: Vec<String> = validator()
        .iter_errors(report)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not in the report schema (docs/report.schema.json): {errors:#?}\n{report:#}"
    );
}
