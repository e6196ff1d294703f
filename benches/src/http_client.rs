//! A small blocking HTTP/1.1 client with keep-alive, for the load generator: one connection
//! per worker thread, bodies written as slices (no copy into one buffer), answers read by
//! their Content-Length.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{bail, Context, Result};

/// One keep-alive connection.
pub struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// `host:port` of an `http://host:port[/]` URL.
pub fn host_port(server: &str) -> Result<String> {
    let rest = server
        .strip_prefix("http://")
        .context("the load generator speaks plain http:// to the server")?;
    Ok(rest.trim_end_matches('/').to_string())
}

impl Conn {
    /// Connects to `addr` (`host:port`).
    pub fn connect(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            addr: addr.to_string(),
            reader: BufReader::with_capacity(1 << 20, stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends a request whose body is `parts` in order; the status and body of the answer.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        parts: &[&[u8]],
    ) -> Result<(u16, Vec<u8>)> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Length: {len}\r\n\r\n",
            self.addr
        );
        self.writer.write_all(head.as_bytes())?;
        for p in parts {
            self.writer.write_all(p)?;
        }
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = None;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("connection closed inside a response head");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>()?);
                }
            }
        }
        // 204 and 304 carry no body, and nginx sends them without a length.
        let length = match status {
            204 | 304 => Some(0),
            _ => length,
        };
        let mut body = vec![0; length.context("response without Content-Length")?];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}
