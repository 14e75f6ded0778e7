//! Reads classic pcap and pcapng files one record at a time, in bounded memory, with errors
//! that say which record went wrong and where.
//!
//! pcap-file's own readers are not used for the records: they keep an 8 MB buffer per
//! reader, cannot say at which byte a record starts, take pcapng timestamps as nanoseconds
//! whatever the interface's `if_tsresol`, reject classic records whose `orig_len` exceeds the
//! snap length (every capture cut with `-s`), and allocate an options vector per packet.
//! The formats are simple enough to frame here; pcap-file still parses the classic file
//! header.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::Range;
use std::path::Path;

use anyhow::anyhow;
use pcap_file::pcap::PcapHeader;
use pcap_file::{Endianness, TsResolution};
use periscope_pipeline::devices::{DeviceInfo, DeviceTable};
use periscope_pipeline::model::{DeviceRef, Direction, NetnsId};

use super::decode::{FrameMeta, LinkType};

/// The most captured bytes one packet may have. Larger lengths mean a corrupt file; capping
/// them keeps a bad length field from allocating gigabytes. (tcpdump's default snap length
/// is 262144, exactly this.)
pub const MAX_PACKET_BYTES: usize = 256 * 1024;

/// The largest pcapng block that is read into memory: a packet plus room for its options.
/// Blocks that are skipped (statistics, name resolution, custom) may be larger.
const MAX_BLOCK_BYTES: usize = MAX_PACKET_BYTES + 64 * 1024;

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_PB: u32 = 0x0000_0002;
const PCAPNG_SPB: u32 = 0x0000_0003;
const PCAPNG_EPB: u32 = 0x0000_0006;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

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

/// How timestamps of a pcapng interface convert to nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TsUnit {
    /// Ticks of 10^-n seconds.
    Decimal(u8),
    /// Ticks of 2^-n seconds.
    Binary(u8),
}

impl TsUnit {
    fn from_tsresol(v: u8) -> Self {
        if v & 0x80 == 0 {
            TsUnit::Decimal(v)
        } else {
            TsUnit::Binary(v & 0x7f)
        }
    }

    fn to_ns(self, ticks: u64) -> u128 {
        let t = u128::from(ticks);
        match self {
            TsUnit::Decimal(n) if n <= 9 => t * 10u128.pow(u32::from(9 - n)),
            // 10^38 is the largest power of ten a u128 holds; finer units round to zero.
            TsUnit::Decimal(n) => match 10u128.checked_pow(u32::from(n - 9)) {
                Some(d) => t / d,
                None => 0,
            },
            TsUnit::Binary(n) => (t * 1_000_000_000) >> n,
        }
    }
}

/// An interface described by a pcapng IDB.
#[derive(Debug)]
struct Interface {
    link: LinkType,
    device: DeviceRef,
    ts_unit: TsUnit,
    /// `if_tsoffset`: seconds to add to every timestamp.
    ts_offset_s: i64,
    snaplen: u32,
}

impl Interface {
    fn timestamp_ns(&self, ticks: u64) -> u64 {
        let ns = self.ts_unit.to_ns(ticks) as i128 + i128::from(self.ts_offset_s) * 1_000_000_000;
        ns.clamp(0, i128::from(u64::MAX)) as u64
    }
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

