//! pcapng: section headers (byte order per section), interface descriptions (link type,
//! name, timestamp resolution and offset), and enhanced, simple and obsolete packet blocks;
//! other blocks are skipped.

use std::ops::Range;

use periscope_pipeline::model::{DeviceRef, Direction};

use super::super::decode::{FrameMeta, LinkType};
use super::{
    read_u16, read_u32, read_u64, read_up_to, CaptureReader, Format, FoundFrame, RecordError,
    MAX_BLOCK_BYTES,
};

pub(super) const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_IDB: u32 = 0x0000_0001;
const PCAPNG_PB: u32 = 0x0000_0002;
const PCAPNG_SPB: u32 = 0x0000_0003;
const PCAPNG_EPB: u32 = 0x0000_0006;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

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
pub(super) struct Interface {
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

impl CaptureReader {
    /// Reads one pcapng block into `buf` (or skips it) and handles it.
    pub(super) fn pcapng_block(&mut self) -> Result<Option<FoundFrame>, RecordError> {
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
}
