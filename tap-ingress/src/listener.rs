//! The listener resource kind: HTTP :80 (forwarding, or redirecting to HTTPS when a certificate
//! is configured) and HTTPS :443, on the environment's load balancer, run by the resource engine
//! ([`tap_core::resource`]).
//!
//! - **diff**: protocol and default action, and for HTTPS the certificate and security policy,
//!   converged with one `ModifyListener` (the typed update is the wanted [`ListenerSpec`]).
//! - **find** (adoption after a create whose outcome is unknown, or `DuplicateListener`): the load
//!   balancer's listener on the same port. (`CreateListener` is idempotent on AWS, not on every
//!   emulator: it is never resent blindly.)
//! - **delete**: `DeleteListener`; the step deletes the :80/:443 listeners the config no longer
//!   wants through the engine.

use async_trait::async_trait;
use tap_core::resource::{ActionError, Deleted, Diff, During, Owner, Resource};
use tap_core::AwsError;

use crate::api::{ElbApi, ListenerSpec, ObservedListener};
use crate::{push_attr, show_actions};

/// What the config asks of one listener: its load balancer and its settings.
#[derive(Debug, Clone)]
pub struct ListenerWant {
    /// The load balancer it is on.
    pub load_balancer_arn: String,
    /// Port, protocol, certificate, policy, default action and tags.
    pub spec: ListenerSpec,
}

/// The listener kind over the ELBv2 seam.
pub struct ListenerKind<'a> {
    api: &'a dyn ElbApi,
}

impl<'a> ListenerKind<'a> {
    /// The kind over `api`.
    pub fn new(api: &'a dyn ElbApi) -> Self {
        ListenerKind { api }
    }
}

#[async_trait]
impl Resource for ListenerKind<'_> {
    type Desired = ListenerWant;
    type Observed = ObservedListener;
    /// The listener's wanted settings (`ModifyListener` sends them all).
    type Update = ListenerSpec;
    const CREATE: &'static str = "CreateListener";

    fn diff(&self, want: &ListenerWant, have: &ObservedListener) -> Result<Option<Diff<ListenerSpec>>, String> {
        let spec = &want.spec;
        let mut attrs = Vec::new();
        push_attr(
            &mut attrs,
            "protocol",
            have.protocol.as_deref() != Some(spec.protocol.as_str()),
            have.protocol.clone().unwrap_or_default(),
            spec.protocol.clone(),
        );
        let want_actions = vec![spec.default_action.clone()];
        push_attr(
            &mut attrs,
            "default_action",
            have.default_actions != want_actions,
            show_actions(&have.default_actions),
            show_actions(&want_actions),
        );
        if spec.protocol == "HTTPS" {
            push_attr(
                &mut attrs,
                "certificate",
                have.certificate_arn != spec.certificate_arn,
                have.certificate_arn.clone().unwrap_or_default(),
                spec.certificate_arn.clone().unwrap_or_default(),
            );
            push_attr(
                &mut attrs,
                "ssl_policy",
                have.ssl_policy != spec.ssl_policy,
                have.ssl_policy.clone().unwrap_or_default(),
                spec.ssl_policy.clone().unwrap_or_default(),
            );
        }
        Ok((!attrs.is_empty()).then(|| Diff::new(spec.clone(), attrs)))
    }

    /// Its load balancer's: found only on this environment's own load balancer.
    async fn owner(&self, _have: &ObservedListener, _env: &str) -> Result<Owner, ActionError> {
        Ok(Owner::This)
    }

    async fn find(&self, want: &ListenerWant) -> Result<Option<ObservedListener>, AwsError> {
        let listeners = self.api.list_listeners(&want.load_balancer_arn).await?;
        Ok(listeners.into_iter().find(|l| l.port == Some(want.spec.port)))
    }

    async fn create(&self, want: &ListenerWant) -> Result<ObservedListener, AwsError> {
        let spec = &want.spec;
        let arn = self.api.create_listener(&want.load_balancer_arn, spec).await?;
        Ok(ObservedListener {
            arn,
            port: Some(spec.port),
            protocol: Some(spec.protocol.clone()),
            certificate_arn: spec.certificate_arn.clone(),
            ssl_policy: spec.ssl_policy.clone(),
            default_actions: vec![spec.default_action.clone()],
        })
    }

    fn already_exists(&self, error: &AwsError) -> bool {
        error.is("DuplicateListener")
    }

    async fn update(&self, have: &ObservedListener, spec: &ListenerSpec) -> Result<ObservedListener, ActionError> {
        self.api.modify_listener(&have.arn, spec).await.during("ModifyListener")?;
        Ok(have.clone())
    }

    async fn delete(&self, have: &ObservedListener) -> Result<Deleted, ActionError> {
        self.api.delete_listener(&have.arn).await.during("DeleteListener")?;
        Ok(Deleted::Now)
    }
}
