//! Response bodies: a list of byte chunks sent in order, so a retrieve answer goes out as
//! frame headers and block buffers side by side, never copied into one buffer; or chunks
//! a task produces while the body is sent (a whole file's download), through a bounded
//! channel so at most a few blocks wait in memory.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// A response body of known length made of chunks.
#[derive(Debug, Default)]
pub struct Body {
    chunks: VecDeque<Bytes>,
    remaining_bytes: u64,
    /// Chunks still to come from a producer; the producer ending early (a failed read)
    /// ends the body short of its length, which the client sees as a cut response.
    stream: Option<futures::channel::mpsc::Receiver<Bytes>>,
}

impl Body {
    /// A body of one chunk.
    pub fn full(bytes: Bytes) -> Body {
        Body::from_chunks(vec![bytes])
    }

    /// A body of these chunks, in order.
    pub fn from_chunks(chunks: Vec<Bytes>) -> Body {
        let remaining_bytes = chunks.iter().map(|c| c.len() as u64).sum();
        Body {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            remaining_bytes,
            stream: None,
        }
    }

    /// A body of `len` bytes that `chunks` will bring.
    pub fn streamed(len: u64, chunks: futures::channel::mpsc::Receiver<Bytes>) -> Body {
        Body {
            chunks: VecDeque::new(),
            remaining_bytes: len,
            stream: Some(chunks),
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            self.remaining_bytes -= chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match futures::Stream::poll_next(Pin::new(stream), cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(chunk)) => {
                let len = (chunk.len() as u64).min(self.remaining_bytes);
                self.remaining_bytes -= len;
                Poll::Ready(Some(Ok(Frame::data(chunk.slice(..len as usize)))))
            }
            Poll::Ready(None) => {
                self.stream = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && (self.stream.is_none() || self.remaining_bytes == 0)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn chunks_come_out_in_order_with_an_exact_length() {
        let body = Body::from_chunks(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(hyper::body::Body::size_hint(&body).exact(), Some(5));
        let all = futures::FutureExt::now_or_never(body.collect())
            .expect("ready")
            .unwrap()
            .to_bytes();
        assert_eq!(&all[..], b"abcde");
    }
}
