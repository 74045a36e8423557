//! keyward's integration tests: one binary, one module per area. Every test
//! runs the real server on 127.0.0.1:0 with the generated client, on a real
//! SQLite file and (through `on_both_databases!`) on a real PostgreSQL.

// The shared kit, under the name every test module uses for it.
use keyward_testkit as helpers;
pub(crate) use keyward_testkit::on_both_databases;

mod abuse;
mod attacks;
mod authenticate;
mod checksummed_keys;
mod client_packages;
mod config_checks;
mod ext_authz;
mod faults;
mod hot_path;
mod lifecycle_audit;
mod lifecycle_metadata;
mod lifecycle_rotation;
mod load_race;
mod management;
mod management_auth;
mod management_http;
mod metrics;
mod operations;
mod operator_cli;
mod product_carboncopy;
mod product_cryptorobot;
mod product_csboard;
mod product_tradejournal;
mod profiles;
mod quotas;
mod revisions;
mod revocation;
mod serving;
mod settings_page;
mod shared_limits;
mod storage_conformance;
mod tls;
mod watch;
