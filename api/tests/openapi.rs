//! `/openapi.json` against the vendored contracts: every operation is the published one, no
//! reference dangles, and the router serves exactly the documented operations of each file.

mod support;

use mecfed_api::openapi::{
    ERRATA, FAMILIES, SECURITY_SCHEME, document, operation, parse, parse_verbatim,
};
use serde_json::{Value, json};
use support::api;

/// `v` with every `$ref` to a `prefix`ed component named as in its file.
fn unprefixed(v: &Value, prefix: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let x = match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => {
                            Value::String(r.replacen(&format!("/{prefix}"), "/", 1))
                        }
                        _ => unprefixed(x, prefix),
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| unprefixed(x, prefix)).collect()),
        other => other.clone(),
    }
}

fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn every_documented_operation_is_the_vendored_one() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut count = 0;
    for fam in FAMILIES {
        let file = parse(fam);
        for (method, path) in fam.operations {
            let mut ours = doc["paths"][format!("{}{path}", fam.root)][*method].clone();
            assert_eq!(ours["security"], json!([{ SECURITY_SCHEME: [] }]));
            let ours_obj = ours.as_object_mut().unwrap();
            ours_obj.remove("security");
            let mut theirs = operation(&file, method, path).unwrap().clone();
            let theirs_obj = theirs.as_object_mut().unwrap();
            theirs_obj.remove("security");
            if let Some(Value::Array(shared)) = file["paths"][*path].get("parameters") {
                let p = theirs_obj.entry("parameters").or_insert_with(|| json!([]));
                p.as_array_mut().unwrap().extend(shared.iter().cloned());
            }
            assert_eq!(
                unprefixed(&ours, fam.prefix),
                theirs,
                "{method} {}{path}",
                fam.root
            );
            count += 1;
        }
        // Every component copied is the file's own.
        for (kind, items) in doc["components"].as_object().unwrap() {
            for (name, c) in items.as_object().unwrap() {
                if let Some(orig) = name.strip_prefix(fam.prefix) {
                    assert_eq!(
                        unprefixed(c, fam.prefix),
                        file["components"][kind][orig],
                        "{kind}/{name}"
                    );
                }
            }
        }
    }
    assert_eq!(count, 90);
    let mut all = Vec::new();
    refs(doc, &mut all);
    for r in all {
        let path = r.strip_prefix("#/").expect("local refs only");
        let mut at = doc;
        for seg in path.split('/') {
            at = &at[seg];
        }
        assert!(!at.is_null(), "dangling {r}");
    }
}

/// A concrete path for a template (`{x}` becomes `x`).
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "x" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_operations() {
    let api = api();
    let (s, _, served) = api.send("GET", "/openapi.json", None, None).await;
    assert_eq!(s, 200, "open to everyone");
    assert_eq!(&served, document());
    let routed = |status: u16, body: &Value| {
        let detail = body["detail"].as_str().or(body["message"].as_str());
        status != 405 && detail != Some("no such resource")
    };
    for fam in FAMILIES {
        let file = parse(fam);
        for (path, item) in file["paths"].as_object().unwrap() {
            for method in ["get", "post", "put", "patch", "delete"] {
                if item.get(method).is_none() {
                    continue;
                }
                let uri = format!("{}{}", fam.root, concrete(path));
                let (s, v) = api
                    .call(&method.to_uppercase(), &uri, Some(&api.admin), None)
                    .await;
                let documented = fam.operations.contains(&(method, path.as_str()));
                assert_eq!(routed(s, &v), documented, "{method} {uri}: {s} {v}");
            }
        }
    }
}

#[test]
fn the_vendored_files_are_the_published_ones_and_every_erratum_still_applies() {
    let specs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/specs");
    let names = [
        ("eam_", "camara/edge-application-management.yaml"),
        ("sed_", "camara/simple-edge-discovery.yaml"),
        ("mec011as_", "etsi-mec/MecAppSupportApi.yaml"),
        ("mec011sm_", "etsi-mec/MecServiceMgmtApi.yaml"),
        ("mec013_", "etsi-mec/LocationAPI.yaml"),
        ("mec012_", "etsi-mec/RniAPI.yaml"),
        ("mec021_", "etsi-mec/MEC021_AppMobilityService.yaml"),
    ];
    for fam in FAMILIES {
        let (_, file) = names.iter().find(|(p, _)| *p == fam.prefix).unwrap();
        let published = std::fs::read_to_string(specs.join(file))
            .unwrap_or_else(|e| panic!("{file} beside the project: {e}"));
        assert_eq!(fam.source, published, "{file} is vendored verbatim");
    }
    for e in ERRATA {
        for prefix in e.prefixes {
            let fam = FAMILIES.iter().find(|f| f.prefix == *prefix).unwrap();
            let mut v = parse_verbatim(fam);
            assert!((e.apply)(&mut v), "{prefix}: no longer needed: {}", e.what);
            assert!(!(e.apply)(&mut v), "{prefix}: applies once: {}", e.what);
        }
    }
}
