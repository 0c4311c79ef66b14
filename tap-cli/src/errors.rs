//! Errors people can act on: every AWS failure is shown with the resource, the action, AWS's
//! error code and message, and a hint where the cause is known (missing credentials, a wrong
//! region, the ECS service-linked role missing on a new account, a name still scheduled for
//! deletion, missing permissions, …).
//!
//! [`report`] renders any error of a run on stderr, and as one JSON document on stdout with
//! `--output json`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};
use tap_core::{Action, AwsError, Change, StepError};

use crate::lock::LockError;
use crate::runner::{RunError, StepReport};

/// One failure, taken apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// The step that failed, when a step did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The resource (logical id or AWS name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The AWS operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// AWS's error code (none when the request never got an answer).
    pub code: Option<String>,
    /// AWS's message, or the error.
    pub message: String,
    /// What to do about it, when known.
    pub hint: Option<String>,
}

impl Diagnosis {
    fn plain(step: Option<&str>, message: String) -> Self {
        Diagnosis { step: step.map(str::to_owned), resource: None, action: None, code: None, message, hint: None }
    }
}

/// Takes a step error apart and adds a hint.
pub fn diagnose_step(step: Option<&str>, err: &StepError) -> Diagnosis {
    match err {
        StepError::Aws { resource, action, source } => Diagnosis {
            step: step.map(str::to_owned),
            resource: Some(resource.clone()),
            action: Some((*action).to_owned()),
            code: source.code.clone(),
            message: source.message.clone(),
            hint: hint(action, Some(resource), source),
        },
        StepError::Timeout { .. } => Diagnosis {
            hint: Some(
                "AWS is still working on it; nothing is lost: run the same command again to continue (`tap status` \
                 shows the services)"
                    .into(),
            ),
            ..Diagnosis::plain(step, err.to_string())
        },
        StepError::Conflict { resource, message } => {
            Diagnosis { resource: Some(resource.clone()), ..Diagnosis::plain(step, message.clone()) }
        }
        StepError::MissingOutput { .. } | StepError::Undeclared { .. } => Diagnosis::plain(step, err.to_string()),
    }
}

