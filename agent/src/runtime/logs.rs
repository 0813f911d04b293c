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

/// Where a container logs: `{state_dir}/logs/{namespace}_{pod}_{uid}/{container}.log`
/// (kubelet's layout), the live file of its current run.
pub fn container_log_path(
    state_dir: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
) -> PathBuf {
    state_dir
        .join("logs")
        .join(format!("{namespace}_{pod}_{uid}"))
        .join(format!("{container}.log"))
}

/// The live log file of a container's previous run, given its current one:
/// `NAME.previous.log` beside `NAME.log` (container names have no dots).
pub fn previous_log_path(path: &Path) -> PathBuf {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".log"))
        .unwrap_or("container");
    path.with_file_name(format!("{stem}.previous.log"))
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    PathBuf::from(format!("{}.{i}", path.display()))
}

/// Highest rotation suffix looked at when reading or moving a log.
const MAX_ROTATED: u32 = 99;

/// The files of a log, oldest first (`PATH.N` ... `PATH.1`, `PATH`), those
/// that exist.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=MAX_ROTATED)
        .rev()
        .map(|i| rotated(path, i))
        .filter(|p| p.exists())
        .collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// Keeps the log of the run that just ended as the "previous" log (what
/// `bramble logs --previous` shows) before the container starts again; the
/// run before it is dropped, as kubelet does.
pub fn archive_previous(path: &Path) -> io::Result<()> {
    let previous = previous_log_path(path);
    for old in log_files(&previous) {
        fs::remove_file(old)?;
    }
    for i in 1..=MAX_ROTATED {
        let from = rotated(path, i);
        if from.exists() {
            fs::rename(from, rotated(&previous, i))?;
        }
    }
    match fs::rename(path, &previous) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Where the last `lines` records of `files` (oldest first) begin: the
/// index of a file and a byte offset in it. Reads backwards in blocks, so a
/// large log costs no more memory than one block.
pub fn tail_start(files: &[PathBuf], lines: u64) -> io::Result<(usize, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    const BLOCK: u64 = 64 * 1024;
    if lines == 0 {
        let last = files.len().saturating_sub(1);
        let end = files
            .get(last)
            .map_or(Ok(0), |f| fs::metadata(f).map(|m| m.len()))?;
        return Ok((last, end));
    }
    // Newlines seen so far, counting back from the end; the newline that
    // ends the last record does not start a record.
    let mut seen = 0u64;
    let mut first_block = true;
    for (index, file) in files.iter().enumerate().rev() {
        let mut f = fs::File::open(file)?;
        let mut end = f.metadata()?.len();
        let mut buf = vec![0u8; BLOCK as usize];
        while end > 0 {
            let start = end.saturating_sub(BLOCK);
            let len = (end - start) as usize;
            f.seek(SeekFrom::Start(start))?;
            f.read_exact(&mut buf[..len])?;
            for (i, byte) in buf[..len].iter().enumerate().rev() {
                if *byte != b'\n' {
                    continue;
                }
                if first_block && start + i as u64 + 1 == end && seen == 0 {
                    // The final newline of the log.
                    first_block = false;
                    continue;
                }
                first_block = false;
                seen += 1;
                if seen == lines {
                    return Ok((index, start + i as u64 + 1));
                }
            }
            first_block = false;
            end = start;
        }
    }
    Ok((0, 0))
}

/// Reads a container's log back as plain text (message part of each record,
/// oldest file first).
pub fn read_log_text(path: &Path) -> io::Result<String> {
    let mut out = String::new();
    for f in log_files(path) {
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

    fn write_lines(path: &Path, from: u32, to: u32) {
        let mut text = String::new();
        for i in from..to {
            text.push_str(&format!(
                "2024-05-01T10:00:00.000000000Z stdout F line {i}\n"
            ));
        }
        fs::write(path, text).expect("write");
    }

    fn text_from(files: &[PathBuf], (index, offset): (usize, u64)) -> String {
        let mut out = String::new();
        for (i, f) in files.iter().enumerate().skip(index) {
            let text = fs::read_to_string(f).expect("read");
            let skip = if i == index { offset as usize } else { 0 };
            out.push_str(&text[skip..]);
        }
        out
    }

    #[test]
    fn tail_finds_the_last_lines_across_rotated_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let live = dir.path().join("c.log");
        write_lines(&rotated(&live, 1), 0, 5);
        write_lines(&live, 5, 8);
        let files = log_files(&live);
        assert_eq!(files, vec![rotated(&live, 1), live.clone()]);
        let last2 = text_from(&files, tail_start(&files, 2).expect("tail"));
        assert_eq!(last2.lines().count(), 2);
        assert!(last2.starts_with("2024") && last2.contains("line 6") && last2.contains("line 7"));
        let last4 = text_from(&files, tail_start(&files, 4).expect("tail"));
        assert_eq!(last4.lines().count(), 4);
        assert!(last4.contains("line 4\n"), "{last4}");
        let all = text_from(&files, tail_start(&files, 100).expect("tail"));
        assert_eq!(all.lines().count(), 8);
        assert_eq!(text_from(&files, tail_start(&files, 0).expect("tail")), "");
    }

    #[test]
    fn archive_previous_keeps_one_previous_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let live = dir.path().join("app.log");
        assert_eq!(
            previous_log_path(&live),
            dir.path().join("app.previous.log")
        );
        write_lines(&live, 0, 1);
        write_lines(&rotated(&live, 1), 10, 11);
        archive_previous(&live).expect("archive");
        assert!(log_files(&live).is_empty());
        let previous = read_log_text(&previous_log_path(&live)).expect("read");
        assert_eq!(previous, "line 10\nline 0\n");
        write_lines(&live, 1, 2);
        archive_previous(&live).expect("archive again");
        let previous = read_log_text(&previous_log_path(&live)).expect("read");
        assert_eq!(
            previous, "line 1\n",
            "the run before the previous one is dropped"
        );
        archive_previous(&live).expect("nothing to archive is fine");
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
