//! `strand group ...` as a user runs it: the binary, its exit codes and what it prints,
//! against a tiny scripted broker (a real node is exercised by the Python end-to-end
//! tests).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, DeleteGroupsResponse, DescribeGroupsResponse,
    FindCoordinatorResponse, MetadataResponse, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable, StrBytes};

fn strand(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strand"))
        .args(args)
        .env_remove("STRAND_BOOTSTRAP")
        .output()
        .expect("run strand")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A broker serving one connection: ApiVersions, Metadata (itself as broker 0),
/// FindCoordinator (itself), DescribeGroups (state `Dead`: no such group) and
/// DeleteGroups (answering `delete_code`).
fn scripted_broker(delete_code: i16) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let thread = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        while let Some((key, version, correlation_id, request)) = read_request(&mut conn) {
            let host = StrBytes::from_string(addr.ip().to_string());
            let port = i32::from(addr.port());
            let response: ResponseKind = match (key, request) {
                (ApiKey::ApiVersions, _) => ApiVersionsResponse::default()
                    .with_api_keys(
                        [
                            (ApiKey::Metadata, 12),
                            (ApiKey::FindCoordinator, 4),
                            (ApiKey::DescribeGroups, 5),
                            (ApiKey::OffsetFetch, 9),
                            (ApiKey::ListGroups, 5),
                            (ApiKey::DeleteGroups, 2),
                        ]
                        .into_iter()
                        .map(|(key, max)| {
                            ApiVersion::default()
                                .with_api_key(key as i16)
                                .with_max_version(max)
                        })
                        .collect(),
                    )
                    .into(),
                (_, Some(RequestKind::Metadata(_))) => MetadataResponse::default()
                    .with_brokers(vec![MetadataResponseBroker::default()
                        .with_node_id(BrokerId(0))
                        .with_host(host)
                        .with_port(port)])
                    .into(),
                (_, Some(RequestKind::FindCoordinator(r))) => {
                    use kafka_protocol::messages::find_coordinator_response::Coordinator;
                    FindCoordinatorResponse::default()
                        .with_coordinators(
                            r.coordinator_keys
                                .iter()
                                .map(|k| {
                                    Coordinator::default()
                                        .with_key(k.clone())
                                        .with_node_id(BrokerId(0))
                                        .with_host(host.clone())
                                        .with_port(port)
                                })
                                .collect(),
                        )
                        .into()
                }
                (_, Some(RequestKind::DescribeGroups(r))) => DescribeGroupsResponse::default()
                    .with_groups(
                        r.groups
                            .iter()
                            .map(|g| {
                                DescribedGroup::default()
                                    .with_group_id(g.clone())
                                    .with_group_state(StrBytes::from_static_str("Dead"))
                            })
                            .collect(),
                    )
                    .into(),
                (_, Some(RequestKind::DeleteGroups(r))) => DeleteGroupsResponse::default()
                    .with_results(
                        r.groups_names
                            .iter()
                            .map(|g| {
                                DeletableGroupResult::default()
                                    .with_group_id(g.clone())
                                    .with_error_code(delete_code)
                            })
                            .collect(),
                    )
                    .into(),
                (key, request) => panic!("unexpected {key:?}: {request:?}"),
            };
            let mut out = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(correlation_id)
                .encode(&mut out, key.response_header_version(version))
                .expect("header");
            response.encode(&mut out, version).expect("body");
            let size = i32::try_from(out.len()).expect("small");
            conn.write_all(&size.to_be_bytes()).expect("write");
            conn.write_all(&out).expect("write");
        }
    });
    (addr.to_string(), thread)
}

/// The next request (ApiVersions is not decoded), or `None` once the client hangs up.
fn read_request(conn: &mut TcpStream) -> Option<(ApiKey, i16, i32, Option<RequestKind>)> {
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix).ok()?;
    let size = usize::try_from(i32::from_be_bytes(prefix)).expect("size");
    let mut body = vec![0u8; size];
    conn.read_exact(&mut body).expect("body");
    let mut body = Bytes::from(body);
    let header = decode_request_header_from_buffer(&mut body).expect("header");
    let key = ApiKey::try_from(header.request_api_key).expect("key");
    let version = header.request_api_version;
    let request = (key != ApiKey::ApiVersions)
        .then(|| RequestKind::decode(key, &mut body, version).expect("request"));
    Some((key, version, header.correlation_id, request))
}

#[test]
fn help_lists_the_group_commands() {
    let out = strand(&["group", "--help"]);
    assert!(out.status.success(), "{out:?}");
    let help = text(&out.stdout);
    for command in ["list", "describe", "delete"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn a_bad_command_line_exits_2() {
    for args in [
        &["group", "describe"][..],
        &["group", "describe", ""],
        &["group", "list", "--output", "yaml"],
    ] {
        let out = strand(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

#[test]
fn an_unreachable_broker_exits_1_with_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let out = strand(&["group", "describe", "g", "--bootstrap", &addr]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: cannot reach Kafka at {addr}: ")),
        "{stderr}"
    );
}

#[test]
fn describing_a_missing_group_exits_1_and_says_not_found() {
    let (addr, broker) = scripted_broker(0);
    let out = strand(&["--bootstrap", &addr, "group", "describe", "nope"]);
    broker.join().expect("broker");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr), "error: group nope not found\n");
}

#[test]
fn deleting_reports_success_and_a_non_empty_group() {
    let (addr, broker) = scripted_broker(0);
    let out = strand(&["group", "delete", "g", "--bootstrap", &addr]);
    broker.join().expect("broker");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "deleted group g\n");

    let (addr, broker) = scripted_broker(68);
    let out = strand(&["group", "delete", "g", "--bootstrap", &addr]);
    broker.join().expect("broker");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        text(&out.stderr),
        "error: cannot delete group g: it still has active members (NON_EMPTY_GROUP); \
         stop its consumers first\n"
    );
}
