//! The record batches the cluster writes itself: the leader-change marker a new
//! leader appends at the start of its term, and the controller's command records.

use strand_engine::batch;

/// Kafka's `ControlRecordType.LEADER_CHANGE` (KIP-595).
const CONTROL_TYPE_LEADER_CHANGE: i16 = 2;
const ATTRIBUTE_CONTROL: i16 = 0x20;
const HEADER_BYTES: usize = 61;
const CRC_START: usize = 21;

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// One uncompressed record batch holding one record, `attributes` set on the batch.
fn one_record_batch(attributes: i16, timestamp: i64, key: Option<&[u8]>, value: &[u8]) -> Vec<u8> {
    records_batch(attributes, timestamp, &[(key, Some(value))])
}

/// A record's key and value (None: null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// One uncompressed record batch of `records` (key, value; None is null), offsets
/// 0..n, `attributes` set on the batch.
fn records_batch(attributes: i16, timestamp: i64, records: &[KeyValue<'_>]) -> Vec<u8> {
    debug_assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        rec.clear();
        rec.push(0u8); // record attributes
        put_varint(&mut rec, 0); // timestampDelta
        put_varint(&mut rec, i as i64); // offsetDelta
        for field in [key, value] {
            match field {
                Some(b) => {
                    put_varint(&mut rec, b.len() as i64);
                    rec.extend_from_slice(b);
                }
                None => put_varint(&mut rec, -1),
            }
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let mut b = Vec::with_capacity(HEADER_BYTES + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch: stamped later
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    b.extend_from_slice(&attributes.to_be_bytes());
    b.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes()); // lastOffsetDelta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    b.extend_from_slice(&(records.len() as i32).to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    debug_assert!(batch::validate(&b).is_ok());
    b
}

/// A plain batch of key/value records (a null value is a tombstone).
pub fn key_value_batch(records: &[(&[u8], Option<&[u8]>)], timestamp: i64) -> Vec<u8> {
    let records: Vec<KeyValue<'_>> = records.iter().map(|(k, v)| (Some(*k), *v)).collect();
    records_batch(0, timestamp, &records)
}

/// The (key, value) of every record of an uncompressed, non-control batch, CRC
/// checked; None if the batch is not one (or is malformed).
pub fn key_values(bytes: &[u8]) -> Option<Vec<KeyValue<'_>>> {
    let header = batch::validate(bytes).ok()?;
    if header.is_control() || header.compression() != 0 {
        return None;
    }
    let mut at = HEADER_BYTES;
    let mut out = Vec::with_capacity(header.records_count.max(0) as usize);
    for _ in 0..header.records_count {
        let length = usize::try_from(get_varint(bytes, &mut at)?).ok()?;
        let end = at.checked_add(length)?;
        let rec = bytes.get(at..end)?;
        let mut r = 1; // attributes
        get_varint(rec, &mut r)?; // timestampDelta
        get_varint(rec, &mut r)?; // offsetDelta
        let field = |r: &mut usize| -> Option<Option<&[u8]>> {
            let len = get_varint(rec, r)?;
            if len < 0 {
                return Some(None);
            }
            let len = usize::try_from(len).ok()?;
            let f = rec.get(*r..r.checked_add(len)?)?;
            *r += len;
            Some(Some(f))
        };
        let key = field(&mut r)?;
        let value = field(&mut r)?;
        out.push((key, value));
        at = end;
    }
    Some(out)
}

/// The control batch a leader writes first in its term: KIP-595's LeaderChange
/// record (key: version 0, type 2; value: LeaderChangeMessage v0). Consumers skip
/// control batches; it takes one offset.
pub fn leader_change_batch(leader: u32, voters: &[u32], timestamp: i64) -> Vec<u8> {
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&CONTROL_TYPE_LEADER_CHANGE.to_be_bytes());
    // LeaderChangeMessage v0 (flexible): Version int16, LeaderId int32, Voters and
    // GrantingVoters as compact arrays of {VoterId int32, no tags}, no tags.
    let mut value = Vec::with_capacity(16 + 10 * voters.len());
    value.extend_from_slice(&0i16.to_be_bytes());
    value.extend_from_slice(&(leader as i32).to_be_bytes());
    for _ in 0..2 {
        value.push((voters.len() + 1) as u8);
        for v in voters {
            value.extend_from_slice(&(*v as i32).to_be_bytes());
            value.push(0);
        }
    }
    value.push(0);
    one_record_batch(ATTRIBUTE_CONTROL, timestamp, Some(&key), &value)
}

/// A plain batch with one record whose value is `value` (a controller command).
pub fn value_batch(value: &[u8], timestamp: i64) -> Vec<u8> {
    one_record_batch(0, timestamp, None, value)
}

/// The value of the first record of an uncompressed, non-control batch (CRC checked).
pub fn first_record_value(bytes: &[u8]) -> Option<&[u8]> {
    let header = batch::validate(bytes).ok()?;
    if header.is_control() || header.compression() != 0 || header.records_count < 1 {
        return None;
    }
    let mut at = HEADER_BYTES;
    let _length = get_varint(bytes, &mut at)?;
    at += 1; // attributes
    get_varint(bytes, &mut at)?; // timestampDelta
    get_varint(bytes, &mut at)?; // offsetDelta
    let key_len = get_varint(bytes, &mut at)?;
    if key_len > 0 {
        at += key_len as usize;
    }
    let value_len = usize::try_from(get_varint(bytes, &mut at)?).ok()?;
    bytes.get(at..at.checked_add(value_len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_change_is_a_valid_control_batch_of_one_offset() {
        let b = leader_change_batch(2, &[1, 2, 3], 1_700_000_000_000);
        let h = batch::validate(&b).expect("valid");
        assert!(h.is_control());
        assert_eq!(h.offset_count(), 1);
        assert_eq!(
            first_record_value(&b),
            None,
            "control batches carry no command"
        );
    }

    #[test]
    fn value_batches_round_trip() {
        let value = br#"{"put_topic":{}}"#;
        let b = value_batch(value, 5);
        assert_eq!(first_record_value(&b), Some(&value[..]));
        let mut bad = b.clone();
        let last = bad.len() - 2;
        bad[last] ^= 1;
        assert_eq!(first_record_value(&bad), None, "CRC checked");
    }
}
