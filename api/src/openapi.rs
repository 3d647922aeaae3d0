//! `GET /openapi.json`: one OpenAPI 3.1 document for the public contracts mecfed implements,
//! assembled from the vendored ETSI MEC and CAMARA files (`api/openapi/`), so that every
//! operation's parameters, bodies and responses are the published ones.
//!
//! [`FAMILIES`] lists, per file, the base path mecfed serves it under and the operations it
//! implements; the router serves exactly those (`api/tests/openapi.rs` checks both ways).
//! Each operation is copied with every component it refers to, transitively; components are
//! renamed with the family's prefix (the files share names such as `TimeStamp`), and each
//! operation's `security` becomes mecfed's OAuth 2.0 client-credentials scheme. Where a file
//! contradicts itself, a listed [`Erratum`] corrects the served copy. The extension endpoints
//! under `/mecfed/v1` are not in it yet.

use std::{collections::BTreeMap, sync::OnceLock};

use serde_json::{Map, Value, json};

/// One vendored file and what of it mecfed serves.
#[derive(Debug)]
pub struct Family {
    /// Prefix of its components in the document.
    pub prefix: &'static str,
    /// Where mecfed serves it.
    pub root: &'static str,
    /// The file's text.
    pub source: &'static str,
    /// Implemented operations: method and path within the file.
    pub operations: &'static [(&'static str, &'static str)],
}

