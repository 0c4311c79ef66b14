//! Creates that happen exactly once, even when AWS's answer is lost or is a 5xx.
//!
//! A create whose response never arrived (connection reset, timeout) may or may not have taken
//! effect; so may one AWS answered with a 5xx (`500 InternalError`, `503 ServiceUnavailable`: the
//! request can have been carried out and the answer still say it failed). The SDK's standard retry
//! mode would send it again, which for a call without an idempotency token (`CreateVpc`,
//! `AllocateAddress`, …) makes a second resource, and for a named one (`CreateSubnet`,
//! `CreateTargetGroup`, …) fails with "already exists" or a conflict. So:
//!
//! - [`NoBlindRetry`], attached to such an operation (`.customize().config_override(…)`), stops the
//!   SDK from resending it when the outcome is unknown (no answer, or a 5xx answer); throttling and
//!   other errors AWS answered with a 4xx are still retried by the standard retry mode as usual.
//! - [`create_or_adopt`] then looks the resource up (by its tags or name, with a short bounded poll
//!   for eventual consistency) and adopts what it finds; only when nothing is there does it create
//!   again. An "already exists" answer is handled the same way: the resource found is adopted (the
//!   lookup only returns resources of this environment), anything else stays an error.
//!
//! ```
//! use tap_core::idempotent::{create_or_adopt, Recovery};
//! use tap_core::AwsError;
//! # async fn run() -> Result<(), AwsError> {
//! let id = create_or_adopt(
//!     "network/vpc",
//!     Recovery::default(),
//!     |e: &AwsError| e.is("InvalidVpc.Duplicate"),
//!     || async { Ok::<_, AwsError>(None::<String>) }, // find by tags
//!     || async { Ok("vpc-1".to_owned()) },             // create, tagged
//! )
//! .await?;
//! assert_eq!(id, "vpc-1");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{ClassifyRetry, RetryAction, RetryClassifierPriority};

use crate::error::AwsError;
use crate::wait::Backoff;

/// A retry classifier that forbids the SDK to resend a call whose outcome is unknown: no answer
/// came back (the response was lost, the connection failed, the attempt timed out), or AWS
/// answered with a 5xx status — either way the call may have taken effect. It runs after the
/// SDK's own classifiers and only overrides them in those cases; throttling and other errors AWS
/// answered with a 4xx keep their standard retries.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBlindRetry;

impl ClassifyRetry for NoBlindRetry {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(e)) = ctx.output_or_error() else { return RetryAction::NoActionIndicated };
        let no_answer = e.is_response_error() || e.is_timeout_error() || e.as_connector_error().is_some();
        let server_error = ctx.response().is_some_and(|r| r.status().is_server_error());
        if no_answer || server_error {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "tap::NoBlindRetry"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// How [`create_or_adopt`] recovers.
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    /// Creates tried at most, the first included.
    pub attempts: u32,
    /// After a create with an unknown outcome, how long to keep looking for the resource before
    /// creating again (AWS's read-after-create is eventually consistent).
    pub lookup: Duration,
    /// First delay between lookups (doubling).
    pub lookup_delay: Duration,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery { attempts: 4, lookup: Duration::from_secs(3), lookup_delay: Duration::from_millis(100) }
    }
}

/// Creates a resource exactly once: runs `create`; when its outcome is unknown
/// ([`AwsError::outcome_unknown`]: no answer, or a 5xx answer) or AWS says it already exists (`exists`), looks it up with
/// `find` (which must return only resources of this environment, found by tags or name) and adopts
/// it; creates again only when nothing is found, at most [`Recovery::attempts`] times. Any other
/// error is returned as it is.
pub async fn create_or_adopt<T, F, FFut, C, CFut>(
    what: &str,
    recovery: Recovery,
    exists: impl Fn(&AwsError) -> bool,
    mut find: F,
    mut create: C,
) -> Result<T, AwsError>
where
    F: FnMut() -> FFut,
    FFut: Future<Output = Result<Option<T>, AwsError>>,
    C: FnMut() -> CFut,
    CFut: Future<Output = Result<T, AwsError>>,
{
    let mut attempt = 1;
    loop {
        let err = match create().await {
            Ok(created) => return Ok(created),
            Err(e) => e,
        };
        if exists(&err) {
            tracing::info!(resource = what, error = %err, "already exists; adopting it if it is ours");
            return match find().await? {
                Some(found) => Ok(found),
                None => Err(err),
            };
        }
        if !err.outcome_unknown() {
            return Err(err);
        }
        tracing::warn!(resource = what, error = %err, attempt, "the create's outcome is unknown; looking it up before creating again");
        if let Some(found) = look_up(recovery, &mut find).await? {
            tracing::info!(resource = what, "the create had taken effect; adopting its resource");
            return Ok(found);
        }
        if attempt >= recovery.attempts {
            return Err(err);
        }
        attempt += 1;
    }
}

