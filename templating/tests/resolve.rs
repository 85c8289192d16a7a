//! Block document and variable passes (`resolve_block_document_references`, `resolve_variables`) against an
//! in-memory Prefect API.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use common::block_on;
use prefect_templating::{Lookup, LookupError, TemplateError, resolve_references};
use serde_json::{Value, json};

#[derive(Default)]
struct Api {
    by_id: HashMap<String, Value>,
    by_name: HashMap<(String, String), Value>,
    variables: HashMap<String, Value>,
    /// Names whose lookup fails with a transport error.
    broken: Vec<String>,
    calls: Mutex<HashMap<String, usize>>,
}

impl Api {
    fn new() -> Self {
        let mut api = Self::default();
        api.by_id
            .insert("id-1".into(), json!({"region": "eu-west", "size": 3}));
        for (slug, name, data) in [
            ("secret", "tok", json!({"value": "s3cr3t"})),
            (
                "json",
                "cfg",
                json!({"value": {"key": {"nested": "v"}, "list": [{"k": "first"}, 1], "values": "inner"}}),
            ),
            ("json", "num", json!({"value": 5})),
            (
                "webhook",
                "hook",
                json!({"url": "https://example.com", "method": "POST", "headers": {"a": "b"}}),
            ),
            ("json", "has-values", json!({"values": [1, 2]})),
        ] {
            api.by_name.insert((slug.into(), name.into()), data);
        }
        api.variables
            .insert("registry".into(), json!("registry.example.com/team"));
        api.variables.insert("cpu".into(), json!(2));
        api.variables.insert("flag".into(), json!(true));
        api.variables.insert("cfg".into(), json!({"a": [1, "x"]}));
        api.variables.insert("null_var".into(), Value::Null);
        api
    }

    fn count(&self, key: String) -> Result<(), LookupError> {
        if self.broken.iter().any(|b| key.ends_with(b.as_str())) {
            return Err(LookupError::new(format!(
                "connection reset while reading {key}"
            )));
        }
        let mut calls = self
            .calls
            .lock()
            .map_err(|_| LookupError::new("poisoned"))?;
        *calls.entry(key).or_default() += 1;
        Ok(())
    }

