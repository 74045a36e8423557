//! `examples/envoy/envoy.yaml` against Envoy's own schema: the YAML is
//! decoded with the proto3 JSON mapping into `envoy.config.bootstrap.v3.
//! Bootstrap`, compiled at test time from the `.proto` files that ship in
//! the `envoy-types` crate (found by build.rs). Unknown fields, misspelled
//! enum values, wrong types and unresolvable `@type`s fail the decode, as
//! they fail Envoy's own config loading. Envoy's extra validation rules
//! (protoc-gen-validate) are not evaluated; the fields keyward depends on
//! are checked by hand below.

use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value as Json;
use yaml_rust2::{Yaml, YamlLoader};

const ENVOY_FILES: [&str; 5] = [
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
];

/// Same include folders as build.rs.
const INCLUDE_DIRS: [&str; 5] = [
    "data-plane-api",
    "googleapis",
    "protoc-gen-validate",
    "xds",
    "cel-spec/proto",
];

fn envoy_schema() -> DescriptorPool {
    // Set by build.rs when it finds the protos (it warns when it does not).
    let Some(proto_dir) = option_env!("KEYWARD_ENVOY_PROTO_DIR") else {
        panic!(
            "build.rs did not find envoy-types' .proto files (see its cargo:warning); \
             set KEYWARD_ENVOY_PROTO_DIR to the crate's proto/ folder"
        );
    };
    let includes: Vec<PathBuf> = INCLUDE_DIRS
        .iter()
        .map(|dir| Path::new(proto_dir).join(dir))
        .collect();
    let files = protox::compile(ENVOY_FILES, &includes).expect("Envoy's protos compile");
    DescriptorPool::from_file_descriptor_set(files).expect("a consistent descriptor pool")
}

fn yaml_to_json(yaml: &Yaml) -> Json {
    match yaml {
        Yaml::Real(text) => Json::from(text.parse::<f64>().expect("a YAML real")),
        Yaml::Integer(number) => Json::from(*number),
        Yaml::String(text) => Json::from(text.as_str()),
        Yaml::Boolean(flag) => Json::from(*flag),
        Yaml::Array(items) => Json::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(entries) => Json::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        Yaml::String(text) => text.clone(),
                        other => panic!("non-string YAML key {other:?}"),
                    };
                    (key, yaml_to_json(value))
                })
                .collect(),
        ),
        Yaml::Null => Json::Null,
        Yaml::Alias(_) | Yaml::BadValue => panic!("unsupported YAML: {yaml:?}"),
    }
}

fn read_example() -> Json {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/envoy/envoy.yaml");
    let text = std::fs::read_to_string(&path).expect("the example exists");
    let documents = YamlLoader::load_from_str(&text).expect("valid YAML");
    assert_eq!(documents.len(), 1, "one YAML document");
    yaml_to_json(&documents[0])
}

fn decode(pool: &DescriptorPool, json: &Json) -> Result<DynamicMessage, serde_json::Error> {
    let bootstrap = pool
        .get_message_by_name("envoy.config.bootstrap.v3.Bootstrap")
        .expect("Bootstrap is in the pool");
    DynamicMessage::deserialize(bootstrap, json.clone())
}

/// Back to JSON (typed_config `Any`s unpacked), for plain assertions.
fn to_json(message: &DynamicMessage) -> Json {
    serde_json::to_value(message).expect("serializes")
}

fn get<'a>(json: &'a Json, path: &[&str]) -> &'a Json {
    path.iter()
        .fold(json, |value, key| match key.parse::<usize>() {
            Ok(index) => &value[index],
            Err(_) => &value[*key],
        })
}

