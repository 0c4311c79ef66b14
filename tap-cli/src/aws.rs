//! Loading the AWS config: the standard chain (env, profile, SSO, IMDS…) with the settings'
//! overrides and tap-core's retry and timeout policy, into the [`AwsSession`] every concern crate
//! builds its own clients from. Only the binary loads `aws-config`, so a concern crate reused
//! alone compiles none of it.

use aws_config::{BehaviorVersion, Region};
use tap_core::aws::AwsSession;
use tap_core::config::AwsSettings;
use tap_core::throttle::LimiterSettings;

/// The session of a run, from the standard AWS chain with `settings`' region, profile and
/// endpoint overrides.
pub async fn load(settings: &AwsSettings) -> AwsSession {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(AwsSession::retry_config(settings))
        .timeout_config(AwsSession::timeout_config());
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let limits = LimiterSettings {
        max_in_flight: settings.max_in_flight,
        patience: std::time::Duration::from_secs(settings.throttle_patience_seconds),
        ..LimiterSettings::default()
    };
    AwsSession::with_limits(loader.load().await, limits)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_config::retry::RetryConfig;
    use tap_core::aws::WriteGuard;

    use super::*;

    /// A session for a loopback port nothing listens on, without retries.
    async fn session_of_nowhere() -> AwsSession {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .retry_config(RetryConfig::disabled())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new("k", "s", None, None, "test"))
            .load()
            .await;
        AwsSession::new(config)
    }

    #[tokio::test]
    async fn the_guard_refuses_writes_before_sending_and_lets_reads_through() {
        let session = session_of_nowhere().await;
        let guard = WriteGuard::new();
        let read_only: aws_sdk_ec2::Client = tap_core::sdk_client!(aws_sdk_ec2, &session.read_only(&guard));

        // A read goes out (and fails: nothing listens), and trips nothing.
        let read = read_only.describe_vpcs().send().await.unwrap_err();
        assert!(matches!(read, aws_sdk_ec2::error::SdkError::DispatchFailure(_)), "{read:?}");
        assert_eq!(guard.attempted(), None);

        // A write is refused without being sent or counted, and the guard remembers it.
        let write = read_only.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap_err();
        let mut chain = String::new();
        let mut cause: Option<&dyn std::error::Error> = Some(&write);
        while let Some(e) = cause {
            chain.push_str(&format!("{e}: "));
            cause = e.source();
        }
        assert!(chain.contains("not sent: this pass is read-only"), "{chain}");
        assert_eq!(guard.attempted().as_deref(), Some("EC2:CreateVpc"));
        let tripped = tokio::time::timeout(Duration::from_secs(1), guard.tripped()).await.unwrap();
        assert_eq!(tripped, "EC2:CreateVpc");
        let counts = session.counter().snapshot();
        assert_eq!((counts.total, counts.mutating), (1, 0), "only the read was counted: {counts:?}");

        // The session without the guard is untouched: its write is sent (and fails to connect).
        let logs: aws_sdk_cloudwatchlogs::Client = tap_core::sdk_client!(aws_sdk_cloudwatchlogs, &session);
        let sent = logs.create_log_group().log_group_name("g").send().await.unwrap_err();
        assert!(matches!(sent, aws_sdk_cloudwatchlogs::error::SdkError::DispatchFailure(_)), "{sent:?}");
        assert_eq!(session.counter().snapshot().mutating, 1, "the unguarded write was counted");
    }
}
