//! Container log files in the CRI format kubelet writes
//! (`2024-05-01T10:00:00.123456789Z stdout F text`), rotated by size: the
//! live file is `NAME`, older ones `NAME.1`, `NAME.2`, ... up to `max_files`
//! files in all.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Default size of one log file before rotation (10 MiB).
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default number of log files kept per container.
pub const DEFAULT_MAX_FILES: u32 = 2;
/// Longest line written in one record; longer lines are split (`P` records).
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A size-rotated log file.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    file: fs::File,
    size: u64,
}

impl LogWriter {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<LogWriter> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            max_size: max_size.max(1024),
            max_files: max_files.max(1),
            file,
            size,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_files <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        let _ = fs::remove_file(name(self.max_files - 1));
        for i in (1..self.max_files - 1).rev() {
            let _ = fs::rename(name(i), name(i + 1));
        }
        fs::rename(&self.path, name(1))?;
        self.file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Writes one record; `partial` marks a line continued in the next record.
    pub fn write_record(&mut self, stream: Stream, line: &[u8], partial: bool) -> io::Result<()> {
        let ts = jiff::Timestamp::now();
        let mut rec = format!(
            "{} {} {} ",
            ts.strftime("%Y-%m-%dT%H:%M:%S.%9fZ"),
            stream.as_str(),
            if partial { "P" } else { "F" }
        )
        .into_bytes();
        rec.extend_from_slice(line);
        rec.push(b'\n');
        if self.size > 0 && self.size + rec.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&rec)?;
        self.size += rec.len() as u64;
        Ok(())
    }
}

/// Splits a stream into log records, keeping an incomplete last line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(line, partial)` for each complete record.
    pub fn feed(&mut self, data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = &self.pending[start..start + pos];
            for (i, chunk) in line.chunks(MAX_LINE).enumerate() {
                let last = (i + 1) * MAX_LINE >= line.len();
                emit(chunk, !last);
            }
            if line.is_empty() {
                emit(b"", false);
            }
            start += pos + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE {
            let chunk: Vec<u8> = self.pending.drain(..MAX_LINE).collect();
            emit(&chunk, true);
        }
    }

    /// Flushes what is left at end of stream.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, false);
            self.pending.clear();
        }
    }
}

/// Reads a container's log back as plain text (message part of each record,
/// oldest file first).
pub fn read_log_text(path: &Path) -> io::Result<String> {
    let mut files = Vec::new();
    for i in (1..100).rev() {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(path.to_path_buf());
    let mut out = String::new();
    for f in files {
        let text = match fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines() {
            let mut parts = line.splitn(4, ' ');
            let (_, _, tag, msg) = (parts.next(), parts.next(), parts.next(), parts.next());
            out.push_str(msg.unwrap_or(""));
            if tag != Some("P") {
                out.push('\n');
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("c.log");
        let mut w = LogWriter::open(&p, 1024, 2).expect("open");
        for i in 0..100 {
            w.write_record(Stream::Stdout, format!("line {i}").as_bytes(), false)
                .expect("write");
        }
        assert!(p.exists());
        assert!(dir.path().join("c.log.1").exists());
        assert!(!dir.path().join("c.log.2").exists());
        let text = read_log_text(&p).expect("read");
        assert!(text.ends_with("line 99\n"));
        assert!(fs::metadata(&p).expect("meta").len() <= 1024);
    }

    #[test]
    fn splits_lines_and_long_lines() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.feed(b"ab\ncd", |l, p| got.push((l.to_vec(), p)));
        s.feed(b"e\n", |l, p| got.push((l.to_vec(), p)));
        assert_eq!(got, vec![(b"ab".to_vec(), false), (b"cde".to_vec(), false)]);
        got.clear();
        s.feed(&vec![b'x'; MAX_LINE + 5], |l, p| got.push((l.to_vec(), p)));
        s.finish(|l, p| got.push((l.to_vec(), p)));
        assert_eq!(got.len(), 2);
        assert!(got[0].1);
        assert_eq!(got[1].0.len(), 5);
    }
}