/// Every implemented family.
pub const FAMILIES: &[Family] = &[
    Family {
        prefix: "eam_",
        root: crate::camara::EAM_ROOT,
        source: include_str!("../openapi/edge-application-management.yaml"),
        operations: &[
            ("post", "/apps"),
            ("get", "/apps"),
            ("get", "/apps/{appId}"),
            ("delete", "/apps/{appId}"),
            ("post", "/appinstances"),
            ("get", "/appinstances"),
            ("delete", "/appinstances/{appInstanceId}"),
            ("post", "/deployments"),
            ("get", "/deployments"),
            ("delete", "/deployments/{appDeploymentId}"),
            ("patch", "/deployments/{appDeploymentId}"),
            ("get", "/clusters"),
            ("get", "/edge-cloud-zones"),
        ],
    },
    Family {
        prefix: "sed_",
        root: crate::camara::SED_ROOT,
        source: include_str!("../openapi/simple-edge-discovery.yaml"),
        operations: &[("post", "/retrieve-closest-edge-cloud-zone")],
    },
    Family {
        prefix: "mec011as_",
        root: crate::mec::APP_SUPPORT_ROOT,
        source: include_str!("../openapi/MecAppSupportApi.yaml"),
        operations: &[
            ("get", "/applications/{appInstanceId}/subscriptions"),
            ("post", "/applications/{appInstanceId}/subscriptions"),
            (
                "get",
                "/applications/{appInstanceId}/subscriptions/{subscriptionId}",
            ),
            (
                "delete",
                "/applications/{appInstanceId}/subscriptions/{subscriptionId}",
            ),
            ("get", "/timing/timing_caps"),
            ("get", "/timing/current_time"),
            ("get", "/applications/{appInstanceId}/traffic_rules"),
            (
                "get",
                "/applications/{appInstanceId}/traffic_rules/{trafficRuleId}",
            ),
            (
                "put",
                "/applications/{appInstanceId}/traffic_rules/{trafficRuleId}",
            ),
            ("get", "/applications/{appInstanceId}/dns_rules"),
            ("get", "/applications/{appInstanceId}/dns_rules/{dnsRuleId}"),
            ("put", "/applications/{appInstanceId}/dns_rules/{dnsRuleId}"),
            ("post", "/applications/{appInstanceId}/confirm_termination"),
            ("post", "/applications/{appInstanceId}/confirm_ready"),
            ("post", "/registrations"),
            ("get", "/registrations/{appInstanceId}"),
            ("put", "/registrations/{appInstanceId}"),
            ("delete", "/registrations/{appInstanceId}"),
        ],
    },
    Family {
        prefix: "mec011sm_",
        root: crate::mec::service_mgmt::SERVICE_MGMT_ROOT,
        source: include_str!("../openapi/MecServiceMgmtApi.yaml"),
        operations: &[
            ("get", "/services"),
            ("get", "/services/{serviceId}"),
            ("get", "/transports"),
            ("get", "/applications/{appInstanceId}/services"),
            ("post", "/applications/{appInstanceId}/services"),
            ("get", "/applications/{appInstanceId}/services/{serviceId}"),
            ("put", "/applications/{appInstanceId}/services/{serviceId}"),
            (
                "delete",
                "/applications/{appInstanceId}/services/{serviceId}",
            ),
            ("get", "/applications/{appInstanceId}/subscriptions"),
            ("post", "/applications/{appInstanceId}/subscriptions"),
            (
                "get",
                "/applications/{appInstanceId}/subscriptions/{subscriptionId}",
            ),
            (
                "delete",
                "/applications/{appInstanceId}/subscriptions/{subscriptionId}",
            ),
        ],
    },
    Family {
        prefix: "mec013_",
        root: crate::mec::location::LOCATION_ROOT,
        source: include_str!("../openapi/LocationAPI.yaml"),
        operations: &[
            ("get", "/queries/distance"),
            ("get", "/queries/users"),
            ("get", "/queries/zones"),
            ("get", "/queries/zones/{zoneId}"),
            ("get", "/queries/zones/{zoneId}/accessPoints"),
            (
                "get",
                "/queries/zones/{zoneId}/accessPoints/{accessPointId}",
            ),
            ("get", "/subscriptions/area"),
            ("post", "/subscriptions/area"),
            ("get", "/subscriptions/area/{subscriptionId}"),
            ("put", "/subscriptions/area/{subscriptionId}"),
            ("delete", "/subscriptions/area/{subscriptionId}"),
            ("get", "/subscriptions/distance"),
            ("post", "/subscriptions/distance"),
            ("get", "/subscriptions/distance/{subscriptionId}"),
            ("put", "/subscriptions/distance/{subscriptionId}"),
            ("delete", "/subscriptions/distance/{subscriptionId}"),
            ("get", "/subscriptions/users"),
            ("post", "/subscriptions/users"),
            ("get", "/subscriptions/users/{subscriptionId}"),
            ("put", "/subscriptions/users/{subscriptionId}"),
            ("delete", "/subscriptions/users/{subscriptionId}"),
            ("get", "/subscriptions/zones"),
            ("post", "/subscriptions/zones"),
            ("get", "/subscriptions/zones/{subscriptionId}"),
            ("put", "/subscriptions/zones/{subscriptionId}"),
            ("delete", "/subscriptions/zones/{subscriptionId}"),
        ],
    },
    Family {
        prefix: "mec012_",
        root: crate::mec::rni::RNI_ROOT,
        source: include_str!("../openapi/RniAPI.yaml"),
        operations: &[
            ("get", "/queries/rab_info"),
            ("get", "/queries/plmn_info"),
            ("get", "/queries/layer2_meas"),
            ("get", "/subscriptions"),
            ("post", "/subscriptions"),
            ("get", "/subscriptions/{subscriptionId}"),
            ("put", "/subscriptions/{subscriptionId}"),
            ("delete", "/subscriptions/{subscriptionId}"),
        ],
    },
    Family {
        prefix: "mec021_",
        root: crate::mec::ams::AMS_ROOT,
        source: include_str!("../openapi/MEC021_AppMobilityService.yaml"),
        operations: &[
            ("get", "/app_mobility_services"),
            ("post", "/app_mobility_services"),
            ("get", "/app_mobility_services/{appMobilityServiceId}"),
            ("put", "/app_mobility_services/{appMobilityServiceId}"),
            ("delete", "/app_mobility_services/{appMobilityServiceId}"),
            (
                "post",
                "/app_mobility_services/{appMobilityServiceId}/deregister_task",
            ),
            ("get", "/subscriptions"),
            ("post", "/subscriptions"),
            ("get", "/subscriptions/{subscriptionId}"),
            ("put", "/subscriptions/{subscriptionId}"),
            ("delete", "/subscriptions/{subscriptionId}"),
            ("get", "/queries/adjacent_app_instances"),
        ],
    },
];

