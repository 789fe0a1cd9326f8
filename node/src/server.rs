//! Kafka connections on one shard: read frames, decode, run handlers (pipelined, up
//! to `REQUESTS_IN_FLIGHT_MAX` per connection), and write responses in request
//! order, as Kafka requires.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::net::{TcpListener, TcpStream};
use strand_net::kafka::{
    decode_request, encode_response, read_frame_body, read_frame_size,
    unsupported_api_versions_response, ApiKey, DecodeError,
};

use crate::kafka;
use crate::shard::Shard;

/// Requests of one connection being handled at once (librdkafka pipelines up to 5
/// produce requests per connection; we allow a little more).
const REQUESTS_IN_FLIGHT_MAX: usize = 16;
/// How long shutdown waits for open connections to finish what they started.
const DRAIN_MS_MAX: u64 = 10_000;

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
        println!(
            "strand-node {}: Kafka API on {} (advertised as {}:{}), data in {}, {} shard(s)",
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
        // The shard's budget for request bytes: many connections sending large
        // frames wait here instead of exhausting memory.
        let Ok(permit) = shard
            .request_memory
            .acquire_static_permit(size as u64)
            .await
        else {
            break;
        };
        let frame = match read_frame_body(&mut reader, size).await {
            Ok(frame) => frame,
            Err(e) => {
                tracing::info!(?peer, error = %e, "bad frame; closing the connection");
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
            let _permit = permit;
            let (key, version, correlation_id) =
                (request.api_key, request.api_version, request.correlation_id);
            let body = kafka::handle(&shard2, request).await?;
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
