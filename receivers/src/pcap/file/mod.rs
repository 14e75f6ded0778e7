//! Reads classic pcap and pcapng files one record at a time, in bounded memory, with errors
//! that say which record went wrong and where.
//!
//! pcap-file's own readers are not used for the records: they keep an 8 MB buffer per
//! reader, cannot say at which byte a record starts, take pcapng timestamps as nanoseconds
//! whatever the interface's `if_tsresol`, reject classic records whose `orig_len` exceeds the
//! snap length (every capture cut with `-s`), and allocate an options vector per packet.
//! The formats are simple enough to frame here; pcap-file still parses the classic file
//! header.
//!
//! This file holds the reader and what both formats share; `classic.rs` reads classic pcap,
//! `pcapng.rs` pcapng blocks.

mod classic;
mod pcapng;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::Range;
use std::path::Path;

use anyhow::anyhow;
use periscope_pipeline::devices::{DeviceInfo, DeviceTable};
use periscope_pipeline::model::{DeviceRef, NetnsId};

use super::decode::{FrameMeta, LinkType};
use pcapng::{Interface, PCAPNG_SHB};

/// The most captured bytes one packet may have. Larger lengths mean a corrupt file; capping
/// them keeps a bad length field from allocating gigabytes. (tcpdump's default snap length
/// is 262144, exactly this.)
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

/// The largest pcapng block that is read into memory: a packet plus room for its options.
/// Blocks that are skipped (statistics, name resolution, custom) may be larger.
const MAX_BLOCK_BYTES: usize = MAX_PACKET_BYTES + 64 * 1024;

/// What is wrong with one record of a capture file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file ends before the record does.
    #[error("truncated: {what} says {declared} bytes but only {remaining} remain")]
    Truncated {
        what: &'static str,
        declared: u64,
        remaining: u64,
    },
    /// The file ends inside a fixed-size header.
    #[error("truncated: the file ends {got} bytes into a {len}-byte {what}")]
    TruncatedHeader {
        what: &'static str,
        len: usize,
        got: usize,
    },
    /// A length field larger than any sane record: the file is corrupt.
    #[error("{what} says {declared} bytes, more than the {max} a record may have (corrupt file?)")]
    TooLarge {
        what: &'static str,
        declared: u64,
        max: usize,
    },
    /// Any other inconsistency in the record's structure.
    #[error("{0}")]
    Corrupt(String),
    /// The operating system could not read the file.
    #[error("read error: {0}")]
    Io(io::Error),
}

/// A [`RecordError`] with its place in the file.
#[derive(Debug)]
pub struct ReadError {
    /// 1-based number of the record (classic pcap: packet; pcapng: block, the section
    /// header included); 0 for the classic pcap file header, which is not a record.
    pub record: u64,
    /// Byte offset of the record's first byte.
    pub offset: u64,
    pub kind: RecordError,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.record == 0 {
            write!(f, "{}", self.kind)
        } else {
            write!(
                f,
                "record {} at byte {}: {}",
                self.record, self.offset, self.kind
            )
        }
    }
}

impl std::error::Error for ReadError {}

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug)]
pub struct Frame<'a> {
    pub link: LinkType,
    pub data: &'a [u8],
    pub meta: FrameMeta,
}

/// A frame found by `next_record`, located in `buf`.
struct FoundFrame {
    link: LinkType,
    range: Range<usize>,
    meta: FrameMeta,
}

#[derive(Debug)]
enum Format {
    /// A classic pcap file whose 24-byte header is still to be read.
    PcapHeader,
    Pcap {
        big_endian: bool,
        /// Nanosecond (rather than microsecond) fractions.
        nanos: bool,
        link: LinkType,
        device: DeviceRef,
    },
    PcapNg {
        /// Byte order of the current section.
        big_endian: bool,
        /// Interfaces of the current section, by interface id.
        interfaces: Vec<Interface>,
    },
}

/// Reads one capture file.
#[derive(Debug)]
pub struct CaptureReader {
    input: BufReader<File>,
    file_len: u64,
    /// Bytes consumed so far: the offset of the next record.
    offset: u64,
    /// Records started so far.
    record: u64,
    buf: Vec<u8>,
    format: Format,
    devices: DeviceTable,
    /// The file name without extension: the interface name when the file names none.
    stem: String,
    /// The ifindex the next capture interface gets (interfaces of all sections count).
    next_ifindex: u32,
    /// pcapng Simple Packet Blocks carry no timestamp: they get the previous packet's.
    last_timestamp_ns: u64,
    /// The magic number `open` read, for the first block to start with.
    pending: Option<[u8; 4]>,
}

