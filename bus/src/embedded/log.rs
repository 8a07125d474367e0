//! The embedded bus on disk: per topic partition, an append-only log cut
//! into segment files, and per topic the offsets its consumer groups
//! committed. Kafka's log segments and Prometheus's WAL are the models.
//!
//! ```text
//! <path>/<topic>/<partition>/<base offset, 20 digits>.log   segments
//! <path>/<topic>/groups                                     "<partition> <offset> <group>" lines
//! ```
//!
//! A record is `length (u32) · CRC-32 of the body (u32) · body`, the body
//! `offset (i64) · key length (u32) · key · payload`, little-endian. Offsets
//! increase by one per record and go on from the log's last record after a
//! restart, so they never depend on the clock; a new partition starts at
//! the creation time in nanoseconds, above any offset an earlier bus (or a
//! checkpoint of one) used. Reading a segment stops at the first record
//! that is cut short or fails its CRC (a write torn by a crash): the file
//! is truncated there, and the records after it are counted as torn.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// Bytes before a record's body: its length and CRC.
const HEADER: usize = 8;
/// Bytes of a body before its key: the offset and the key's length.
const BODY_HEADER: usize = 12;

/// A record as it is kept in memory after it was read back or appended.
#[derive(Debug, Clone)]
pub struct Stored {
    pub offset: i64,
    pub key: Bytes,
    pub payload: Bytes,
}

#[derive(Debug)]
struct Segment {
    /// The offset after its last record.
    end: i64,
    path: PathBuf,
}

/// One partition's log.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    /// Oldest first; the last one is appended to.
    segments: Vec<Segment>,
    active: Arc<File>,
    active_bytes: u64,
    segment_bytes: u64,
    /// Whether a closed segment is fsynced before the next one starts.
    sync: bool,
}

