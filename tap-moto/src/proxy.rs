//! A small loopback HTTP proxy in front of `moto_server` that injects what real AWS does to a
//! client: latency, throttling, responses lost after the request took effect, `500
//! InternalError` answers to requests that took effect, and a stall that lets a test kill the
//! client at an exact call; and, when set ([`Proxy::set_rate_limits`]), AWS's per-service token
//! bucket rate limits ([`crate::rate_limits`]).
//!
//! Each client connection carries one request: the proxy answers with `Connection: close`, so the
//! SDK opens a new connection per call and every call passes through here on its own.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::async_deletes::AsyncDeletes;
use crate::rate_limits::{self, BucketId, RateLimiter, RateLimits, Service};
use crate::rollout::{Double, Reply, Rollouts};
use crate::service_quotas::ServiceQuotas;

/// What to do to the calls passing through.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added to every call before it is forwarded.
    pub latency: Duration,
    /// Percentage (0-100) of calls answered with the protocol's throttling error, not forwarded.
    pub throttle_percent: u32,
    /// Percentage (0-100) of create-like calls forwarded (so they take effect) whose response is
    /// then dropped: the client sees the connection close without an answer.
    pub drop_create_response_percent: u32,
    /// Percentage (0-100) of create-like calls ([`is_create`]) forwarded to moto which, when moto
    /// carried them out (a 2xx answer), are then answered `500` with the protocol's
    /// internal-error body instead: what AWS does when a request took effect and its answer still
    /// says it failed.
    pub internal_error_after_create_percent: u32,
    /// Seed of the pseudo-random choice of the calls that get a fault, read when the proxy starts
    /// (`0`: the default seed). Each seed gives another reproducible set of faulted calls.
    pub seed: u64,
    /// After this many calls, every further call is held without an answer (the client hangs
    /// there, for a test to kill it at that exact point).
    pub stall_after: Option<u64>,
    /// How long AWS's asynchronous deletions take (see [`crate::async_deletes`]): a NAT gateway
    /// stays `deleting`, a deleted load balancer's or service's network interfaces keep holding
    /// their subnets and security groups. `None`: deletions take effect at once, as in moto.
    pub async_delete_window: Option<Duration>,
}

/// One call seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenCall {
    /// The operation (`Action=` of query protocols, or the `X-Amz-Target` operation).
    pub operation: String,
    /// What the proxy did with it.
    pub fate: Fate,
    /// The rate-limit buckets it is subject to (empty when no [`RateLimits`] are set): it took a
    /// token from each, unless it was [`Fate::Throttled`] or [`Fate::Stalled`].
    pub buckets: Vec<BucketId>,
}

/// What the proxy did with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Forwarded and answered.
    Forwarded,
    /// Answered with a throttling error, not forwarded: by [`Faults::throttle_percent`] or because
    /// one of its rate-limit buckets was empty ([`Proxy::set_rate_limits`]).
    Throttled,
    /// Forwarded, then the response was dropped.
    ResponseDropped,
    /// Forwarded and carried out, then answered `500` with an internal-error body.
    InternalErrorAfterEffect,
    /// Held without an answer.
    Stalled,
    /// Refused as AWS refuses a deletion whose dependents are still being deleted
    /// ([`Faults::async_delete_window`]), not forwarded.
    Refused,
    /// Answered by the ECS rollout double ([`crate::rollout`]) or the Service Quotas double
    /// ([`crate::service_quotas`]), not forwarded.
    Synthesized,
}

#[derive(Debug)]
struct Shared {
    upstream: u16,
    faults: Mutex<Faults>,
    calls: Mutex<Vec<SeenCall>>,
    counter: AtomicU64,
    rng: AtomicU64,
    stopped: AtomicBool,
    deletes: AsyncDeletes,
    /// The ECS rollout double, when a test turned it on.
    rollouts: Mutex<Option<Arc<Double>>>,
    /// AWS's rate limits and the buckets' tokens, when set.
    limiter: Mutex<Option<Arc<RateLimiter>>>,
    /// The Service Quotas double, when a test turned it on.
    quotas: Mutex<Option<Arc<ServiceQuotas>>>,
}

