//! The environment lock: two runs never write one environment at once, and a run that died
//! holding the lock does not block the next one.
//!
//! The lock is an AWS-side atomic create: a CloudWatch Logs group `/tap/locks/{s}` whose creation
//! fails when it already exists. It costs nothing while empty, lives in the account like the rest of
//! tap's state, and is deleted when the run ends. Its tags say who holds it ([`LockHolder`]): user,
//! host, pid, command, a random run id, when it was taken, and when its lease ends. The holder
//! renews the lease ([`HeldLock`]: a heartbeat every third of the lease, 30 s by default,
//! `TAP_LOCK_LEASE_SECONDS` to change it); a heartbeat that finds the lock taken over or removed,
//! or that could not renew it for a whole lease, reports the lock lost and the run stops.
//!
//! Deploy and destroy take the lock only when they have something to write (see `commands`): a
//! run with nothing to write makes no call here but the reads of [`EnvLock::check`].
//!
//! On the happy path the lock costs two round trips: [`EnvLock::check`]'s one read (which
//! `commands` makes while the read-only look runs) and [`EnvLock::acquire`]'s create, tried before
//! any look (a free lock needs none; only a create refused because the group exists looks at its
//! holder). [`EnvLock::hold`] makes no call before it returns: its heartbeat finds the lock's ARN
//! in the background.
//!
//! A lock is stale when its holder ran on this host and its pid is gone, or when its lease ended
//! (a crash elsewhere, a lost machine). A run that finds a stale lock takes it over: it creates the
//! log group `/tap/locks/{s}/takeover/{stale run id}` — an atomic create only one contender wins —
//! then re-reads the lock (a slow contender may win that marker after the first winner already
//! finished and removed it: the lock then names someone else, and it backs off), retags the lock
//! with itself and removes the marker. A marker whose creator died in between is taken over the
//! same way (named after that creator's run id). A lock without a lease (written by an older tap)
//! is never stale: `tap unlock` removes it.
//!
//! Leases compare the holder's clock with the reader's: clocks more than a few seconds apart
//! shorten or lengthen the wait by as much. Hosts are told apart by hostname, so two containers
//! sharing one hostname but not one pid namespace should not run tap against one environment.
//!
//! Its calls go through a client without the call counter, so "a no-op redeploy makes no mutating
//! call" speaks about the environment's resources, not this bookkeeping (which makes none on a
//! no-op either).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::Client;
use tap_core::aws::AwsSession;
use tap_core::naming::{TAG_COMPONENT, TAG_ENVIRONMENT};
use tap_core::wait::Backoff;
use tap_core::AwsError;
use tokio::sync::watch;

/// Tag carrying who holds the lock, for people (`user@host pid N deploy run R`).
const TAG_HOLDER: &str = "tap:lock-holder";
const TAG_USER: &str = "tap:lock-user";
const TAG_HOST: &str = "tap:lock-host";
const TAG_PID: &str = "tap:lock-pid";
const TAG_COMMAND: &str = "tap:lock-command";
const TAG_RUN: &str = "tap:lock-run";
/// Unix seconds when the current holder took the lock.
const TAG_TAKEN: &str = "tap:lock-taken";
/// Unix seconds when the lease ends unless renewed.
const TAG_LEASE_UNTIL: &str = "tap:lock-lease-until";
const TAG_LEASE_SECONDS: &str = "tap:lock-lease-seconds";

/// The lease when `TAP_LOCK_LEASE_SECONDS` does not set one.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How long a lock wait polls at most between two looks.
const MAX_POLL: Duration = Duration::from_secs(2);

/// Who holds a lock (or a takeover marker), as its tags say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockHolder {
    /// `user@host pid N (command)`, or the raw holder tag of a lock written by an older tap.
    pub holder: String,
    /// Seconds since it was taken.
    pub age_seconds: u64,
    /// The holder's run id.
    pub run: Option<String>,
    /// The holder's hostname.
    pub host: Option<String>,
    /// The holder's process id.
    pub pid: Option<u32>,
    /// Unix seconds when the lease ends; `None` for a lock without a lease.
    pub lease_until: Option<u64>,
    /// The holder's lease length, seconds.
    pub lease_seconds: Option<u64>,
}

