//! `infra/template.yaml` against the code it deploys:
//!
//! - each function's environment (Globals plus its own) is exactly the set of variables its
//!   configuration reads, recorded by passing a recording lookup to the same `from_lookup` the
//!   function's `main` uses (a variable the code reads but the template does not set, or the
//!   reverse, fails);
//! - secrets come from Secrets Manager or SSM, never as text in the template;
//! - the table is the one `DynamoStore::create_table` makes (created on moto and described);
//! - the queue, its dead-letter queue and the event source are configured as the poller needs;
//! - API Gateway routes every path the api function serves (the documented routes and the
//!   dashboard) to a function that serves it, the dashboard and `/v1/analytics` to the api
//!   function.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use flowgate_api::config::{Function, FunctionConfig};
use flowgate_poller::PollerConfig;
use serde_norway::Value;

fn template() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let text = std::fs::read_to_string(&path).expect("read infra/template.yaml");
    serde_norway::from_str(&text).expect("infra/template.yaml is YAML")
}

fn get<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    let mut at = value;
    for key in path {
        at = at
            .get(*key)
            .unwrap_or_else(|| panic!("the template has no {}", path.join(".")));
    }
    at
}

/// The resource whose `Metadata.BuildProperties.Binary` is `binary`.
fn function<'a>(template: &'a Value, binary: &str) -> (&'a str, &'a Value) {
    let resources = get(template, &["Resources"])
        .as_mapping()
        .expect("Resources is a map");
    resources
        .iter()
        .find(|(_, r)| {
            r.get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
                == Some(binary)
        })
        .map(|(k, v)| (k.as_str().expect("logical id"), v))
        .unwrap_or_else(|| panic!("no function in the template builds {binary}"))
}

/// Globals' variables overlaid with the function's own.
fn environment(template: &Value, binary: &str) -> BTreeMap<String, Value> {
    let mut vars = BTreeMap::new();
    let globals = get(
        template,
        &["Globals", "Function", "Environment", "Variables"],
    );
    let (_, resource) = function(template, binary);
    let own = resource
        .get("Properties")
        .and_then(|p| p.get("Environment"))
        .and_then(|e| e.get("Variables"));
    for map in [Some(globals), own].into_iter().flatten() {
        for (k, v) in map.as_mapping().expect("Variables is a map") {
            vars.insert(k.as_str().expect("name").to_string(), v.clone());
        }
    }
    vars
}

/// Every name `read` asks its lookup for.
fn names_read(read: impl FnOnce(&dyn Fn(&str) -> Option<String>)) -> BTreeSet<String> {
    let seen = RefCell::new(BTreeSet::new());
    read(&|name: &str| {
        seen.borrow_mut().insert(name.to_string());
        None
    });
    seen.into_inner()
}

fn function_reads(function: Function) -> BTreeSet<String> {
    names_read(|get| {
        let _ = FunctionConfig::from_lookup(function, get);
    })
}

#[test]
fn each_function_environment_is_exactly_what_its_config_reads() {
    let template = template();
    let cases = [
        (
            "flowgate-poller",
            names_read(|get| {
                let _ = PollerConfig::from_lookup(get);
            }),
        ),
        ("flowgate-api", function_reads(Function::Api)),
        ("flowgate-approvals", function_reads(Function::Approvals)),
        ("flowgate-triggers", function_reads(Function::Triggers)),
    ];
    for (binary, read) in cases {
        let set: BTreeSet<String> = environment(&template, binary).into_keys().collect();
        let unset: Vec<_> = read.difference(&set).collect();
        let unread: Vec<_> = set.difference(&read).collect();
        assert!(
            unset.is_empty() && unread.is_empty(),
            "{binary}: read by its config but not set in the template: {unset:?}; set in the \
             template but never read: {unread:?}"
        );
        assert!(set.contains("FLOWGATE_TABLE"), "{binary}: {set:?}");
    }
    // The functions differ where their routes do (least privilege starts with the
    // environment): only approvals holds the Slack signing secret, only triggers the hook
    // secrets, triggers no API keys.
    let api = function_reads(Function::Api);
    let approvals = function_reads(Function::Approvals);
    let triggers = function_reads(Function::Triggers);
    assert!(approvals.contains("FLOWGATE_SLACK_SIGNING_SECRET"));
    assert!(!api.contains("FLOWGATE_SLACK_SIGNING_SECRET"));
    assert!(triggers.contains("FLOWGATE_HOOK_SECRETS") && !api.contains("FLOWGATE_HOOK_SECRETS"));
    assert!(!triggers.contains("FLOWGATE_API_KEY_HASHES"));
    assert!(
        api.contains("FLOWGATE_SCHEDULE_GROUP") && !approvals.contains("FLOWGATE_SCHEDULE_GROUP")
    );
}