/// What opening a partition's log found.
#[derive(Debug)]
pub struct Opened {
    pub log: PartitionLog,
    /// The records from the requested offset on, oldest first.
    pub records: Vec<Stored>,
    /// The offset the next record gets.
    pub end: i64,
    /// Records cut short or failing their CRC, truncated away.
    pub torn: u64,
}

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Encodes a record onto `buffer`.
fn encode(buffer: &mut Vec<u8>, offset: i64, key: &[u8], payload: &[u8]) {
    let body_len = BODY_HEADER + key.len() + payload.len();
    let start = buffer.len();
    buffer.extend_from_slice(&(body_len as u32).to_le_bytes());
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(&offset.to_le_bytes());
    buffer.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buffer.extend_from_slice(key);
    buffer.extend_from_slice(payload);
    let crc = crc32fast::hash(&buffer[start + HEADER..]);
    buffer[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// The records of a segment's bytes up to the first bad one, and where
/// the good part ends.
fn decode(bytes: &Bytes, mut expected: Option<i64>) -> (Vec<Stored>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let body_len = u32::from_le_bytes(header[..4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap_or_default());
        let Some(body) = bytes.get(at + HEADER..at + HEADER + body_len) else {
            break;
        };
        if body_len < BODY_HEADER || crc32fast::hash(body) != crc {
            break;
        }
        let offset = i64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        let key_len = u32::from_le_bytes(body[8..12].try_into().unwrap_or_default()) as usize;
        if key_len > body_len - BODY_HEADER || expected.is_some_and(|e| offset < e) {
            break;
        }
        let key_start = at + HEADER + BODY_HEADER;
        let payload_start = key_start + key_len;
        records.push(Stored {
            offset,
            key: bytes.slice(key_start..payload_start),
            payload: bytes.slice(payload_start..at + HEADER + body_len),
        });
        expected = Some(offset + 1);
        at += HEADER + body_len;
    }
    (records, at)
}

/// How many records the bytes after a torn point held, at least one: the
/// length fields past the tear cannot be trusted, so this counts what can
/// still be parsed as a header chain and never less than the torn one.
fn torn_records(rest: &[u8]) -> u64 {
    let mut count = 0;
    let mut at = 0;
    while at < rest.len() {
        count += 1;
        match rest.get(at..at + 4) {
            Some(length) => {
                at += HEADER + u32::from_le_bytes(length.try_into().unwrap_or_default()) as usize;
            }
            None => break,
        }
    }
    count.max(1)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl PartitionLog {
    /// Opens (or creates, with its first offset at `new_base`) the log in
    /// `dir`, and reads back the records at or after `keep_from`.
    pub fn open(
        dir: &Path,
        new_base: i64,
        keep_from: i64,
        segment_bytes: u64,
        sync: bool,
    ) -> io::Result<Opened> {
        fs::create_dir_all(dir)?;
        let mut bases: Vec<i64> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse().ok()) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            File::create(segment_path(dir, new_base))?;
            if sync {
                sync_dir(dir)?;
            }
            bases.push(new_base);
        }
        let mut segments = Vec::with_capacity(bases.len());
        let mut records = Vec::new();
        let mut torn = 0;
        let mut end = bases[0];
        let mut active_bytes = 0;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(dir, base);
            let bytes = Bytes::from(fs::read(&path)?);
            let (read, good) = decode(&bytes, Some(end.max(base)));
            if good < bytes.len() {
                let lost = torn_records(&bytes[good..]);
                tracing::warn!(
                    path = %path.display(),
                    at = good,
                    records = lost,
                    "truncating a torn or corrupt record at the end of a bus log segment"
                );
                torn += lost;
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(good as u64)?;
                file.sync_all()?;
            }
            let segment_end = read.last().map_or(base.max(end), |r| r.offset + 1);
            records.extend(read.into_iter().filter(|r| r.offset >= keep_from));
            end = segment_end;
            if i + 1 == bases.len() {
                active_bytes = good as u64;
            }
            segments.push(Segment {
                end: segment_end,
                path,
            });
        }
        let active = OpenOptions::new()
            .append(true)
            .open(&segments[segments.len() - 1].path)?;
        Ok(Opened {
            log: PartitionLog {
                dir: dir.to_owned(),
                segments,
                active: Arc::new(active),
                active_bytes,
                segment_bytes,
                sync,
            },
            records,
            end,
            torn,
        })
    }

    /// The offset the next record gets.
    pub fn end(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.end)
    }

    /// Appends records, numbered from [`PartitionLog::end`]: all of them or,
    /// on error, none (a partly written tail is cut off again).
    pub fn append<'a>(
        &mut self,
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> io::Result<i64> {
        if self.active_bytes >= self.segment_bytes {
            self.roll()?;
        }
        let mut buffer = Vec::new();
        let mut offset = self.end();
        for (key, payload) in records {
            encode(&mut buffer, offset, key, payload);
            offset += 1;
        }
        if let Err(error) = (&*self.active).write_all(&buffer) {
            // Whatever part reached the file is not a record anyone was told
            // about: cut it off, so the next append starts clean.
            self.active.set_len(self.active_bytes)?;
            return Err(error);
        }
        self.active_bytes += buffer.len() as u64;
        if let Some(active) = self.segments.last_mut() {
            active.end = offset;
        }
        Ok(offset)
    }

    /// Closes the active segment and starts the next.
    fn roll(&mut self) -> io::Result<()> {
        let base = self.end();
        let path = segment_path(&self.dir, base);
        if self.sync {
            self.active.sync_data()?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if self.sync {
            sync_dir(&self.dir)?;
        }
        self.active = Arc::new(file);
        self.active_bytes = 0;
        self.segments.push(Segment { end: base, path });
        Ok(())
    }

    /// The file being appended to, for a sync outside the bus's lock.
    pub fn active(&self) -> Arc<File> {
        Arc::clone(&self.active)
    }

    /// Deletes the segments whose every record is before `done`; the
    /// active one stays, so the log always knows its end.
    pub fn delete_before(&mut self, done: i64) -> io::Result<()> {
        while self.has_segment_before(done) {
            let segment = self.segments.remove(0);
            fs::remove_file(&segment.path)?;
        }
        Ok(())
    }

    /// Whether [`PartitionLog::delete_before`] would delete a segment.
    pub fn has_segment_before(&self, done: i64) -> bool {
        self.segments.len() > 1 && self.segments[0].end <= done
    }

    /// How many segment files the log has.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.segments.len()
    }
}

/// The offsets a topic's consumer groups committed: `(group, per
/// partition)`.
pub type Committed = Vec<(String, Vec<(i32, i64)>)>;

/// Reads a topic's committed offsets; none when the file is missing.
pub fn read_committed(topic_dir: &Path) -> io::Result<Committed> {
    let text = match fs::read_to_string(topic_dir.join("groups")) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut groups: Committed = Vec::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, ' ');
        let (Some(partition), Some(offset), Some(group)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Ok(partition), Ok(offset)) = (partition.parse(), offset.parse()) else {
            continue;
        };
        match groups.iter_mut().find(|(g, _)| g == group) {
            Some((_, offsets)) => offsets.push((partition, offset)),
            None => groups.push((group.to_owned(), vec![(partition, offset)])),
        }
    }
    Ok(groups)
}