/// A hint for an AWS error of `action` on `resource`, when the cause is recognisable.
pub fn hint(action: &str, resource: Option<&str>, err: &AwsError) -> Option<String> {
    let code = err.code.as_deref().unwrap_or_default();
    let msg = err.message.to_ascii_lowercase();
    if err.code.is_none()
        && (msg.contains("no credentials")
            || msg.contains("credential provider")
            || msg.contains("credentialsnotloaded"))
    {
        return Some(
            "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --profile NAME \
             (or set AWS_PROFILE), or run `aws sso login --profile NAME` first"
                .into(),
        );
    }
    if err.code.is_none()
        && (msg.contains("dns error")
            || msg.contains("failed to lookup address")
            || msg.contains("name or service not known"))
    {
        return Some(
            "the AWS endpoint could not be resolved: check the region (--region, AWS_REGION or `aws.region`; e.g. \
             eu-west-1) and, if you use one, --endpoint-url"
                .into(),
        );
    }
    if err.code.is_none() && (msg.contains("connection refused") || msg.contains("connect")) {
        return Some(
            "AWS could not be reached: check the network, a proxy, or --endpoint-url / AWS_ENDPOINT_URL if you point \
             tap at an emulator"
                .into(),
        );
    }
    if matches!(code, "UnrecognizedClientException" | "InvalidClientTokenId" | "AuthFailure" | "OptInRequired")
        || (code == "InvalidSignatureException" && msg.contains("region"))
    {
        return Some(
            "AWS does not accept these credentials here: they may be expired or wrong, or the region may be one your \
             account has not enabled (opt-in regions); check --region and `aws sts get-caller-identity`"
                .into(),
        );
    }
    if matches!(code, "SignatureDoesNotMatch" | "InvalidSignatureException") {
        return Some("the request signature was refused: check the secret access key and the region".into());
    }
    if matches!(code, "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired") {
        return Some(
            "the session has expired (or the clock is off): refresh the credentials (e.g. `aws sso login`) and \
             check the system clock"
                .into(),
        );
    }
    if msg.contains("service linked role") || msg.contains("service-linked role") {
        let service = if action.contains("Scal") || msg.contains("autoscaling") {
            "ecs.application-autoscaling.amazonaws.com"
        } else if msg.contains("elasticloadbalancing") {
            "elasticloadbalancing.amazonaws.com"
        } else {
            "ecs.amazonaws.com"
        };
        return Some(format!(
            "the account lacks the service-linked role AWS needs here (usual on a new account): create it once with \
             `aws iam create-service-linked-role --aws-service-name {service}`, wait a minute, then run deploy again"
        ));
    }
    if msg.contains("scheduled for deletion") || msg.contains("pending deletion") || msg.contains("marked for deletion")
    {
        let name = resource.unwrap_or("the resource");
        let how = if action.contains("Secret") {
            format!(
                "restore it with `aws secretsmanager restore-secret --secret-id <name>` (its value is kept), or \
                 remove it for good with `aws secretsmanager delete-secret --secret-id <name> \
                 --force-delete-without-recovery`, then run deploy again (resource {name})"
            )
        } else {
            format!("wait until AWS has finished deleting {name} (or restore it), then run deploy again")
        };
        return Some(format!("a resource of the same name is still scheduled for deletion: {how}"));
    }
    if matches!(code, "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "Forbidden")
        || code.ends_with("AccessDenied")
    {
        return Some(format!(
            "the identity may not call {action}: grant it that permission (the README lists the services tap uses), \
             or use another profile"
        ));
    }
    if err.retryable && tap_core::error::THROTTLING_CODES.contains(&code) {
        return Some(
            "AWS kept throttling past `aws.throttle_patience_seconds` and every retry: run the command again \
             later, or raise `aws.throttle_patience_seconds` or `aws.max_attempts` (TAP_AWS__MAX_ATTEMPTS)"
                .into(),
        );
    }
    if matches!(
        code,
        "LimitExceededException" | "AddressLimitExceeded" | "NatGatewayLimitExceeded" | "VpcLimitExceeded"
    ) || code.ends_with("LimitExceeded")
    {
        return Some(
            "an account quota is reached: free some of it, request an increase in Service Quotas, or use \
             `network.nat_gateways = \"single\"` to need fewer Elastic IPs and NAT gateways"
                .into(),
        );
    }
    None
}

/// Deploy stopped before any change: its read-only look found something it refuses to do
/// (plan's `!` lines: [`tap_core::Action::Refuse`], and [`tap_core::Action::Conflict`] for a
/// resource of this environment's name that another environment owns).
#[derive(Debug)]
pub struct Refused {
    /// Each refusal with the step that found it.
    pub refusals: Vec<(&'static str, Change)>,
}

impl Refused {
    /// The refusals among the changes of `reports`, if any.
    pub fn of(reports: &[StepReport]) -> Option<Refused> {
        let refusals: Vec<(&'static str, Change)> = reports
            .iter()
            .flat_map(|r| {
                r.changes
                    .iter()
                    .filter(|c| matches!(c.action, Action::Refuse | Action::Conflict))
                    .map(move |c| (r.step, c.clone()))
            })
            .collect();
        (!refusals.is_empty()).then_some(Refused { refusals })
    }

    fn diagnoses(&self) -> Vec<Diagnosis> {
        self.refusals
            .iter()
            .map(|(step, c)| {
                // `services/image/<service>`: a running service and an image its repository lacks.
                let service = c.resource.rsplit('/').next().unwrap_or(&c.resource);
                let reason = c.reason.clone().unwrap_or_default();
                let (message, hint) = if c.action == Action::Conflict {
                    (
                        reason,
                        "an environment never changes what another owns: rename the service (or choose another \
                         environment suffix) so that its names no longer collide with the other environment's"
                            .to_owned(),
                    )
                } else if c.resource.starts_with("services/image/") {
                    (
                        format!("{service} runs and would move to an image its repository does not have: {reason}"),
                        "push the image first (`tap outputs` shows each repository's URI; `docker push \
                         <uri>:<tag>`), deploy a tag the repository has (--image-tag, `image_tag`), or pass \
                         --allow-missing-image (deploy.allow_missing_images = true) to move the services anyway"
                            .to_owned(),
                    )
                } else {
                    (reason, "change the configuration, or what is in AWS, so that plan shows no `!`".to_owned())
                };
                Diagnosis {
                    step: Some((*step).to_owned()),
                    resource: Some(c.resource.clone()),
                    action: None,
                    code: None,
                    message,
                    hint: Some(hint),
                }
            })
            .collect()
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused before any change:")?;
        for (i, (_, c)) in self.refusals.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{}: {}", c.resource, c.reason.as_deref().unwrap_or(&c.name))?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

/// Every failure inside `err`, taken apart.
pub fn diagnose(err: &anyhow::Error) -> Vec<Diagnosis> {
    if let Some(refused) = err.downcast_ref::<Refused>() {
        return refused.diagnoses();
    }
    if let Some(short) = err.downcast_ref::<tap_quotas::Shortfall>() {
        return quota_diagnoses(short);
    }
    if let Some(run) = err.downcast_ref::<RunError>() {
        return run.failures.iter().map(|(step, e)| diagnose_step(Some(step), e)).collect();
    }
    if let Some(step) = err.downcast_ref::<StepError>() {
        return vec![diagnose_step(None, step)];
    }
    if let Some(LockError::Aws { name, source }) = err.downcast_ref::<LockError>() {
        return vec![Diagnosis {
            step: None,
            resource: Some(name.clone()),
            action: Some("environment lock".into()),
            code: source.code.clone(),
            message: source.message.clone(),
            hint: hint("CreateLogGroup", Some(name), source),
        }];
    }
    vec![]
}

/// One failure per quota a deploy would exceed: the quota's name and code, the numbers, and how
/// to raise it.
fn quota_diagnoses(short: &tap_quotas::Shortfall) -> Vec<Diagnosis> {
    use tap_quotas::number;
    short
        .rows
        .iter()
        .map(|r| Diagnosis {
            step: Some("quotas".into()),
            resource: Some(format!("{} ({}, service {})", r.label(), r.quota.quota_code, r.quota.service_code)),
            action: None,
            code: None,
            message: format!(
                "{} in use + {} this deploy adds = {} > quota {} ({}); added by {}",
                number(r.in_use),
                number(r.adds),
                number(r.in_use + r.adds),
                number(r.limit),
                r.source,
                r.resources.join(", ")
            ),
            hint: Some(format!(
                "free some of it in the region, or ask AWS to raise the quota (granted after a while, not at once): \
                 `{}`",
                r.raise_command()
            )),
        })
        .collect()
}

/// The error for people (stderr): what failed, then each failure's resource, action, code,
/// message, and the distinct hints at the end.
pub fn render_text(command: &str, err: &anyhow::Error) -> String {
    let failures = diagnose(err);
    if failures.is_empty() {
        return format!("error: {err:#}\n");
    }
    let mut out = String::new();
    if let Some(refused) = err.downcast_ref::<Refused>() {
        let conflicts = refused.refusals.iter().filter(|(_, c)| c.action == Action::Conflict).count();
        let plural = |n: usize, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
        let what = match (refused.refusals.len() - conflicts, conflicts) {
            (n, 0) => plural(n, "refusal"),
            (0, c) => plural(c, "conflict"),
            (n, c) => format!("{}, {}", plural(n, "refusal"), plural(c, "conflict")),
        };
        let _ = writeln!(out, "error: {command} refused before any change ({what}); nothing was written");
    } else if err.downcast_ref::<tap_quotas::Shortfall>().is_some() {
        let n = failures.len();
        let what = if n == 1 { "1 quota".to_owned() } else { format!("{n} quotas") };
        let _ = writeln!(
            out,
            "error: {command} refused before any change: it would exceed {what} of the account; nothing was written"
        );
    } else {
        let what = if failures.len() == 1 { "1 failure".to_owned() } else { format!("{} failures", failures.len()) };
        let _ = writeln!(out, "error: {command} failed ({what})");
    }
    let mut hints: Vec<&str> = Vec::new();
    for d in &failures {
        let head = match (&d.step, &d.action, &d.resource) {
            (Some(step), Some(action), Some(resource)) => format!("{step}: {action} on {resource}"),
            (None, Some(action), Some(resource)) => format!("{action} on {resource}"),
            (Some(step), _, Some(resource)) => format!("{step}: {resource}"),
            (Some(step), _, None) => step.clone(),
            (None, _, Some(resource)) => resource.clone(),
            (None, _, None) => "tap".into(),
        };
        let _ = writeln!(out, "  {head}");
        if let Some(resource) = &d.resource {
            let _ = writeln!(out, "    resource: {resource}");
        }
        if let Some(action) = &d.action {
            let _ = writeln!(out, "    action:   {action}");
        }
        if d.action.is_some() {
            let code = d.code.as_deref().unwrap_or("(none: no answer from AWS)");
            let _ = writeln!(out, "    code:     {code}");
        }
        let _ = writeln!(out, "    message:  {}", d.message.replace('\n', "\n              "));
        if let Some(h) = &d.hint {
            if !hints.contains(&h.as_str()) {
                hints.push(h);
            }
        }
    }
    if let Some(run) = err.downcast_ref::<RunError>().filter(|r| !r.not_run.is_empty()) {
        let _ = writeln!(out, "  not run (an input they need failed): {}", run.not_run.join(", "));
    }
    for h in hints {
        let _ = writeln!(out, "hint: {h}");
    }
    out
}

/// The error as one JSON document (stdout with `--output json`).
pub fn render_json(command: &str, environment: Option<&str>, err: &anyhow::Error) -> Value {
    let completed =
        err.downcast_ref::<RunError>().map(|run| crate::render::step_changes_json(&run.completed)).unwrap_or_default();
    json!({
        "command": command,
        "environment": environment,
        "error": {
            "message": format!("{err:#}"),
            "failures": diagnose(err),
            "not_run": err.downcast_ref::<RunError>().map(|r| r.not_run.clone()).unwrap_or_default(),
        },
        "changes": completed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(code: Option<&str>, message: &str) -> AwsError {
        AwsError { code: code.map(str::to_owned), ..AwsError::local(message) }
    }

    fn hint_of(action: &str, code: Option<&str>, message: &str) -> String {
        hint(action, Some("x/y"), &aws(code, message)).unwrap_or_default()
    }

    #[test]
    fn known_causes_get_hints() {
        let creds = "dispatch failure: other: the credential provider was not enabled: no credentials found in chain";
        assert!(hint_of("DescribeVpcs", None, creds).contains("AWS_ACCESS_KEY_ID"));
        let dns = "dispatch failure: io error: client error (Connect): dns error: failed to lookup address information";
        assert!(hint_of("DescribeVpcs", None, dns).contains("--region"));
        assert!(hint_of("DescribeVpcs", Some("AuthFailure"), "AWS was not able to validate").contains("region"));
        let slr = "Unable to assume the service linked role. Please verify that the ECS service linked role exists.";
        let h = hint_of("CreateCluster", Some("InvalidParameterException"), slr);
        assert!(h.contains("aws iam create-service-linked-role --aws-service-name ecs.amazonaws.com"), "{h}");
        let deleting =
            "You can't create this secret because a secret with this name is already scheduled for deletion.";
        let h = hint_of("CreateSecret", Some("InvalidRequestException"), deleting);
        assert!(h.contains("restore-secret") && h.contains("force-delete-without-recovery"), "{h}");
        assert!(hint_of("CreateVpc", Some("UnauthorizedOperation"), "no").contains("CreateVpc"));
        assert!(hint_of("AllocateAddress", Some("AddressLimitExceeded"), "too many").contains("single"));
        assert_eq!(hint_of("CreateVpc", Some("InvalidParameterValue"), "bad cidr"), "");
    }

    #[test]
    fn a_run_error_shows_resource_action_code_message_and_one_hint() {
        let creds = "no credentials found in chain";
        let run = RunError {
            failures: vec![
                ("network", StepError::aws("network/vpc", "DescribeVpcs")(aws(None, creds))),
                ("registry", StepError::aws("registry/repositories", "DescribeRepositories")(aws(None, creds))),
            ],
            not_run: vec!["services"],
            completed: vec![],
        };
        let err = anyhow::Error::new(run);
        let text = render_text("deploy", &err);
        assert!(text.starts_with("error: deploy failed (2 failures)"), "{text}");
        for needle in ["network: DescribeVpcs on network/vpc", "resource: registry/repositories", "code:     (none"] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        assert_eq!(text.matches("hint: ").count(), 1, "the same hint is given once: {text}");
        assert!(text.contains("not run (an input they need failed): services"), "{text}");
        assert_eq!(render_json("deploy", Some("dev"), &err)["error"]["not_run"], json!(["services"]));

        let secret = StepError::aws("security/secret/db-credentials", "CreateSecret")(aws(
            Some("InvalidRequestException"),
            "a secret with this name is already scheduled for deletion",
        ));
        let err = anyhow::Error::new(secret);
        let doc = render_json("deploy", Some("dev"), &err);
        let f = &doc["error"]["failures"][0];
        assert_eq!(f["resource"], "security/secret/db-credentials");
        assert_eq!(f["action"], "CreateSecret");
        assert_eq!(f["code"], "InvalidRequestException");
        assert!(f["hint"].as_str().unwrap().contains("restore-secret"));
        assert_eq!(doc["environment"], "dev");
    }

    #[test]
    fn a_refused_deploy_names_each_service_its_image_and_the_override() {
        let reports = vec![
            StepReport { step: "network", changes: vec![], elapsed: std::time::Duration::ZERO },
            StepReport {
                step: "services",
                changes: vec![
                    tap_core::Change::update("services/task-definition/frontend", "tap-frontend-dev", vec![]),
                    tap_core::Change::refuse(
                        "services/image/frontend",
                        "tap-frontend-dev:v9",
                        "tap-frontend-dev:v9 is not in the repository (it has: v2, v1)",
                    ),
                ],
                elapsed: std::time::Duration::ZERO,
            },
        ];
        assert!(Refused::of(&reports[..1]).is_none(), "no `!`, no refusal");
        let err = anyhow::Error::new(Refused::of(&reports).expect("a refusal"));
        let text = render_text("deploy", &err);
        assert!(text.starts_with("error: deploy refused before any change (1 refusal); nothing was written"), "{text}");
        for needle in [
            "services: services/image/frontend",
            "frontend runs and would move to an image its repository does not have",
            "tap-frontend-dev:v9 is not in the repository (it has: v2, v1)",
            "hint: push the image first",
            "--allow-missing-image",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let doc = render_json("deploy", Some("dev"), &err);
        assert_eq!(doc["error"]["failures"][0]["resource"], "services/image/frontend");
        assert!(doc["error"]["message"].as_str().unwrap().contains("tap-frontend-dev:v9"), "{doc}");
    }

    #[test]
    fn a_conflict_refuses_deploy_naming_the_resource_and_the_environment_that_owns_it() {
        let owner = tap_core::resource::Owner::Other("dev".into());
        let conflict = tap_core::Change::conflict("services/task-definition/api", "tap-api-x-dev", &owner, "x-dev");
        let reports =
            vec![StepReport { step: "services", changes: vec![conflict], elapsed: std::time::Duration::ZERO }];
        let err = anyhow::Error::new(Refused::of(&reports).expect("a conflict refuses"));
        let text = render_text("deploy", &err);
        assert!(
            text.starts_with("error: deploy refused before any change (1 conflict); nothing was written"),
            "{text}"
        );
        for needle in [
            "services: services/task-definition/api",
            "tap-api-x-dev belongs to environment `dev`",
            "hint: an environment never changes what another owns",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }

    #[test]
    fn a_quota_shortfall_names_the_quota_its_code_the_numbers_and_the_raise_command() {
        use tap_core::quota::{Need, QuotaKey, Usage};
        use tap_quotas::{Limit, Preflight, Source};
        let needs = [Need::new(QuotaKey::ElasticIps, 3.0, vec!["network/eip/1".into()])];
        let usage = [Usage { key: QuotaKey::ElasticIps, zone: None, in_use: 3.0 }];
        let limits = [Limit { key: QuotaKey::ElasticIps, value: 5.0, source: Source::Applied }];
        let err = anyhow::Error::new(Preflight::decide(&needs, &usage, &limits).shortfall().unwrap());
        let text = render_text("deploy", &err);
        for needle in [
            "error: deploy refused before any change: it would exceed 1 quota of the account; nothing was written",
            "EC2-VPC Elastic IPs (L-0263D0A3, service ec2)",
            "3 in use + 3 this deploy adds = 6 > quota 5",
            "hint: free some of it",
            "--service-code ec2 --quota-code L-0263D0A3 --desired-value 6",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let doc = render_json("deploy", Some("dev"), &err);
        assert_eq!(doc["error"]["failures"][0]["step"], "quotas");
    }

    #[test]
    fn other_errors_are_shown_whole() {
        let err = anyhow::anyhow!("environment `x` has no network yet");
        assert_eq!(render_text("outputs", &err), "error: environment `x` has no network yet\n");
        assert_eq!(render_json("outputs", None, &err)["error"]["failures"], json!([]));
    }
}