/// A secret's value must come from Secrets Manager (a dynamic reference resolved at deploy
/// time) or from an SSM-typed parameter; a literal or a plain parameter would put it in the
/// template or the deploy command line.
#[test]
fn secrets_come_from_secrets_manager_or_ssm() {
    let template = template();
    let parameters = get(&template, &["Parameters"]);
    let secret = |name: &str| {
        [
            "_SECRET",
            "_SECRETS",
            "_TOKEN",
            "_API_KEY",
            "_LINK_KEY",
            "_KEY_HASHES",
            "_AGENT_URL",
        ]
        .iter()
        .any(|s| name.ends_with(s))
    };
    let mut checked = 0;
    for binary in [
        "flowgate-api",
        "flowgate-poller",
        "flowgate-approvals",
        "flowgate-triggers",
    ] {
        for (name, value) in environment(&template, binary) {
            if !secret(&name) {
                continue;
            }
            checked += 1;
            let from_store = match &value {
                Value::Tagged(tagged) if tagged.tag == "!Sub" => tagged
                    .value
                    .as_str()
                    .is_some_and(|s| s.starts_with("{{resolve:secretsmanager:")),
                Value::Tagged(tagged) if tagged.tag == "!Ref" => {
                    let parameter = tagged.value.as_str().expect("!Ref names a parameter");
                    parameters
                        .get(parameter)
                        .and_then(|p| p.get("Type"))
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.starts_with("AWS::SSM::Parameter::Value<"))
                }
                _ => false,
            };
            assert!(
                from_store,
                "{binary}: {name} must be a Secrets Manager dynamic reference or an SSM \
                 parameter, not {value:?}"
            );
        }
    }
    assert!(checked >= 20, "only {checked} secret variables seen");
}

#[test]
fn the_queue_and_event_source_are_what_the_poller_needs() {
    let template = template();
    let (_, poller) = function(&template, "flowgate-poller");
    let timeout = get(poller, &["Properties", "Timeout"])
        .as_u64()
        .expect("poller Timeout");
    let queue = get(&template, &["Resources", "WorkQueue", "Properties"]);
    let visibility = get(queue, &["VisibilityTimeout"])
        .as_u64()
        .expect("VisibilityTimeout");
    assert!(
        visibility >= 6 * timeout,
        "visibility {visibility} s < 6 x poller timeout {timeout} s"
    );
    assert_eq!(
        get(queue, &["MaximumMessageSize"]).as_u64(),
        Some(1_048_576)
    );
    assert_eq!(
        get(queue, &["RedrivePolicy", "maxReceiveCount"]).as_u64(),
        Some(u64::from(flowgate_shared::ports::MAX_RECEIVES))
    );
    let events = get(poller, &["Properties", "Events"])
        .as_mapping()
        .expect("Events");
    let sqs = events
        .values()
        .find(|e| e.get("Type").and_then(Value::as_str) == Some("SQS"))
        .expect("an SQS event source");
    let responses = get(sqs, &["Properties", "FunctionResponseTypes"]);
    assert_eq!(
        responses.as_sequence().map(|s| s.len()),
        Some(1),
        "{responses:?}"
    );
    assert_eq!(responses[0].as_str(), Some("ReportBatchItemFailures"));
    // The alarm watches the dead-letter queue.
    let alarm = get(&template, &["Resources", "DeadLetterAlarm", "Properties"]);
    assert_eq!(
        get(alarm, &["MetricName"]).as_str(),
        Some("ApproximateNumberOfMessagesVisible")
    );
}