    /// Reads the 24-byte header of a classic pcap file and registers its one interface.
    fn pcap_file_header(&mut self) -> Result<(), RecordError> {
        let mut file_header = [0u8; 24];
        let pre = match self.pending.take() {
            Some(magic) => {
                file_header[..4].copy_from_slice(&magic);
                4
            }
            None => 0,
        };
        let got =
            pre + read_up_to(&mut self.input, &mut file_header[pre..]).map_err(RecordError::Io)?;
        if got < file_header.len() {
            return Err(RecordError::TruncatedHeader {
                what: "pcap file header",
                len: file_header.len(),
                got,
            });
        }
        let (_, header) = PcapHeader::from_slice(&file_header)
            .map_err(|e| RecordError::Corrupt(format!("bad pcap file header: {e}")))?;
        if header.version_major != 2 {
            // What libpcap and tshark refuse too: most likely not a capture at all.
            return Err(RecordError::Corrupt(format!(
                "the pcap file header says version {}.{}; only 2.x exists",
                header.version_major, header.version_minor
            )));
        }
        // The upper bits of the link-type field carry FCS information, not the type.
        let linktype = u32::from(header.datalink) & 0xffff;
        let link = LinkType::from_linktype(linktype);
        let device = self.add_interface(None, link, linktype);
        self.offset = file_header.len() as u64;
        self.format = Format::Pcap {
            big_endian: header.endianness == Endianness::Big,
            nanos: header.ts_resolution == TsResolution::NanoSecond,
            link,
            device,
        };
        Ok(())
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

    fn pcap_record(&mut self) -> Result<FoundFrame, RecordError> {
        let Format::Pcap {
            big_endian,
            nanos,
            link,
            device,
        } = self.format
        else {
            return Err(RecordError::Corrupt("not a classic pcap file".into()));
        };
        let mut hdr = [0u8; 16];
        let got = read_up_to(&mut self.input, &mut hdr).map_err(RecordError::Io)?;
        if got < hdr.len() {
            return Err(RecordError::TruncatedHeader {
                what: "record header",
                len: hdr.len(),
                got,
            });
        }
        let word = |i: usize| read_u32(&hdr[i..i + 4], big_endian);
        let (ts_sec, ts_frac, incl_len, orig_len) = (word(0), word(4), word(8), word(12));
        if incl_len as usize > MAX_PACKET_BYTES {
            return Err(RecordError::TooLarge {
                what: "the record header",
                declared: u64::from(incl_len),
                max: MAX_PACKET_BYTES,
            });
        }
        let n = incl_len as usize;
        let got = self.fill(0, n)?;
        if got < n {
            return Err(RecordError::Truncated {
                what: "the record header",
                declared: u64::from(incl_len),
                remaining: got as u64,
            });
        }
        self.offset += (hdr.len() + n) as u64;
        let frac_ns = if nanos {
            u64::from(ts_frac)
        } else {
            u64::from(ts_frac) * 1000
        };
        let timestamp_ns = u64::from(ts_sec) * 1_000_000_000 + frac_ns;
        Ok(FoundFrame {
            link,
            range: 0..n,
            meta: FrameMeta {
                timestamp_ns,
                device,
                orig_len,
                direction: None,
            },
        })
    }

    /// Reads one pcapng block into `buf` (or skips it) and handles it.
    fn pcapng_block(&mut self) -> Result<Option<FoundFrame>, RecordError> {
        let Format::PcapNg { big_endian, .. } = self.format else {
            return Err(RecordError::Corrupt("not a pcapng file".into()));
        };
        // Block type and total length. `open` has read the first block's type already.
        let mut hdr = [0u8; 12];
        let pre = match self.pending.take() {
            Some(magic) => {
                hdr[..4].copy_from_slice(&magic);
                4
            }
            None => 0,
        };
        let got = pre + read_up_to(&mut self.input, &mut hdr[pre..8]).map_err(RecordError::Io)?;
        if got < 8 {
            return Err(RecordError::TruncatedHeader {
                what: "block header",
                len: 8,
                got,
            });
        }
        let block_type = read_u32(&hdr[0..4], big_endian);
        let (big_endian, hdr_len) = if block_type == PCAPNG_SHB {
            // A section header sets the byte order of its section: read its byte-order magic.
            let got =
                got + read_up_to(&mut self.input, &mut hdr[got..12]).map_err(RecordError::Io)?;
            if got < 12 {
                return Err(RecordError::TruncatedHeader {
                    what: "section header",
                    len: 12,
                    got,
                });
            }
            let bom = read_u32(&hdr[8..12], true);
            let big = if bom == PCAPNG_BYTE_ORDER_MAGIC {
                true
            } else if bom.swap_bytes() == PCAPNG_BYTE_ORDER_MAGIC {
                false
            } else {
                return Err(RecordError::Corrupt(format!(
                    "section header with byte-order magic 0x{bom:08x} (expected 0x1a2b3c4d either way round)"
                )));
            };
            (big, 12)
        } else {
            (big_endian, 8)
        };
        let len = read_u32(&hdr[4..8], big_endian);
        let min = if block_type == PCAPNG_SHB { 28 } else { 12 };
        if len < min {
            return Err(RecordError::Corrupt(format!(
                "block length {len} is less than the {min}-byte minimum"
            )));
        }
        if !len.is_multiple_of(4) {
            return Err(RecordError::Corrupt(format!(
                "block length {len} is not a multiple of 4"
            )));
        }
        let wanted = matches!(
            block_type,
            PCAPNG_SHB | PCAPNG_IDB | PCAPNG_EPB | PCAPNG_SPB | PCAPNG_PB
        );
        let len_us = len as usize;
        if !wanted {
            // Statistics, name resolution, secrets, custom blocks: skip without reading.
            return self.skip_block(len, big_endian).map(|()| None);
        }
        if len_us > MAX_BLOCK_BYTES {
            return Err(RecordError::TooLarge {
                what: "the block header",
                declared: u64::from(len),
                max: MAX_BLOCK_BYTES,
            });
        }
        let got = self.fill(hdr_len, len_us - hdr_len)?;
        self.buf[..hdr_len].copy_from_slice(&hdr[..hdr_len]);
        if got < len_us - hdr_len {
            return Err(RecordError::Truncated {
                what: "the block header",
                declared: u64::from(len),
                remaining: (hdr_len + got) as u64,
            });
        }
        let trailer = read_u32(&self.buf[len_us - 4..len_us], big_endian);
        if trailer != len {
            return Err(RecordError::Corrupt(format!(
                "the block's closing length {trailer} differs from its opening length {len}"
            )));
        }
        self.offset += u64::from(len);
        // The body: between the 8-byte type+length and the 4-byte closing length.
        let body = 8..len_us - 4;
        match block_type {
            PCAPNG_SHB => self.section_header(body, big_endian).map(|()| None),
            PCAPNG_IDB => self.interface_description(body).map(|()| None),
            PCAPNG_EPB => self.enhanced_packet(body).map(Some),
            PCAPNG_PB => self.obsolete_packet(body).map(Some),
            _ => self.simple_packet(body).map(Some),
        }
    }

    fn skip_block(&mut self, len: u32, big_endian: bool) -> Result<(), RecordError> {
        let mut remaining = self.file_len.saturating_sub(self.offset);
        if u64::from(len) > remaining {
            // The file may have grown since it was opened.
            if let Ok(m) = self.input.get_ref().metadata() {
                self.file_len = m.len();
                remaining = self.file_len.saturating_sub(self.offset);
            }
        }
        if u64::from(len) > remaining {
            return Err(RecordError::Truncated {
                what: "the block header",
                declared: u64::from(len),
                remaining,
            });
        }
        self.input
            .seek_relative(i64::from(len) - 12)
            .map_err(RecordError::Io)?;
        let mut trailer = [0u8; 4];
        let got = read_up_to(&mut self.input, &mut trailer).map_err(RecordError::Io)?;
        if got < 4 {
            return Err(RecordError::Truncated {
                what: "the block header",
                declared: u64::from(len),
                remaining: u64::from(len) - 4 + got as u64,
            });
        }
        let trailer = read_u32(&trailer, big_endian);
        if trailer != len {
            return Err(RecordError::Corrupt(format!(
                "the block's closing length {trailer} differs from its opening length {len}"
            )));
        }
        self.offset += u64::from(len);
        Ok(())
    }

    fn section_header(&mut self, body: Range<usize>, big_endian: bool) -> Result<(), RecordError> {
        // byte-order magic (4), major (2), minor (2), section length (8), options
        let b = &self.buf[body];
        let major = read_u16(&b[4..6], big_endian);
        let minor = read_u16(&b[6..8], big_endian);
        if major != 1 {
            return Err(RecordError::Corrupt(format!(
                "pcapng version {major}.{minor} is not supported (only 1.x is)"
            )));
        }
        // A new section starts with no interfaces; its interfaces get new ifindexes.
        self.format = Format::PcapNg {
            big_endian,
            interfaces: Vec::new(),
        };
        Ok(())
    }

    fn interface_description(&mut self, body: Range<usize>) -> Result<(), RecordError> {
        let Format::PcapNg { big_endian, .. } = self.format else {
            return Err(RecordError::Corrupt("not a pcapng file".into()));
        };
        let b = &self.buf[body];
        if b.len() < 8 {
            return Err(RecordError::Corrupt(format!(
                "interface description block body is {} bytes, less than the 8-byte minimum",
                b.len()
            )));
        }
        // link type (2), reserved (2), snaplen (4), options
        let linktype = u32::from(read_u16(&b[0..2], big_endian));
        let snaplen = read_u32(&b[4..8], big_endian);
        let mut name = None;
        let mut ts_unit = TsUnit::Decimal(6);
        let mut ts_offset_s = 0i64;
        for (code, value) in Options::new(&b[8..], big_endian) {
            match (code, value.len()) {
                (2, _) => {
                    let s = String::from_utf8_lossy(value);
                    let s = s.trim_end_matches('\0');
                    if !s.is_empty() {
                        name = Some(s.to_string());
                    }
                }
                (9, 1) => ts_unit = TsUnit::from_tsresol(value[0]),
                (14, 8) => {
                    let v = read_u64(value, big_endian);
                    ts_offset_s = v as i64;
                }
                _ => {}
            }
        }
        let link = LinkType::from_linktype(linktype);
        let device = self.add_interface(name, link, linktype);
        if let Format::PcapNg { interfaces, .. } = &mut self.format {
            interfaces.push(Interface {
                link,
                device,
                ts_unit,
                ts_offset_s,
                snaplen,
            });
        }
        Ok(())
    }

    /// Registers a capture interface and returns its device.
    fn add_interface(&mut self, name: Option<String>, link: LinkType, linktype: u32) -> DeviceRef {
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
            },
        );
        device
    }

    fn interface(&self, id: u32) -> Result<&Interface, RecordError> {
        let Format::PcapNg { interfaces, .. } = &self.format else {
            return Err(RecordError::Corrupt("not a pcapng file".into()));
        };
        interfaces.get(id as usize).ok_or_else(|| {
            RecordError::Corrupt(format!(
                "the packet is from interface {id} but the section describes {} interface(s) before it",
                interfaces.len()
            ))
        })
    }

    fn big_endian(&self) -> bool {
        match self.format {
            Format::PcapNg { big_endian, .. } | Format::Pcap { big_endian, .. } => big_endian,
            Format::PcapHeader => false,
        }
    }

    fn enhanced_packet(&mut self, body: Range<usize>) -> Result<FoundFrame, RecordError> {
        // interface id (4), timestamp high (4), low (4), captured length (4), original
        // length (4), data (padded to 4), options
        self.packet(body, 20, |b, be| {
            (
                read_u32(&b[0..4], be),
                (u64::from(read_u32(&b[4..8], be)) << 32) | u64::from(read_u32(&b[8..12], be)),
                read_u32(&b[12..16], be),
                read_u32(&b[16..20], be),
            )
        })
    }

    fn obsolete_packet(&mut self, body: Range<usize>) -> Result<FoundFrame, RecordError> {
        // interface id (2), drops count (2), timestamp high (4), low (4), captured length
        // (4), original length (4), data (padded to 4), options
        self.packet(body, 20, |b, be| {
            (
                u32::from(read_u16(&b[0..2], be)),
                (u64::from(read_u32(&b[4..8], be)) << 32) | u64::from(read_u32(&b[8..12], be)),
                read_u32(&b[12..16], be),
                read_u32(&b[16..20], be),
            )
        })
    }

    /// Enhanced and obsolete packet blocks: a fixed header that `fields` reads into
    /// (interface id, timestamp ticks, captured length, original length), the data, options.
    fn packet(
        &mut self,
        body: Range<usize>,
        fixed: usize,
        fields: impl Fn(&[u8], bool) -> (u32, u64, u32, u32),
    ) -> Result<FoundFrame, RecordError> {
        let be = self.big_endian();
        let b = &self.buf[body.clone()];
        if b.len() < fixed {
            return Err(RecordError::Corrupt(format!(
                "packet block body is {} bytes, less than the {fixed}-byte minimum",
                b.len()
            )));
        }
        let (id, ticks, caplen, orig_len) = fields(b, be);
        let room = b.len() - fixed;
        if caplen as usize > room {
            return Err(RecordError::Corrupt(format!(
                "the packet block says it holds {caplen} captured bytes but has room for {room}"
            )));
        }
        let data_start = body.start + fixed;
        let padded = (caplen as usize).div_ceil(4) * 4;
        let options = self
            .buf
            .get(data_start + padded..body.end)
            .unwrap_or_default();
        let mut direction = None;
        for (code, value) in Options::new(options, be) {
            // epb_flags / pack_flags: bits 0-1 are the direction.
            if code == 2 && value.len() == 4 {
                direction = match read_u32(value, be) & 0b11 {
                    1 => Some(Direction::Ingress),
                    2 => Some(Direction::Egress),
                    _ => None,
                };
            }
        }
        let iface = self.interface(id)?;
        let timestamp_ns = iface.timestamp_ns(ticks);
        let found = FoundFrame {
            link: iface.link,
            range: data_start..data_start + caplen as usize,
            meta: FrameMeta {
                timestamp_ns,
                device: iface.device,
                orig_len,
                direction,
            },
        };
        self.last_timestamp_ns = timestamp_ns;
        Ok(found)
    }

    fn simple_packet(&mut self, body: Range<usize>) -> Result<FoundFrame, RecordError> {
        // original length (4), data (padded to 4); always interface 0, no timestamp
        let be = self.big_endian();
        let b = &self.buf[body.clone()];
        if b.len() < 4 {
            return Err(RecordError::Corrupt(
                "simple packet block body is shorter than 4 bytes".into(),
            ));
        }
        let orig_len = read_u32(&b[0..4], be);
        let iface = self.interface(0)?;
        // The captured length is implicit: the original length, cut at the snap length.
        let mut caplen = (orig_len as usize).min(b.len() - 4);
        if iface.snaplen != 0 {
            caplen = caplen.min(iface.snaplen as usize);
        }
        Ok(FoundFrame {
            link: iface.link,
            range: body.start + 4..body.start + 4 + caplen,
            meta: FrameMeta {
                timestamp_ns: self.last_timestamp_ns,
                device: iface.device,
                orig_len,
                direction: None,
            },
        })
    }

    /// Reads up to `n` bytes into `buf[at..at + n]`, growing `buf` as needed (it only
    /// grows, so steady-state reading does not allocate). Returns how many were read.
    fn fill(&mut self, at: usize, n: usize) -> Result<usize, RecordError> {
        if self.buf.len() < at + n {
            self.buf.resize(at + n, 0);
        }
        read_up_to(&mut self.input, &mut self.buf[at..at + n]).map_err(RecordError::Io)
    }
}