/// A running proxy; stops accepting when dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16, faults: Faults) -> io::Result<Proxy> {
        let faults_seed = faults.seed;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            upstream: upstream_port,
            faults: Mutex::new(faults),
            calls: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
            rng: AtomicU64::new(initial_state(faults_seed)),
            stopped: AtomicBool::new(false),
            deletes: AsyncDeletes::default(),
            rollouts: Mutex::new(None),
            limiter: Mutex::new(None),
            quotas: Mutex::new(None),
        });
        let accept_shared = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let s = accept_shared.clone();
                    thread::spawn(move || {
                        let _ = handle(stream, &s);
                    });
                }
            }
        });
        Ok(Proxy { port, shared })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Replaces the faults (e.g. to stop injecting them).
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Turns on the ECS rollout double (see [`crate::rollout`]) for the services created from
    /// now on.
    /// The double moves listener rule weights and reads alarms in the moto behind the proxy, and
    /// plays rollouts forward on its own every [`Rollouts::tick`].
    pub fn set_rollouts(&self, settings: Rollouts) {
        let double = Arc::new(Double::with_upstream(settings, self.shared.upstream));
        Double::start_ticking(&double);
        *self.shared.rollouts.lock().unwrap_or_else(|e| e.into_inner()) = Some(double);
    }

    /// Turns on the Service Quotas double ([`crate::service_quotas`]): Service Quotas calls are
    /// answered as AWS answers them ([`Fate::Synthesized`]), with these applied values (service
    /// code, quota code, value) and AWS's documented defaults for the others. Calling it again
    /// replaces the applied values.
    pub fn set_quotas(&self, applied: &[(&str, &str, f64)]) {
        let double = ServiceQuotas::new(applied.iter().map(|(s, q, v)| ((s.to_string(), q.to_string()), *v)));
        *self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(double));
    }

    /// Limits the calls from now on to AWS's request rates ([`crate::rate_limits`]): each call
    /// takes a token from its service's buckets, starting full, or is answered with the service's
    /// throttling error ([`Fate::Throttled`]) and not forwarded. The buckets are shared by every
    /// client of this proxy. `None` lifts the limits; setting limits again starts from full
    /// buckets.
    pub fn set_rate_limits(&self, limits: Option<RateLimits>) {
        *self.shared.limiter.lock().unwrap_or_else(|e| e.into_inner()) = limits.map(|l| Arc::new(RateLimiter::new(l)));
    }

    /// Names each call's rate-limit buckets ([`SeenCall::buckets`]) by `limits` without throttling
    /// any: what the calls would meet, for [`RateLimits::lower_bound`]. `None`: off.
    pub fn observe_rate_limits(&self, limits: Option<RateLimits>) {
        *self.shared.limiter.lock().unwrap_or_else(|e| e.into_inner()) =
            limits.map(|l| Arc::new(RateLimiter::observing(l)));
    }

    /// The rate limits in force or observed, if any.
    pub fn rate_limits(&self) -> Option<RateLimits> {
        self.shared.limiter.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|l| l.limits().clone())
    }

    /// Every call seen so far.
    pub fn calls(&self) -> Vec<SeenCall> {
        self.shared.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many calls have arrived.
    pub fn call_count(&self) -> u64 {
        self.shared.counter.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port));
    }
}

/// The generator's first state for `seed`: the historical constant for `0`, else the seed mixed
/// (splitmix64) so that small seeds give unrelated sequences; never 0 (xorshift would stay 0).
fn initial_state(seed: u64) -> u64 {
    if seed == 0 {
        return 0x9E37_79B9_7F4A_7C15;
    }
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

/// A deterministic pseudo-random percentage (xorshift), so fault runs are reproducible.
fn roll(shared: &Shared) -> u32 {
    let mut x = shared.rng.load(Ordering::SeqCst);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    shared.rng.store(x, Ordering::SeqCst);
    (x % 100) as u32
}

/// Whether an operation creates something (its lost response could make a naive client create twice).
pub fn is_create(operation: &str) -> bool {
    ["Create", "Allocate", "Register", "Put", "Run", "Associate", "Attach", "Authorize"]
        .iter()
        .any(|p| operation.starts_with(p))
}

struct Request {
    head: Vec<u8>,
    body: Vec<u8>,
    target: Option<String>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    let mut content_length = 0usize;
    let mut target = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue; // replaced by `Connection: close` below
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("x-amz-target:") {
            target = line.split_once(':').map(|(_, v)| v.trim().rsplit('.').next().unwrap_or("").to_owned());
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request { head, body, target }))
}