impl CaptureReader {
    /// Opens `path` and checks its magic number; the rest (file header, section headers) is
    /// read by `next_frame`, so that every problem past the magic number is reported the
    /// same way, with its place in the file. Capture interfaces are registered in `devices`
    /// as they are found.
    pub fn open(path: &Path, devices: DeviceTable) -> anyhow::Result<Self> {
        let shown = path.display();
        let file =
            File::open(path).map_err(|e| anyhow!("cannot open {shown}: {}", io_reason(&e)))?;
        let meta = file
            .metadata()
            .map_err(|e| anyhow!("cannot open {shown}: {}", io_reason(&e)))?;
        if meta.is_dir() {
            return Err(anyhow!("cannot open {shown}: it is a directory"));
        }
        let mut input = BufReader::with_capacity(256 * 1024, file);
        let mut head = [0u8; 4];
        let got = read_up_to(&mut input, &mut head)
            .map_err(|e| anyhow!("cannot read {shown}: {}", io_reason(&e)))?;
        if got < head.len() {
            let what = if got == 0 {
                "it is empty".to_string()
            } else {
                format!("it is only {got} bytes long")
            };
            return Err(anyhow!("`{shown}` is not a pcap or pcapng file ({what})"));
        }
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let format = match magic {
            0xA1B2_C3D4 | 0xD4C3_B2A1 | 0xA1B2_3C4D | 0x4D3C_B2A1 => Format::PcapHeader,
            // The section header is record 1, read by the first `next_frame` like any
            // other block (placeholder byte order: the section header sets it).
            PCAPNG_SHB => Format::PcapNg {
                big_endian: false,
                interfaces: Vec::new(),
            },
            _ => {
                return Err(anyhow!(
                    "`{shown}` is not a pcap or pcapng file (starts with 0x{magic:08x})"
                ))
            }
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "pcap".to_string());
        Ok(CaptureReader {
            input,
            file_len: meta.len(),
            offset: 0,
            record: 0,
            buf: Vec::new(),
            format,
            devices,
            stem,
            next_ifindex: 1,
            last_timestamp_ns: 0,
            pending: Some(head),
        })
    }

    /// The next captured frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ReadError> {
        if matches!(self.format, Format::PcapHeader) {
            // Not a record: errors in the file header carry no record number.
            self.pcap_file_header().map_err(|kind| ReadError {
                record: 0,
                offset: 0,
                kind,
            })?;
        }
        loop {
            if self.pending.is_none() && self.at_eof()? {
                return Ok(None);
            }
            if let Some(f) = self.next_record()? {
                return Ok(Some(Frame {
                    link: f.link,
                    data: self.buf.get(f.range).unwrap_or_default(),
                    meta: f.meta,
                }));
            }
        }
    }

    /// True when no bytes are left (a clean end between records).
    fn at_eof(&mut self) -> Result<bool, ReadError> {
        use std::io::BufRead;
        match self.input.fill_buf() {
            Ok(b) => Ok(b.is_empty()),
            Err(e) => Err(ReadError {
                record: self.record + 1,
                offset: self.offset,
                kind: RecordError::Io(e),
            }),
        }
    }

    /// Reads one record; `Some` when it was a packet. Called with bytes left in the file
    /// (or, for the first section header, with its first bytes already in `buf`).
    fn next_record(&mut self) -> Result<Option<FoundFrame>, ReadError> {
        self.record += 1;
        let start = self.offset;
        let result = match self.format {
            Format::Pcap { .. } => self.pcap_record().map(Some),
            Format::PcapNg { .. } => self.pcapng_block(),
            Format::PcapHeader => Err(RecordError::Corrupt("the file header is unread".into())),
        };
        result.map_err(|kind| ReadError {
            record: self.record,
            offset: start,
            kind,
        })
    }

    /// Registers a capture interface and returns its device.
    pub(super) fn add_interface(
        &mut self,
        name: Option<String>,
        link: LinkType,
        linktype: u32,
    ) -> DeviceRef {
        let ifindex = self.next_ifindex;
        self.next_ifindex = self.next_ifindex.saturating_add(1);
        let name = name.unwrap_or_else(|| {
            if ifindex == 1 {
                self.stem.clone()
            } else {
                format!("{}-{}", self.stem, ifindex - 1)
            }
        });
        if !link.is_decoded() {
            tracing::warn!(
                interface = %name,
                linktype,
                "link type not decoded: its packets are counted with timestamp and length only"
            );
        }
        let device = DeviceRef {
            netns: NetnsId::default(),
            ifindex,
        };
        self.devices.insert(
            device,
            DeviceInfo {
                name,
                netns_name: None,
                ..DeviceInfo::default()
            },
        );
        device
    }

    /// Reads up to `n` bytes into `buf[at..at + n]`, growing `buf` as needed (it only
    /// grows, so steady-state reading does not allocate). Returns how many were read.
    pub(super) fn fill(&mut self, at: usize, n: usize) -> Result<usize, RecordError> {
        if self.buf.len() < at + n {
            self.buf.resize(at + n, 0);
        }
        read_up_to(&mut self.input, &mut self.buf[at..at + n]).map_err(RecordError::Io)
    }
}

pub(super) fn read_u16(b: &[u8], big_endian: bool) -> u16 {
    let a = [b[0], b[1]];
    if big_endian {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

pub(super) fn read_u32(b: &[u8], big_endian: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

pub(super) fn read_u64(b: &[u8], big_endian: bool) -> u64 {
    let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
    if big_endian {
        u64::from_be_bytes(a)
    } else {
        u64::from_le_bytes(a)
    }
}

/// Reads until `dst` is full or the input ends; returns how many bytes were read.
fn read_up_to(input: &mut impl Read, dst: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < dst.len() {
        match input.read(&mut dst[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// An I/O error's reason without Rust's "(os error N)" suffix: "No such file or directory".
pub fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_reasons_lose_the_os_error_number() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_reason(&e), "No such file or directory");
    }
}
