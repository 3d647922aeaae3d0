//! The embedded store's write-ahead log: an append-only file of records, each
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, fdatasync'd before a write
//! is acknowledged.
//!
//! Reading stops at the first record that is short, fails its checksum, or (checked by the
//! caller) does not continue the sequence: a torn tail is a write that was never acknowledged.
//! The file is opened in append mode, so a record can never land behind a hole.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    path::Path,
};

const HEADER: usize = 8;
/// Largest record accepted when reading; anything larger is corruption.
const MAX_RECORD: usize = 1 << 30;

/// An open write-ahead log.
pub(crate) struct Wal {
    file: File,
    len: u64,
}

impl Wal {
    /// Opens (or creates) the log and returns the payloads of its valid prefix. The torn tail,
    /// if any, is cut off so that new records follow the valid ones.
    pub(crate) fn open(path: &Path) -> io::Result<(Self, Vec<Vec<u8>>)> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let mut at = 0;
        while bytes.len() - at >= HEADER {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
            let start = at + HEADER;
            if len > MAX_RECORD || bytes.len() - start < len {
                break;
            }
            let payload = &bytes[start..start + len];
            if crc32fast::hash(payload) != crc {
                break;
            }
            records.push(payload.to_vec());
            at = start + len;
        }
        let valid = at as u64;
        if valid != bytes.len() as u64 {
            tracing::warn!(
                valid,
                total = bytes.len(),
                "write-ahead log has a torn tail; dropping the unacknowledged bytes"
            );
            file.set_len(valid)?;
            file.sync_all()?;
        }
        Ok((Self { file, len: valid }, records))
    }

    /// Appends one record and makes it durable.
    pub(crate) fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| (*l as usize) <= MAX_RECORD)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        buf.extend_from_slice(payload);
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Empties the log (after a checkpoint made everything in it durable elsewhere).
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    /// Bytes in the log.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.wal");
        {
            let (mut w, recs) = Wal::open(&path).unwrap();
            assert!(recs.is_empty());
            w.append(b"one").unwrap();
            w.append(b"two").unwrap();
        }
        // Tear the last record: drop its final byte, then add garbage.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        let (mut w, recs) = Wal::open(&path).unwrap();
        assert_eq!(recs, vec![b"one".to_vec()]);
        w.append(b"three").unwrap();
        drop(w);
        let (_, recs) = Wal::open(&path).unwrap();
        assert_eq!(recs, vec![b"one".to_vec(), b"three".to_vec()]);
    }

    #[test]
    fn stops_at_a_bad_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.wal");
        {
            let (mut w, _) = Wal::open(&path).unwrap();
            w.append(b"good").unwrap();
            w.append(b"flipped").unwrap();
            w.append(b"after").unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let second_payload = 8 + 4 + 8;
        bytes[second_payload] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (w, recs) = Wal::open(&path).unwrap();
        assert_eq!(recs, vec![b"good".to_vec()]);
        assert_eq!(w.len(), 12);
        w.file.sync_all().unwrap();
        w.reset_for_test();
    }

    impl Wal {
        fn reset_for_test(mut self) {
            self.reset().unwrap();
            assert_eq!(self.len(), 0);
        }
    }
}
