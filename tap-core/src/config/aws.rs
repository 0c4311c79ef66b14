//! How tap reaches AWS (`[aws]`): region, profile, endpoint, attempts, calls in flight and
//! patience with throttling.

use super::*;

/// AWS connection settings; credentials always come from the standard AWS chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsSettings {
    /// Region; the AWS chain (`AWS_REGION`, profile) decides when unset.
    pub region: Option<String>,
    /// Named profile of the shared AWS config files.
    pub profile: Option<String>,
    /// Endpoint override, e.g. a local emulator (`AWS_ENDPOINT_URL` works too).
    pub endpoint_url: Option<String>,
    /// Attempts per AWS call for errors other than throttling (standard retry mode: transient
    /// errors back off, up to 20 s between attempts). Throttled calls are paced and resent by the
    /// client-side rate limiter without spending attempts (`tap_core::throttle`).
    pub max_attempts: u32,
    /// Calls of one AWS service on the wire at once.
    pub max_in_flight: usize,
    /// How long one call may be kept throttled (paced and resent by the rate limiter) before the
    /// throttling answer counts as an attempt's failure.
    pub throttle_patience_seconds: u64,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            profile: None,
            endpoint_url: None,
            max_attempts: 12,
            max_in_flight: 16,
            throttle_patience_seconds: 600,
        }
    }
}
