//! Errors of steps and of the AWS calls they make. An error names the resource and the action, and
//! keeps AWS's error code and message.

use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Error codes AWS uses for throttling.
pub const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "EC2ThrottledException",
];

/// An AWS call that failed: AWS's code and message, the HTTP status of the answer, and whether
/// retrying later may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// AWS's error code, e.g. `InvalidVpcID.NotFound`; `None` for transport failures.
    pub code: Option<String>,
    /// AWS's message or the transport error.
    pub message: String,
    /// Throttling, a 5xx or a transport failure: the same call may succeed later.
    pub retryable: bool,
    /// The HTTP status AWS answered with; `None` when no answer came (a transport failure) or the
    /// error is tap's own (a request it could not build, an answer missing a field).
    pub status: Option<u16>,
}

impl AwsError {
    /// An error with this code and message; retryable when the code is a throttling code.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        AwsError {
            code: Some(code.into()),
            message: message.into(),
            retryable: THROTTLING_CODES.contains(&code),
            status: None,
        }
    }

    /// An error tap found itself, without asking AWS (a request it could not build, an answer
    /// missing a field): no code, not retryable.
    pub fn local(message: impl Into<String>) -> Self {
        AwsError { code: None, message: message.into(), retryable: false, status: None }
    }

    /// A call that got no answer (connection reset, response lost, timeout): it may or may not
    /// have taken effect.
    pub fn no_answer(message: impl Into<String>) -> Self {
        AwsError { code: None, message: message.into(), retryable: true, status: None }
    }

    /// AWS answered `500` with this code (e.g. `InternalError`): the call may or may not have
    /// taken effect.
    pub fn server_error(code: &str, message: impl Into<String>) -> Self {
        AwsError { code: Some(code.into()), message: message.into(), retryable: true, status: Some(500) }
    }

    /// A throttling error, as AWS returns when calls come too fast.
    pub fn throttling() -> Self {
        Self::new("ThrottlingException", "Rate exceeded")
    }

    /// Converts any SDK error, keeping code, message and the answer's HTTP status, and
    /// classifying it.
    pub fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let code = e.code().map(str::to_owned);
                let status = service.raw().status();
                let retryable =
                    code.as_deref().is_some_and(|c| THROTTLING_CODES.contains(&c)) || status.is_server_error();
                let message = e.message().map(str::to_owned).unwrap_or_else(|| e.to_string());
                AwsError { code, message, retryable, status: Some(status.as_u16()) }
            }
            // An answer that could not be read: a 5xx (which may have taken effect) keeps its
            // status; anything else counts as no answer.
            SdkError::ResponseError(response) => {
                let status = response.raw().status();
                AwsError {
                    code: None,
                    message: display_chain(&err),
                    retryable: true,
                    status: status.is_server_error().then(|| status.as_u16()),
                }
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => AwsError::no_answer(display_chain(&err)),
            _ => AwsError::local(display_chain(&err)),
        }
    }

    /// Whether AWS answered with this error code.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    /// Whether the code says the resource does not exist (`…NotFound…`, `NoSuchEntity`, …).
    pub fn is_not_found(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.contains("NotFound") || c.contains("NoSuch") || c == "ResourceNotFoundException")
    }
}

impl AwsError {
    /// Whether AWS answered with a throttling code.
    pub fn is_throttling(&self) -> bool {
        self.code.as_deref().is_some_and(|c| THROTTLING_CODES.contains(&c))
    }

    /// Whether AWS answered with a 5xx status (`InternalError`, `ServiceUnavailable`, …).
    pub fn is_server_error(&self) -> bool {
        self.status.is_some_and(|s| (500..600).contains(&s))
    }

    /// Whether the call may or may not have taken effect: no answer came back (the connection
    /// failed, the response was lost, or the attempt timed out), or AWS answered with a 5xx —
    /// AWS may have done what was asked and still answer `500 InternalError`. For a create
    /// without an idempotency token either means: look it up before sending it again.
    pub fn outcome_unknown(&self) -> bool {
        (self.retryable && self.code.is_none()) || self.is_server_error()
    }
}

impl<E> From<SdkError<E, HttpResponse>> for AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    fn from(err: SdkError<E, HttpResponse>) -> Self {
        AwsError::from_sdk(err)
    }
}

fn display_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for AwsError {}

