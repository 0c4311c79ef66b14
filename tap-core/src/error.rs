//! Errors of steps and of the AWS calls they make. An error names the resource and the action, and
//! keeps AWS's error code and message.

use std::fmt;

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
];

/// An AWS call that failed: AWS's code and message, and whether retrying later may succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// AWS's error code, e.g. `InvalidVpcID.NotFound`; `None` for transport failures.
    pub code: Option<String>,
    /// AWS's message or the transport error.
    pub message: String,
    /// Throttling, a 5xx or a transport failure: the same call may succeed later.
    pub retryable: bool,
}

impl AwsError {
    /// An error with this code and message; retryable when the code is a throttling code.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        AwsError { code: Some(code.into()), message: message.into(), retryable: THROTTLING_CODES.contains(&code) }
    }

    /// A throttling error, as AWS returns when calls come too fast.
    pub fn throttling() -> Self {
        Self::new("ThrottlingException", "Rate exceeded")
    }

    /// Converts any SDK error, keeping code and message and classifying it.
    pub fn from_sdk<E, R>(err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let code = e.code().map(str::to_owned);
                let status_5xx = format!("{:?}", service.raw()).contains("status: StatusCode(5");
                let retryable = code.as_deref().is_some_and(|c| THROTTLING_CODES.contains(&c)) || status_5xx;
                let message = e.message().map(str::to_owned).unwrap_or_else(|| e.to_string());
                AwsError { code, message, retryable }
            }
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                AwsError { code: None, message: display_chain(&err), retryable: true }
            }
            _ => AwsError { code: None, message: display_chain(&err), retryable: false },
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

    /// Whether the call may or may not have taken effect: no answer came back (the connection
    /// failed, the response was lost, or the attempt timed out).
    pub fn outcome_unknown(&self) -> bool {
        self.retryable && self.code.is_none()
    }
}

impl<E, R> From<SdkError<E, R>> for AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    fn from(err: SdkError<E, R>) -> Self {
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

    #[test]
    fn not_found_codes() {
        assert!(AwsError::new("InvalidVpcID.NotFound", "").is_not_found());
        assert!(AwsError::new("NoSuchEntity", "").is_not_found());
        assert!(!AwsError::new("AccessDenied", "").is_not_found());
    }
}