/// `find` until it finds something or [`Recovery::lookup`] has passed.
async fn look_up<T, F, FFut>(recovery: Recovery, find: &mut F) -> Result<Option<T>, AwsError>
where
    F: FnMut() -> FFut,
    FFut: Future<Output = Result<Option<T>, AwsError>>,
{
    let mut pauses =
        Backoff { initial: recovery.lookup_delay, max: recovery.lookup, timeout: recovery.lookup }.pauses();
    loop {
        if let Some(found) = find().await? {
            return Ok(Some(found));
        }
        if !pauses.pause().await {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    fn lost() -> AwsError {
        AwsError::no_answer("connection closed before message completed")
    }

    fn internal_error() -> AwsError {
        AwsError::server_error("InternalError", "We encountered an internal error. Please try again.")
    }

    fn fast() -> Recovery {
        Recovery { attempts: 3, lookup: Duration::from_millis(20), lookup_delay: Duration::from_millis(1) }
    }

    /// A create that took effect and then failed with `error` is found and adopted: sent once,
    /// one resource.
    async fn assert_adopted_after(error: fn() -> AwsError) {
        let store = Mutex::new(Vec::<String>::new());
        let creates = AtomicU32::new(0);
        let id = create_or_adopt(
            "x",
            fast(),
            |_| false,
            || async { Ok(store.lock().unwrap().first().cloned()) },
            || async {
                creates.fetch_add(1, Ordering::SeqCst);
                store.lock().unwrap().push("r-1".into());
                Err(error())
            },
        )
        .await
        .unwrap();
        assert_eq!((id.as_str(), creates.load(Ordering::SeqCst), store.lock().unwrap().len()), ("r-1", 1, 1));
    }

    /// A create that failed with `error` without taking effect (the lookup finds nothing) is sent
    /// again.
    async fn assert_sent_again_after(error: fn() -> AwsError) {
        let creates = AtomicU32::new(0);
        let id = create_or_adopt(
            "x",
            fast(),
            |_| false,
            || async { Ok(None) },
            || async {
                if creates.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(error())
                } else {
                    Ok("r-2".to_owned())
                }
            },
        )
        .await
        .unwrap();
        assert_eq!((id.as_str(), creates.load(Ordering::SeqCst)), ("r-2", 2));
    }

    #[tokio::test]
    async fn a_lost_create_that_took_effect_is_adopted_not_repeated() {
        assert_adopted_after(lost).await;
    }

    #[tokio::test]
    async fn a_create_answered_500_that_took_effect_is_adopted_not_repeated() {
        assert_adopted_after(internal_error).await;
    }

    #[tokio::test]
    async fn a_create_answered_500_that_did_not_happen_is_sent_again() {
        assert_sent_again_after(internal_error).await;
    }

    #[tokio::test]
    async fn a_lost_create_that_did_not_happen_is_sent_again() {
        assert_sent_again_after(lost).await;
    }

    #[tokio::test]
    async fn already_exists_adopts_ours_and_fails_otherwise() {
        let dup = || AwsError::new("Duplicate", "exists");
        let r = create_or_adopt("x", fast(), |e| e.is("Duplicate"), || async { Ok(Some(7)) }, || async { Err(dup()) });
        assert_eq!(r.await.unwrap(), 7);
        let r =
            create_or_adopt("x", fast(), |e| e.is("Duplicate"), || async { Ok(None::<i32>) }, || async { Err(dup()) });
        assert!(r.await.unwrap_err().is("Duplicate"));
    }

    #[tokio::test]
    async fn other_errors_and_exhausted_attempts_surface() {
        let creates = AtomicU32::new(0);
        let r = create_or_adopt(
            "x",
            fast(),
            |_| false,
            || async { Ok(None::<i32>) },
            || async {
                creates.fetch_add(1, Ordering::SeqCst);
                Err(lost())
            },
        );
        assert!(r.await.unwrap_err().outcome_unknown());
        assert_eq!(creates.load(Ordering::SeqCst), 3);
        let r = create_or_adopt(
            "x",
            fast(),
            |_| false,
            || async { Ok(Some(1)) },
            || async { Err::<i32, _>(AwsError::new("AccessDenied", "no")) },
        );
        assert!(r.await.unwrap_err().is("AccessDenied"), "a refused create is not looked up");
    }

    #[test]
    fn the_classifier_forbids_resending_only_when_the_outcome_is_unknown() {
        use aws_smithy_runtime_api::client::interceptors::context::{Error, Input, Output};
        use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
        use aws_smithy_runtime_api::client::result::ConnectorError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        let classify = |status: Option<u16>, outcome: Result<(), OrchestratorError<Error>>| {
            let mut ctx = InterceptorContext::new(Input::erase(()));
            if let Some(status) = status {
                ctx.set_response(HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty()));
            }
            ctx.set_output_or_error(outcome.map(Output::erase));
            NoBlindRetry.classify_retry(&ctx)
        };
        let answered = |e: AwsError| Err(OrchestratorError::operation(Error::erase(e)));
        // No answer: the connection closed, was reset.
        let closed = OrchestratorError::response("connection closed".into());
        assert_eq!(classify(None, Err(closed)), RetryAction::RetryForbidden);
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let reset = OrchestratorError::connector(ConnectorError::io(io.into()));
        assert_eq!(classify(None, Err(reset)), RetryAction::RetryForbidden);
        // A 5xx answer: the create may have taken effect.
        assert_eq!(classify(Some(500), answered(internal_error())), RetryAction::RetryForbidden);
        assert_eq!(
            classify(Some(503), answered(AwsError::server_error("ServiceUnavailable", "x"))),
            RetryAction::RetryForbidden
        );
        // Throttling and other 4xx answers keep their standard retries.
        assert_eq!(
            classify(Some(400), answered(AwsError::throttling())),
            RetryAction::NoActionIndicated,
            "answered errors keep their retries"
        );
        assert_eq!(classify(Some(200), Ok(())), RetryAction::NoActionIndicated);
        assert_eq!(classify(None, Ok(())), RetryAction::NoActionIndicated);
    }

    #[test]
    fn classification() {
        assert!(lost().outcome_unknown());
        assert!(internal_error().outcome_unknown(), "a 5xx answer leaves the outcome unknown");
        assert!(!AwsError::throttling().outcome_unknown() && AwsError::throttling().is_throttling());
        assert!(!AwsError::new("InvalidParameter", "x").outcome_unknown());
    }
}