    fn calls(&self) -> HashMap<String, usize> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Lookup for Api {
    async fn block_document_by_id(&self, id: &str) -> Result<Option<Value>, LookupError> {
        self.count(format!("id:{id}"))?;
        Ok(self.by_id.get(id).cloned())
    }
    async fn block_document_by_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Option<Value>, LookupError> {
        self.count(format!("block:{slug}/{name}"))?;
        Ok(self
            .by_name
            .get(&(slug.to_owned(), name.to_owned()))
            .cloned())
    }
    async fn variable(&self, name: &str) -> Result<Option<Value>, LookupError> {
        self.count(format!("var:{name}"))?;
        Ok(self.variables.get(name).cloned())
    }
}

fn resolve(api: &Api, template: Value) -> Result<Value, TemplateError> {
    block_on(resolve_references(template, api))
}

#[test]
fn ref_objects_become_block_data() {
    let api = Api::new();
    let got = resolve(
        &api,
        json!({"cfg": {"$ref": {"block_document_id": "id-1"}}, "list": [{"$ref": {"block_document_id": "id-1"}}]}),
    );
    assert_eq!(
        got.ok(),
        Some(
            json!({"cfg": {"region": "eu-west", "size": 3}, "list": [{"region": "eu-west", "size": 3}]})
        )
    );
    assert_eq!(api.calls().get("id:id-1"), Some(&1), "cached per call");

    // A falsy id is not a reference: the object is walked like any other.
    let got = resolve(
        &api,
        json!({"$ref": {"block_document_id": ""}, "x": "{{ prefect.variables.cpu }}"}),
    );
    assert_eq!(
        got.ok(),
        Some(json!({"$ref": {"block_document_id": ""}, "x": 2}))
    );

    let err = resolve(&api, json!({"a": {"$ref": {"block_document_id": "gone"}}})).err();
    assert!(
        matches!(&err, Some(TemplateError::BlockDocumentNotFound { id }) if id == "gone"),
        "{err:?}"
    );
    let err = resolve(&api, json!({"$ref": "id-1"})).err();
    assert!(
        matches!(
            err,
            Some(TemplateError::InvalidBlockReference { found: "a str" })
        ),
        "{err:?}"
    );
}

#[test]
fn whole_string_block_placeholder_keeps_the_type() {
    let api = Api::new();
    let cases = [
        ("{{ prefect.blocks.secret.tok }}", json!("s3cr3t")),
        ("{{prefect.blocks.json.num}}", json!(5)),
        (
            "{{ prefect.blocks.json.cfg }}",
            json!({"key": {"nested": "v"}, "list": [{"k": "first"}, 1], "values": "inner"}),
        ),
        ("{{ prefect.blocks.json.cfg.key }}", json!({"nested": "v"})),
        ("{{ prefect.blocks.json.cfg.key.nested }}", json!("v")),
        ("{{ prefect.blocks.json.cfg.list[0].k }}", json!("first")),
        // A key path starting with the `value` key addresses it; "values" is a key inside it.
        ("{{ prefect.blocks.json.cfg.value.key.nested }}", json!("v")),
        (
            "{{ prefect.blocks.json.cfg.value[key].nested }}",
            json!("v"),
        ),
        ("{{ prefect.blocks.json.cfg.values }}", json!("inner")),
        ("{{ prefect.blocks.secret.tok.value }}", json!("s3cr3t")),
        (
            "{{ prefect.blocks.webhook.hook }}",
            json!({"url": "https://example.com", "method": "POST", "headers": {"a": "b"}}),
        ),
        (
            "{{ prefect.blocks.webhook.hook.url }}",
            json!("https://example.com"),
        ),
        ("{{ prefect.blocks.json.has-values.values[1] }}", json!(2)),
    ];
    for (template, expected) in cases {
        let got = resolve(&api, json!({"k": template}));
        assert_eq!(got.ok(), Some(json!({"k": expected})), "{template}");
    }
}

#[test]
fn embedded_block_placeholder_uses_str_and_leaves_other_placeholders() {
    let api = Api::new();
    let got = resolve(
        &api,
        json!([
            "{{ prefect.blocks.secret.tok }}/image:{{ tag }}",
            "n={{ prefect.blocks.json.num }} {{ prefect.blocks.json.num }} {{ $HOME }}",
            "{{ prefect.blocks.secret.tok }}{{ prefect.blocks.webhook.hook.url }}",
        ]),
    );
    assert_eq!(
        got.ok(),
        Some(json!([
            "s3cr3t/image:{{ tag }}",
            "n=5 5 {{ $HOME }}",
            "s3cr3thttps://example.com"
        ]))
    );
    assert_eq!(
        api.calls().get("block:secret/tok"),
        Some(&1),
        "cached per call"
    );
    assert_eq!(
        api.calls().get("block:json/num"),
        Some(&1),
        "cached per call"
    );

    let err = resolve(&api, json!("x-{{ prefect.blocks.webhook.hook.headers }}")).err();
    assert!(
        matches!(&err, Some(TemplateError::BlockValueNotEmbeddable { found: "a dict", placeholder, .. })
            if placeholder == "{{ prefect.blocks.webhook.hook.headers }}"),
        "{err:?}"
    );
}

#[test]
fn block_errors_name_the_block_and_placeholder() {
    let api = Api::new();
    let err = resolve(&api, json!({"t": "{{ prefect.blocks.northflank.prod }}"})).err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(
            "block 'northflank/prod' not found (from {{ prefect.blocks.northflank.prod }}); it may have been deleted"
                .to_owned()
        )
    );

    let err = resolve(&api, json!("{{ prefect.blocks.json.cfg.key.missing }}")).err();
    assert!(
        matches!(&err, Some(TemplateError::BlockKeyPathNotFound { slug, name, keypath, .. })
            if slug == "json" && name == "cfg" && keypath == "key.missing"),
        "{err:?}"
    );
    let err = resolve(&api, json!("{{ prefect.blocks.json.cfg.list[5] }}")).err();
    assert!(
        matches!(err, Some(TemplateError::BlockKeyPathNotFound { .. })),
        "{err:?}"
    );
    // Not a system block, so `.value` is an ordinary (missing) key.
    let err = resolve(&api, json!("{{ prefect.blocks.webhook.hook.value }}")).err();
    assert!(
        matches!(err, Some(TemplateError::BlockKeyPathNotFound { .. })),
        "{err:?}"
    );

    let fresh = Api::new();
    for malformed in ["{{ prefect.blocks.secret }}", "x {{ prefect.blocks. }}"] {
        let err = resolve(&fresh, json!(malformed)).err();
        assert!(
            matches!(err, Some(TemplateError::InvalidBlockPlaceholder { .. })),
            "{malformed}: {err:?}"
        );
    }
    assert!(
        fresh.calls().is_empty(),
        "malformed placeholders fail before any lookup"
    );
}

