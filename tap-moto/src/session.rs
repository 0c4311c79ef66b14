//! The AWS session of the concern crates' runnable examples (`examples/<crate>_alone.rs`): against
//! the emulator `AWS_ENDPOINT_URL` names (the end-to-end tests' one), or a `moto_server` started here.

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use tap_core::aws::AwsSession;

use crate::Moto;

/// A session in `us-east-1` with test credentials: against `AWS_ENDPOINT_URL` when it is set
/// (the SDK reads it), else against a `moto_server` started here, which lives as long as the
/// returned [`Moto`].
pub async fn example_session() -> std::io::Result<(AwsSession, Option<Moto>)> {
    let moto = match std::env::var_os("AWS_ENDPOINT_URL") {
        Some(_) => None,
        None => Some(Moto::start()?),
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "example"));
    if let Some(moto) = &moto {
        loader = loader.endpoint_url(moto.endpoint());
    }
    Ok((AwsSession::new(loader.load().await), moto))
}
