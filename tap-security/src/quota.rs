//! What the security step needs of the account's IAM role quota, and what is in use.
//!
//! Each role the plan creates (the task-execution role, a task role per service, the ECS
//! infrastructure role) adds one to "Roles per account", a global quota; [`usage`] reads the
//! account's role count with one `GetAccountSummary`.

use async_trait::async_trait;
use aws_sdk_iam::types::SummaryKeyType;
use tap_core::quota::{Need, QuotaKey, Usage};
use tap_core::{Action, AwsError, Change, StepError};

use crate::iam::SdkIam;

/// The IAM read that counts the account's roles.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait SecurityUsageApi: Send + Sync {
    /// The account's roles (`GetAccountSummary`, `Roles`).
    async fn count_roles(&self) -> Result<usize, AwsError>;
}

/// The usage reads over a client built from `session` (its counter and guard attached).
pub fn usage_api(session: &tap_core::aws::AwsSession) -> SdkIam {
    SdkIam(tap_core::sdk_client!(aws_sdk_iam, session))
}

#[async_trait]
impl SecurityUsageApi for SdkIam {
    async fn count_roles(&self) -> Result<usize, AwsError> {
        let out = self.0.get_account_summary().send().await?;
        Ok(out.summary_map().and_then(|m| m.get(&SummaryKeyType::Roles)).copied().unwrap_or(0).max(0) as usize)
    }
}

/// What the security step's planned `changes` add: each role it creates.
pub fn needs(changes: &[Change]) -> Vec<Need> {
    let roles: Vec<String> = changes
        .iter()
        .filter(|c| c.action == Action::Create)
        .filter(|c| c.resource.strip_prefix("security/role/").is_some_and(|id| !id.contains('/')))
        .map(|c| c.resource.clone())
        .collect();
    match roles.is_empty() {
        true => vec![],
        false => vec![Need::new(QuotaKey::IamRoles, roles.len() as f64, roles)],
    }
}

/// The account's roles, when [`QuotaKey::IamRoles`] is in `touched`.
pub async fn usage(
    api: &dyn SecurityUsageApi,
    touched: &[(QuotaKey, Option<String>)],
) -> Result<Vec<Usage>, StepError> {
    if !touched.iter().any(|(k, _)| *k == QuotaKey::IamRoles) {
        return Ok(vec![]);
    }
    let n = api.count_roles().await.map_err(StepError::aws("quota/security", "GetAccountSummary"))?;
    Ok(vec![Usage { key: QuotaKey::IamRoles, zone: None, in_use: n as f64 }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn created_roles_are_needed_and_the_account_summary_counts_them() {
        let changes = vec![
            Change::create(crate::iam::EXECUTION_COMPONENT, "tap-task-execution-dev"),
            Change::create(crate::iam::task_component("frontend"), "tap-frontend-task-dev"),
            Change::update(crate::iam::task_component("api-gateway"), "tap-api-gateway-task-dev", vec![]),
            Change::create("security/sg/frontend", "tap-frontend-sg-dev"),
        ];
        let needs = needs(&changes);
        assert_eq!(needs.len(), 1);
        assert_eq!((needs[0].key, needs[0].amount), (QuotaKey::IamRoles, 2.0));
        let mut api = MockSecurityUsageApi::new();
        api.expect_count_roles().times(1).returning(|| Ok(998));
        let usage = usage(&api, &[(QuotaKey::IamRoles, None)]).await.unwrap();
        assert_eq!(usage[0].in_use, 998.0);
    }
}