#[test]
fn first_error_in_document_order_wins() {
    let api = Api::new();
    let err = resolve(
        &api,
        json!([
            "{{ prefect.blocks.json.cfg.nope }}",
            "{{ prefect.blocks.gone.gone }}"
        ]),
    )
    .err();
    assert!(
        matches!(err, Some(TemplateError::BlockKeyPathNotFound { .. })),
        "{err:?}"
    );
}

#[test]
fn lookup_failures_are_passed_through_with_context() {
    let api = Api {
        broken: vec!["registry".into()],
        ..Api::new()
    };
    let err = resolve(&api, json!("{{ prefect.variables.registry }}")).err();
    let Some(TemplateError::Lookup { target, source }) = &err else {
        panic!("expected a lookup error, got {err:?}");
    };
    assert_eq!(
        target,
        "variable 'registry' (from {{ prefect.variables.registry }})"
    );
    assert!(source.to_string().contains("connection reset"));
}

#[test]
fn variables_whole_string_keep_type_and_missing_is_empty() {
    let api = Api::new();
    let got = resolve(
        &api,
        json!({
            "registry": "{{ prefect.variables.registry }}",
            "cpu": "{{prefect.variables.cpu}}",
            "cfg": "{{ prefect.variables.cfg }}",
            "null": "{{ prefect.variables.null_var }}",
            "missing": "{{ prefect.variables.nope }}",
            "list": ["{{ prefect.variables.nope }}", "{{ prefect.variables.flag }}"],
        }),
    );
    assert_eq!(
        got.ok(),
        Some(json!({
            "registry": "registry.example.com/team",
            "cpu": 2,
            "cfg": {"a": [1, "x"]},
            "null": null,
            "missing": "",
            "list": ["", true],
        }))
    );
}

#[test]
fn variables_embedded_use_str_and_missing_is_empty() {
    let api = Api::new();
    let got = resolve(
        &api,
        json!([
            "{{ prefect.variables.registry }}/etl:{{ tag }}",
            "cpu={{ prefect.variables.cpu }} flag={{ prefect.variables.flag }} cfg={{ prefect.variables.cfg }}",
            "[{{ prefect.variables.nope }}] {{ prefect.variables.null_var }}",
        ]),
    );
    assert_eq!(
        got.ok(),
        Some(json!([
            "registry.example.com/team/etl:{{ tag }}",
            "cpu=2 flag=True cfg={'a': [1, 'x']}",
            "[] None",
        ]))
    );
}

#[test]
fn each_variable_is_read_once_including_missing_ones() {
    let api = Api::new();
    let template = json!({
        "a": "{{ prefect.variables.cpu }}",
        "b": ["{{ prefect.variables.cpu }}-{{ prefect.variables.nope }}", "{{ prefect.variables.nope }}"],
        "c": {"d": "{{ prefect.variables.cpu }}"},
    });
    assert!(resolve(&api, template).is_ok());
    let calls = api.calls();
    assert_eq!(calls.get("var:cpu"), Some(&1));
    assert_eq!(calls.get("var:nope"), Some(&1));
}

#[test]
fn blocks_resolve_before_variables_and_inserted_values_are_not_re_resolved() {
    let mut api = Api::new();
    api.by_name.insert(
        ("json".into(), "tmpl".into()),
        json!({"value": "{{ prefect.variables.cpu }}"}),
    );
    api.variables
        .insert("indirect".into(), json!("{{ prefect.variables.cpu }}"));
    api.variables
        .insert("to_block".into(), json!("{{ prefect.blocks.secret.tok }}"));
    let got = resolve(
        &api,
        json!({
            "from_block": "{{ prefect.blocks.json.tmpl }}",
            "indirect": "{{ prefect.variables.indirect }}",
            "to_block": "{{ prefect.variables.to_block }}",
        }),
    );
    // Block data goes through the variables pass (Prefect runs it over the whole result); a variable's value
    // is not looked at again.
    assert_eq!(
        got.ok(),
        Some(json!({
            "from_block": 2,
            "indirect": "{{ prefect.variables.cpu }}",
            "to_block": "{{ prefect.blocks.secret.tok }}",
        }))
    );
}

#[test]
fn resolving_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let api = Api::new();
    let future = resolve_references(json!({}), &api);
    assert_send(&future);
    assert_eq!(block_on(future).ok(), Some(json!({})));
}
