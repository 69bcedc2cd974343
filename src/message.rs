//! The message on fd 0. qmail-rspawn passes the seekable queue file; a pipe is spooled to an
//! unlinked temporary file first, so every path below can rewind and memory stays constant.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::fd::AsFd;

use crate::encode::{Encoder, Scan, scan};
use crate::failure::Failure;

pub struct Message {
    file: File,
    pub scan: Scan,
}

/// Size of each block written to the socket during DATA.
pub const BLOCK: usize = 64 * 1024;

impl Message {
    /// A message from any reader (`qremote-probe --send`), spooled like a pipe.
    pub fn from_reader(mut input: impl io::Read) -> Result<Message, Failure> {
        let mut file = spool(&mut input).map_err(|_| Failure::ReadMessage)?;
        file.seek(SeekFrom::Start(0))
            .map_err(|_| Failure::ReadMessage)?;
        let scan = scan(&file).map_err(|_| Failure::ReadMessage)?;
        Ok(Message { file, scan })
    }

    pub fn from_stdin() -> Result<Message, Failure> {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|_| Failure::ReadMessage)?;
        let mut file = File::from(fd);
        let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        if !regular || file.stream_position().is_err() {
            file = spool(&mut file).map_err(|_| Failure::ReadMessage)?;
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|_| Failure::ReadMessage)?;
        let scan = scan(&file).map_err(|_| Failure::ReadMessage)?;
        Ok(Message { file, scan })
    }

    /// Streams the encoded message (with the final dot) to `sink` in large blocks. `last` is
    /// called once the block holding the final dot has been written: only a dot that reached
    /// the socket can have been accepted (a failed write is a plain "connection died").
    pub fn send(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
        mut last: impl FnMut(),
    ) -> Result<(), SendError> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|_| SendError::Read)?;
        let mut input = BufReader::with_capacity(BLOCK, &self.file);
        let mut out = Vec::with_capacity(BLOCK * 2 + 8);
        let mut enc = Encoder::default();
        loop {
            let chunk = match input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(SendError::Read),
            };
            if chunk.is_empty() {
                enc.finish(&mut out);
                sink(&out).map_err(|_| SendError::Write)?;
                last();
                return Ok(());
            }
            enc.encode(chunk, &mut out);
            let n = chunk.len();
            input.consume(n);
            if out.len() >= BLOCK {
                sink(&out).map_err(|_| SendError::Write)?;
                out.clear();
            }
        }
    }
}

pub enum SendError {
    Read,
    Write,
}

/// Copies a pipe into an unlinked file in the temporary directory.
fn spool(input: &mut impl io::Read) -> io::Result<File> {
    let dir = std::env::temp_dir();
    let name = dir.join(format!(
        "qmail-remote.{}.{:x}",
        std::process::id(),
        crate::route::random_u64()
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&name)?;
    let _ = std::fs::remove_file(&name);
    io::copy(input, &mut f)?;
    f.flush()?;
    Ok(f)
}