/// The name of mecfed's security scheme in the document.
pub const SECURITY_SCHEME: &str = "mecfedOAuth2";

/// A vendored file, parsed as published.
pub fn parse_verbatim(family: &Family) -> Value {
    serde_yaml::from_str(family.source).expect("the vendored OpenAPI files parse")
}

/// A vendored file, parsed, with its [`ERRATA`] applied.
pub fn parse(family: &Family) -> Value {
    let mut v = parse_verbatim(family);
    for e in ERRATA
        .iter()
        .filter(|e| e.prefixes.contains(&family.prefix))
    {
        (e.apply)(&mut v);
    }
    v
}

/// A correction of a published file whose schema contradicts its own text; applied to the
/// served document (each must still change its files: `api/tests/openapi.rs`).
pub struct Erratum {
    /// The families (by prefix) it corrects.
    pub prefixes: &'static [&'static str],
    /// What is wrong, and the correction.
    pub what: &'static str,
    /// Applies it; returns whether anything changed.
    pub apply: fn(&mut Value) -> bool,
}

fn walk(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>) -> bool) -> bool {
    let mut changed = false;
    match v {
        Value::Object(m) => {
            changed |= f(m);
            for x in m.values_mut() {
                changed |= walk(x, f);
            }
        }
        Value::Array(a) => {
            for x in a {
                changed |= walk(x, f);
            }
        }
        _ => {}
    }
    changed
}

/// The corrections mecfed applies.
pub const ERRATA: &[Erratum] = &[
    Erratum {
        prefixes: &["mec013_"],
        what: "path parameter `subscriptionId` (Path.SubscrId) is one path segment, the id at \
               the end of the subscription's href, yet declared `format: uri`, which no single \
               segment can hold: the format is dropped",
        apply: |v| {
            let p = &mut v["components"]["parameters"]["Path.SubscrId"]["schema"];
            p.as_object_mut()
                .is_some_and(|m| m.remove("format").is_some())
        },
    },
    Erratum {
        prefixes: &["mec011as_", "mec011sm_", "mec012_"],
        what: "`enum: [SEE_DESCRIPTION]` is a conversion placeholder; the permitted values are \
               in the description: the enum is dropped",
        apply: |v| {
            walk(v, &mut |m| {
                let placeholder = m.get("enum") == Some(&json!(["SEE_DESCRIPTION"]));
                placeholder && m.remove("enum").is_some()
            })
        },
    },
    Erratum {
        prefixes: &["mec011as_"],
        what: "CurrentTime.timeSourceStatus has `enum: [source]`; its description permits \
               TRACEABLE and NONTRACEABLE",
        apply: |v| {
            let e = &mut v["components"]["schemas"]["CurrentTime"]["properties"]["timeSourceStatus"]
                ["enum"];
            let fixed = json!(["TRACEABLE", "NONTRACEABLE"]);
            let changed = *e != fixed;
            *e = fixed;
            changed
        },
    },
    Erratum {
        prefixes: &["mec013_"],
        what: "response wrappers of GET /subscriptions/{distance,users}/{id} require a \
               capitalised key that is none of their properties (users has two alternatives): \
               such `required` entries are dropped",
        apply: |v| {
            walk(&mut v["paths"], &mut |m| {
                let Some(Value::Object(props)) = m.get("properties") else {
                    return false;
                };
                let props: Vec<String> = props.keys().cloned().collect();
                let Some(Value::Array(req)) = m.get_mut("required") else {
                    return false;
                };
                let before = req.len();
                req.retain(|r| r.as_str().is_some_and(|r| props.iter().any(|p| p == r)));
                req.len() != before
            })
        },
    },
    Erratum {
        prefixes: &["mec013_"],
        what: "UserInfo names its property `AccessPointId` but requires `accessPointId`, as \
               the GS names it: the property is `accessPointId`",
        apply: |v| {
            let Some(Value::Object(props)) =
                v["components"]["schemas"]["UserInfo"].get_mut("properties")
            else {
                return false;
            };
            match props.remove("AccessPointId") {
                Some(p) => {
                    props.insert("accessPointId".into(), p);
                    true
                }
                None => false,
            }
        },
    },
    Erratum {
        prefixes: &["eam_"],
        what: "EdgeCloudZones has `minItems: 1`, yet a status filter may match no zone and a \
               new federation has none: an empty list is answered",
        apply: |v| {
            v["components"]["schemas"]["EdgeCloudZones"]
                .as_object_mut()
                .is_some_and(|m| m.remove("minItems").is_some())
        },
    },
];

