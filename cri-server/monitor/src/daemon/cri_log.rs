//! The CRI log format, and nothing else: `<RFC3339Nano> <stdout|stderr> <F|P> <content>\n`.
//! As containerd's `pkg/cri/io/logger.go` does: a line longer than [`MAX_LINE`] is cut into
//! `P` pieces of exactly `MAX_LINE` bytes and a final `F` piece; a trailing `\r\n` counts as
//! the end of line; output left without a newline at EOF is written as one `P` line.

use super::timestamp;

/// Longest content of one log line (containerd's default `max_container_log_line_size`).
pub const MAX_LINE: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Turns one stream's bytes into CRI log lines, holding an unfinished line between reads.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Appends to `out` the log lines completed by `data`, stamped `ts`.
    pub fn feed(&mut self, data: &[u8], ts: &[u8; timestamp::LEN], out: &mut Vec<u8>) {
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let segment = &rest[..nl];
            rest = &rest[nl + 1..];
            if self.pending.is_empty() {
                self.write_full(segment, ts, out);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(segment);
                self.write_full(&line, ts, out);
                line.clear();
                if line.capacity() <= 4096 {
                    self.pending = line; // keep a small buffer, drop a big one
                }
            }
        }
        if !rest.is_empty() {
            self.pending.extend_from_slice(rest);
            self.cut_partials(ts, out);
        }
    }

    /// At EOF: writes what is left without a newline as a `P` line.
    pub fn finish(&mut self, ts: &[u8; timestamp::LEN], out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            write_line(self.stream, b'P', &self.pending, ts, out);
        }
        self.pending = Vec::new();
    }

    /// Bytes held back waiting for their newline.
    #[cfg(test)]
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn write_full(&self, line: &[u8], ts: &[u8; timestamp::LEN], out: &mut Vec<u8>) {
        let mut line = line.strip_suffix(b"\r").unwrap_or(line);
        while line.len() > MAX_LINE {
            write_line(self.stream, b'P', &line[..MAX_LINE], ts, out);
            line = &line[MAX_LINE..];
        }
        write_line(self.stream, b'F', line, ts, out);
    }

    fn cut_partials(&mut self, ts: &[u8; timestamp::LEN], out: &mut Vec<u8>) {
        if self.pending.len() <= MAX_LINE {
            return;
        }
        let mut start = 0;
        while self.pending.len() - start > MAX_LINE {
            write_line(
                self.stream,
                b'P',
                &self.pending[start..start + MAX_LINE],
                ts,
                out,
            );
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }
}

fn write_line(
    stream: Stream,
    tag: u8,
    content: &[u8],
    ts: &[u8; timestamp::LEN],
    out: &mut Vec<u8>,
) {
    out.reserve(ts.len() + 10 + content.len());
    out.extend_from_slice(ts);
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.push(b' ');
    out.push(tag);
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &[u8; timestamp::LEN] = b"2026-11-22T05:30:01.123456789Z";

    fn lines(out: &[u8]) -> Vec<(String, String, usize, String)> {
        String::from_utf8(out.to_vec())
            .unwrap()
            .lines()
            .map(|l| {
                let mut f = l.splitn(4, ' ');
                let (_ts, s, t, c) = (
                    f.next(),
                    f.next().unwrap(),
                    f.next().unwrap(),
                    f.next().unwrap(),
                );
                (
                    s.to_string(),
                    t.to_string(),
                    c.len(),
                    c.chars().take(8).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn full_lines_are_tagged_f_and_partial_reads_are_joined() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.feed(b"hello\nwor", TS, &mut out);
        s.feed(b"ld\r\n\n", TS, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-22T05:30:01.123456789Z stdout F hello\n\
             2026-11-22T05:30:01.123456789Z stdout F world\n\
             2026-11-22T05:30:01.123456789Z stdout F \n"
        );
        assert_eq!(s.pending_len(), 0);
    }

    #[test]
    fn long_lines_are_cut_into_p_pieces_then_f() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let mut out = Vec::new();
        let long = vec![b'x'; 40 * 1024];
        // Fed in odd-sized chunks, as reads from a pipe come.
        for chunk in long.chunks(3000) {
            s.feed(chunk, TS, &mut out);
        }
        s.feed(b"\n", TS, &mut out);
        let got = lines(&out);
        let tags: Vec<_> = got
            .iter()
            .map(|l| (l.0.as_str(), l.1.as_str(), l.2))
            .collect();
        assert_eq!(
            tags,
            vec![
                ("stderr", "P", MAX_LINE),
                ("stderr", "P", MAX_LINE),
                ("stderr", "F", 40 * 1024 - 2 * MAX_LINE)
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_max_len_is_one_f_line() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        let mut data = vec![b'y'; MAX_LINE];
        data.push(b'\n');
        s.feed(&data[..MAX_LINE], TS, &mut out);
        assert!(out.is_empty());
        s.feed(&data[MAX_LINE..], TS, &mut out);
        let got = lines(&out);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].1.as_str(), got[0].2), ("F", MAX_LINE));
    }

    #[test]
    fn output_left_at_eof_is_one_p_line() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut out = Vec::new();
        s.feed(b"done\nno newline", TS, &mut out);
        s.finish(TS, &mut out);
        s.finish(TS, &mut out); // nothing more
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-22T05:30:01.123456789Z stdout F done\n\
             2026-11-22T05:30:01.123456789Z stdout P no newline\n"
        );
    }
}