/// What can make a step fail.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// An AWS call failed.
    #[error("{action} on {resource} failed: {source}")]
    Aws {
        /// Logical id or name of the resource, e.g. `network/vpc`.
        resource: String,
        /// The AWS operation, e.g. `CreateVpc`.
        action: &'static str,
        /// What AWS said.
        source: AwsError,
    },
    /// A step read an output that no registered step produces (or that was never written).
    #[error("step `{step}` needs the `{output}` output, but {why}")]
    MissingOutput {
        /// The reading step.
        step: String,
        /// The output it reads.
        output: String,
        /// Why it is missing.
        why: String,
    },
    /// A step read, waited for, wrote or gave something its [`crate::step::Contract`] does not
    /// declare (a bug of the step: its contract is the runner's and the checks' one source of
    /// truth). Checked in every build, by the step's context handle.
    #[error("step `{step}` uses `{input}`, which its contract does not declare (declare it in {declare}): {declared}")]
    Undeclared {
        /// The reading step.
        step: String,
        /// The input it waited for.
        input: String,
        /// Where it belongs, e.g. `Contract::reads`.
        declare: &'static str,
        /// What the step declares.
        declared: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {seconds} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        seconds: u64,
    },
    /// AWS holds something that tap cannot converge by itself (e.g. a name owned by someone else).
    #[error("{resource}: {message}")]
    Conflict {
        /// The resource.
        resource: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl StepError {
    /// A `map_err` adapter: `.map_err(StepError::aws("network/vpc", "CreateVpc"))`.
    pub fn aws<E: Into<AwsError>>(resource: impl Into<String>, action: &'static str) -> impl FnOnce(E) -> StepError {
        let resource = resource.into();
        move |e| StepError::Aws { resource, action, source: e.into() }
    }

    /// Whether the same call may succeed if retried later (throttling, 5xx, transport).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Aws { source, .. } if source.retryable)
    }

    /// The AWS error, if this is one.
    pub fn aws_error(&self) -> Option<&AwsError> {
        match self {
            StepError::Aws { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The one reading of "already gone" for a call whose resource may have been deleted meanwhile:
/// AWS's not-found answer ([`AwsError::is_not_found`]) becomes `None`.
pub trait IfFound<T> {
    /// `Ok(Some(value))` when AWS answered, `Ok(None)` when it said the resource does not exist.
    fn if_found(self) -> Result<Option<T>, AwsError>;
    /// The same, with the other answers that mean "gone" for this call (e.g. EC2's
    /// `Gateway.NotAttached` for a detach, ECS's `ServiceNotActiveException`).
    fn if_found_or(self, also_gone: impl Fn(&AwsError) -> bool) -> Result<Option<T>, AwsError>;
}

impl<T> IfFound<T> for Result<T, AwsError> {
    fn if_found(self) -> Result<Option<T>, AwsError> {
        self.if_found_or(|_| false)
    }

    fn if_found_or(self, also_gone: impl Fn(&AwsError) -> bool) -> Result<Option<T>, AwsError> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.is_not_found() || also_gone(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_retryable_and_named() {
        let e = StepError::aws("network/vpc", "CreateVpc")(AwsError::throttling());
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "CreateVpc on network/vpc failed: ThrottlingException: Rate exceeded");
        assert!(!StepError::aws("x", "Y")(AwsError::new("InvalidParameter", "bad")).is_retryable());
    }

    fn sdk_error(status: u16, code: &str) -> SdkError<aws_smithy_types::error::ErrorMetadata, HttpResponse> {
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        let meta = aws_smithy_types::error::ErrorMetadata::builder().code(code).message("m").build();
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        SdkError::service_error(meta, raw)
    }

    #[test]
    fn an_answered_5xx_keeps_its_status_and_its_outcome_is_unknown() {
        let e = AwsError::from_sdk(sdk_error(500, "InternalError"));
        assert_eq!((e.code.as_deref(), e.status, e.retryable), (Some("InternalError"), Some(500), true));
        assert!(e.is_server_error() && e.outcome_unknown(), "a create answered 500 may have taken effect");
        let e = AwsError::from_sdk(sdk_error(503, "ServiceUnavailable"));
        assert!(e.outcome_unknown());
        assert!(AwsError::server_error("InternalError", "x").outcome_unknown());
    }

    #[test]
    fn a_4xx_answer_is_known_throttling_included() {
        let throttled = AwsError::from_sdk(sdk_error(400, "Throttling"));
        assert_eq!(throttled.status, Some(400));
        assert!(throttled.retryable && throttled.is_throttling() && !throttled.outcome_unknown());
        let refused = AwsError::from_sdk(sdk_error(400, "InvalidParameterValue"));
        assert!(!refused.retryable && !refused.outcome_unknown() && !refused.is_server_error());
        assert!(AwsError::no_answer("connection reset").outcome_unknown());
        assert!(!AwsError::local("no id in the answer").outcome_unknown());
    }

    #[test]
    fn not_found_codes() {
        assert!(AwsError::new("InvalidVpcID.NotFound", "").is_not_found());
        assert!(AwsError::new("NoSuchEntity", "").is_not_found());
        assert!(!AwsError::new("AccessDenied", "").is_not_found());
    }

    #[test]
    fn not_found_and_what_the_call_says_means_gone_are_none_anything_else_stays_an_error() {
        let gone: Result<(), AwsError> = Err(AwsError::new("InvalidVpcID.NotFound", "no such vpc"));
        assert_eq!(gone.if_found(), Ok(None));
        assert_eq!(Ok::<_, AwsError>(7).if_found(), Ok(Some(7)));
        let detached = || Err::<(), _>(AwsError::new("Gateway.NotAttached", "not attached"));
        assert!(detached().if_found().is_err());
        assert_eq!(detached().if_found_or(|e| e.is("Gateway.NotAttached")), Ok(None));
        let denied: Result<(), AwsError> = Err(AwsError::new("AccessDenied", "no"));
        assert_eq!(denied.if_found().unwrap_err().code.as_deref(), Some("AccessDenied"));
    }
}