impl LockHolder {
    /// `ana@ci pid 7 (deploy), run 1f2e`: for messages.
    pub fn describe(&self) -> String {
        match &self.run {
            Some(run) => format!("{}, run {run}", self.holder),
            None => self.holder.clone(),
        }
    }
}

/// Why a lock is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// Its holder ran on this host and its process is gone.
    ProcessGone,
    /// Its lease ended this many seconds ago.
    LeaseEnded(u64),
}

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error(
        "environment `{env}` is locked by {} (taken {} s ago{}); wait for that run to finish, pass \
         --lock-timeout SECONDS to wait for it, or run `tap --env {env} unlock` if it is stale",
        .holder.describe(), .holder.age_seconds, lease_phrase(.holder)
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

fn lease_phrase(holder: &LockHolder) -> String {
    match holder.lease_until {
        Some(until) => {
            let now = unix_now();
            if until >= now {
                format!(", lease ends in {} s", until - now)
            } else {
                format!(", lease ended {} s ago", now - until)
            }
        }
        None => ", no lease: written by an older tap".into(),
    }
}

/// How a lock was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// It was free.
    Free,
    /// It was stale and this run took it over from that holder.
    TookOver(LockHolder, Stale),
}

/// This process as a lock holder.
#[derive(Debug, Clone)]
struct Me {
    user: String,
    host: String,
    pid: u32,
    command: String,
    run: String,
    lease: Duration,
}

impl Me {
    /// The tags that make a group ours, taken now.
    fn tags(&self, env: &str) -> Vec<(String, String)> {
        let now = unix_now();
        vec![
            (TAG_ENVIRONMENT.into(), env.into()),
            (TAG_COMPONENT.into(), "lock".into()),
            // Tag values allow letters, digits, spaces and `_.:/=+-@` only.
            (
                TAG_HOLDER.into(),
                format!("{}@{} pid {} {} run {}", self.user, self.host, self.pid, self.command, self.run),
            ),
            (TAG_USER.into(), self.user.clone()),
            (TAG_HOST.into(), self.host.clone()),
            (TAG_PID.into(), self.pid.to_string()),
            (TAG_COMMAND.into(), self.command.clone()),
            (TAG_RUN.into(), self.run.clone()),
            (TAG_TAKEN.into(), now.to_string()),
            (TAG_LEASE_UNTIL.into(), (now + self.lease.as_secs()).to_string()),
            (TAG_LEASE_SECONDS.into(), self.lease.as_secs().to_string()),
        ]
    }
}

/// The lock of one environment.
#[derive(Debug, Clone)]
pub struct EnvLock {
    logs: Client,
    env: String,
    name: String,
    me: Me,
}

/// What a look at a group found.
#[derive(Debug, Clone)]
struct Group {
    name: String,
    arn: String,
    holder: LockHolder,
}

enum Attempt {
    Taken(Taken),
    /// Held by someone who is not stale (or is being taken over by a live contender).
    Held(LockHolder),
    /// The lock changed under us: look again at once.
    Again,
}

impl EnvLock {
    /// The lock of environment `env`, to be held as `command` by this process.
    pub fn new(clients: &AwsSession, env: &str, command: &str) -> Self {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        EnvLock {
            logs: Client::new(clients.sdk_config()),
            env: env.into(),
            name: format!("/tap/locks/{env}"),
            me: Me {
                user: tag_safe(&user),
                host: tag_safe(&hostname()),
                pid: std::process::id(),
                command: tag_safe(command),
                run: run_id(),
                lease: lease_from_env(),
            },
        }
    }

