//! Classic pcap: the 24-byte file header and 16-byte record headers, in either byte order,
//! with micro- or nanosecond timestamps.

use pcap_file::pcap::PcapHeader;
use pcap_file::{Endianness, TsResolution};

use super::super::decode::{FrameMeta, LinkType};
use super::{
    read_u32, read_up_to, CaptureReader, Format, FoundFrame, RecordError, MAX_PACKET_BYTES,
};

impl CaptureReader {
    /// Reads the 24-byte header of a classic pcap file and registers its one interface.
    pub(super) fn pcap_file_header(&mut self) -> Result<(), RecordError> {
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

    pub(super) fn pcap_record(&mut self) -> Result<FoundFrame, RecordError> {
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
}
