//! What clang-19 computed for `ebpf/periscope.h`, and the tests that hold the Rust mirror
//! ([`super::records`]) to it.
//!
//! `build.rs` compiles a unit declaring one variable of every `struct periscope_*` and
//! `enum periscope_*` of the header — with the same clang and flags as the programs — reads
//! the BTF clang emitted for it, and generates [`C_STRUCTS`] and [`C_ENUMERATORS`]. The
//! numbers are therefore the BPF compiler's, never copied by hand. The tests require:
//! every C struct has a Rust mirror and vice versa, with the same size, the same fields in the
//! same order at the same offsets with the same sizes, and no implicit padding on either side;
//! every C enumerator has a Rust constant of the same name and value, and vice versa.

/// A struct of the header as clang laid it out.
#[derive(Clone, Copy, Debug)]
pub struct CStruct {
    /// The C name, without `struct`.
    pub name: &'static str,
    /// `sizeof`.
    pub size: usize,
    /// The fields in declaration order.
    pub fields: &'static [CField],
}

/// A field of a [`CStruct`].
#[derive(Clone, Copy, Debug)]
pub struct CField {
    pub name: &'static str,
    /// `offsetof`, in bytes.
    pub offset: usize,
    /// `sizeof` of the field's type.
    pub size: usize,
}

/// An enumerator of an `enum periscope_*` of the header.
#[derive(Clone, Copy, Debug)]
pub struct CEnumerator {
    /// The enum's name, without `enum`.
    pub enum_name: &'static str,
    /// The enumerator's name.
    pub name: &'static str,
    pub value: i64,
}

include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));

#[cfg(all(test, not(periscope_ebpf_stub)))]
mod tests {
    use super::super::records::*;
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The Rust side of one struct.
    struct RustStruct {
        c_name: &'static str,
        rust_name: &'static str,
        size: usize,
        fields: Vec<(&'static str, usize, usize)>,
    }

    fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
        size_of::<F>()
    }

    /// Describes a mirror struct; the destructuring pattern makes the compiler reject a field
    /// list that misses one of the struct's fields.
    macro_rules! mirror {
        ($ty:ident => $c:literal { $($field:ident),* $(,)? }) => {{
            #[allow(dead_code)]
            fn exhaustive(v: $ty) {
                let $ty { $($field: _),* } = v;
            }
            RustStruct {
                c_name: $c,
                rust_name: stringify!($ty),
                size: size_of::<$ty>(),
                fields: vec![$((
                    stringify!($field),
                    offset_of!($ty, $field),
                    field_size(|s: &$ty| &s.$field),
                )),*],
            }
        }};
    }

    fn rust_structs() -> Vec<RustStruct> {
        vec![
            mirror!(PacketRecord => "periscope_packet" {
                kind, version, hook, direction, ifindex, ts_boot_ns, netns_cookie, netns_inode,
                len, ethertype, sport, dport, l4_proto, tcp_flags, flags, _pad0, vlan_id, _pad1,
                saddr, daddr,
            }),
            mirror!(DevKey => "periscope_dev_key" {
                netns_cookie, netns_inode, ifindex, direction, hook, l4_proto, _pad,
            }),
            mirror!(DevCounters => "periscope_dev_counters" { packets, bytes, records_lost }),
            mirror!(Stats => "periscope_stats" { records_lost, counters_map_full }),
            mirror!(Config => "periscope_config" {
                netns_cookie, netns_inode, flags, sample_rate, dns_ports, _pad,
            }),
            mirror!(SocketRecord => "periscope_socket" {
                kind, version, event, hook, family, protocol, role, state, old_state, _pad0,
                pid, tgid, netns_inode, ts_boot_ns, cookie, netns_cookie, cgroup_id, lport,
                rport, _pad1, laddr, raddr, srtt_us, rttvar_us, total_retrans, size,
                bytes_sent, bytes_acked, bytes_received, duration_ns, comm,
            }),
            mirror!(DropRecord => "periscope_drop" {
                kind, version, family, protocol, reason, ts_boot_ns, netns_inode, ifindex,
                sport, dport, len, saddr, daddr,
            }),
            mirror!(CgroupKey => "periscope_cgroup_key" {
                cgroup_id, direction, family, l4_proto, _pad,
            }),
            mirror!(CgroupCountersRecord => "periscope_cgroup_counters" { packets, bytes }),
            mirror!(SocketStats => "periscope_socket_stats" {
                records_lost, sockmap_full, table_full,
            }),
            mirror!(SocketConfig => "periscope_socket_config" { rtt_interval_ns, flags, _pad }),
            mirror!(DnsRecord => "periscope_dns" {
                kind, version, hook, direction, ifindex, ts_boot_ns, netns_cookie, netns_inode,
                ethertype, l4_proto, _pad0, sport, dport, payload_len, _pad1, saddr, daddr,
                payload,
            }),
            mirror!(BurstRecord => "periscope_burst" {
                kind, version, event, direction, hook, _pad0, ifindex, cpu, netns_cookie,
                netns_inode, _pad1, start_ts_boot_ns, end_ts_boot_ns, packets, bytes,
                peak_window_packets, window_ns, peak_window_bytes,
            }),
            mirror!(BurstConfig => "periscope_burst_config" {
                bucket_ns, buckets, mode, thr_bytes, thr_packets, k_x256, low_permille,
                ewma_shift, _pad,
            }),
            mirror!(BurstStats => "periscope_burst_stats" { records_lost, state_full }),
        ]
    }

