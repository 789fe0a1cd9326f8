//! Kafka connections on one shard: read frames, decode, run handlers (pipelined, up
//! to `REQUESTS_IN_FLIGHT_MAX` per connection), and write responses in request
//! order, as Kafka requires.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::StaticPermit;
use strand_net::kafka::{
    decode_request, encode_response, read_frame_size, unsupported_api_versions_response, ApiKey,
    DecodeError,
};

use crate::kafka;
use crate::shard::Shard;

/// Requests of one connection being handled at once (librdkafka pipelines up to 5
/// produce requests per connection; we allow a little more).
const REQUESTS_IN_FLIGHT_MAX: usize = 16;
/// How long shutdown waits for open connections to finish what they started.
const DRAIN_MS_MAX: u64 = 10_000;
/// How long a client may take to send a request body once its size is read.
const BODY_READ_MS_MAX: u64 = 30_000;
/// Bytes read (and charged to the shard's request budget) at a time.
const BODY_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the shard's request memory budget is exhausted")]
    OverBudget,
    #[error("the body did not arrive within {BODY_READ_MS_MAX} ms")]
    TimedOut,
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Read a request body as it arrives, charging each chunk to the shard's budget
/// for request bytes. A client holds only memory it has actually sent, and when
/// the budget runs out the connection that needs more is dropped rather than
/// every connection on the shard made to wait.
async fn read_body<R: futures_lite::AsyncRead + Unpin>(
    shard: &Shard,
    reader: &mut R,
    size: usize,
) -> Result<(bytes::BytesMut, Vec<StaticPermit>), BodyError> {
    use futures_lite::AsyncReadExt;
    // The whole size is reserved at once so that the frame is never moved as it grows
    // (a produce request is as large as its batches). Reserving is not holding: the
    // pages are only touched, and so only resident, as the bytes arrive and are paid for.
    let mut frame = bytes::BytesMut::with_capacity(size);
    let mut permits = Vec::new();
    while frame.len() < size {
        let chunk = (size - frame.len()).min(BODY_CHUNK_BYTES);
        let permit = shard
            .request_memory
            .try_acquire_static_permit(chunk as u64)
            .map_err(|_| BodyError::OverBudget)?;
        permits.push(permit);
        let start = frame.len();
        frame.resize(start + chunk, 0);
        let mut filled = start;
        while filled < start + chunk {
            let n = reader.read(&mut frame[filled..start + chunk]).await?;
            if n == 0 {
                return Err(BodyError::Truncated);
            }
            filled += n;
        }
    }
    Ok((frame, permits))
}

enum Outgoing {
    Response(glommio::Task<Option<Bytes>>),
    Ready(Bytes),
}

pub async fn serve(shard: Rc<Shard>) -> Result<(), String> {
    let addr = shard.config().kafka_addr;
    let listener = TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen for Kafka clients on {addr}: {e}"))?;
    if shard.id == 0 {
        let c = shard.config();
        let admin = match c.admin_addr {
            Some(a) => {
                let listener = crate::admin::bind(a)?;
                let bound = listener.local_addr().map_or(a, |b| b);
                glommio::spawn_local(crate::admin::serve(shard.clone(), listener)).detach();
                format!("admin HTTP on {bound}")
            }
            None => "no admin HTTP".to_string(),
        };
        eprintln!(
            "strand-node {}: Kafka API on {} (advertised as {}:{}), {admin}, data in {}, {} shard(s)",
            c.node_id,
            addr,
            c.advertised_kafka_addr.0,
            c.advertised_kafka_addr.1,
            c.data_dir.display(),
            shard.count
        );
    }
    let per_shard_max = shard.config().connections_max.div_ceil(shard.count).max(1);
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shard.stopping().await;
                None
            })
            .await;
        let Some(accepted) = accepted else { break };
        match accepted {
            Ok(stream) => {
                if shard.connections.get() >= per_shard_max {
                    tracing::warn!("connection limit reached; refusing a connection");
                    drop(stream);
                    continue;
                }
                shard.connections.set(shard.connections.get() + 1);
                let shard2 = shard.clone();
                glommio::spawn_local(async move {
                    if let Err(e) = connection(&shard2, stream).await {
                        tracing::debug!(error = %e, "connection closed");
                    }
                    shard2.connections.set(shard2.connections.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    let drain_until = std::time::Instant::now() + Duration::from_millis(DRAIN_MS_MAX);
    while shard.connections.get() > 0 && std::time::Instant::now() < drain_until {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn connection(shard: &Rc<Shard>, stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<Outgoing>(REQUESTS_IN_FLIGHT_MAX);
    let writer_task = glommio::spawn_local(async move {
        while let Some(item) = rx.recv().await {
            let bytes = match item {
                Outgoing::Ready(b) => Some(b),
                Outgoing::Response(task) => task.await,
            };
            if let Some(bytes) = bytes {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
        let _ = writer.flush().await;
        let _ = writer.close().await;
    });
    let max = shard.config().request_bytes_max;
    loop {
        let size = async { Some(read_frame_size(&mut reader, max).await) }
            .or(async {
                shard.stopping().await;
                None
            })
            .await;
        let size = match size {
            None => break, // shutting down: finish what was started, take nothing new
            Some(Ok(Some(size))) => size,
            Some(Ok(None)) => break,
            Some(Err(e)) => {
                tracing::info!(?peer, error = %e, "bad frame; closing the connection");
                break;
            }
        };
        let body = read_body(shard, &mut reader, size)
            .or(async {
                glommio::timer::sleep(Duration::from_millis(BODY_READ_MS_MAX)).await;
                Err(BodyError::TimedOut)
            })
            .await;
        let (frame, permits) = match body {
            Ok(read) => read,
            Err(e) => {
                tracing::info!(?peer, size, error = %e, "request body not read; closing the connection");
                break;
            }
        };
        let request = match decode_request(frame, kafka::served) {
            Ok(r) => r,
            Err(DecodeError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            }) => {
                match unsupported_api_versions_response(correlation_id, kafka::SUPPORTED) {
                    Ok(bytes) => {
                        if tx.send(Outgoing::Ready(bytes)).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode ApiVersions"),
                }
                continue;
            }
            Err(e) => {
                tracing::info!(?peer, error = %e, "undecodable request; closing the connection");
                break;
            }
        };
        let shard2 = shard.clone();
        let task = glommio::spawn_local(async move {
            let _permits = permits;
            let (key, version, correlation_id) =
                (request.api_key, request.api_version, request.correlation_id);
            let started = std::time::Instant::now();
            let body = kafka::handle(&shard2, request, peer).await;
            crate::kafka::observe(&shard2, key, started.elapsed(), body.as_ref());
            let body = body?;
            match encode_response(correlation_id, key, version, &body) {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    tracing::error!(?key, version, error = %e, "cannot encode a response");
                    None
                }
            }
        });
        if tx.send(Outgoing::Response(task)).await.is_err() {
            break;
        }
    }
    drop(tx);
    writer_task.await;
    Ok(())
}
