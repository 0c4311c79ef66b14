//! Command-line arguments, and how they become config overrides and a log subscriber.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use figment::providers::Serialized;
use figment::Figment;
use tracing_subscriber::EnvFilter;

use crate::progress::{LogWriterMaker, ProgressMode};

/// Deploys a complete ECS Fargate platform (network, registries, cluster, load balancer, service
/// discovery, IAM, secrets, logs, auto scaling) and keeps it converged. State lives in AWS (names
/// and tags), never in a local file.
#[derive(Debug, Parser)]
#[command(name = "tap", version)]
pub struct Cli {
    /// Configuration file (default: ./tap.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Environment suffix carried by every resource name (config key `environment`).
    // A value starting with `-` is taken as the suffix, so tap's own rule rejects it (clap would
    // call it an unknown flag).
    #[arg(long = "env", global = true, value_name = "SUFFIX", allow_hyphen_values = true)]
    pub environment: Option<String>,
    /// AWS region (default: the AWS chain, e.g. AWS_REGION or the profile).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Named AWS profile.
    #[arg(long, global = true)]
    pub profile: Option<String>,
    /// Send AWS calls to this endpoint (e.g. a local emulator); AWS_ENDPOINT_URL works too.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Result format on stdout.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logs (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print the AWS calls made (total, mutating, per operation) to stderr at the end.
    #[arg(long, global = true)]
    pub stats: bool,
    /// Progress of deploy, plan and destroy on stderr: a live view on a terminal, plain lines
    /// otherwise (auto), or always one of them, or none.
    #[arg(long, global = true, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Color the plan on stdout: when stdout is a terminal and NO_COLOR is unset (auto), always
    /// or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto)]
    pub color: ColorArg,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create what is missing, fix what drifted, leave what matches.
    Deploy {
        /// Do not wait for the services to become stable (config key `deploy.wait`).
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the services to become stable (config key `deploy.timeout_seconds`).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Wait up to this many seconds for another run holding the environment lock (default:
        /// only for a lease about to end, i.e. a holder that stopped renewing it; 0: never wait).
        #[arg(long, value_name = "SECONDS")]
        lock_timeout: Option<u64>,
        /// Image tag for every service without its own (config key `image_tag`).
        #[arg(long, value_name = "TAG")]
        image_tag: Option<String>,
        /// Also delete data-bearing resources the config no longer declares: ECR repositories
        /// holding images, secrets (config key `deploy.prune_data`).
        #[arg(long)]
        prune_data: bool,
        /// Move running services to images their repositories do not have, with a warning,
        /// instead of refusing before any change (config key `deploy.allow_missing_images`).
        #[arg(long)]
        allow_missing_image: bool,
    },
    /// Show what deploy would create, update or delete; changes nothing.
    Plan {
        /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Plan for this image tag (config key `image_tag`).
        #[arg(long, value_name = "TAG")]
        image_tag: Option<String>,
        /// Plan a deploy with `--prune-data` (config key `deploy.prune_data`).
        #[arg(long)]
        prune_data: bool,
        /// Plan a deploy with `--allow-missing-image` (config key `deploy.allow_missing_images`).
        #[arg(long)]
        allow_missing_image: bool,
    },
    /// Remove every resource of the environment, in dependency order.
    Destroy {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Wait up to this many seconds for another run holding the environment lock (default:
        /// only for a lease about to end, i.e. a holder that stopped renewing it; 0: never wait).
        #[arg(long, value_name = "SECONDS")]
        lock_timeout: Option<u64>,
    },
    /// Put services back on their previous task definition revision (or `--to REVISION`) and wait
    /// for that rollout like a deploy; the config still names the newer image (plan shows it).
    Rollback {
        /// The services, e.g. `frontend` (default: every configured service).
        services: Vec<String>,
        /// The revision number of the family to go back to (default: the one before the current).
        #[arg(long, value_name = "REVISION")]
        to: Option<i32>,
        /// Do not wait for the rollouts (config key `deploy.wait`).
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the rollouts (config key `deploy.timeout_seconds`).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Wait up to this many seconds for another run holding the environment lock.
        #[arg(long, value_name = "SECONDS")]
        lock_timeout: Option<u64>,
    },
    /// Run a one-off task (e.g. a database migration) with a service's task definition, subnets,
    /// security group and roles and the command overridden; follows its logs and exits with the
    /// container's exit code.
    Run {
        /// The service, e.g. `api-gateway`.
        service: String,
        /// The command, after `--`: `tap run api-gateway -- ./migrate up`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        /// Seconds to wait for the task to stop (config key `deploy.timeout_seconds`).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
    /// Remove the environment lock, whoever holds it (shows who held it); deploy and destroy take
    /// a stale lock over by themselves, this is for a lock without a lease or a holder known gone.
    Unlock,
    /// Print the stack outputs, read live from AWS.
    Outputs,
    /// Show each service's desired/running/pending tasks, rollout and target health; with a
    /// service, its deployments, events, stopped tasks and targets in detail.
    Status {
        /// One service to show in detail, e.g. `frontend`.
        service: Option<String>,
    },
    /// The monthly cost estimate of the configured environment, per resource (no AWS call).
    Cost,
    /// The environments tap manages in the region: created when, their services, monthly estimate.
    List,
    /// Print a service's logs (its CloudWatch Logs group), oldest first.
    Logs {
        /// The service, e.g. `frontend` (a name from the `services` config).
        service: String,
        /// How far back to start: 30s, 10m, 2h, 1d.
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        since: String,
        /// Keep printing new events until Ctrl-C (with --output json: one JSON object per line).
        #[arg(short, long)]
        follow: bool,
    },
    /// Print a shell completion script, e.g. `tap completions bash > ~/.local/share/bash-completion/completions/tap`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (`tap.1` and one per command) into DIR, e.g. `tap manpages ~/.local/share/man/man1`.
    Manpages {
        /// The folder to write them into (created when missing).
        dir: PathBuf,
    },
}

impl Command {
    /// The command's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Deploy { .. } => "deploy",
            Command::Plan { .. } => "plan",
            Command::Destroy { .. } => "destroy",
            Command::Rollback { .. } => "rollback",
            Command::Run { .. } => "run",
            Command::Unlock => "unlock",
            Command::Outputs => "outputs",
            Command::Status { .. } => "status",
            Command::Cost => "cost",
            Command::List => "list",
            Command::Logs { .. } => "logs",
            Command::Completions { .. } => "completions",
            Command::Manpages { .. } => "manpages",
        }
    }
}

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// Live on a terminal, plain lines otherwise.
    Auto,
    /// Spinners redrawn in place.
    Live,
    /// One line per event.
    Plain,
    /// No progress.
    None,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    /// When stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Result format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

impl Cli {
    /// How this run shows progress: only deploy, plan and destroy have any; `auto` is live when
    /// stderr is a terminal (and TERM is not `dumb`), plain lines otherwise.
    pub fn progress_mode(&self) -> ProgressMode {
        if !matches!(self.command, Command::Deploy { .. } | Command::Plan { .. } | Command::Destroy { .. }) {
            return ProgressMode::Off;
        }
        match self.progress {
            ProgressArg::Live => ProgressMode::Live,
            ProgressArg::Plain => ProgressMode::Plain,
            ProgressArg::None => ProgressMode::Off,
            ProgressArg::Auto => {
                let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
                if std::io::stderr().is_terminal() && !dumb {
                    ProgressMode::Live
                } else {
                    ProgressMode::Plain
                }
            }
        }
    }

