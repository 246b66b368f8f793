//! Decompressing a layer costs about as much CPU as writing it, so the
//! reader (usually a gzip or zstd decoder) runs on its own thread, a few
//! chunks ahead of the writer, and the two overlap on separate cores.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes per hand-over: large enough that channel traffic is noise.
const CHUNK: usize = 256 << 10;
/// Chunks decoded ahead of the writer; bounds the memory this takes.
const AHEAD: usize = 4;

/// Runs `consume` on the bytes of `reader`, which is read on another thread.
pub fn read_ahead<R: Read + Send, T>(reader: R, consume: impl FnOnce(&mut Chunks) -> T) -> T {
    let (full_tx, full_rx) = sync_channel(AHEAD);
    let (empty_tx, empty_rx) = sync_channel(AHEAD + 2);
    std::thread::scope(|scope| {
        scope.spawn(move || produce(reader, full_tx, empty_rx));
        let mut chunks = Chunks {
            full: full_rx,
            empty: empty_tx,
            current: Vec::new(),
            at: 0,
        };
        // Dropping `chunks` (at the end or on an early error) stops the producer.
        consume(&mut chunks)
    })
}

fn produce<R: Read>(
    mut reader: R,
    full: SyncSender<io::Result<Vec<u8>>>,
    empty: Receiver<Vec<u8>>,
) {
    loop {
        let mut buf = empty.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        let result = loop {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == CHUNK {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(filled);
        let done = filled < CHUNK;
        let sent = match result {
            Ok(()) if filled == 0 => return,
            Ok(()) => full.send(Ok(buf)),
            Err(e) => full.send(Err(e)),
        };
        if sent.is_err() || done {
            return;
        }
    }
}

/// The consuming end: reads what the producer thread decoded, in order.
pub struct Chunks {
    full: Receiver<io::Result<Vec<u8>>>,
    empty: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.current.len() {
            match self.full.recv() {
                Ok(chunk) => {
                    let used = std::mem::replace(&mut self.current, chunk?);
                    let _ = self.empty.try_send(used);
                    self.at = 0;
                }
                // The producer hung up: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its bytes a few at a time, then fails.
    struct Trickle(Vec<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.1 == self.0.len() {
                return Err(io::Error::other("broken pipe upstream"));
            }
            let n = out.len().min(7).min(self.0.len() - self.1);
            out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn bytes_arrive_in_order_and_errors_come_through() {
        let data: Vec<u8> = (0..3 * CHUNK + 123).map(|i| (i * 31 % 251) as u8).collect();
        let copied = read_ahead(&data[..], |r| {
            let mut all = Vec::new();
            r.read_to_end(&mut all).map(|_| all)
        });
        assert_eq!(copied.unwrap(), data);
        let failed = read_ahead(Trickle(data.clone(), 0), |r| r.read_to_end(&mut Vec::new()));
        assert_eq!(failed.unwrap_err().to_string(), "broken pipe upstream");
    }

    #[test]
    fn a_consumer_that_stops_early_does_not_hang() {
        let endless = io::repeat(1);
        let first = read_ahead(endless, |r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).map(|()| b)
        });
        assert_eq!(first.unwrap(), [1; 10]);
    }
}