/// Iterates the options of a pcapng block: (code, value) until `opt_endofopt` or the end.
/// A malformed option list ends the iteration rather than failing the block.
struct Options<'a> {
    rest: &'a [u8],
    big_endian: bool,
}

impl<'a> Options<'a> {
    fn new(rest: &'a [u8], big_endian: bool) -> Self {
        Options { rest, big_endian }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let code = read_u16(self.rest.get(0..2)?, self.big_endian);
        let len = read_u16(self.rest.get(2..4)?, self.big_endian) as usize;
        if code == 0 {
            return None;
        }
        let value = self.rest.get(4..4 + len)?;
        let next = (4 + len.div_ceil(4) * 4).min(self.rest.len());
        self.rest = &self.rest[next..];
        Some((code, value))
    }
}

fn read_u16(b: &[u8], big_endian: bool) -> u16 {
    let a = [b[0], b[1]];
    if big_endian {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn read_u32(b: &[u8], big_endian: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big_endian {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn read_u64(b: &[u8], big_endian: bool) -> u64 {
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
    fn timestamp_units() {
        assert_eq!(TsUnit::from_tsresol(6).to_ns(1_500_000), 1_500_000_000);
        assert_eq!(TsUnit::from_tsresol(9).to_ns(7), 7);
        assert_eq!(TsUnit::from_tsresol(12).to_ns(7_000), 7);
        assert_eq!(TsUnit::from_tsresol(0).to_ns(3), 3_000_000_000);
        // 2^-10 s ticks: 1024 of them are one second.
        assert_eq!(TsUnit::from_tsresol(0x80 | 10).to_ns(1024), 1_000_000_000);
        // Absurd units do not overflow.
        assert_eq!(TsUnit::from_tsresol(127).to_ns(u64::MAX), 0);
        assert_eq!(TsUnit::from_tsresol(0xff).to_ns(u64::MAX), 0);
        let i = Interface {
            link: LinkType::Ethernet,
            device: DeviceRef::default(),
            ts_unit: TsUnit::Decimal(0),
            ts_offset_s: -10,
            snaplen: 0,
        };
        assert_eq!(i.timestamp_ns(3), 0, "negative results clamp to the epoch");
        assert_eq!(i.timestamp_ns(u64::MAX), u64::MAX, "huge results clamp");
    }

    #[test]
    fn options_stop_at_malformed_lists() {
        // if_name "eth0" (padded), then an option claiming more bytes than there are.
        let mut b = vec![2, 0, 4, 0, b'e', b't', b'h', b'0'];
        b.extend_from_slice(&[9, 0, 200, 0, 6]);
        let opts: Vec<_> = Options::new(&b, false).collect();
        assert_eq!(opts, vec![(2, &b"eth0"[..])]);
        assert_eq!(Options::new(&[1, 0], false).count(), 0);
        assert_eq!(
            Options::new(&[0, 0, 0, 0, 2, 0, 1, 0, b'x'], false).count(),
            0
        );
    }

    #[test]
    fn io_reasons_lose_the_os_error_number() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_reason(&e), "No such file or directory");
    }
}