/// Rewrites every local component `$ref` in `v` to `prefix`ed names and records the
/// components it names in `wanted`.
fn rename_refs(v: &mut Value, prefix: &str, wanted: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(rest) = r.strip_prefix("#/components/")
                && let Some((kind, name)) = rest.split_once('/')
            {
                wanted.push((kind.to_string(), name.to_string()));
                *r = format!("#/components/{kind}/{prefix}{name}");
            }
            for x in m.values_mut() {
                rename_refs(x, prefix, wanted);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rename_refs(x, prefix, wanted)),
        _ => {}
    }
}

/// The operation `method path` of a parsed file, as it appears there.
pub fn operation<'a>(file: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    file.get("paths")?.get(path)?.get(method)
}

fn assemble() -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut components: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for fam in FAMILIES {
        let file = parse(fam);
        let mut wanted = Vec::new();
        for (method, path) in fam.operations {
            let item = &file["paths"][*path];
            let mut op = operation(&file, method, path)
                .unwrap_or_else(|| panic!("{method} {path} is not in the {} file", fam.prefix))
                .clone();
            // Path-level parameters apply to the operation.
            if let Some(Value::Array(shared)) = item.get("parameters") {
                let own = op
                    .as_object_mut()
                    .expect("an operation is an object")
                    .entry("parameters")
                    .or_insert_with(|| json!([]));
                if let Value::Array(own) = own {
                    own.extend(shared.iter().cloned());
                }
            }
            rename_refs(&mut op, fam.prefix, &mut wanted);
            op["security"] = json!([{ SECURITY_SCHEME: [] }]);
            paths
                .entry(format!("{}{path}", fam.root))
                .or_default()
                .insert((*method).to_string(), op);
        }
        // Components, transitively.
        let mut seen = std::collections::BTreeSet::new();
        while let Some((kind, name)) = wanted.pop() {
            if !seen.insert((kind.clone(), name.clone())) {
                continue;
            }
            let Some(mut c) = file["components"][&kind].get(&name).cloned() else {
                continue;
            };
            rename_refs(&mut c, fam.prefix, &mut wanted);
            components
                .entry(kind)
                .or_default()
                .insert(format!("{}{name}", fam.prefix), c);
        }
    }
    let mut comps: Map<String, Value> = components
        .into_iter()
        .map(|(k, v)| (k, Value::Object(v)))
        .collect();
    comps.insert(
        "securitySchemes".into(),
        json!({ SECURITY_SCHEME: {
            "type": "oauth2",
            "description": "OAuth 2.0 client credentials; tokens are EdDSA-signed JWTs",
            "flows": {"clientCredentials": {"tokenUrl": "/oauth2/token", "scopes": {}}},
        }}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "mecfed",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The ETSI MEC and CAMARA operations mecfed implements, as their \
                vendored OpenAPI files define them (components prefixed by family).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": comps,
    })
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(assemble)
}

pub(crate) async fn serve() -> axum::Json<&'static Value> {
    axum::Json(document())
}
