//! The admin HTTP server (shard 0, `admin_addr`, 9644 by default): what operators
//! and Kubernetes probe.
//!
//! | request | answer |
//! |---------|--------|
//! | `GET /metrics` | Prometheus/OpenMetrics text (`metrics.rs`) |
//! | `GET /healthz` | 200 when every shard's executor answers within 2 s, else 503 (liveness) |
//! | `GET /readyz` | 200 when serving, not draining, and in a cluster the controller is known (this node is in the quorum) and every replica here is in its leader's in-sync set (caught up); else 503 with the reason (readiness) |
//! | `POST /drain` | 202: start moving every leadership away and keep it away (maintenance) |
//! | `GET /drain` | `{"draining":bool,"leaders":N,"done":bool}`; done = draining and nothing left to move |
//! | `DELETE /drain` | stop draining |
//!
//! HTTP/1.1, one request per connection (`Connection: close`); requests are parsed
//! with httparse and limited to 16 KiB of headers, 5 s to arrive.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};

use crate::router::{Op, OpResult, ShardStats};
use crate::shard::Shard;

const HEADER_BYTES_MAX: usize = 16 << 10;
const REQUEST_TIME_MAX: Duration = Duration::from_secs(5);
/// How long a shard may take to answer a liveness ping.
const SHARD_ANSWER_MAX: Duration = Duration::from_secs(2);
/// How often a draining node moves leaderships it holds (again) away.
const DRAIN_STEP: Duration = Duration::from_millis(500);

/// Bind the admin listener (on shard 0), so a taken port fails the start.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| {
        format!("cannot listen for admin HTTP on {addr}: {e} (set --admin-addr to a free port, or none)")
    })
}

/// Serve admin requests until the node stops.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    glommio::spawn_local(drain_loop(shard.clone())).detach();
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shard.stopping().await;
                None
            })
            .await;
        match accepted {
            None => return,
            Some(Ok(stream)) => {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let served = handle(&shard, stream)
                        .or(async {
                            glommio::timer::sleep(REQUEST_TIME_MAX + SHARD_ANSWER_MAX).await;
                            Ok(())
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "admin connection");
                    }
                })
                .detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "admin accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// While draining: keep moving leaderships away (a node may win an election
/// again when a peer fails).
async fn drain_loop(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(DRAIN_STEP).await;
        if shard.shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        if shard.shared.draining.load(Ordering::Relaxed) {
            let _ = per_shard(&shard, || Op::DrainStep).await;
        }
    }
}

/// Run `op` on every shard; None for a shard that did not answer in time.
async fn per_shard(shard: &Rc<Shard>, op: impl Fn() -> Op) -> Vec<Option<ShardStats>> {
    let mut out = Vec::with_capacity(shard.count);
    for s in 0..shard.count {
        let answer = async { shard.run_op(s, op()).await }
            .or(async {
                glommio::timer::sleep(SHARD_ANSWER_MAX).await;
                None
            })
            .await;
        out.push(match answer {
            Some(OpResult::Stats(stats)) => Some(stats),
            _ => None,
        });
    }
    out
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    fn json(status: u16, body: String) -> Self {
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

async fn handle(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; HEADER_BYTES_MAX];
    let mut len = 0;
    let response = loop {
        if len == buf.len() {
            break Response::text(431, "request headers too large\n");
        }
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => {
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                break route(shard, &method, &path).await;
            }
            Err(e) => break Response::text(400, format!("bad request: {e}\n")),
        }
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(response.body.as_bytes()).await?;
    stream.flush().await?;
    stream.close().await
}

async fn route(shard: &Rc<Shard>, method: &str, path: &str) -> Response {
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => metrics(shard).await,
        ("GET", "/healthz") => healthz(shard).await,
        ("GET", "/readyz") => readyz(shard).await,
        ("GET", "/drain") => drain_status(shard).await,
        ("POST", "/drain") => {
            if !shard.shared.draining.swap(true, Ordering::SeqCst) {
                tracing::info!("draining: moving leaderships away");
            }
            let _ = per_shard(shard, || Op::DrainStep).await;
            let mut r = drain_status(shard).await;
            r.status = 202;
            r
        }
        ("DELETE", "/drain") => {
            if shard.shared.draining.swap(false, Ordering::SeqCst) {
                tracing::info!("drain cancelled: this node may lead again");
            }
            drain_status(shard).await
        }
        (_, "/metrics" | "/healthz" | "/readyz" | "/drain") => {
            Response::text(405, "method not allowed\n")
        }
        _ => Response::text(404, "not found: try /metrics, /healthz, /readyz, /drain\n"),
    }
}