/// Replaces a topic's committed offsets: written aside, then renamed over
/// the old file, so a crash leaves one or the other whole.
pub fn write_committed<'a>(
    topic_dir: &Path,
    groups: impl IntoIterator<Item = (&'a str, &'a [i64])>,
    sync: bool,
) -> io::Result<()> {
    let mut text = String::new();
    for (group, offsets) in groups {
        for (partition, offset) in offsets.iter().enumerate() {
            text.push_str(&format!("{partition} {offset} {group}\n"));
        }
    }
    let aside = topic_dir.join("groups.new");
    let mut file = File::create(&aside)?;
    file.write_all(text.as_bytes())?;
    if sync {
        file.sync_data()?;
    }
    fs::rename(&aside, topic_dir.join("groups"))?;
    if sync {
        sync_dir(topic_dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn append(log: &mut PartitionLog, payloads: &[&str]) -> i64 {
        log.append(payloads.iter().map(|p| (&b"k"[..], p.as_bytes())))
            .unwrap()
    }

    #[test]
    fn records_come_back_after_a_reopen_numbered_on() {
        let dir = scratch("reopen");
        let mut opened = PartitionLog::open(&dir, 1_000, 0, 1 << 20, false).unwrap();
        assert_eq!((opened.end, opened.records.len()), (1_000, 0));
        assert_eq!(append(&mut opened.log, &["a", "bb"]), 1_002);
        drop(opened);
        let mut opened = PartitionLog::open(&dir, 5_000, 1_001, 1 << 20, false).unwrap();
        let read: Vec<(i64, &[u8])> = opened
            .records
            .iter()
            .map(|r| (r.offset, &r.payload[..]))
            .collect();
        assert_eq!(read, vec![(1_001, &b"bb"[..])]);
        assert_eq!((opened.end, opened.torn), (1_002, 0));
        assert_eq!(append(&mut opened.log, &["c"]), 1_003);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_truncated_and_counted_and_the_rest_kept() {
        let dir = scratch("torn");
        let mut opened = PartitionLog::open(&dir, 0, 0, 1 << 20, false).unwrap();
        append(&mut opened.log, &["first", "second", "third"]);
        drop(opened);
        let path = segment_path(&dir, 0);
        let length = fs::metadata(&path).unwrap().len();
        // The third record (8 + 12 + 1 + 5 bytes) loses its last 3 bytes.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(length - 3)
            .unwrap();
        let mut opened = PartitionLog::open(&dir, 0, 0, 1 << 20, false).unwrap();
        let read: Vec<&[u8]> = opened.records.iter().map(|r| &r.payload[..]).collect();
        assert_eq!(read, vec![&b"first"[..], b"second"]);
        assert_eq!((opened.end, opened.torn), (2, 1));
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 * 8 + 2 * 12 + 2 + 11);
        assert_eq!(append(&mut opened.log, &["again"]), 3);
        drop(opened);
        let opened = PartitionLog::open(&dir, 0, 0, 1 << 20, false).unwrap();
        assert_eq!((opened.records.len(), opened.torn), (3, 0));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_bit_fails_the_crc() {
        let dir = scratch("crc");
        let mut opened = PartitionLog::open(&dir, 0, 0, 1 << 20, false).unwrap();
        append(&mut opened.log, &["first", "second"]);
        drop(opened);
        let path = segment_path(&dir, 0);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        let opened = PartitionLog::open(&dir, 0, 0, 1 << 20, false).unwrap();
        assert_eq!((opened.records.len(), opened.end, opened.torn), (1, 1, 1));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_roll_by_size_and_go_once_consumed() {
        let dir = scratch("segments");
        let mut opened = PartitionLog::open(&dir, 0, 0, 64, false).unwrap();
        let log = &mut opened.log;
        for i in 0..10 {
            // 8 + 12 + 1 + 30 = 51 bytes: a segment takes two before it is full.
            append(log, &[&format!("{i:030}")]);
        }
        assert_eq!(log.segments(), 5);
        log.delete_before(4).unwrap();
        assert_eq!(log.segments(), 3, "segments [0,2) and [2,4) went");
        log.delete_before(100).unwrap();
        assert_eq!((log.segments(), log.end()), (1, 10), "the active one stays");
        drop(opened);
        let opened = PartitionLog::open(&dir, 0, 0, 64, false).unwrap();
        assert_eq!(opened.end, 10);
        assert_eq!(opened.records.len(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn committed_offsets_round_trip() {
        let dir = scratch("groups");
        fs::create_dir_all(&dir).unwrap();
        assert!(read_committed(&dir).unwrap().is_empty());
        write_committed(&dir, [("a", &[5, 7][..]), ("b c", &[1, 2][..])], true).unwrap();
        assert_eq!(
            read_committed(&dir).unwrap(),
            vec![
                ("a".to_owned(), vec![(0, 5), (1, 7)]),
                ("b c".to_owned(), vec![(0, 1), (1, 2)]),
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
