//! SPDY/3.1 framing as the Kubernetes streaming protocols use it (no maintained crate
//! exists): control frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY,
//! HEADERS, WINDOW_UPDATE and DATA frames, with header blocks compressed by one zlib stream
//! per direction primed with the SPDY/3 dictionary. Public so test clients share it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes.
pub const PROTOCOL_ERROR: u32 = 1;
pub const INVALID_STREAM: u32 = 2;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;
pub const INTERNAL_ERROR: u32 = 6;
pub const FLOW_CONTROL_ERROR: u32 = 7;
pub const FRAME_TOO_LARGE: u32 = 11;

/// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// Largest frame payload accepted (the format allows 16 MiB; nothing here needs that).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest decompressed header block accepted.
pub const MAX_HEADER_BLOCK: usize = 64 << 10;

/// Header name/value pairs; names lower case.
pub type Headers = Vec<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings,
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame type we do not know (the spec says: ignore it).
    Unknown(u16),
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("frame of {0} bytes is larger than allowed")]
    TooLarge(usize),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("bad header block: {0}")]
    HeaderBlock(String),
}

pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One direction's header compressor and the other's decompressor (zlib contexts live as
/// long as the connection).
pub struct HeaderCodec {
    deflate: Compress,
    inflate: Decompress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    pub fn new() -> HeaderCodec {
        let mut deflate = Compress::new(Compression::default(), true);
        // Cannot fail on a fresh stream.
        let _ = deflate.set_dictionary(DICTIONARY);
        HeaderCodec {
            deflate,
            inflate: Decompress::new(true),
        }
    }

    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.extend((headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend((k.len() as u32).to_be_bytes());
            raw.extend(k.to_ascii_lowercase().as_bytes());
            raw.extend((v.len() as u32).to_be_bytes());
            raw.extend(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw.as_slice();
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
            let used = (self.deflate.total_in() - before) as usize;
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let bad = |m: &str| SpdyError::HeaderBlock(m.to_string());
        let mut raw = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            if raw.len() >= MAX_HEADER_BLOCK {
                return Err(bad("header block too large"));
            }
            raw.reserve(4096.min(MAX_HEADER_BLOCK + 1 - raw.len()));
            let before = self.inflate.total_in();
            let res = self
                .inflate
                .decompress_vec(input, &mut raw, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match res {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    if input.is_empty() && raw.len() < raw.capacity() {
                        break;
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.inflate
                            .set_dictionary(DICTIONARY)
                            .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
                    }
                    None => return Err(SpdyError::HeaderBlock(e.to_string())),
                },
            }
        }
        parse_header_block(&raw).ok_or_else(|| bad("truncated name/value block"))
    }
}

fn parse_header_block(raw: &[u8]) -> Option<Headers> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = raw.get(pos..pos.checked_add(n)?)?;
        pos += n;
        Some(s)
    };
    let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_at(take(4)?);
    if count > 1024 {
        return None;
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = u32_at(take(4)?);
        let name = String::from_utf8(take(n)?.to_vec()).ok()?;
        let n = u32_at(take(4)?);
        let value = String::from_utf8(take(n)?.to_vec()).ok()?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Some(headers)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads one frame. Header blocks are inflated with `codec`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    codec: &mut HeaderCodec,
) -> Result<Frame, SpdyError> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await?;
    let flags = head[4];
    let len = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
    if len > MAX_FRAME {
        return Err(SpdyError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    if head[0] & 0x80 == 0 {
        return Ok(Frame::Data {
            stream_id: be32(&head[..4]) & 0x7fff_ffff,
            flags,
            data: body,
        });
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let need = |n: usize, what: &'static str| {
        if body.len() < n {
            Err(SpdyError::Malformed(what))
        } else {
            Ok(())
        }
    };
    Ok(match kind {
        SYN_STREAM => {
            need(10, "SYN_STREAM")?;
            Frame::SynStream {
                stream_id: be32(&body[0..4]) & 0x7fff_ffff,
                associated_to: be32(&body[4..8]) & 0x7fff_ffff,
                priority: body[8] >> 5,
                flags,
                headers: codec.decompress(&body[10..])?,
            }
        }
        SYN_REPLY => {
            need(4, "SYN_REPLY")?;
            Frame::SynReply {
                stream_id: be32(&body[0..4]) & 0x7fff_ffff,
                flags,
                headers: codec.decompress(&body[4..])?,
            }
        }
        HEADERS => {
            need(4, "HEADERS")?;
            Frame::Headers {
                stream_id: be32(&body[0..4]) & 0x7fff_ffff,
                flags,
                headers: codec.decompress(&body[4..])?,
            }
        }
        RST_STREAM => {
            need(8, "RST_STREAM")?;
            Frame::RstStream {
                stream_id: be32(&body[0..4]) & 0x7fff_ffff,
                status: be32(&body[4..8]),
            }
        }
        SETTINGS => Frame::Settings,
        PING => {
            need(4, "PING")?;
            Frame::Ping(be32(&body[0..4]))
        }
        GOAWAY => {
            need(4, "GOAWAY")?;
            Frame::GoAway {
                last_good: be32(&body[0..4]) & 0x7fff_ffff,
                status: if body.len() >= 8 {
                    be32(&body[4..8])
                } else {
                    0
                },
            }
        }
        WINDOW_UPDATE => {
            need(8, "WINDOW_UPDATE")?;
            Frame::WindowUpdate {
                stream_id: be32(&body[0..4]) & 0x7fff_ffff,
                delta: be32(&body[4..8]) & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown(other),
    })
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + body.len());
    v.extend((0x8000 | VERSION).to_be_bytes());
    v.extend(kind.to_be_bytes());
    v.push(flags);
    v.extend(&(body.len() as u32).to_be_bytes()[1..]);
    v.extend(body);
    v
}

/// Serializes a frame; header blocks are deflated with `codec` (so frames must be written in
/// the order they are encoded).
pub fn encode_frame(frame: &Frame, codec: &mut HeaderCodec) -> Result<Vec<u8>, SpdyError> {
    Ok(match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            flags,
            headers,
        } => {
            let mut b = Vec::new();
            b.extend((stream_id & 0x7fff_ffff).to_be_bytes());
            b.extend((associated_to & 0x7fff_ffff).to_be_bytes());
            b.push(priority << 5);
            b.push(0);
            b.extend(codec.compress(headers)?);
            control(SYN_STREAM, *flags, &b)
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => {
            let mut b = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            b.extend(codec.compress(headers)?);
            control(SYN_REPLY, *flags, &b)
        }
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let mut b = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            b.extend(codec.compress(headers)?);
            control(HEADERS, *flags, &b)
        }
        Frame::RstStream { stream_id, status } => {
            let mut b = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            b.extend(status.to_be_bytes());
            control(RST_STREAM, 0, &b)
        }
        Frame::Settings => control(SETTINGS, 0, &0u32.to_be_bytes()),
        Frame::Ping(id) => control(PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good, status } => {
            let mut b = (last_good & 0x7fff_ffff).to_be_bytes().to_vec();
            b.extend(status.to_be_bytes());
            control(GOAWAY, 0, &b)
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut b = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
            b.extend((delta & 0x7fff_ffff).to_be_bytes());
            control(WINDOW_UPDATE, 0, &b)
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            let mut v = Vec::with_capacity(8 + data.len());
            v.extend((stream_id & 0x7fff_ffff).to_be_bytes());
            v.push(*flags);
            v.extend(&(data.len() as u32).to_be_bytes()[1..]);
            v.extend(data);
            v
        }
        Frame::Unknown(kind) => control(*kind, 0, &[]),
    })
}

/// Writes one frame (see [`encode_frame`]).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    codec: &mut HeaderCodec,
) -> Result<(), SpdyError> {
    let bytes = encode_frame(frame, codec)?;
    w.write_all(&bytes).await?;
    Ok(())
}

