//! The SPEC's three services as `tap.toml` text, the one place the default platform's services
//! are written: [`Config::default`] reads them from here, the end-to-end harness and the bench
//! write their configs from here, and a test checks `tap.example.toml` against the defaults.

use super::*;

/// `frontend`: the listener's default action.
pub const FRONTEND: &str = r#"
[[services]]
name = "frontend"
cpu = 512
memory = 1024
port = 3000
environment = { NODE_ENV = "production", API_ENDPOINT = "http://{alb_dns}/api" }
route = { short_name = "fe", health_check_path = "/" }
"#;

/// `api-gateway`: routed on `/api/*`, reads both secrets, discovers Cloud Map instances.
pub const API_GATEWAY: &str = r#"
[[services]]
name = "api-gateway"
cpu = 1024
memory = 2048
port = 8080
environment = { PROCESSING_SERVICE_URL = "http://processing-service.{namespace}:9000" }
secrets = { DB_CREDENTIALS = "db-credentials", API_KEYS = "api-keys" }
route = { short_name = "api", path_pattern = "/api/*", priority = 10, health_check_path = "/health" }
permissions = ["discover-instances"]
"#;

/// `processing-service`: in Cloud Map, reached from `api-gateway` only.
pub const PROCESSING: &str = r#"
[[services]]
name = "processing-service"
cpu = 2048
memory = 4096
port = 9000
environment = { WORKER_THREADS = "4" }
secrets = { DB_CREDENTIALS = "db-credentials" }
discovery = true
allow_from = ["api-gateway"]
permissions = ["trade-data-bucket"]
"#;

/// The three, as one `tap.toml` fragment.
pub fn services_toml() -> String {
    [FRONTEND, API_GATEWAY, PROCESSING].concat()
}

/// The three, typed (what [`Config::default`] holds).
pub(super) fn services() -> Vec<ServiceSpec> {
    Figment::from(Toml::string(&services_toml()))
        .extract_inner("services")
        .expect("the built-in services are valid TOML of `[[services]]` (a unit test reads them)")
}