/// The template's table, compared with what `DynamoStore::create_table` creates on moto and
/// DescribeTable reports: attribute definitions, key schema, every GSI with its projection,
/// and the TTL attribute.
#[tokio::test]
async fn the_table_is_the_one_the_store_creates() {
    use aws_sdk_dynamodb::types::{KeySchemaElement, ProjectionType};
    use flowgate_shared::adapters::dynamodb::DynamoStore;

    let template = template();
    let props = get(&template, &["Resources", "Table", "Properties"]);
    assert_eq!(
        get(props, &["BillingMode"]).as_str(),
        Some("PAY_PER_REQUEST")
    );
    assert_eq!(
        get(
            props,
            &[
                "PointInTimeRecoverySpecification",
                "PointInTimeRecoveryEnabled"
            ]
        )
        .as_bool(),
        Some(true)
    );
    let keys = |list: &Value| -> Vec<(String, String)> {
        list.as_sequence()
            .expect("a key schema")
            .iter()
            .map(|k| {
                (
                    get(k, &["AttributeName"])
                        .as_str()
                        .expect("name")
                        .to_string(),
                    get(k, &["KeyType"]).as_str().expect("type").to_string(),
                )
            })
            .collect()
    };
    let attrs: BTreeSet<(String, String)> = get(props, &["AttributeDefinitions"])
        .as_sequence()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| {
            (
                get(a, &["AttributeName"])
                    .as_str()
                    .expect("name")
                    .to_string(),
                get(a, &["AttributeType"])
                    .as_str()
                    .expect("type")
                    .to_string(),
            )
        })
        .collect();
    type Gsi = (Vec<(String, String)>, String, BTreeSet<String>);
    let gsis: BTreeMap<String, Gsi> = get(props, &["GlobalSecondaryIndexes"])
        .as_sequence()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .map(|g| {
            (
                get(g, &["IndexName"]).as_str().expect("name").to_string(),
                (
                    keys(get(g, &["KeySchema"])),
                    get(g, &["Projection", "ProjectionType"])
                        .as_str()
                        .expect("projection")
                        .to_string(),
                    get(g, &["Projection"])
                        .get("NonKeyAttributes")
                        .and_then(Value::as_sequence)
                        .map(|a| {
                            a.iter()
                                .map(|v| v.as_str().expect("attribute name").to_string())
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
            )
        })
        .collect();
    let ttl = get(props, &["TimeToLiveSpecification", "AttributeName"])
        .as_str()
        .expect("TTL attribute");

    let config = flowgate_shared::adapters::aws_config(None).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let name = format!("flowgate-template-{}", uuid::Uuid::new_v4().simple());
    DynamoStore::create_table(&client, &name)
        .await
        .expect("create the table on moto (scripts/test starts it)");
    let described = client
        .describe_table()
        .table_name(&name)
        .send()
        .await
        .expect("DescribeTable")
        .table
        .expect("a table");
    let pairs = |k: &[KeySchemaElement]| -> Vec<(String, String)> {
        k.iter()
            .map(|e| {
                (
                    e.attribute_name().to_string(),
                    e.key_type().as_str().to_string(),
                )
            })
            .collect()
    };
    let created_attrs: BTreeSet<(String, String)> = described
        .attribute_definitions()
        .iter()
        .map(|a| {
            (
                a.attribute_name().to_string(),
                a.attribute_type().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(attrs, created_attrs, "attribute definitions");
    assert_eq!(
        keys(get(props, &["KeySchema"])),
        pairs(described.key_schema())
    );
    let created_gsis: BTreeMap<String, Gsi> = described
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (
                g.index_name().expect("index name").to_string(),
                (
                    pairs(g.key_schema()),
                    g.projection()
                        .and_then(|p| p.projection_type())
                        .unwrap_or(&ProjectionType::All)
                        .as_str()
                        .to_string(),
                    g.projection()
                        .map(|p| p.non_key_attributes().iter().cloned().collect())
                        .unwrap_or_default(),
                ),
            )
        })
        .collect();
    assert_eq!(gsis, created_gsis, "global secondary indexes");
    let created_ttl = client
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .expect("DescribeTimeToLive")
        .time_to_live_description
        .and_then(|d| d.attribute_name)
        .expect("a TTL attribute");
    assert_eq!(ttl, created_ttl);
    client
        .delete_table()
        .table_name(&name)
        .send()
        .await
        .expect("delete the table");
}

#[test]
fn every_function_is_built_by_cargo_lambda_for_arm64() {
    let template = template();
    let globals = get(&template, &["Globals", "Function"]);
    assert_eq!(get(globals, &["Runtime"]).as_str(), Some("provided.al2023"));
    assert_eq!(get(globals, &["Architectures"])[0].as_str(), Some("arm64"));
    assert_eq!(
        get(globals, &["LoggingConfig", "LogFormat"]).as_str(),
        Some("JSON")
    );
    for binary in [
        "flowgate-api",
        "flowgate-poller",
        "flowgate-approvals",
        "flowgate-triggers",
    ] {
        let (id, resource) = function(&template, binary);
        assert_eq!(
            get(resource, &["Metadata", "BuildMethod"]).as_str(),
            Some("rust-cargolambda"),
            "{id}"
        );
        // Its own role, so its permissions are its own.
        assert!(
            matches!(get(resource, &["Properties", "Role"]), Value::Tagged(t) if t.tag == "!GetAtt"),
            "{id} has no role of its own"
        );
    }
}

/// One `AWS::ApiGatewayV2::Route`: method (`ANY` too), path pattern, and the integration's
/// logical id.
struct Route {
    method: String,
    pattern: Vec<String>,
    integration: String,
}

fn routes(template: &Value) -> Vec<Route> {
    let resources = get(template, &["Resources"])
        .as_mapping()
        .expect("Resources is a map");
    resources
        .values()
        .filter(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::ApiGatewayV2::Route"))
        .map(|r| {
            let key = get(r, &["Properties", "RouteKey"])
                .as_str()
                .expect("RouteKey");
            let (method, path) = key.split_once(' ').expect("METHOD /path");
            // Target: !Sub "integrations/${ApiIntegration}" (a tagged scalar in the YAML).
            let target = format!("{:?}", get(r, &["Properties", "Target"]));
            let integration = target
                .split("${")
                .nth(1)
                .and_then(|rest| rest.split('}').next())
                .unwrap_or_else(|| panic!("{key}: no integration in {target}"))
                .to_string();
            Route {
                method: method.to_string(),
                pattern: segments(path),
                integration,
            }
        })
        .collect()
}

fn segments(path: &str) -> Vec<String> {
    path.trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// How well `route` matches a request, the way API Gateway's HTTP API ranks routes (a literal
/// segment beats a `{variable}`, which beats a greedy `{proxy+}`; a method beats `ANY`), or
/// `None` when it does not match at all.
fn rank(route: &Route, method: &str, path: &[String]) -> Option<(usize, usize, bool)> {
    if route.method != method && route.method != "ANY" {
        return None;
    }
    let mut literal = 0;
    let mut variable = 0;
    for (i, part) in route.pattern.iter().enumerate() {
        if part.starts_with('{') && part.ends_with("+}") {
            // Greedy: at least one more segment, and it must be the last part.
            return (path.len() > i).then_some((literal, variable, route.method == method));
        }
        let segment = path.get(i)?;
        if part.starts_with('{') {
            variable += 1;
        } else if part == segment {
            literal += 1;
        } else {
            return None;
        }
    }
    (route.pattern.len() == path.len()).then_some((
        literal,
        variable + 1000,
        route.method == method,
    ))
}

/// The integration API Gateway would send `method path` to.
fn routed_to(routes: &[Route], method: &str, path: &str) -> Option<String> {
    let path = segments(path);
    routes
        .iter()
        .filter_map(|r| rank(r, method, &path).map(|rank| (rank, r)))
        .max_by_key(|(rank, _)| *rank)
        .map(|(_, r)| r.integration.clone())
}

#[test]
fn api_gateway_routes_every_path_the_api_serves_and_the_dashboard_to_the_api_function() {
    let routes = routes(&template());
    // The matcher itself: specific beats greedy, a method beats ANY.
    assert_eq!(
        routed_to(&routes, "GET", "/v1/runs").as_deref(),
        Some("ApiIntegration")
    );
    assert_eq!(
        routed_to(&routes, "GET", "/v1/approvals").as_deref(),
        Some("ApprovalsIntegration")
    );
    assert_eq!(
        routed_to(&routes, "POST", "/v1/approvals/x/decision").as_deref(),
        Some("ApprovalsIntegration")
    );
    assert_eq!(
        routed_to(&routes, "POST", "/hooks/gh").as_deref(),
        Some("TriggersIntegration")
    );
    assert_eq!(routed_to(&routes, "GET", "/nowhere"), None);
    assert_eq!(
        routed_to(&routes, "POST", "/"),
        None,
        "the dashboard is GET only"
    );

    let doc = serde_json::to_value(flowgate_api::openapi()).expect("openapi");
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            let method = method.to_uppercase();
            let target = routed_to(&routes, &method, &concrete);
            assert!(
                target.is_some(),
                "{method} {path} is served but API Gateway has no route for it"
            );
            checked += 1;
        }
    }
    assert!(checked > 25, "{checked}");
    let analytics = routed_to(&routes, "GET", "/v1/analytics");
    assert_eq!(analytics.as_deref(), Some("ApiIntegration"));
    for path in flowgate_api::dashboard::paths() {
        assert_eq!(
            routed_to(&routes, "GET", &path).as_deref(),
            Some("ApiIntegration"),
            "the dashboard's {path} must reach the api function"
        );
    }
}
