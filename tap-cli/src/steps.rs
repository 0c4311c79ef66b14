//! The steps `tap` runs. Each concern crate contributes one; the runner orders them by the outputs
//! they read and write.

use std::sync::Arc;

use tap_core::aws::AwsClients;
use tap_core::Step;

/// Every step of the platform, over real SDK clients.
pub fn all(clients: &AwsClients) -> Vec<Arc<dyn Step>> {
    let _ = clients;
    vec![
        // One line per concern crate, e.g.:
        // Arc::new(tap_network::NetworkStep::from_clients(clients)),
        Arc::new(tap_network::NetworkStep::from_clients(clients)),
        Arc::new(tap_security::SecurityStep::from_clients(clients)),
        Arc::new(tap_ingress::IngressStep::from_clients(clients)),
        Arc::new(tap_registry::RegistryStep::from_clients(clients)),
        Arc::new(tap_cluster::ClusterStep::from_clients(clients)),
        Arc::new(tap_discovery::DiscoveryStep::from_clients(clients)),
        Arc::new(tap_services::ServicesStep::from_clients(clients)),
    ]
}
