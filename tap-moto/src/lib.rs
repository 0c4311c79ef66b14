//! `tap-moto`: a local `moto_server` (PyPI `moto[server]`) for tap's end-to-end tests, `cargo xtask
//! demo` and `cargo xtask bench`. Only loopback addresses are ever used.
//!
//! [`moto_server_path`] finds the emulator (`MOTO_SERVER`, the project-local venv `.tap/moto-venv`,
//! or `PATH`) and installs it into that venv with pip when it is missing. [`Moto::start`] runs it on
//! a free 127.0.0.1 port with IAM's managed policies loaded, waits until it answers, and stops it on
//! drop. [`proxy::Proxy`] sits in front of it to add latency or inject faults (throttling, lost
//! responses, a stall at call N), to model AWS's asynchronous deletions ([`async_deletes`]) and its
//! per-service API rate limits ([`rate_limits`]) and,
//! with [`rollout`], to play ECS rollouts over time: rolling, blue/green, canary and linear
//! deployments with their service deployments ([`service_deployments`]), traffic moved on the
//! listener rules and alarms read in moto ([`upstream`]); [`service_quotas`] answers Service
//! Quotas as AWS does, with a test's applied values ([`proxy::Proxy::set_quotas`]).
//!
//! ```no_run
//! let moto = tap_moto::Moto::start().unwrap();
//! println!("emulator at {}", moto.endpoint());
//! moto.reset().unwrap();
//! ```
#![forbid(unsafe_code)]

pub mod async_deletes;
mod engine;
pub mod proxy;
pub mod rate_limits;
pub mod rollout;
#[cfg(test)]
mod rollout_tests;
pub mod service_deployments;
pub mod service_quotas;
#[cfg(feature = "session")]
pub mod session;
mod tasks;
pub mod upstream;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The moto version the project is tested with.
pub const MOTO_REQUIREMENT: &str = "moto[server]>=5.1,<6";

/// The workspace root (where `.tap/` lives): the parent of the running package's directory.
///
/// `cargo run` and `cargo test` set `CARGO_MANIFEST_DIR` for the process they start; that is
/// preferred to the compile-time value, which a binary reused from a shared target directory may
/// have taken from another checkout.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The project-local virtualenv moto is installed into when the machine lacks it.
pub fn venv_dir() -> PathBuf {
    workspace_root().join(".tap").join("moto-venv")
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(program)).find(|p| p.is_file()))
}

/// Finds `moto_server`, installing it into [`venv_dir`] with pip when it is nowhere to be found.
pub fn moto_server_path() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let venv_bin = venv_dir().join("bin").join("moto_server");
    if venv_bin.is_file() {
        return Ok(venv_bin);
    }
    if let Some(path) = on_path("moto_server") {
        return Ok(path);
    }
    install()?;
    Ok(venv_bin)
}

/// `python3 -m venv .tap/moto-venv && pip install 'moto[server]'`.
pub fn install() -> io::Result<()> {
    let venv = venv_dir();
    eprintln!("moto_server not found: installing {MOTO_REQUIREMENT} into {}", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin").join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        MOTO_REQUIREMENT,
    ]))
}

fn run(cmd: &mut Command) -> io::Result<()> {
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{cmd:?} failed: {status}")))
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Python run by `moto_server` at start-up (as `sitecustomize`, found on its `PYTHONPATH`).
///
/// For every request, moto finds the backend by listing its own package folder (`os.listdir`
/// and `isdir` of some 200 folders) and trying its URL patterns, all under one global lock, and
/// it logs the request: a third of its CPU time, and it serialises concurrent calls, a cost real
/// AWS does not have. Both lookups give the same answer every time, so they are cached, and the
/// request log (which goes to /dev/null) is off. Anything unexpected leaves moto as it is.
const SPEEDUPS: &str = r#"
import functools, logging
try:
    import moto.backends as _backends
    from moto.moto_server import werkzeug_app as _app
    _modules = tuple(_backends.list_of_moto_modules())
    _backends.list_of_moto_modules = lambda: _modules
    _app.DomainDispatcherApplication.get_backend_for_host = functools.lru_cache(maxsize=None)(
        _app.DomainDispatcherApplication.get_backend_for_host
    )
except Exception:
    pass
logging.getLogger("werkzeug").setLevel(logging.WARNING)
"#;

/// A folder holding [`SPEEDUPS`] as `sitecustomize.py`, followed by any `PYTHONPATH` already set.
fn speedups_path() -> io::Result<std::ffi::OsString> {
    let dir = std::env::temp_dir().join("tap-moto-speedups");
    std::fs::create_dir_all(&dir)?;
    // Written aside and renamed: test processes start emulators at the same time.
    let aside = dir.join(format!("sitecustomize.py.{}", std::process::id()));
    std::fs::write(&aside, SPEEDUPS)?;
    std::fs::rename(&aside, dir.join("sitecustomize.py"))?;
    let mut paths = vec![dir];
    paths.extend(std::env::var_os("PYTHONPATH").iter().flat_map(std::env::split_paths));
    std::env::join_paths(paths).map_err(io::Error::other)
}

/// A running `moto_server`, stopped when dropped.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it answers.
    pub fn start() -> io::Result<Moto> {
        let program = moto_server_path()?;
        let mut last_err = None;
        // A port found free can be taken before moto binds it: try a few.
        for _ in 0..3 {
            let port = free_port()?;
            // A small shell keeps moto tied to this process: when our end of its stdin closes (we
            // are dropped, or exit, or are killed), `cat` returns and the trap stops moto.
            let child = Command::new("sh")
                .arg("-c")
                .arg(r#""$0" "$@" </dev/null >/dev/null 2>&1 & pid=$!; trap 'kill $pid 2>/dev/null' EXIT; cat >/dev/null"#)
                .arg(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .env("PYTHONPATH", speedups_path()?)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut moto = Moto { child, port };
            match moto.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(moto),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("moto_server did not start")))
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!("moto_server exited: {status}")));
            }
            if self.request("GET", "/moto-api/").is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "moto_server did not answer in time"));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Empties the emulator (`POST /moto-api/reset`).
    pub fn reset(&self) -> io::Result<()> {
        let status = self.request("POST", "/moto-api/reset")?;
        if status == 200 {
            Ok(())
        } else {
            Err(io::Error::other(format!("moto reset answered HTTP {status}")))
        }
    }

    /// A minimal HTTP/1.1 request to the emulator; returns the status code.
    fn request(&self, method: &str, path: &str) -> io::Result<u16> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::other("moto answered something that is not HTTP"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