    fn aws(&self) -> impl Fn(AwsError) -> LockError + '_ {
        |source| LockError::Aws { name: self.name.clone(), source }
    }

    /// Who holds the lock, if anyone (read-only).
    pub async fn holder(&self) -> Result<Option<LockHolder>, LockError> {
        Ok(self.look(&self.name).await?.map(|g| g.holder))
    }

    /// Whether `holder` is stale, as seen from this host now.
    pub fn staleness(&self, holder: &LockHolder) -> Option<Stale> {
        stale(holder, &self.me.host, unix_now(), pid_alive)
    }

    /// The look before any write: `Ok` when the lock is free or stale (or held by this run), the
    /// holder otherwise — waiting for it as [`EnvLock::acquire`] would. `Ok(true)` when it waited
    /// (the lock was held when it looked first: what the holder did since is not known). One
    /// call when the lock is free. Read-only.
    pub async fn check(&self, timeout: Option<Duration>) -> Result<bool, LockError> {
        let waited = std::sync::atomic::AtomicBool::new(false);
        self.wait_while_held(timeout, || async {
            Ok(match self.look(&self.name).await? {
                Some(g)
                    if g.holder.run.as_deref() != Some(self.me.run.as_str()) && self.staleness(&g.holder).is_none() =>
                {
                    waited.store(true, std::sync::atomic::Ordering::Relaxed);
                    Attempt::Held(g.holder)
                }
                _ => Attempt::Taken(Taken::Free),
            })
        })
        .await?;
        Ok(waited.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Takes the lock: creates it when free, takes it over when stale, and while someone else
    /// holds it waits up to `timeout` (without one: only for a lease about to end, i.e. a holder
    /// that stopped renewing it), then fails naming the holder.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<Taken, LockError> {
        self.wait_while_held(timeout, || self.attempt()).await
    }

    /// Runs `attempt` until it takes the lock, waiting (polls with backoff) while it is held.
    async fn wait_while_held<F, Fut>(&self, timeout: Option<Duration>, mut attempt: F) -> Result<Taken, LockError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Attempt, LockError>>,
    {
        let start = Instant::now();
        // The deadline is decided below (the timeout, or the holder's lease), not by the backoff.
        let mut pauses =
            Backoff { initial: Duration::from_millis(100), max: MAX_POLL, timeout: Duration::MAX }.pauses();
        let mut told = None;
        loop {
            let holder = match attempt().await? {
                Attempt::Taken(taken) => return Ok(taken),
                Attempt::Again => {
                    // Changed under us (or a listing that lags behind a create): look again soon.
                    pauses.pause().await;
                    continue;
                }
                Attempt::Held(holder) => holder,
            };
            let waited = start.elapsed();
            let may_wait = match timeout {
                Some(limit) => waited + pauses.next() <= limit,
                // A holder that renews keeps more than half its lease ahead: one that has less
                // stopped renewing, and its lease ends soon.
                None => holder
                    .lease_until
                    .zip(holder.lease_seconds)
                    .is_some_and(|(until, lease)| until.saturating_sub(unix_now()) * 2 <= lease),
            };
            if !may_wait {
                return Err(LockError::Held { env: self.env.clone(), holder });
            }
            if told.as_ref() != Some(&holder.describe()) {
                tracing::warn!(
                    "environment `{}` is locked by {}; waiting{}",
                    self.env,
                    holder.describe(),
                    lease_phrase(&holder)
                );
                told = Some(holder.describe());
            }
            pauses.pause().await;
        }
    }

    /// One try to create it and, when it exists, one look: ours, stale (taken over), or held.
    async fn attempt(&self) -> Result<Attempt, LockError> {
        // A free lock is taken by its create alone: no look before it.
        if let Some(taken) = self.create().await? {
            return Ok(Attempt::Taken(taken));
        }
        let Some(lock) = self.look(&self.name).await? else {
            // Removed between our create and our look: try again.
            return Ok(Attempt::Again);
        };
        if lock.holder.run.as_deref() == Some(self.me.run.as_str()) {
            // Our own create (or takeover) whose answer was lost: the lock is ours.
            return Ok(Attempt::Taken(Taken::Free));
        }
        let Some(why) = self.staleness(&lock.holder) else { return Ok(Attempt::Held(lock.holder)) };
        Ok(match self.take_over(&lock, 0).await? {
            Claim::Won => Attempt::Taken(Taken::TookOver(lock.holder, why)),
            Claim::Contended(contender) => Attempt::Held(contender),
            Claim::Changed => Attempt::Again,
        })
    }

    /// Creates the lock: `Some` when this run took it, `None` when it exists (someone's, or our
    /// own create whose answer was lost and retried: the look after tells).
    async fn create(&self) -> Result<Option<Taken>, LockError> {
        let mut req = self.logs.create_log_group().log_group_name(&self.name);
        for (k, v) in self.me.tags(&self.env) {
            req = req.tags(k, v);
        }
        match req.send().await.map_err(AwsError::from) {
            Ok(_) => {
                tracing::debug!(lock = %self.name, run = %self.me.run, "lock taken");
                Ok(Some(Taken::Free))
            }
            Err(e) if e.is("ResourceAlreadyExistsException") => Ok(None),
            Err(e) => Err(self.aws()(e)),
        }
    }

    /// Replaces the stale holder of `target` (the lock, or a takeover marker whose creator died)
    /// with this run, unless another contender does first.
    async fn take_over(&self, target: &Group, depth: u8) -> Result<Claim, LockError> {
        let Some(stale_run) = target.holder.run.as_deref() else { return Ok(Claim::Contended(target.holder.clone())) };
        let marker = format!("{}/takeover/{stale_run}", self.name);
        let mut req = self.logs.create_log_group().log_group_name(&marker);
        for (k, v) in self.me.tags(&self.env) {
            req = req.tags(k, v);
        }
        match req.send().await.map_err(AwsError::from) {
            Ok(_) => {}
            Err(e) if e.is("ResourceAlreadyExistsException") => match self.look(&marker).await? {
                // Gone again: its creator finished (or gave up); the caller looks again.
                None => return Ok(Claim::Changed),
                Some(m) if m.holder.run.as_deref() == Some(self.me.run.as_str()) => {}
                Some(m) => {
                    // Another contender is taking it over, unless it died doing so.
                    if depth >= 2 || self.staleness(&m.holder).is_none() {
                        return Ok(Claim::Contended(m.holder));
                    }
                    match Box::pin(self.take_over(&m, depth + 1)).await? {
                        Claim::Won => {}
                        other => return Ok(other),
                    }
                }
            },
            Err(e) => return Err(self.aws()(e)),
        }
        // We hold the marker. A slow contender can get here after the first winner finished and
        // removed it: the target then no longer names the stale run.
        let now = self.look(&target.name).await?;
        if now.as_ref().and_then(|g| g.holder.run.as_deref()) != Some(stale_run) {
            self.remove(&marker).await;
            return Ok(Claim::Changed);
        }
        let mut req = self.logs.tag_resource().resource_arn(&target.arn);
        for (k, v) in self.me.tags(&self.env) {
            req = req.tags(k, v);
        }
        req.send().await.map_err(AwsError::from).map_err(self.aws())?;
        self.remove(&marker).await;
        Ok(Claim::Won)
    }

    /// Deletes a group we own; a failure only leaves a marker behind (`tap unlock` removes those).
    async fn remove(&self, name: &str) {
        match self.logs.delete_log_group().log_group_name(name).send().await.map_err(AwsError::from) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::warn!(group = name, error = %e, "could not remove a lock marker; `tap unlock` removes it")
            }
        }
    }

    /// The group `name` and its holder, if it exists.
    async fn look(&self, name: &str) -> Result<Option<Group>, LockError> {
        let groups = self
            .logs
            .describe_log_groups()
            .log_group_name_prefix(name)
            .send()
            .await
            .map_err(AwsError::from)
            .map_err(self.aws())?;
        let Some(group) = groups.log_groups().iter().find(|g| g.log_group_name() == Some(name)) else {
            return Ok(None);
        };
        let arn = lock_arn(group.arn().unwrap_or_default()).to_owned();
        let tags = match self.logs.list_tags_for_resource().resource_arn(&arn).send().await.map_err(AwsError::from) {
            Ok(t) => t.tags().cloned().unwrap_or_default(),
            // Deleted between the two calls.
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(self.aws()(e)),
        };
        let created_ms = group.creation_time().unwrap_or_default();
        Ok(Some(Group { name: name.to_owned(), arn, holder: holder_of(&tags, created_ms, unix_now()) }))
    }

    /// Removes the lock and any takeover markers, whoever holds them (`tap unlock`); returns the
    /// holder it removed.
    pub async fn force_release(&self) -> Result<Option<LockHolder>, LockError> {
        let holder = self.holder().await?;
        let markers = self
            .logs
            .describe_log_groups()
            .log_group_name_prefix(format!("{}/takeover/", self.name))
            .send()
            .await
            .map_err(AwsError::from)
            .map_err(self.aws())?;
        for marker in markers.log_groups().iter().filter_map(|g| g.log_group_name()) {
            self.remove(marker).await;
        }
        if holder.is_some() {
            match self.logs.delete_log_group().log_group_name(&self.name).send().await.map_err(AwsError::from) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(self.aws()(e)),
            }
        }
        Ok(holder)
    }

    /// Starts renewing the lease of the lock this run just took ([`EnvLock::acquire`]), in the
    /// background: no call before it returns.
    pub fn hold(&self) -> HeldLock {
        let (lost_tx, lost) = watch::channel(None);
        let heartbeat = tokio::spawn(heartbeat(self.clone(), lost_tx));
        HeldLock { lock: self.clone(), lost, heartbeat }
    }
}

