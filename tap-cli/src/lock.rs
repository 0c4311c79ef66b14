//! The environment lock: two deploys (or a deploy and a destroy) of one environment never run at
//! once.
//!
//! The lock is an AWS-side atomic create: a CloudWatch Logs group `/tap/locks/{s}` whose creation
//! fails when it already exists, tagged with who holds it. It costs nothing while empty, lives in the
//! account like the rest of tap's state, and is deleted when the run ends. A crashed run leaves it
//! behind; `tap unlock` removes it after showing its holder.
//!
//! Its calls go through a client without the call counter, so "a no-op redeploy makes no mutating
//! call" speaks about the environment's resources, not this bookkeeping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::Client;
use tap_core::aws::AwsClients;
use tap_core::naming::{Tag, TAG_COMPONENT, TAG_ENVIRONMENT};
use tap_core::wait::{poll_until, Backoff};
use tap_core::{AwsError, StepError};

/// Tag carrying who holds the lock.
const TAG_HOLDER: &str = "tap:lock-holder";

/// Who holds a lock and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// `user@host pid N (command) run R`.
    pub holder: String,
    /// Seconds since it was taken.
    pub age_seconds: u64,
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error(
        "environment `{env}` is locked by {} (taken {} s ago); wait for that run to finish, pass \
         --lock-timeout SECONDS to wait for it, or run `tap --env {env} unlock` if it is stale",
        .holder.holder, .holder.age_seconds
    )]
    Held {
        /// Environment suffix.
        env: String,
        /// The holder.
        holder: LockHolder,
    },
    /// AWS refused a lock call.
    #[error("environment lock `{name}`: {source}")]
    Aws {
        /// Lock name.
        name: String,
        /// What AWS said.
        source: AwsError,
    },
}

/// The lock of one environment.
#[derive(Debug, Clone)]
pub struct EnvLock {
    logs: Client,
    env: String,
    name: String,
    holder: String,
}

impl EnvLock {
    /// The lock of environment `env`, to be held as `command` by this process.
    pub fn new(clients: &AwsClients, env: &str, command: &str) -> Self {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown-host".into());
        let nonce = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        EnvLock {
            logs: Client::new(&clients.sdk_config),
            env: env.into(),
            name: format!("/tap/locks/{env}"),
            holder: format!("{user}@{host} pid {} ({command}) run {nonce:x}", std::process::id()),
        }
    }

    fn aws(&self) -> impl FnOnce(AwsError) -> LockError + '_ {
        |source| LockError::Aws { name: self.name.clone(), source }
    }

    /// Takes the lock, waiting up to `timeout` for another holder to release it.
    pub async fn acquire(&self, timeout: Duration) -> Result<(), LockError> {
        if timeout.is_zero() {
            return self.try_acquire().await;
        }
        let waited =
            poll_until(&format!("the lock of environment `{}`", self.env), Backoff::with_timeout(timeout), || async {
                match self.try_acquire().await {
                    Ok(()) => Ok(Some(Ok(()))),
                    Err(LockError::Held { holder, .. }) => {
                        tracing::info!(holder = %holder.holder, "environment is locked; waiting");
                        Ok(None)
                    }
                    Err(e) => Ok(Some(Err(e))),
                }
            })
            .await;
        match waited {
            Ok(result) => result,
            Err(StepError::Timeout { .. }) => self.try_acquire().await,
            Err(other) => {
                Err(LockError::Aws { name: self.name.clone(), source: AwsError::new("LockWait", other.to_string()) })
            }
        }
    }

    async fn try_acquire(&self) -> Result<(), LockError> {
        let tags: Vec<Tag> = vec![
            (TAG_ENVIRONMENT.into(), self.env.clone()),
            (TAG_COMPONENT.into(), "lock".into()),
            (TAG_HOLDER.into(), self.holder.clone()),
        ];
        let mut req = self.logs.create_log_group().log_group_name(&self.name);
        for (k, v) in tags {
            req = req.tags(k, v);
        }
        match req.send().await.map_err(AwsError::from) {
            Ok(_) => {
                tracing::debug!(lock = %self.name, "lock taken");
                Ok(())
            }
            Err(e) if e.is("ResourceAlreadyExistsException") => match self.holder().await? {
                // Our own create whose response was lost: the lock is ours.
                Some(h) if h.holder == self.holder => Ok(()),
                Some(holder) => Err(LockError::Held { env: self.env.clone(), holder }),
                // Released between our create and our look: try once more.
                None => Box::pin(self.try_acquire()).await,
            },
            Err(e) => Err(self.aws()(e)),
        }
    }

    /// Who holds the lock, if anyone.
    pub async fn holder(&self) -> Result<Option<LockHolder>, LockError> {
        let groups = self
            .logs
            .describe_log_groups()
            .log_group_name_prefix(&self.name)
            .send()
            .await
            .map_err(AwsError::from)
            .map_err(self.aws())?;
        let Some(group) = groups.log_groups().iter().find(|g| g.log_group_name() == Some(self.name.as_str())) else {
            return Ok(None);
        };
        let tags =
            self.logs.list_tags_for_resource().resource_arn(lock_arn(group.arn().unwrap_or_default())).send().await;
        let holder = match tags {
            Ok(t) => t.tags().and_then(|t| t.get(TAG_HOLDER)).cloned(),
            Err(e) => {
                tracing::debug!(error = %AwsError::from(e), "could not read the lock's tags");
                None
            }
        };
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default();
        let age_seconds = group.creation_time().map(|t| ((now_ms - t).max(0) / 1000) as u64).unwrap_or_default();
        Ok(Some(LockHolder { holder: holder.unwrap_or_else(|| "an unknown holder".into()), age_seconds }))
    }

    /// Releases the lock (whoever holds it); a lock that is gone is fine.
    pub async fn release(&self) -> Result<(), LockError> {
        match self.logs.delete_log_group().log_group_name(&self.name).send().await.map_err(AwsError::from) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(self.aws()(e)),
        }
    }
}

/// Log group ARNs from DescribeLogGroups end in `:*`; the tagging API wants them without.
fn lock_arn(arn: &str) -> &str {
    arn.strip_suffix(":*").unwrap_or(arn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_suffix_is_stripped() {
        assert_eq!(
            lock_arn("arn:aws:logs:us-east-1:1:log-group:/tap/locks/dev:*"),
            "arn:aws:logs:us-east-1:1:log-group:/tap/locks/dev"
        );
    }

    #[test]
    fn held_error_names_the_holder_and_the_way_out() {
        let e = LockError::Held {
            env: "dev".into(),
            holder: LockHolder { holder: "ana@ci pid 7 (deploy)".into(), age_seconds: 12 },
        };
        let msg = e.to_string();
        assert!(
            msg.contains("ana@ci pid 7") && msg.contains("tap --env dev unlock") && msg.contains("--lock-timeout"),
            "{msg}"
        );
    }
}