async fn metrics(shard: &Rc<Shard>) -> Response {
    let m = &shard.shared.metrics;
    let stats = per_shard(shard, || Op::Stats).await;
    let mut urp_total = 0;
    for (s, st) in stats.iter().enumerate() {
        let Some(st) = st else { continue };
        let labels = crate::metrics::ShardLabels { shard: s as u32 };
        m.partition_leaders
            .get_or_create(&labels)
            .set(st.leaders as i64);
        m.under_replicated
            .get_or_create(&labels)
            .set(st.under_replicated as i64);
        m.connections
            .get_or_create(&labels)
            .set(st.connections as i64);
        urp_total += st.under_replicated;
    }
    m.under_replicated_total.set(urp_total as i64);
    if let Some((total, free)) = disk_space(&shard.config().data_dir) {
        m.disk_total.set(total as i64);
        m.disk_free.set(free as i64);
        m.disk_used.set(total.saturating_sub(free) as i64);
    }
    m.draining
        .set(i64::from(shard.shared.draining.load(Ordering::Relaxed)));
    Response {
        status: 200,
        content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body: m.encode(),
    }
}

/// (total, available) bytes of the file system holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; `path` is a valid
    // NUL-terminated string for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    Some((st.f_blocks as u64 * block, st.f_bavail as u64 * block))
}

async fn healthz(shard: &Rc<Shard>) -> Response {
    let answers = per_shard(shard, || Op::Stats).await;
    let silent: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_none())
        .map(|(s, _)| s)
        .collect();
    if silent.is_empty() {
        Response::text(200, "ok\n")
    } else {
        Response::text(
            503,
            format!("shards {silent:?} did not answer within {SHARD_ANSWER_MAX:?}\n"),
        )
    }
}

async fn readyz(shard: &Rc<Shard>) -> Response {
    if shard.shared.shutdown.load(Ordering::Relaxed) {
        return Response::text(503, "shutting down\n");
    }
    if shard.shared.draining.load(Ordering::Relaxed) {
        return Response::text(503, "draining for maintenance (DELETE /drain to undo)\n");
    }
    if let Some(runtime) = shard.cluster() {
        if runtime.controller().is_none() {
            return Response::text(
                503,
                "no controller known: this node is not (yet) in the cluster's quorum\n",
            );
        }
    }
    let answers = per_shard(shard, || Op::Stats).await;
    if answers.iter().any(Option::is_none) {
        return Response::text(503, "a shard did not answer\n");
    }
    let lagging: usize = answers.iter().flatten().map(|s| s.lagging).sum();
    if lagging > 0 {
        return Response::text(
            503,
            format!("catching up: {lagging} replicas here are not in sync with their leader yet\n"),
        );
    }
    Response::text(200, "ready\n")
}

async fn drain_status(shard: &Rc<Shard>) -> Response {
    let draining = shard.shared.draining.load(Ordering::Relaxed);
    // Leaderships that could move (replicated groups this node leads); a shard
    // that does not answer counts as not done.
    let leaders: usize = per_shard(shard, || Op::Stats)
        .await
        .iter()
        .map(|s| s.map_or(1, |s| s.movable))
        .sum();
    Response::json(
        200,
        format!(
            "{{\"draining\":{draining},\"leaders\":{leaders},\"done\":{}}}\n",
            draining && leaders == 0
        ),
    )
}
