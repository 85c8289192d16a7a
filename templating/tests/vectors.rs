//! Every vector produced by Prefect 3.9.1's own `apply_values`, written by
//! `fixtures/generate_vectors.py`.

mod common;

use std::collections::HashMap;

use prefect_templating::apply_values;
use serde_json::Value;

const VECTORS: &str = include_str!("fixtures/prefect-templating-vectors.json");

#[test]
fn every_prefect_vector_passes() {
    let doc: Value = serde_json::from_str(VECTORS).expect("fixture is JSON");
    let vectors = doc["vectors"]
        .as_array()
        .expect("fixture has a vectors array");
    let dropped = serde_json::json!({"$dropped": true});

    let mut failures = Vec::new();
    for (i, vector) in vectors.iter().enumerate() {
        let values = vector["values"].as_object().expect("values is an object");
        let env: HashMap<String, String> = vector["env"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let lookup = |name: &str| env.get(name).cloned();

        let got = apply_values(&vector["template"], values, &lookup);
        let expected = &vector["expected"];
        let ok = match &got {
            None => *expected == dropped,
            Some(v) => v == expected,
        };
        if !ok {
            failures.push(format!(
                "#{i} template {}: expected {expected}, got {got:?}",
                vector["template"]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(vectors.len() > 30, "only {} vectors ran", vectors.len());
    println!("{} Prefect vectors passed", vectors.len());
}