#[test]
fn the_envoy_example_decodes_as_an_envoy_bootstrap() {
    let pool = envoy_schema();
    let example = read_example();
    let bootstrap = decode(&pool, &example).expect("envoy.yaml fits Envoy's v3 schema");
    let json = to_json(&bootstrap);

    let manager = get(
        &json,
        &[
            "staticResources",
            "listeners",
            "0",
            "filterChains",
            "0",
            "filters",
            "0",
        ],
    );
    assert_eq!(
        manager["name"],
        "envoy.filters.network.http_connection_manager"
    );
    let filters = get(manager, &["typedConfig", "httpFilters"])
        .as_array()
        .expect("http filters");
    assert_eq!(filters.len(), 2);
    assert_eq!(filters[0]["name"], "envoy.filters.http.ext_authz");
    assert_eq!(
        filters[1]["name"], "envoy.filters.http.router",
        "the router comes last"
    );

    let ext_authz = &filters[0]["typedConfig"];
    assert_eq!(
        ext_authz["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
    );
    assert_eq!(ext_authz["transportApiVersion"], "V3");
    // proto3 JSON omits false, so the field must be absent or false.
    assert!(matches!(
        ext_authz.get("failureModeAllow"),
        None | Some(Json::Bool(false))
    ));
    assert_eq!(get(ext_authz, &["grpcService", "timeout"]), "0.250s");
    // Envoy sends its service token with every Check (the hot path needs
    // one wherever management does, and only a trusted token may state
    // client addresses).
    let metadata = get(ext_authz, &["grpcService", "initialMetadata"])
        .as_array()
        .expect("initial_metadata is a list");
    assert!(
        metadata.iter().any(|entry| entry["key"] == "authorization"
            && entry["value"]
                .as_str()
                .is_some_and(|value| value.starts_with("Bearer kwt_"))),
        "{metadata:?}"
    );
    let authz_cluster = get(ext_authz, &["grpcService", "envoyGrpc", "clusterName"]);

    let clusters = get(&json, &["staticResources", "clusters"])
        .as_array()
        .expect("clusters");
    let keyward = clusters
        .iter()
        .find(|c| c["name"] == *authz_cluster)
        .expect("the ext_authz cluster is defined");
    assert!(
        !get(
            keyward,
            &[
                "typedExtensionProtocolOptions",
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicitHttpConfig",
                "http2ProtocolOptions"
            ]
        )
        .is_null(),
        "gRPC to keyward needs HTTP/2"
    );
    let endpoint = get(
        keyward,
        &[
            "loadAssignment",
            "endpoints",
            "0",
            "lbEndpoints",
            "0",
            "endpoint",
            "address",
            "socketAddress",
        ],
    );
    let default_listen: std::net::SocketAddr = keyward::config::DEFAULT_LISTEN.parse().unwrap();
    assert_eq!(endpoint["address"], default_listen.ip().to_string());
    assert_eq!(endpoint["portValue"], default_listen.port());
    assert_eq!(
        get(
            keyward,
            &["healthChecks", "0", "grpcHealthCheck", "serviceName"]
        ),
        keyward::ext_authz::SERVICE_NAME
    );

    // Envoy appends its peer to x-forwarded-for, and trusts as many hops
    // as the profile it fronts: keyward counts hops like Envoy.
    let connection_manager = &manager["typedConfig"];
    assert_eq!(connection_manager["useRemoteAddress"], true);
    let envoy_hops = connection_manager
        .get("xffNumTrustedHops")
        .map_or(0, |hops| hops.as_u64().expect("a number"));
    let carboncopy = keyward::config::Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/carboncopy.toml"),
    )
    .expect("the profile loads");
    assert_eq!(
        u64::from(carboncopy.http.trusted_proxy_hops),
        envoy_hops,
        "xff_num_trusted_hops and http.trusted_proxy_hops take the same number"
    );

    // The route sends everything to a cluster that exists.
    let route_cluster = get(
        manager,
        &[
            "typedConfig",
            "routeConfig",
            "virtualHosts",
            "0",
            "routes",
            "0",
            "route",
            "cluster",
        ],
    );
    assert!(clusters.iter().any(|c| c["name"] == *route_cluster));
}

#[test]
fn the_schema_check_rejects_what_envoy_would_reject() {
    let pool = envoy_schema();
    let mut typo = read_example();
    let ext_authz = &mut typo["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"];
    ext_authz["failure_mode_alow"] = Json::Bool(false);
    assert!(decode(&pool, &typo).is_err(), "a misspelled field");

    let mut bad_enum = read_example();
    bad_enum["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"]["transport_api_version"] = Json::from("V4");
    assert!(decode(&pool, &bad_enum).is_err(), "an unknown enum value");

    let mut bad_type = read_example();
    bad_type["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0]["typed_config"]["@type"] =
        Json::from("type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuth");
    assert!(decode(&pool, &bad_type).is_err(), "an unknown @type");

    let mut bad_duration = read_example();
    bad_duration["static_resources"]["clusters"][0]["connect_timeout"] = Json::from("1 second");
    assert!(
        decode(&pool, &bad_duration).is_err(),
        "a malformed duration"
    );

    // And the untouched example still decodes, so the failures above are the edits'.
    assert!(decode(&pool, &read_example()).is_ok());
}
