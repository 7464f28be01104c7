//! One endpoint, step by step: name resolution, TCP connect, (proxy tunnel,)
//! TLS handshake. Each step has its own time limit; the first failure ends the
//! check, and its problem kind picks the remedy.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use azbroker_proto::diagnose::{
    EndpointCheck, ResolvedAddress, Step, StepKind, StepOutcome, MAX_ADDRESSES, MAX_DETAIL_LEN,
};
use azbroker_proto::{Endpoint, NetworkProblem};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::address::scope_of;
use crate::settings::{NetworkSettings, ProxyRoute};
use crate::{tls, tunnel};

/// Connect attempts per endpoint (a client falls back between a name's addresses).
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// A byte stream of any layer (TCP, TLS to an https proxy, a tunnel).
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type StepResult<T> = Result<(T, String), (NetworkProblem, String)>;

/// Checks one endpoint the way an `https://host:port` request would reach it.
pub async fn check_endpoint(
    settings: &NetworkSettings,
    endpoint: &Endpoint,
    step_timeout: Duration,
) -> EndpointCheck {
    let mut run = Steps {
        check: EndpointCheck {
            endpoint: endpoint.clone(),
            proxy: None,
            addresses: Vec::new(),
            steps: Vec::new(),
        },
        timeout: step_timeout,
    };
    match settings.proxy_for(endpoint) {
        None => direct(&mut run, settings, endpoint).await,
        Some(route) => {
            run.check.proxy = Some(route.display());
            through_proxy(&mut run, settings, endpoint, &route).await
        }
    }
    run.check
}

async fn direct(run: &mut Steps, settings: &NetworkSettings, endpoint: &Endpoint) {
    let host = endpoint.host.as_str();
    let Some(addresses) = run.lookup(endpoint, host, false).await else {
        return;
    };
    run.check.addresses = addresses
        .iter()
        .map(|a| ResolvedAddress {
            address: a.ip().to_string(),
            scope: scope_of(a.ip()),
        })
        .collect();
    let target = endpoint.to_string();
    let Some(tcp) = run
        .step(
            StepKind::Connect,
            &target,
            NetworkProblem::Timeout,
            connect(&addresses),
        )
        .await
    else {
        return;
    };
    handshake(run, settings, host, Box::new(tcp)).await;
}

async fn through_proxy(
    run: &mut Steps,
    settings: &NetworkSettings,
    endpoint: &Endpoint,
    route: &ProxyRoute,
) {
    let proxy = Endpoint {
        host: route.host.clone(),
        port: route.port,
    };
    let label = format!("proxy {proxy}");
    if !matches!(route.scheme.as_str(), "http" | "https") {
        run.record::<()>(
            StepKind::ProxyTunnel,
            &label,
            Err((
                NetworkProblem::Proxy,
                format!(
                    "{} proxies cannot be checked by azbroker diagnose",
                    route.scheme
                ),
            )),
            Duration::ZERO,
        );
        return;
    }
    // Every failure before the tunnel is up is the proxy's.
    let as_proxy = |(_, why): (NetworkProblem, String)| (NetworkProblem::Proxy, why);
    let resolved = run
        .lookup(&proxy, &format!("proxy {}", proxy.host), true)
        .await;
    let Some(addresses) = resolved else { return };
    let connected = run
        .step(StepKind::Connect, &label, NetworkProblem::Proxy, async {
            connect(&addresses).await.map_err(as_proxy)
        })
        .await;
    let Some(tcp) = connected else { return };
    let mut stream: Box<dyn Io> = Box::new(tcp);
    if route.scheme == "https" {
        let Some(tls) = tls_step(run, settings, &proxy.host, &label, stream).await else {
            return;
        };
        stream = tls;
    }
    let tunnel = run
        .step(
            StepKind::ProxyTunnel,
            &label,
            NetworkProblem::Proxy,
            async { tunnel::open(stream, endpoint, route.authorization.as_ref()).await },
        )
        .await;
    let Some(tunnel) = tunnel else { return };
    handshake(run, settings, &endpoint.host, Box::new(tunnel)).await;
}

async fn handshake(run: &mut Steps, settings: &NetworkSettings, host: &str, stream: Box<dyn Io>) {
    let _ = tls_step(run, settings, host, host, stream).await;
}