enum Claim {
    Won,
    /// A live contender is taking it over.
    Contended(LockHolder),
    /// The target changed: look again.
    Changed,
}

/// The lock while this run holds it: its lease renewed in the background until [`HeldLock::release`].
#[derive(Debug)]
pub struct HeldLock {
    lock: EnvLock,
    lost: watch::Receiver<Option<String>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

/// Tells when a [`HeldLock`] is lost.
#[derive(Debug)]
pub struct LostSignal(watch::Receiver<Option<String>>);

impl LostSignal {
    /// Resolves if the lock is lost while the run goes on (taken over after renewals failed for a
    /// whole lease, or removed by `tap unlock`), with why; never while it is held.
    pub async fn wait(mut self) -> String {
        loop {
            if let Some(why) = self.0.borrow_and_update().clone() {
                return why;
            }
            if self.0.changed().await.is_err() {
                // The heartbeat ended without reporting a loss (it was stopped by release).
                std::future::pending::<()>().await;
            }
        }
    }
}

impl HeldLock {
    /// A signal for the loss of this lock.
    pub fn lost_signal(&self) -> LostSignal {
        LostSignal(self.lost.clone())
    }

    /// Stops renewing and deletes the lock if it is still this run's.
    pub async fn release(self) -> Result<(), LockError> {
        self.heartbeat.abort();
        let lock = &self.lock;
        match lock.look(&lock.name).await? {
            None => Ok(()),
            Some(g) if g.holder.run.as_deref() == Some(lock.me.run.as_str()) => {
                match lock.logs.delete_log_group().log_group_name(&lock.name).send().await.map_err(AwsError::from) {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_not_found() => Ok(()),
                    Err(e) => Err(lock.aws()(e)),
                }
            }
            Some(g) => {
                tracing::warn!(holder = %g.holder.describe(), "the environment lock is held by another run now; left alone");
                Ok(())
            }
        }
    }
}

/// Renews the lease every third of it; reports the lock lost when it names another run, is gone,
/// or could not be renewed for a whole lease. It first finds the lock's ARN.
async fn heartbeat(lock: EnvLock, lost: watch::Sender<Option<String>>) {
    let lease = lock.me.lease;
    // A steady beat: the time the calls take does not stretch the period.
    let mut beat = tokio::time::interval((lease / 3).max(Duration::from_millis(500)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.tick().await;
    let mut renewed = Instant::now();
    // The lock's ARN, found at once (beside the run's first calls, not before them).
    let arn = loop {
        match lock.look(&lock.name).await {
            Ok(Some(g)) if g.holder.run.as_deref() == Some(lock.me.run.as_str()) => break g.arn,
            Ok(Some(g)) => {
                let _ = lost.send(Some(format!("it was taken over by {}", g.holder.describe())));
                return;
            }
            Ok(None) => {
                let _ = lost.send(Some("it was removed (by `tap unlock`?)".into()));
                return;
            }
            Err(e) => {
                tracing::warn!(lock = %lock.name, error = %e, "could not read the environment lock");
                if renewed.elapsed() >= lease {
                    let _ = lost.send(Some(format!("its lease could not be renewed for {} s", lease.as_secs())));
                    return;
                }
                beat.tick().await;
            }
        }
    };
    loop {
        beat.tick().await;
        let tags = lock.logs.list_tags_for_resource().resource_arn(&arn).send().await.map_err(AwsError::from);
        let result = match tags {
            Ok(t) => {
                let tags = t.tags().cloned().unwrap_or_default();
                if tags.get(TAG_RUN) != Some(&lock.me.run) {
                    let holder = holder_of(&tags, 0, unix_now());
                    let _ = lost.send(Some(format!("it was taken over by {}", holder.describe())));
                    return;
                }
                let until = (unix_now() + lease.as_secs()).to_string();
                lock.logs
                    .tag_resource()
                    .resource_arn(&arn)
                    .tags(TAG_LEASE_UNTIL, until)
                    .send()
                    .await
                    .map(drop)
                    .map_err(AwsError::from)
            }
            Err(e) if e.is_not_found() => {
                let _ = lost.send(Some("it was removed (by `tap unlock`?)".into()));
                return;
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::debug!(lock = %lock.name, "lease renewed");
                renewed = Instant::now();
            }
            Err(e) => {
                tracing::warn!(lock = %lock.name, error = %e, "could not renew the environment lock's lease");
                if renewed.elapsed() >= lease {
                    let _ = lost.send(Some(format!("its lease could not be renewed for {} s", lease.as_secs())));
                    return;
                }
            }
        }
    }
}

/// Whether `holder` is stale for a reader on `my_host` at `now` (unix seconds).
fn stale(holder: &LockHolder, my_host: &str, now: u64, alive: impl Fn(u32) -> Option<bool>) -> Option<Stale> {
    if let (Some(host), Some(pid)) = (&holder.host, holder.pid) {
        if host == my_host && alive(pid) == Some(false) {
            return Some(Stale::ProcessGone);
        }
    }
    // The lease runs to the end of its last second.
    match holder.lease_until {
        Some(until) if now > until => Some(Stale::LeaseEnded(now - until)),
        _ => None,
    }
}

/// Whether process `pid` of this host runs; `None` where `/proc` cannot tell.
fn pid_alive(pid: u32) -> Option<bool> {
    if !std::path::Path::new("/proc/self").exists() {
        return None;
    }
    Some(std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Reads a holder from its tags; `created_ms` (the group's creation time) stands in for the time
/// taken on locks of older taps.
fn holder_of(tags: &HashMap<String, String>, created_ms: i64, now: u64) -> LockHolder {
    let get = |k: &str| tags.get(k).cloned();
    let num = |k: &str| tags.get(k).and_then(|v| v.parse::<u64>().ok());
    let taken = num(TAG_TAKEN).unwrap_or_else(|| (created_ms.max(0) / 1000) as u64);
    let holder = match (get(TAG_USER), get(TAG_HOST), get(TAG_PID), get(TAG_COMMAND)) {
        (Some(user), Some(host), Some(pid), Some(command)) => format!("{user}@{host} pid {pid} ({command})"),
        _ => get(TAG_HOLDER).unwrap_or_else(|| "an unknown holder".into()),
    };
    LockHolder {
        holder,
        age_seconds: now.saturating_sub(taken),
        run: get(TAG_RUN),
        host: get(TAG_HOST),
        pid: num(TAG_PID).and_then(|p| u32::try_from(p).ok()),
        lease_until: num(TAG_LEASE_UNTIL),
        lease_seconds: num(TAG_LEASE_SECONDS),
    }
}

/// Log group ARNs from DescribeLogGroups end in `:*`; the tagging API wants them without.
fn lock_arn(arn: &str) -> &str {
    arn.strip_suffix(":*").unwrap_or(arn)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// The lease length: `TAP_LOCK_LEASE_SECONDS` (at least 3), or [`DEFAULT_LEASE`].
fn lease_from_env() -> Duration {
    match std::env::var("TAP_LOCK_LEASE_SECONDS").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(secs) => Duration::from_secs(secs.max(3)),
        None => DEFAULT_LEASE,
    }
}

/// This host's name (the kernel's, as `hostname` prints it).
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// 16 random hex digits (std's per-process random hash keys, mixed with the time and pid).
fn run_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default());
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Keeps what CloudWatch Logs allows in tag values (letters, digits, spaces, `_.:/=+-@`).
fn tag_safe(s: &str) -> String {
    let cleaned: String =
        s.chars().map(|c| if c.is_alphanumeric() || " _.:/=+-@".contains(c) { c } else { '-' }).take(64).collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(host: &str, pid: u32, lease_until: Option<u64>) -> LockHolder {
        LockHolder {
            holder: format!("ana@{host} pid {pid} (deploy)"),
            run: Some("r1".into()),
            host: Some(host.into()),
            pid: Some(pid),
            lease_until,
            lease_seconds: Some(30),
            ..LockHolder::default()
        }
    }

    #[test]
    fn arn_suffix_is_stripped() {
        assert_eq!(
            lock_arn("arn:aws:logs:us-east-1:1:log-group:/tap/locks/dev:*"),
            "arn:aws:logs:us-east-1:1:log-group:/tap/locks/dev"
        );
    }

    #[test]
    fn held_error_names_the_holder_and_the_way_out() {
        let e = LockError::Held { env: "dev".into(), holder: holder("ci", 7, Some(unix_now() + 20)) };
        let msg = e.to_string();
        assert!(
            msg.contains("ana@ci pid 7 (deploy), run r1")
                && msg.contains("lease ends in")
                && msg.contains("tap --env dev unlock")
                && msg.contains("--lock-timeout"),
            "{msg}"
        );
    }

    #[test]
    fn a_dead_pid_on_this_host_is_stale_at_once_elsewhere_only_when_the_lease_ends() {
        let now = 1_000;
        let dead = |_| Some(false);
        let alive = |_| Some(true);
        let fresh = Some(now + 25);
        assert_eq!(stale(&holder("me", 7, fresh), "me", now, dead), Some(Stale::ProcessGone));
        assert_eq!(stale(&holder("me", 7, fresh), "me", now, alive), None);
        assert_eq!(stale(&holder("other", 7, fresh), "me", now, dead), None, "another host's pids say nothing");
        assert_eq!(stale(&holder("other", 7, Some(now - 4)), "me", now, alive), Some(Stale::LeaseEnded(4)));
        assert_eq!(
            stale(&holder("me", 7, Some(now)), "me", now, alive),
            None,
            "the lease runs to the end of its second"
        );
        assert_eq!(stale(&holder("me", 7, Some(now - 1)), "me", now, alive), Some(Stale::LeaseEnded(1)));
        assert_eq!(stale(&holder("me", 7, fresh), "me", now, |_| None), None, "no /proc: only the lease counts");
        let legacy = LockHolder { holder: "ana@ci pid 7 (deploy) run 1".into(), ..LockHolder::default() };
        assert_eq!(stale(&legacy, "ci", now, dead), None, "a lock without a lease is never stale");
    }

    #[test]
    fn holders_are_read_from_their_tags_or_from_an_older_taps_single_tag() {
        let me = Me {
            user: "ana".into(),
            host: "ci-3".into(),
            pid: 42,
            command: "deploy".into(),
            run: "00ff".into(),
            lease: Duration::from_secs(30),
        };
        let tags: HashMap<String, String> = me.tags("dev").into_iter().collect();
        let now = unix_now();
        let h = holder_of(&tags, 0, now + 5);
        assert_eq!(h.holder, "ana@ci-3 pid 42 (deploy)");
        assert_eq!((h.run.as_deref(), h.host.as_deref(), h.pid), (Some("00ff"), Some("ci-3"), Some(42)));
        assert!(h.lease_until.is_some_and(|t| t >= now + 30 && t <= now + 31), "{h:?}");
        assert_eq!(h.lease_seconds, Some(30));
        assert!((5..=6).contains(&h.age_seconds), "{h:?}");
        for (k, v) in &tags {
            assert!(v.chars().all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c)), "tag {k}={v} is a valid value");
        }

        let old: HashMap<String, String> = [(TAG_HOLDER.to_string(), "ana@b7 pid 1 (deploy) run 1".to_string())].into();
        let h = holder_of(&old, 10_000, 40);
        assert_eq!((h.holder.as_str(), h.age_seconds, h.lease_until), ("ana@b7 pid 1 (deploy) run 1", 30, None));
    }

    #[test]
    fn tag_values_are_made_safe_and_run_ids_differ() {
        assert_eq!(tag_safe("ana (ci)"), "ana -ci-");
        assert_eq!(tag_safe(""), "unknown");
        assert_ne!(run_id(), run_id());
        assert_eq!(run_id().len(), 16);
    }
}
