/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * periscope.h — every record that crosses between the kernel and user space.
 *
 * This is the one definition of those layouts. The Rust mirror lives in
 * receivers/src/ebpf/records.rs; receivers/build.rs compiles this header with
 * clang-19 for the BPF target, reads the layouts back from the BTF clang emits,
 * and the crate's layout tests compare every struct's size and every field's
 * offset and size, and every enumerator's value, with the Rust side. A struct or
 * enum added here without a Rust mirror fails those tests.
 *
 * Rules for everything in this file:
 *   - fixed-size fields only (__u8 .. __u64, arrays of them); no pointers, no
 *     bitfields, no bool, no enums as field types (their size is the compiler's
 *     choice) — enums below only name constants;
 *   - every field naturally aligned and every gap an explicit `_pad` field, so the
 *     layout is the same for the BPF target and the host and has no implicit
 *     padding (the layout tests check that the fields add up to the size);
 *   - multi-byte integers are in host byte order, except addresses, which are
 *     copied from the packet as they are (network byte order);
 *   - every record written to a ring buffer starts with __u8 kind, __u8 version,
 *     so that one ring buffer can carry several kinds of record; a change that
 *     moves or reinterprets a field bumps the version.
 *
 * The header is included after vmlinux.h (which defines __u8 .. __u64).
 */
#ifndef PERISCOPE_H
#define PERISCOPE_H

/* The `kind` byte at offset 0 of every ring-buffer record. */
enum periscope_record_kind {
	PERISCOPE_RECORD_PACKET = 1,
};

/* The `version` byte of a packet record; bumped when its layout changes. */
enum periscope_packet_version {
	PERISCOPE_PACKET_VERSION = 1,
};

/* Which hook saw a packet. */
enum periscope_hook {
	PERISCOPE_HOOK_XDP = 1,
	PERISCOPE_HOOK_TC = 2,
};

/* Which way a packet crossed the hook. */
enum periscope_direction {
	PERISCOPE_DIR_INGRESS = 0,
	PERISCOPE_DIR_EGRESS = 1,
};

/* Bits of periscope_packet.flags. */
enum periscope_packet_flags {
	/* The frame carried at least one 802.1Q/802.1ad tag; vlan_id is the outermost. */
	PERISCOPE_PKT_VLAN = 1,
	/* Parsing stopped early: a header was cut off, there were more VLAN tags or
	 * IPv6 extension headers than the program walks, or the L3/L4 header is not
	 * in the linear part of the packet. Fields past that point are zero. */
	PERISCOPE_PKT_TRUNCATED = 2,
	/* A non-first IP fragment: no L4 header to read, ports are zero. */
	PERISCOPE_PKT_FRAGMENT = 4,
};

/* Bits of periscope_config.flags. */
enum periscope_config_flags {
	/* Write a periscope_packet record per packet (otherwise: counters only), or
	 * 1 in periscope_config.sample_rate packets when that is above 1. */
	PERISCOPE_CFG_RECORDS = 1,
	/* Write a record for every TCP/UDP packet from or to port 53, whatever the
	 * sampling (and also when PERISCOPE_CFG_RECORDS is off). */
	PERISCOPE_CFG_DNS = 2,
};

/*
 * One packet seen by an XDP or TC program; written to the `periscope_events` ring
 * buffer. 80 bytes.
 */
struct periscope_packet {
	__u8 kind;          /* PERISCOPE_RECORD_PACKET */
	__u8 version;       /* PERISCOPE_PACKET_VERSION */
	__u8 hook;          /* enum periscope_hook */
	__u8 direction;     /* enum periscope_direction */
	__u32 ifindex;      /* the device, in its own namespace */
	__u64 ts_boot_ns;   /* bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME */
	__u64 netns_cookie; /* the device's namespace (from periscope_config) */
	__u32 netns_inode;  /* ditto */
	__u32 len;          /* L2 frame length, including non-linear data */
	__u16 ethertype;    /* after any VLAN tags; 0x0800 IPv4, 0x86dd IPv6, ... */
	__u16 sport;        /* TCP/UDP source port; ICMP/ICMPv6: type */
	__u16 dport;        /* TCP/UDP destination port; ICMP/ICMPv6: code */
	__u8 l4_proto;      /* IP protocol / IPv6 next header after extension headers; 0 if not IP */
	__u8 tcp_flags;     /* TCP flags byte (FIN=0x01 .. CWR=0x80), 0 if not TCP */
	__u8 flags;         /* enum periscope_packet_flags */
	__u8 _pad0;
	__u16 vlan_id;      /* outermost VLAN id (12 bits) if PERISCOPE_PKT_VLAN */
	__u32 _pad1;
	__u8 saddr[16];     /* IPv4: first 4 bytes, rest zero; network byte order */
	__u8 daddr[16];     /* ditto */
};

/*
 * Key of the `periscope_counters` per-CPU hash: one entry per device, direction,
 * hook and L4 protocol, so that per-transport totals are exact too. The namespace
 * is part of the key so that maps may be shared between program instances loaded
 * for different namespaces. 24 bytes.
 */
struct periscope_dev_key {
	__u64 netns_cookie;
	__u32 netns_inode;
	__u32 ifindex;
	__u8 direction;     /* enum periscope_direction */
	__u8 hook;          /* enum periscope_hook */
	__u8 l4_proto;      /* periscope_packet.l4_proto: IP protocol, 0 if not IP */
	__u8 _pad[5];
};

/*
 * Value of `periscope_counters` (one per CPU; user space sums them). Exact: every
 * packet the program sees is counted here, whether or not its record made it
 * into the ring buffer. 24 bytes.
 */
struct periscope_dev_counters {
	__u64 packets;
	__u64 bytes;        /* sum of periscope_packet.len */
	__u64 records_lost; /* ring-buffer reservations that failed for this key */
};

/*
 * Value of the single-entry per-CPU array `periscope_stats`: losses that no
 * device counter can hold. 16 bytes.
 */
struct periscope_stats {
	__u64 records_lost;      /* every failed ring-buffer reservation (all keys) */
	__u64 counters_map_full; /* packets not counted: no room for their key */
};

/*
 * The `.rodata` global `periscope_config`, set by the loader before load
 * (aya's EbpfLoader::override_global). XDP and TC programs cannot read the
 * device's namespace without kfuncs, so a program instance is loaded per
 * namespace with that namespace's id. 24 bytes.
 */
struct periscope_config {
	__u64 netns_cookie;
	__u32 netns_inode;
	__u32 flags;        /* enum periscope_config_flags */
	__u32 sample_rate;  /* with PERISCOPE_CFG_RECORDS: 1 in N packets; 0 and 1 mean every */
	__u32 _pad;
};

#endif /* PERISCOPE_H */
