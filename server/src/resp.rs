//! A small RESP2 client codec: commands out as arrays of bulk strings, replies in. Hand-written
//! so that nothing is ever sent before `AUTH` (CLIProxyAPI counts any such command as a failed
//! login, and five failures ban the address for 30 minutes; PROTOCOL.md §3.6).

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Limits on what a reply may claim, so a broken peer cannot make us allocate without bound.
const BULK_BYTES_MAX: usize = 64 << 20;
const ARRAY_ITEMS_MAX: usize = 1 << 20;
const LINE_BYTES_MAX: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the nil bulk `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array `*-1`.
    Array(Option<Vec<Reply>>),
}

/// `*N\r\n$len\r\narg\r\n…`
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<String> {
    let mut line = Vec::new();
    let n = (&mut *r).take(LINE_BYTES_MAX as u64).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad("RESP line without CRLF or too long"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| bad("RESP line is not UTF-8"))
}

fn parse_len(s: &str, max: usize) -> io::Result<Option<usize>> {
    let n: i64 = s.parse().map_err(|_| bad(format!("bad RESP length {s:?}")))?;
    match n {
        -1 => Ok(None),
        n if n >= 0 && (n as usize) <= max => Ok(Some(n as usize)),
        _ => Err(bad(format!("RESP length {n} out of range"))),
    }
}

/// Reads one reply.
pub async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Reply> {
    // Arrays nest; an explicit stack keeps this free of async recursion.
    let mut stack: Vec<(Vec<Reply>, usize)> = Vec::new();
    loop {
        let line = read_line(r).await?;
        let (kind, rest) = line.split_at(if line.is_char_boundary(1) { 1 } else { 0 });
        let mut value = match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad(format!("bad RESP integer {rest:?}")))?),
            "$" => match parse_len(rest, BULK_BYTES_MAX)? {
                None => Reply::Bulk(None),
                Some(n) => {
                    let mut buf = vec![0u8; n + 2];
                    r.read_exact(&mut buf).await?;
                    if &buf[n..] != b"\r\n" {
                        return Err(bad("RESP bulk string without CRLF"));
                    }
                    buf.truncate(n);
                    Reply::Bulk(Some(buf))
                }
            },
            "*" => match parse_len(rest, ARRAY_ITEMS_MAX)? {
                None => Reply::Array(None),
                Some(0) => Reply::Array(Some(Vec::new())),
                Some(n) => {
                    if stack.len() >= 8 {
                        return Err(bad("RESP arrays nested too deep"));
                    }
                    stack.push((Vec::with_capacity(n.min(1024)), n));
                    continue;
                }
            },
            _ => return Err(bad(format!("unexpected RESP type byte in {line:?}"))),
        };
        // Fold finished values into their arrays.
        loop {
            match stack.last_mut() {
                None => return Ok(value),
                Some((items, want)) => {
                    items.push(value);
                    if items.len() < *want {
                        break;
                    }
                    let (items, _) = stack.pop().expect("non-empty");
                    value = Reply::Array(Some(items));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_of_the_sample_sessions_parse() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cliproxyapi/resp-pop-session.server.bin");
        let bytes = std::fs::read(p).unwrap();
        let mut r = tokio::io::BufReader::new(&bytes[..]);
        let mut replies = Vec::new();
        while let Ok(reply) = read_reply(&mut r).await {
            replies.push(reply);
        }
        assert_eq!(replies[0], Reply::Error("NOAUTH Authentication required.".into()));
        assert_eq!(replies[2], Reply::Simple("OK".into()));
        match &replies[3] {
            Reply::Array(Some(items)) => assert_eq!(items.len(), 2),
            r => panic!("{r:?}"),
        }
        assert_eq!(replies[4], Reply::Bulk(None));
        assert_eq!(replies[5], Reply::Array(Some(Vec::new())));
        assert_eq!(encode(&[b"AUTH", b"test-management-key"]), b"*2\r\n$4\r\nAUTH\r\n$19\r\ntest-management-key\r\n");
        let nested = b"*2\r\n*1\r\n:5\r\n$-1\r\n";
        let got = read_reply(&mut tokio::io::BufReader::new(&nested[..])).await.unwrap();
        assert_eq!(got, Reply::Array(Some(vec![Reply::Array(Some(vec![Reply::Int(5)])), Reply::Bulk(None)])));
        assert!(read_reply(&mut tokio::io::BufReader::new(&b"$99999999999\r\n"[..])).await.is_err());
    }
}