async fn tls_step(
    run: &mut Steps,
    settings: &NetworkSettings,
    host: &str,
    target: &str,
    stream: Box<dyn Io>,
) -> Option<Box<dyn Io>> {
    let config = match settings.tls_config() {
        Ok(config) => config,
        Err(why) => {
            run.record::<()>(
                StepKind::Tls,
                target,
                Err((NetworkProblem::Other, why)),
                Duration::ZERO,
            );
            return None;
        }
    };
    run.step(StepKind::Tls, target, NetworkProblem::Timeout, async {
        tls::handshake(config, host, stream)
            .await
            .map(|(tls, detail)| (Box::new(tls) as Box<dyn Io>, detail))
    })
    .await
}

async fn resolve(endpoint: &Endpoint) -> StepResult<Vec<SocketAddr>> {
    let found = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| (NetworkProblem::NameResolution, e.to_string()))?;
    let mut addresses: Vec<SocketAddr> = Vec::new();
    for address in found {
        if !addresses.contains(&address) && addresses.len() < MAX_ADDRESSES {
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        return Err((
            NetworkProblem::NameResolution,
            "the name resolved to no address".into(),
        ));
    }
    let shown: Vec<String> = addresses
        .iter()
        .map(|a| format!("{} ({})", a.ip(), scope_of(a.ip()).as_str()))
        .collect();
    Ok((addresses, shown.join(", ")))
}

/// Tries the first few addresses in turn, as a client falls back between them.
async fn connect(addresses: &[SocketAddr]) -> StepResult<TcpStream> {
    let mut last = None;
    for address in addresses.iter().take(MAX_CONNECT_ATTEMPTS) {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok((stream, format!("connected to {address}"))),
            Err(e) => last = Some((io_problem(&e), format!("{address}: {e}"))),
        }
    }
    Err(last.unwrap_or((NetworkProblem::Other, "no address to connect to".into())))
}

/// What a failed connect means.
pub fn io_problem(error: &io::Error) -> NetworkProblem {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted => NetworkProblem::Refused,
        TimedOut => NetworkProblem::Timeout,
        NetworkUnreachable | HostUnreachable => NetworkProblem::Unreachable,
        _ => match error.raw_os_error() {
            Some(101 | 113) => NetworkProblem::Unreachable,
            _ => NetworkProblem::Other,
        },
    }
}

/// The steps recorded so far, and the limit of each.
struct Steps {
    check: EndpointCheck,
    timeout: Duration,
}

impl Steps {
    /// The addresses of `endpoint`: an IP address as it is (no step), a name
    /// through a resolve step. A proxy's failures are proxy problems.
    async fn lookup(
        &mut self,
        endpoint: &Endpoint,
        target: &str,
        is_proxy: bool,
    ) -> Option<Vec<SocketAddr>> {
        if let Ok(ip) = endpoint.host.parse::<IpAddr>() {
            return Some(vec![SocketAddr::new(ip, endpoint.port)]);
        }
        let problem = if is_proxy {
            NetworkProblem::Proxy
        } else {
            NetworkProblem::NameResolution
        };
        self.step(StepKind::Resolve, target, problem, async {
            resolve(endpoint).await.map_err(|(_, why)| (problem, why))
        })
        .await
    }

    /// Runs one step under the time limit and records it; `None` when it failed.
    async fn step<T>(
        &mut self,
        kind: StepKind,
        target: &str,
        on_timeout: NetworkProblem,
        work: impl Future<Output = StepResult<T>>,
    ) -> Option<T> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err((
                on_timeout,
                format!("no answer within {} ms", self.timeout.as_millis()),
            )),
        };
        self.record(kind, target, result, started.elapsed())
    }

    fn record<T>(
        &mut self,
        kind: StepKind,
        target: &str,
        result: StepResult<T>,
        elapsed: Duration,
    ) -> Option<T> {
        let millis = u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX);
        let (outcome, detail, value) = match result {
            Ok((value, detail)) => (StepOutcome::Passed, detail, Some(value)),
            Err((problem, detail)) => (StepOutcome::Failed(problem), detail, None),
        };
        self.check.steps.push(Step {
            kind,
            target: target.to_string(),
            outcome,
            millis,
            detail: bounded(detail),
        });
        value
    }
}

/// Keeps details to one reasonable line on the wire.
fn bounded(mut text: String) -> String {
    const MAX: usize = MAX_DETAIL_LEN - 3;
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text.replace(['\n', '\r'], " ")
}