/// The zlib dictionary of SPDY/3 header blocks (1423 bytes, from the draft).
pub const DICTIONARY: &[u8] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\
    \x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-ch\
    arset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0dacc\
    ept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\
    \x00\x0dcache-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\
    \x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\
    \x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\
    \x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\
    \x00\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-matc\
    h\x00\x00\x00\x11if-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-rang\
    e\x00\x00\x00\x13if-unmodified-since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08locat\
    ion\x00\x00\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticat\
    e\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\
    \x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\
    \x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\
    \x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\
    \x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200\x20\
    OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06pu\
    blic\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120\
    1202205206300302303304305306307402405406407408409410411412413414415416417502504505203\x20\
    Non-Authoritative\x20Information204\x20No\x20Content301\x20Moved\x20Permanently400\x20\
    Bad\x20Request401\x20Unauthorized403\x20Forbidden404\x20Not\x20Found500\x20Internal\x20\
    Server\x20Error501\x20Not\x20Implemented503\x20Service\x20UnavailableJan\x20Feb\x20Mar\
    \x20Apr\x20May\x20Jun\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\x2000:00:00\x20Mon,\x20\
    Tue,\x20Wed,\x20Thu,\x20Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/html,image/png,image/j\
    pg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicpr\
    ivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.\
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_drafts() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
        assert!(
            DICTIONARY
                .windows(28)
                .any(|w| w == b"Jan Feb Mar Apr May Jun Jul ")
        );
    }

    #[tokio::test]
    async fn frames_round_trip_through_a_shared_zlib_context() {
        let (mut tx, mut rx) = (HeaderCodec::new(), HeaderCodec::new());
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 0,
                flags: FLAG_FIN,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "8080".into()),
                ],
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Ping(7),
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 5,
            },
            Frame::RstStream {
                stream_id: 1,
                status: CANCEL,
            },
            Frame::GoAway {
                last_good: 3,
                status: GOAWAY_OK,
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(encode_frame(f, &mut tx).unwrap());
        }
        let mut r = wire.as_slice();
        for f in &frames {
            assert_eq!(&read_frame(&mut r, &mut rx).await.unwrap(), f);
        }
    }

    #[test]
    fn a_block_deflated_by_reference_zlib_with_the_dictionary_inflates() {
        // {"streamtype": "error"}, deflated by C zlib with the dictionary and a sync flush.
        let block = [
            0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29,
            0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00,
            0xff, 0xff,
        ];
        let h = HeaderCodec::new().decompress(&block).unwrap();
        assert_eq!(h, vec![("streamtype".to_string(), "error".to_string())]);
        // And ours carries the same dictionary id: Adler-32 0xe3c6a7c2, the SPDY/3 one.
        let ours = HeaderCodec::new().compress(&h).unwrap();
        assert_eq!(&ours[2..6], &block[2..6]);
    }

    #[tokio::test]
    async fn hostile_frames_are_errors_not_panics() {
        let mut c = HeaderCodec::new();
        // Too large.
        let mut r: &[u8] = &[0, 0, 0, 1, 0, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut r, &mut c).await,
            Err(SpdyError::TooLarge(_))
        ));
        // Wrong version.
        let mut r: &[u8] = &[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            read_frame(&mut r, &mut c).await,
            Err(SpdyError::Version(2))
        ));
        // Short control frames and garbage header blocks.
        let mut r: &[u8] = &[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0];
        assert!(read_frame(&mut r, &mut c).await.is_err());
        let mut r: &[u8] = &[
            0x80, 3, 0, 1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ];
        assert!(read_frame(&mut r, &mut HeaderCodec::new()).await.is_err());
        // Truncated input.
        let mut r: &[u8] = &[0, 0, 0, 1, 0, 0, 0, 9, 1];
        assert!(read_frame(&mut r, &mut c).await.is_err());
    }
}
