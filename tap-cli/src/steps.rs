//! The steps `tap` runs. Each concern crate contributes one; the runner orders them by the outputs
//! they read and write.

use std::sync::Arc;

use tap_core::aws::AwsSession;
use tap_core::Step;

/// Every step of the platform, each over real SDK clients it builds from `session`.
pub fn all(session: &AwsSession) -> Vec<Arc<dyn Step>> {
    vec![
        // One line per concern crate, e.g.:
        // Arc::new(tap_network::NetworkStep::from_session(session)),
        Arc::new(tap_network::NetworkStep::from_session(session)),
        Arc::new(tap_security::SecurityStep::from_session(session)),
        Arc::new(tap_ingress::IngressStep::from_session(session)),
        Arc::new(tap_registry::RegistryStep::from_session(session)),
        Arc::new(tap_cluster::ClusterStep::from_session(session)),
        Arc::new(tap_discovery::DiscoveryStep::from_session(session)),
        Arc::new(tap_alarms::AlarmsStep::from_session(session)),
        Arc::new(tap_services::ServicesStep::from_session(session)),
    ]
}