/// The upstream's whole response: up to the end of its `Content-Length` body, like any HTTP client
/// (moto closes the connection some 10 ms after answering, a wait real AWS does not add), or to
/// the end of the stream when there is no length.
fn read_response(upstream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length: Option<usize> =
                head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
            match length {
                Some(length) => {
                    while response.len() < end + length {
                        let n = upstream.read(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        response.extend_from_slice(&buf[..n]);
                    }
                }
                None => {
                    upstream.read_to_end(&mut response)?;
                }
            }
            return Ok(response);
        }
        let n = upstream.read(&mut buf)?;
        if n == 0 {
            return Ok(response);
        }
        response.extend_from_slice(&buf[..n]);
    }
}

fn operation(req: &Request) -> String {
    if let Some(t) = &req.target {
        return t.clone();
    }
    let body = String::from_utf8_lossy(&req.body);
    body.split('&').find_map(|kv| kv.strip_prefix("Action=")).map(str::to_owned).unwrap_or_else(|| {
        // REST protocols: method and path.
        String::from_utf8_lossy(&req.head).lines().next().unwrap_or("").to_owned()
    })
}

/// An error answer, in each protocol's shape.
struct ErrorShape {
    /// The HTTP status line's code and reason.
    status: &'static str,
    /// The code of JSON protocols (`X-Amz-Target`: ECS, ECR, Logs, Secrets Manager, Cloud Map,
    /// Application Auto Scaling).
    json_code: &'static str,
    /// EC2's code (query protocol, `Version=2016-11-15`, its own XML shape).
    ec2_code: &'static str,
    /// The code of the other query protocols (IAM, ELBv2).
    query_code: &'static str,
    /// Their fault type: `Sender` or `Receiver`.
    query_type: &'static str,
    message: &'static str,
}

const THROTTLING: ErrorShape = ErrorShape {
    status: "400 Bad Request",
    json_code: "ThrottlingException",
    ec2_code: "RequestLimitExceeded",
    query_code: "Throttling",
    query_type: "Sender",
    message: "Rate exceeded",
};

const INTERNAL_ERROR: ErrorShape = ErrorShape {
    status: "500 Internal Server Error",
    json_code: "InternalFailure",
    ec2_code: "InternalError",
    query_code: "InternalFailure",
    query_type: "Receiver",
    message: "We encountered an internal error. Please try again.",
};