    macro_rules! consts {
        ($($name:ident),* $(,)?) => { vec![$((stringify!($name), $name as i64)),*] };
    }

    fn rust_enumerators() -> Vec<(&'static str, i64)> {
        consts![
            PERISCOPE_RECORD_PACKET,
            PERISCOPE_PACKET_VERSION,
            PERISCOPE_HOOK_XDP,
            PERISCOPE_HOOK_TC,
            PERISCOPE_DIR_INGRESS,
            PERISCOPE_DIR_EGRESS,
            PERISCOPE_PKT_VLAN,
            PERISCOPE_PKT_TRUNCATED,
            PERISCOPE_PKT_FRAGMENT,
            PERISCOPE_CFG_RECORDS,
            PERISCOPE_CFG_DNS,
            PERISCOPE_RECORD_SOCKET,
            PERISCOPE_RECORD_DROP,
            PERISCOPE_SOCKET_VERSION,
            PERISCOPE_SOCK_CONNECT,
            PERISCOPE_SOCK_ESTABLISHED,
            PERISCOPE_SOCK_RTT,
            PERISCOPE_SOCK_RETRANSMIT,
            PERISCOPE_SOCK_STATE,
            PERISCOPE_SOCK_CLOSE,
            PERISCOPE_SOCK_SEND,
            PERISCOPE_SOCK_RECV,
            PERISCOPE_SOCK_HOOK_SOCKOPS,
            PERISCOPE_SOCK_HOOK_SK_MSG,
            PERISCOPE_SOCK_HOOK_SK_SKB,
            PERISCOPE_SOCK_HOOK_TRACEPOINT,
            PERISCOPE_SOCK_HOOK_FENTRY,
            PERISCOPE_ROLE_UNKNOWN,
            PERISCOPE_ROLE_CLIENT,
            PERISCOPE_ROLE_SERVER,
            PERISCOPE_DROP_VERSION,
            PERISCOPE_SOCK_CFG_SEND_RECV_UDP,
            PERISCOPE_SOCK_CFG_SEND_RECV_TCP,
            PERISCOPE_SOCK_CFG_DROPS,
            PERISCOPE_RECORD_DNS,
            PERISCOPE_DNS_VERSION,
            PERISCOPE_DNS_PAYLOAD,
            PERISCOPE_CFG_BURSTS,
            PERISCOPE_RECORD_BURST,
            PERISCOPE_BURST_VERSION,
            PERISCOPE_BURST_START,
            PERISCOPE_BURST_END,
            PERISCOPE_BURST_FIXED,
            PERISCOPE_BURST_ADAPTIVE,
        ]
    }

    #[test]
    fn every_c_struct_has_a_rust_mirror_and_back() {
        let rust = rust_structs();
        for c in C_STRUCTS {
            assert!(
                rust.iter().any(|r| r.c_name == c.name),
                "struct {} of ebpf/periscope.h has no Rust mirror in src/ebpf/records.rs",
                c.name
            );
        }
        for r in &rust {
            assert!(
                C_STRUCTS.iter().any(|c| c.name == r.c_name),
                "{} mirrors struct {}, which ebpf/periscope.h does not define",
                r.rust_name,
                r.c_name
            );
        }
    }

    #[test]
    fn rust_mirrors_match_the_c_layout() {
        for r in rust_structs() {
            let Some(c) = C_STRUCTS.iter().find(|c| c.name == r.c_name) else {
                continue; // reported by every_c_struct_has_a_rust_mirror_and_back
            };
            let what = format!("{} (struct {})", r.rust_name, c.name);
            assert_eq!(r.size, c.size, "{what}: size");
            let c_fields: Vec<_> = c
                .fields
                .iter()
                .map(|f| (f.name, f.offset, f.size))
                .collect();
            assert_eq!(
                r.fields, c_fields,
                "{what}: fields as (name, offset, size), Rust left, C right"
            );
        }
    }

    #[test]
    fn the_header_has_no_implicit_padding() {
        // The fields add up to the size: every gap is an explicit `_pad` field. C pads before
        // a field that would be misaligned, so this also means every field sits at its natural
        // alignment, and the layout is the same for the BPF target and any 64-bit host.
        for c in C_STRUCTS {
            let sum: usize = c.fields.iter().map(|f| f.size).sum();
            assert_eq!(
                sum,
                c.size,
                "struct {}: {} bytes of implicit padding; add explicit _pad fields to \
                 ebpf/periscope.h",
                c.name,
                c.size - sum
            );
        }
    }

    #[test]
    fn every_c_enumerator_has_a_rust_constant_and_back() {
        let rust = rust_enumerators();
        for e in C_ENUMERATORS {
            let found = rust.iter().find(|(name, _)| *name == e.name);
            assert_eq!(
                found.map(|(_, v)| *v),
                Some(e.value),
                "enum {} {{ {} = {} }} of ebpf/periscope.h: Rust constant (in src/ebpf/records.rs)",
                e.enum_name,
                e.name,
                e.value
            );
        }
        for (name, _) in &rust {
            assert!(
                C_ENUMERATORS.iter().any(|e| e.name == *name),
                "Rust constant {name} has no enumerator in ebpf/periscope.h"
            );
        }
    }

    #[test]
    fn the_table_is_not_empty() {
        // A build.rs that silently found nothing would make the tests above vacuous.
        assert!(C_STRUCTS.len() >= 5, "{C_STRUCTS:?}");
        assert!(C_ENUMERATORS.len() >= 11, "{C_ENUMERATORS:?}");
    }
}
