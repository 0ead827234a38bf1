//! HTTP/2 spoken frame by frame, as a hostile or broken client would: no
//! flow control, no stream limit honoured, headers that never end in a body.
//! Only what the abuse tests need: the connection preface, SETTINGS and
//! PING acknowledgements, and HEADERS (HPACK literals, no compression).

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const REFUSED_STREAM: u32 = 0x7;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

#[derive(Debug)]
pub struct RawConnection {
    pub tcp: TcpStream,
    next_stream: u32,
}

impl RawConnection {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub async fn open(addr: SocketAddr) -> Self {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(PREFACE).await.unwrap();
        tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        Self {
            tcp,
            next_stream: 1,
        }
    }

    /// Many header-only streams in one write.
    pub async fn header_only_streams(&mut self, path: &str, count: usize) {
        let block = header_block(path, &[]);
        let mut bytes = Vec::with_capacity(count * (block.len() + 9));
        for _ in 0..count {
            bytes.extend(frame(HEADERS, END_HEADERS, self.next_stream, &block));
            self.next_stream += 2;
        }
        self.tcp.write_all(&bytes).await.unwrap();
    }

    /// The next frame from the gateway, acknowledging SETTINGS and PING on
    /// the way (they are returned too); `None` once it closed the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        let frame_read = Frame {
            kind: head[3],
            flags: head[4],
            payload,
        };
        let ack = match frame_read.kind {
            SETTINGS if frame_read.flags & ACK == 0 => Some(frame(SETTINGS, ACK, 0, &[])),
            PING if frame_read.flags & ACK == 0 => Some(frame(PING, ACK, 0, &frame_read.payload)),
            _ => None,
        };
        if let Some(ack) = ack {
            // The gateway may already have closed its side.
            let _ = self.tcp.write_all(&ack).await;
        }
        Some(frame_read)
    }
}

/// One frame, as bytes.
pub fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream_id.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// A gRPC message: flag, length, payload.
pub fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend((payload.len() as u32).to_be_bytes());
    bytes.extend(payload);
    bytes
}

fn header_block(path: &str, metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    let fixed = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "gateway"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    for (name, value) in fixed.iter().chain(metadata) {
        // Literal header field without indexing, new name (RFC 7541 6.2.2).
        block.push(0);
        hpack_string(&mut block, name.as_bytes());
        hpack_string(&mut block, value.as_bytes());
    }
    block
}

/// A string literal without Huffman coding: a 7-bit-prefix length, then the
/// bytes (RFC 7541 5.1, 5.2).
fn hpack_string(block: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len();
    if len < 127 {
        block.push(len as u8);
    } else {
        block.push(127);
        len -= 127;
        while len >= 128 {
            block.push((len % 128 + 128) as u8);
            len /= 128;
        }
        block.push(len as u8);
    }
    block.extend(bytes);
}