fn error_response(req: &Request, shape: &ErrorShape) -> Vec<u8> {
    let body_text = String::from_utf8_lossy(&req.body);
    let message = shape.message;
    let (content_type, error_type, body) = if req.target.is_some() {
        let code = shape.json_code;
        ("application/x-amz-json-1.1", code, format!(r#"{{"__type":"{code}","message":"{message}"}}"#))
    } else if body_text.contains("Version=2016-11-15") {
        ("text/xml", shape.ec2_code, ec2_error_body(shape.ec2_code, message, "tap-proxy"))
    } else {
        ("text/xml", shape.query_code, query_error_body(shape.query_type, shape.query_code, message, "tap-proxy"))
    };
    http_response(shape.status, content_type, &format!("x-amzn-ErrorType: {error_type}\r\n"), &body)
}

/// An HTTP/1.1 answer that closes the connection: `status` (e.g. `400 Bad Request`), the content
/// type, `headers` (each ending in `\r\n`) and `body`.
pub(crate) fn http_response(status: &str, content_type: &str, headers: &str, body: &str) -> Vec<u8> {
    let length = body.len();
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{headers}Content-Length: {length}\r\n");
    format!("{head}Connection: close\r\n\r\n{body}").into_bytes()
}

/// EC2's XML error body.
pub(crate) fn ec2_error_body(code: &str, message: &str, request_id: &str) -> String {
    format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
}

/// The other query services' XML error body (`fault`: `Sender` or `Receiver`).
pub(crate) fn query_error_body(fault: &str, code: &str, message: &str, request_id: &str) -> String {
    format!("<ErrorResponse><Error><Type>{fault}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
}

/// An EC2 error answer (`400`, EC2's XML shape) with this code and message.
fn ec2_error(code: &str, message: &str) -> Vec<u8> {
    http_response("400 Bad Request", "text/xml", "", &ec2_error_body(code, message, "tap-proxy"))
}

/// Whether an upstream response is a success (`HTTP/1.1 2xx`).
fn is_success(response: &[u8]) -> bool {
    response.split(|&b| b == b' ').nth(1).is_some_and(|code| code.first() == Some(&b'2'))
}

/// The region of a signed request (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`), or "".
fn region(req: &Request) -> String {
    let head = String::from_utf8_lossy(&req.head);
    head.split("Credential=").nth(1).and_then(|c| c.split('/').nth(2)).unwrap_or_default().to_owned()
}

/// `response` with its body replaced by `body` (and its length fixed).
fn with_body(response: &[u8], body: &str) -> Vec<u8> {
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |i| i + 2);
    let head = String::from_utf8_lossy(&response[..end]);
    let mut out: String = head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("content-length:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

/// The double's answer on the wire.
fn reply_response(reply: &Reply) -> Vec<u8> {
    let status = if reply.status == 200 { "200 OK".to_string() } else { format!("{} Bad Request", reply.status) };
    let error = reply.error_type.as_ref().map(|e| format!("x-amzn-ErrorType: {e}\r\n")).unwrap_or_default();
    let headers = format!("x-amzn-RequestId: tap-rollout-double\r\n{error}");
    http_response(&status, reply.content_type, &headers, &reply.body)
}

fn handle(client: TcpStream, shared: &Shared) -> io::Result<()> {
    // Small writes go out at once: with Nagle's algorithm a request or response split over two
    // writes waits for the peer's delayed ACK (up to 40 ms), a cost real AWS does not have.
    client.set_nodelay(true)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(req) = read_request(&mut reader)? else { return Ok(()) };
    let op = operation(&req);
    let n = shared.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let limiter = shared.limiter.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let head = String::from_utf8_lossy(&req.head).into_owned();
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let service = limiter.as_ref().and_then(|_| Service::of_request(&head, &body));
    let buckets = match (&limiter, service) {
        (Some(limiter), Some(service)) => limiter.limits().buckets(service, &region(&req), &op, &body),
        _ => Vec::new(),
    };
    let record = |fate| {
        let call = SeenCall { operation: op.clone(), fate, buckets: buckets.clone() };
        shared.calls.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    };
    let mut client = client;
    if faults.stall_after.is_some_and(|limit| n > limit) {
        record(Fate::Stalled);
        // Hold the call until the client goes away.
        let _ = client.read(&mut [0u8; 1]);
        return Ok(());
    }
    if !faults.latency.is_zero() {
        thread::sleep(faults.latency);
    }
    if let (Some(limiter), Some(service)) = (&limiter, service) {
        if limiter.enforces() && limiter.admit(&buckets, Instant::now()).is_err() {
            record(Fate::Throttled);
            client.write_all(&rate_limits::throttling_response(service, &op))?;
            return client.shutdown(Shutdown::Both);
        }
    }
    if faults.throttle_percent > 0 && roll(shared) < faults.throttle_percent {
        record(Fate::Throttled);
        client.write_all(&error_response(&req, &THROTTLING))?;
        return client.shutdown(Shutdown::Both);
    }
    if let Some((code, message)) = faults.async_delete_window.and_then(|w| shared.deletes.refusal(w, &op, &body)) {
        record(Fate::Refused);
        client.write_all(&ec2_error(code, &message))?;
        return client.shutdown(Shutdown::Both);
    }
    let quotas = shared.quotas.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if head.contains("ServiceQuotasV20190624") {
        if let Some(reply) = quotas.as_ref().and_then(|q| q.answer(&op, &region(&req), &req.body)) {
            record(Fate::Synthesized);
            client.write_all(&reply_response(&reply))?;
            return client.shutdown(Shutdown::Both);
        }
    }
    // Cloud Map shares ECS's operation names (CreateService, UpdateService, DeleteService): only
    // ECS's own calls are ECS services.
    let ecs = head.contains("AmazonEC2ContainerService");
    let double = shared.rollouts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(reply) = double.as_ref().and_then(|d| d.answer(&op, ecs, &region(&req), &req.body)) {
        record(Fate::Synthesized);
        client.write_all(&reply_response(&reply))?;
        return client.shutdown(Shutdown::Both);
    }
    let window = faults.async_delete_window.unwrap_or_default();
    free_addresses(shared, window);
    let mut upstream = TcpStream::connect((Ipv4Addr::LOCALHOST, shared.upstream))?;
    upstream.set_nodelay(true)?;
    upstream.write_all(&[req.head.as_slice(), req.body.as_slice()].concat())?;
    let mut response = read_response(&mut upstream)?;
    if is_success(&response) {
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |i| i + 4);
        if op == "DeleteNatGateway" && !ecs {
            learn_nat(shared, &region(&req), &body);
        }
        shared.deletes.observe(&op, ecs, &region(&req), &body, &String::from_utf8_lossy(&response[split..]));
        free_addresses(shared, window);
    }
    if let Some(window) = faults.async_delete_window {
        response = shared.deletes.rewrite(window, &op, response);
    }
    if let Some(d) = double.as_ref().filter(|_| ecs && is_success(&response)) {
        let start = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(response.len(), |i| i + 4);
        if let Some(body) = d.observe(&op, &req.body, &response[start..]) {
            response = with_body(&response, &body);
        }
    }
    if faults.drop_create_response_percent > 0 && is_create(&op) && roll(shared) < faults.drop_create_response_percent {
        record(Fate::ResponseDropped);
        return client.shutdown(Shutdown::Both);
    }
    if faults.internal_error_after_create_percent > 0
        && is_create(&op)
        && is_success(&response)
        && roll(shared) < faults.internal_error_after_create_percent
    {
        record(Fate::InternalErrorAfterEffect);
        client.write_all(&error_response(&req, &INTERNAL_ERROR))?;
        return client.shutdown(Shutdown::Both);
    }
    record(Fate::Forwarded);
    client.write_all(&response)?;
    client.shutdown(Shutdown::Both)
}

/// Disassociates in moto the Elastic IPs of the NAT gateways that are now `deleted` (see
/// [`crate::async_deletes`]); moto never does.
fn free_addresses(shared: &Shared, window: Duration) {
    for (region, ip) in shared.deletes.due_frees(window) {
        let params = [("Action", "DisassociateAddress"), ("Version", "2016-11-15"), ("PublicIp", ip.as_str())]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        if let Err(e) = crate::upstream::query(shared.upstream, &region, "ec2", &params) {
            eprintln!("tap-moto proxy: freeing {ip} in moto failed: {e}");
        }
    }
}

/// A NAT gateway about to be deleted that the proxy did not see created: learnt from moto, so its
/// addresses are freed when it is `deleted`.
fn learn_nat(shared: &Shared, region: &str, body: &str) {
    let Some(id) = crate::async_deletes::form_value(body, "NatGatewayId") else { return };
    if shared.deletes.knows_nat(&id) {
        return;
    }
    let params = [
        ("Action", "DescribeNatGateways"),
        ("Version", "2016-11-15"),
        ("Filter.1.Name", "nat-gateway-id"),
        ("Filter.1.Value.1", id.as_str()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    if let Ok((200, xml)) = crate::upstream::query(shared.upstream, region, "ec2", &params) {
        shared.deletes.learn_nat(&id, region, &xml);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_like_operations() {
        assert!(is_create("CreateVpc") && is_create("AllocateAddress") && is_create("PutLifecyclePolicy"));
        assert!(!is_create("DescribeVpcs") && !is_create("DeleteVpc"));
    }

    /// A proxy in front of a one-shot upstream that answers 200 `ok` to every connection, and a
    /// way to send it one request with this body (and `X-Amz-Target` header, if any).
    fn proxy_over_ok_upstream() -> Proxy {
        let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let up_port = upstream.local_addr().unwrap().port();
        thread::spawn(move || {
            for s in upstream.incoming().flatten() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let _ = read_request(&mut r);
                let mut s = s;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        Proxy::start(up_port, Faults::default()).unwrap()
    }

    fn send(proxy: &Proxy, target: Option<&str>, body: &str) -> String {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, proxy.port)).unwrap();
        let target = target.map(|t| format!("X-Amz-Target: {t}\r\n")).unwrap_or_default();
        write!(s, "POST / HTTP/1.1\r\nHost: x\r\n{target}Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn forwards_creates_then_answers_internal_error() {
        let proxy = proxy_over_ok_upstream();
        proxy.set_faults(Faults { internal_error_after_create_percent: 100, ..Faults::default() });
        let ec2 = send(&proxy, None, "Action=AllocateAddress&Version=2016-11-15");
        assert!(ec2.starts_with("HTTP/1.1 500 "), "{ec2}");
        assert!(ec2.contains("<Errors><Error><Code>InternalError</Code>"), "{ec2}");
        let iam = send(&proxy, None, "Action=CreateRole&Version=2010-05-08");
        assert!(iam.starts_with("HTTP/1.1 500 ") && iam.contains("<Code>InternalFailure</Code>"), "{iam}");
        assert!(iam.contains("<Type>Receiver</Type>"), "{iam}");
        let ecs = send(&proxy, Some("AmazonEC2ContainerServiceV20141113.RegisterTaskDefinition"), "{}");
        assert!(ecs.starts_with("HTTP/1.1 500 "), "{ecs}");
        assert!(ecs.contains(r#"{"__type":"InternalFailure""#) && ecs.contains("x-amzn-ErrorType: InternalFailure"));
        let read = send(&proxy, Some("AmazonEC2ContainerServiceV20141113.DescribeServices"), "{}");
        assert!(read.ends_with("ok"), "reads are answered: {read}");
        let fates: Vec<(String, Fate)> = proxy.calls().into_iter().map(|c| (c.operation, c.fate)).collect();
        assert_eq!(
            fates,
            vec![
                ("AllocateAddress".into(), Fate::InternalErrorAfterEffect),
                ("CreateRole".into(), Fate::InternalErrorAfterEffect),
                ("RegisterTaskDefinition".into(), Fate::InternalErrorAfterEffect),
                ("DescribeServices".into(), Fate::Forwarded),
            ]
        );
    }

    /// ECS's own calls meet the double (an invalid deployment configuration is refused as ECS
    /// refuses it, not forwarded); Cloud Map's calls of the same names pass untouched.
    #[test]
    fn the_double_answers_ecs_and_leaves_cloud_map_alone() {
        let proxy = proxy_over_ok_upstream();
        proxy.set_rollouts(Rollouts::default());
        let invalid = r#"{"serviceName":"s","desiredCount":1,"deploymentConfiguration":{"strategy":"LINEAR","linearConfiguration":{"stepPercent":1.0}}}"#;
        let ecs = send(&proxy, Some("AmazonEC2ContainerServiceV20141113.CreateService"), invalid);
        assert!(ecs.starts_with("HTTP/1.1 400 "), "{ecs}");
        assert!(ecs.contains("x-amzn-ErrorType: InvalidParameterException") && ecs.contains("stepPercent"), "{ecs}");
        let cloud_map = send(&proxy, Some("Route53AutoNaming_v20170314.CreateService"), invalid);
        assert!(cloud_map.ends_with("ok"), "{cloud_map}");
        let listed = send(&proxy, Some("Route53AutoNaming_v20170314.ListServiceDeployments"), "{}");
        assert!(listed.ends_with("ok"), "only ECS's service deployments are the double's: {listed}");
        let fates: Vec<Fate> = proxy.calls().into_iter().map(|c| c.fate).collect();
        assert_eq!(fates, vec![Fate::Synthesized, Fate::Forwarded, Fate::Forwarded]);
    }

    /// Rate limits: a burst empties the bucket, further calls get the service's throttling error
    /// and are not forwarded, the bucket refills over time; other services' buckets are untouched.
    #[test]
    fn rate_limits_throttle_a_burst_and_refill() {
        use crate::rate_limits::{Limit, MUTATING};
        let proxy = proxy_over_ok_upstream();
        proxy.set_rate_limits(Some(
            RateLimits::default().with(Service::Ecs, "service-modify", Limit::new(2.0, 2.0)).with(
                Service::Ec2,
                MUTATING,
                Limit::new(1.0, 0.001),
            ),
        ));
        let update = || send(&proxy, Some("AmazonEC2ContainerServiceV20141113.UpdateService"), "{}");
        assert!(update().ends_with("ok") && update().ends_with("ok"), "the burst passes");
        let throttled = update();
        assert!(throttled.starts_with("HTTP/1.1 400 "), "{throttled}");
        assert!(throttled.contains(r#""__type":"ThrottlingException""#), "{throttled}");
        assert!(send(&proxy, None, "Action=CreateVpc&Version=2016-11-15").ends_with("ok"), "EC2 has its own");
        let ec2 = send(&proxy, None, "Action=CreateVpc&Version=2016-11-15");
        assert!(ec2.starts_with("HTTP/1.1 503 ") && ec2.contains("RequestLimitExceeded"), "{ec2}");
        assert!(send(&proxy, None, "Action=CreateRole&Version=2010-05-08").ends_with("ok"), "IAM is not limited");
        // Two tokens a second: one comes back within a second (polled, not slept through).
        let start = std::time::Instant::now();
        while !update().ends_with("ok") {
            assert!(start.elapsed() < Duration::from_secs(5), "the bucket never refilled");
            thread::sleep(Duration::from_millis(50));
        }
        let calls = proxy.calls();
        let fates: Vec<Fate> = calls.iter().take(6).map(|c| c.fate).collect();
        use Fate::{Forwarded, Throttled};
        assert_eq!(fates, [Forwarded, Forwarded, Throttled, Forwarded, Throttled, Forwarded]);
        assert_eq!(calls[0].buckets.iter().map(ToString::to_string).collect::<Vec<_>>(), ["ecs[] service-modify"]);
        assert!(calls[5].buckets.is_empty(), "no IAM class is limited");
        assert_eq!(calls.last().map(|c| c.fate), Some(Forwarded));
        proxy.set_rate_limits(None);
        assert!(update().ends_with("ok") && update().ends_with("ok") && update().ends_with("ok"));
        assert!(proxy.calls().last().is_some_and(|c| c.buckets.is_empty()));
        // Observed, not enforced: buckets named, nothing throttled.
        proxy.observe_rate_limits(Some(RateLimits::default().with(
            Service::Ecs,
            "service-modify",
            Limit::new(1.0, 0.001),
        )));
        assert!(update().ends_with("ok") && update().ends_with("ok"));
        let last = proxy.calls().pop().unwrap();
        assert_eq!((last.fate, last.buckets.len()), (Forwarded, 1));
    }

    #[test]
    fn seeds_choose_other_calls_reproducibly() {
        let fates_of = |seed: u64| {
            let state = initial_state(seed);
            let shared = Shared {
                upstream: 0,
                faults: Mutex::new(Faults::default()),
                calls: Mutex::new(Vec::new()),
                counter: AtomicU64::new(0),
                rng: AtomicU64::new(state),
                stopped: AtomicBool::new(false),
                deletes: AsyncDeletes::default(),
                rollouts: Mutex::new(None),
                limiter: Mutex::new(None),
                quotas: Mutex::new(None),
            };
            (0..64).map(|_| roll(&shared) < 30).collect::<Vec<bool>>()
        };
        assert_eq!(fates_of(1), fates_of(1), "a seed is reproducible");
        assert_ne!(fates_of(1), fates_of(2));
        assert_ne!(fates_of(2), fates_of(3));
        assert_ne!(fates_of(0), fates_of(1));
        for seed in 1..4 {
            let hit = fates_of(seed).iter().filter(|&&f| f).count();
            assert!((8..=32).contains(&hit), "seed {seed}: {hit} of 64 rolls under 30");
        }
        assert_eq!(initial_state(0), 0x9E37_79B9_7F4A_7C15, "the default sequence is unchanged");
    }

    #[test]
    fn only_successful_upstream_answers_count() {
        assert!(is_success(b"HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!is_success(b"HTTP/1.1 400 Bad Request\r\n\r\n"));
        assert!(!is_success(b""));
    }

    #[test]
    fn forwards_throttles_and_drops() {
        let proxy = proxy_over_ok_upstream();
        let call = |body: &str| send(&proxy, None, body);
        assert!(call("Action=DescribeVpcs&Version=2016-11-15").ends_with("ok"));
        proxy.set_faults(Faults { throttle_percent: 100, ..Faults::default() });
        assert!(call("Action=DescribeVpcs&Version=2016-11-15").contains("RequestLimitExceeded"));
        assert!(call("Action=CreateRole&Version=2010-05-08").contains("<Code>Throttling</Code>"));
        proxy.set_faults(Faults { drop_create_response_percent: 100, ..Faults::default() });
        assert_eq!(call("Action=CreateVpc&Version=2016-11-15"), "");
        assert!(call("Action=DescribeVpcs&Version=2016-11-15").ends_with("ok"), "reads are never dropped");
        let fates: Vec<Fate> = proxy.calls().into_iter().map(|c| c.fate).collect();
        assert_eq!(
            fates,
            vec![Fate::Forwarded, Fate::Throttled, Fate::Throttled, Fate::ResponseDropped, Fate::Forwarded]
        );
    }
}
