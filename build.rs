//! keyward's own protos are compiled by the `keyward-proto` crate. This
//! writes the descriptor set for Envoy's
//! `envoy.service.auth.v3.Authorization`, so that grpcurl can list and call
//! the ext_authz service through reflection. The Rust types come precompiled
//! from the `envoy-types` crate; its `.proto` sources ship inside that crate's
//! package, and are read from there rather than copied into this repository.
//! If they cannot be found, keyward still builds and serves ext_authz, only
//! without reflection for it (a `cargo:warning` says so).

use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// The Envoy file that defines the Authorization service.
const ENVOY_EXT_AUTHZ_PROTO: &str = "envoy/service/auth/v3/external_auth.proto";

/// Include directories inside envoy-types' `proto/` folder, for the imports
/// of the Envoy API files (validate, udpa/xds annotations, google.rpc, cel).
const ENVOY_INCLUDE_DIRS: [&str; 5] = [
    "data-plane-api",
    "googleapis",
    "protoc-gen-validate",
    "xds",
    "cel-spec/proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    write_envoy_descriptors(&out_dir)
}

/// Writes `envoy_ext_authz_descriptor.bin` (empty when Envoy's protos are not
/// found) and tells the crate where the protos are through the
/// `KEYWARD_ENVOY_PROTO_DIR` compile-time variable (tests use it to check
/// `examples/envoy/envoy.yaml` against Envoy's schema).
fn write_envoy_descriptors(out_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=KEYWARD_ENVOY_PROTO_DIR");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");
    let target = out_dir.join("envoy_ext_authz_descriptor.bin");
    let proto_dir = match find_envoy_proto_dir() {
        Ok(dir) => dir,
        Err(reason) => {
            println!(
                "cargo:warning=no reflection for envoy.service.auth.v3.Authorization: {reason}"
            );
            fs::write(&target, [])?;
            return Ok(());
        }
    };
    let includes: Vec<PathBuf> = ENVOY_INCLUDE_DIRS
        .iter()
        .map(|dir| proto_dir.join(dir))
        .collect();
    match protox::compile([ENVOY_EXT_AUTHZ_PROTO], &includes) {
        Ok(descriptors) => {
            fs::write(&target, prost::Message::encode_to_vec(&descriptors))?;
            println!(
                "cargo:rustc-env=KEYWARD_ENVOY_PROTO_DIR={}",
                proto_dir.display()
            );
        }
        Err(error) => {
            println!(
                "cargo:warning=no reflection for envoy.service.auth.v3.Authorization: cannot compile {}: {error}",
                proto_dir.display()
            );
            fs::write(&target, [])?;
        }
    }
    Ok(())
}

/// envoy-types' `proto/` folder: `KEYWARD_ENVOY_PROTO_DIR` if set, else the
/// crate's unpacked source in Cargo's registry, at the version Cargo.lock
/// pins (`$CARGO_HOME/registry/src/<index>/envoy-types-<version>/proto`).
fn find_envoy_proto_dir() -> Result<PathBuf, String> {
    if let Some(dir) = env::var_os("KEYWARD_ENVOY_PROTO_DIR") {
        let dir = PathBuf::from(dir);
        return if dir
            .join("data-plane-api")
            .join(ENVOY_EXT_AUTHZ_PROTO)
            .is_file()
        {
            Ok(dir)
        } else {
            Err(format!(
                "KEYWARD_ENVOY_PROTO_DIR={} has no data-plane-api/{ENVOY_EXT_AUTHZ_PROTO}",
                dir.display()
            ))
        };
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let lock = fs::read_to_string(manifest_dir.join("Cargo.lock"))
        .map_err(|e| format!("cannot read Cargo.lock: {e}"))?;
    let version = locked_version(&lock, "envoy-types")
        .ok_or("Cargo.lock does not pin envoy-types from a registry")?;
    let cargo_home = match env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env::var_os("HOME").ok_or("neither CARGO_HOME nor HOME is set")?)
            .join(".cargo"),
    };
    let registry_sources = cargo_home.join("registry").join("src");
    let indexes = fs::read_dir(&registry_sources)
        .map_err(|e| format!("cannot list {}: {e}", registry_sources.display()))?;
    for index in indexes.flatten() {
        let candidate = index
            .path()
            .join(format!("envoy-types-{version}"))
            .join("proto");
        if candidate
            .join("data-plane-api")
            .join(ENVOY_EXT_AUTHZ_PROTO)
            .is_file()
        {
            return Ok(candidate);
        }
    }
    Err(format!(
        "envoy-types-{version}/proto not found under {}; set KEYWARD_ENVOY_PROTO_DIR",
        registry_sources.display()
    ))
}

/// The version of a registry package in Cargo.lock (`[[package]]` blocks of
/// `name = "..."`, `version = "..."`, `source = "registry+..."`).
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let name_line = format!("name = \"{package}\"");
    lock.split("[[package]]").find_map(|block| {
        let mut lines = block.lines().map(str::trim);
        if !lines.clone().any(|line| line == name_line) {
            return None;
        }
        if !lines
            .clone()
            .any(|line| line.starts_with("source = \"registry+"))
        {
            return None;
        }
        lines.find_map(|line| {
            line.strip_prefix("version = \"")
                .and_then(|rest| rest.strip_suffix('"'))
                .map(str::to_owned)
        })
    })
}
