//! Cloud Map's asynchronous mutations: the operation a create, update or delete runs as, polled
//! (with backoff) until it ends.

use tap_core::resource::ActionError;
use tap_core::wait::{poll_until, Backoff};
use tap_core::AwsError;

use crate::api::{CloudMapApi, OperationState};

/// Polls the Cloud Map operation `operation_id`, which `action` on `resource` started, until it
/// succeeds. A failed operation is an error of `action` with the operation's error code and
/// message; an operation still running when `backoff` runs out is a `Timeout` of `action`; a
/// failed `GetOperation` is an error of that call.
pub(crate) async fn wait_operation(
    api: &dyn CloudMapApi,
    backoff: Backoff,
    resource: &str,
    action: &'static str,
    operation_id: &str,
) -> Result<OperationState, ActionError> {
    let what = format!("{action} on {resource} (Cloud Map operation {operation_id})");
    // `Some(outcome)` ends the polling: the operation ended, or reading it failed.
    let polled = poll_until(&what, backoff, || async {
        let op = match api.get_operation(operation_id).await {
            Ok(op) => op,
            // Just started: not yet visible everywhere.
            Err(e) if e.is("OperationNotFound") => return Ok(None),
            Err(source) => return Ok(Some(Err(ActionError { action: "GetOperation", source }))),
        };
        Ok(match op.status.as_str() {
            "SUCCESS" => Some(Ok(op)),
            "FAIL" => {
                let code = op.error_code.as_deref().unwrap_or("OperationFailed");
                let message = format!(
                    "Cloud Map operation {operation_id} failed: {}",
                    op.error_message.as_deref().unwrap_or("no reason given")
                );
                Some(Err(ActionError { action, source: AwsError::new(code, message) }))
            }
            _ => None,
        })
    })
    .await;
    polled.unwrap_or_else(|timeout| Err(ActionError { action, source: AwsError::new("Timeout", timeout.to_string()) }))
}