    /// Whether to color stdout.
    pub fn color(&self) -> bool {
        match self.color {
            ColorArg::Always => true,
            ColorArg::Never => false,
            ColorArg::Auto => std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal(),
        }
    }

    /// The flags that were given, as the top figment layer.
    pub fn overrides(&self) -> Figment {
        let mut f = Figment::new();
        let mut set = |key: &str, value: &Option<String>| {
            if let Some(v) = value {
                f = std::mem::take(&mut f).merge(Serialized::default(key, v));
            }
        };
        set("environment", &self.environment);
        set("aws.region", &self.region);
        set("aws.profile", &self.profile);
        set("aws.endpoint_url", &self.endpoint_url);
        match &self.command {
            Command::Deploy { image_tag, no_wait, timeout, prune_data, allow_missing_image, .. } => {
                set("image_tag", image_tag);
                if *prune_data {
                    f = f.merge(Serialized::default("deploy.prune_data", true));
                }
                if *allow_missing_image {
                    f = f.merge(Serialized::default("deploy.allow_missing_images", true));
                }
                if *no_wait {
                    f = f.merge(Serialized::default("deploy.wait", false));
                }
                if let Some(t) = timeout {
                    f = f.merge(Serialized::default("deploy.timeout_seconds", t));
                }
            }
            Command::Run { timeout: Some(t), .. } => {
                f = f.merge(Serialized::default("deploy.timeout_seconds", t));
            }
            Command::Rollback { no_wait, timeout, .. } => {
                if *no_wait {
                    f = f.merge(Serialized::default("deploy.wait", false));
                }
                if let Some(t) = timeout {
                    f = f.merge(Serialized::default("deploy.timeout_seconds", t));
                }
            }
            Command::Plan { image_tag, prune_data, allow_missing_image, .. } => {
                set("image_tag", image_tag);
                if *prune_data {
                    f = f.merge(Serialized::default("deploy.prune_data", true));
                }
                if *allow_missing_image {
                    f = f.merge(Serialized::default("deploy.allow_missing_images", true));
                }
            }
            _ => {}
        }
        f
    }
}

/// Logs to stderr: `RUST_LOG` when set, else `info` (or debug/trace with -v/-vv); the SDK's own
/// chatter stays at warn unless asked for. While progress is shown (deploy, plan, destroy), the
/// default is `warn`: the progress view already tells what info logs would, and the runner's own
/// step lines are left out. Commands that print a result (outputs, status, list, cost, logs,
/// unlock) default to `warn` too, so stderr stays empty when all is well. The instance-metadata
/// probe of the credential and region chain stays silent unless `-v`: off an EC2 instance it
/// always fails, and tap's own error says what is missing.
pub fn init_logging(cli: &Cli) {
    let prints_result = !matches!(cli.command, Command::Deploy { .. } | Command::Plan { .. } | Command::Destroy { .. });
    let default = match (cli.verbose, cli.progress_mode()) {
        (0, ProgressMode::Live | ProgressMode::Plain) => "warn,tap::runner=off,aws_config::imds=off",
        (0, ProgressMode::Off) if prints_result => "warn,aws_config::imds=off",
        (0, ProgressMode::Off) => {
            "info,aws_config=warn,aws_config::imds=off,aws_smithy_runtime=warn,aws_sdk_ec2=warn,hyper=warn"
        }
        (1, _) => "debug,aws_config=info,aws_smithy_runtime=info,hyper=info,rustls=info,h2=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(LogWriterMaker).with_target(false);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::env::var_os("NO_COLOR").is_none() && is_terminal::is_terminal(std::io::stderr()))
            .init(),
    }
}
