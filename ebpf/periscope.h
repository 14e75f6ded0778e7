/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * periscope.h — every record that crosses between the kernel and user space.
 *
 * This is the one definition of those layouts. The Rust side is generated from
 * it by bindgen (receivers/src/shared/ebpf/bindings.rs, committed; regenerate
 * with scripts/gen-bindings after an edit here — the receivers' `bindings` test
 * fails while the committed file is stale). bindgen also emits compile-time
 * checks of every struct's size, alignment and field offsets.
 *
 * Rules for everything in this file:
 *   - fixed-size fields only (__u8 .. __u64, arrays of them); no pointers, no
 *     bitfields, no bool, no enums as field types — enums below only name
 *     constants, each with the underlying type of the field it is stored in
 *     (`enum x : __u8`, a clang extension), so that the Rust constants have
 *     that type too;
 *   - every field naturally aligned and every gap an explicit `_pad` field, so the
 *     layout is the same for the BPF target and the host and has no implicit
 *     padding (the Rust side derives bytemuck::Pod, which refuses padding);
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
enum periscope_record_kind : __u8 {
	PERISCOPE_RECORD_PACKET = 1,
	PERISCOPE_RECORD_SOCKET = 2,
	PERISCOPE_RECORD_DROP = 3,
	PERISCOPE_RECORD_DNS = 4,
};

/* The `version` byte of a packet record; bumped when its layout changes. */
enum periscope_packet_version : __u8 {
	PERISCOPE_PACKET_VERSION = 1,
};

/* Which hook saw a packet. */
enum periscope_hook : __u8 {
	PERISCOPE_HOOK_XDP = 1,
	PERISCOPE_HOOK_TC = 2,
};

/* Which way a packet crossed the hook. */
enum periscope_direction : __u8 {
	PERISCOPE_DIR_INGRESS = 0,
	PERISCOPE_DIR_EGRESS = 1,
};

/* Bits of periscope_packet.flags. */
enum periscope_packet_flags : __u8 {
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
enum periscope_config_flags : __u32 {
	/* Write a periscope_packet record per packet (otherwise: counters only), or
	 * 1 in periscope_config.sample_rate packets when that is above 1. */
	PERISCOPE_CFG_RECORDS = 1,
	/* Write a record for every TCP/UDP packet from or to port 53, whatever the
	 * sampling (and also when PERISCOPE_CFG_RECORDS is off). */
	PERISCOPE_CFG_DNS = 2,
	/* Detect bursts per device and direction (parameters in the `.rodata` global
	 * periscope_burst_config); write periscope_burst records. */
	PERISCOPE_CFG_BURSTS = 16,
	/* Count packets per 5-tuple in the flow slots (periscope_flows_0/_1, packet_flow.h);
	 * a packet counted there is not in periscope_counters (user space adds the drained
	 * slots to the device's totals); a packet whose flow finds no slot is counted in
	 * periscope_counters and in its flows_overflow_*. */
	PERISCOPE_CFG_FLOWS = 32,
	/* Classify every packet as local or forwarded (periscope_local_addrs, workload section
	 * below): periscope_dev_key.locality and periscope_packet.locality. */
	PERISCOPE_CFG_LOCALITY = 64,
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
	__u8 locality;      /* enum periscope_locality (workload section below); 0 if not classified */
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
	__u8 locality;      /* enum periscope_locality (workload section below) */
	__u8 _pad[4];
};

/*
 * Value of `periscope_counters` (one per CPU; user space sums them). Exact: every
 * packet the program sees is counted here, whether or not its record made it
 * into the ring buffer. 40 bytes.
 */
struct periscope_dev_counters {
	__u64 packets;
	__u64 bytes;        /* sum of periscope_packet.len */
	__u64 records_lost; /* ring-buffer reservations that failed for this key */
	/* With PERISCOPE_CFG_FLOWS: packets (and their bytes) whose flow found no slot in
	 * the flow table (its probe window full): counted here, never lost silently. With
	 * flows on, packets/bytes above count only the packets no flow slot took. */
	__u64 flows_overflow_packets;
	__u64 flows_overflow_bytes;
};

/* ---- flows: per-5-tuple counters in packet.bpf.c (PERISCOPE_CFG_FLOWS) ----------- */

/*
 * A flow: one per namespace, device, direction, hook, locality and 5-tuple. Packets that
 * are not IPv4/IPv6 have ip_version 0 and zero addresses and ports (one flow per device,
 * direction and hook for all of them), so that the flows of a device and its overflow
 * counters add up to its counters. Every field of periscope_dev_key is here: user space
 * adds a drained flow to its device's totals. 64 bytes.
 */
struct periscope_flow_key {
	__u64 netns_cookie;
	__u32 netns_inode;
	__u32 ifindex;
	__u8 direction;     /* enum periscope_direction */
	__u8 hook;          /* enum periscope_hook */
	__u8 l4_proto;      /* as in periscope_dev_key */
	__u8 ip_version;    /* 4, 6, or 0: not IP */
	__u16 sport;        /* as in periscope_packet (ICMP: type) */
	__u16 dport;        /* as in periscope_packet (ICMP: code) */
	__u8 saddr[16];     /* as in periscope_packet: IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u8 locality;      /* as in periscope_dev_key */
	__u8 _pad[7];
};

/*
 * What one CPU counted of a flow in one generation. 40 bytes.
 */
struct periscope_flow_value {
	__u64 packets;
	__u64 bytes;          /* L2 frame length, as in periscope_dev_counters */
	__u64 first_seen_ns;  /* CLOCK_MONOTONIC, tick-granular (bpf_ktime_get_coarse_ns), of the
			       * flow's first packet on this CPU in this generation; 0: none */
	__u64 last_seen_ns;   /* the same clock, of its latest packet */
	__u8 tcp_flags;       /* every TCP flags byte seen, OR-ed */
	__u8 _pad[3];
	__u32 generation;     /* the periscope_flow_generation the slot was taken in */
};

/*
 * A slot of the flow table: the per-CPU arrays `periscope_flows_0` and `periscope_flows_1`,
 * `flow_slots` entries each (a power of two). Generation g (the single u32 of the array
 * `periscope_flow_generation`) writes table g & 1; a slot whose value.generation is not g
 * is free. A flow's slot is found by hashing its key and probing PERISCOPE_FLOW_PROBES
 * slots from there (half full: about 1 flow in 10^5 finds none and overflows; three quarters: 1 in 10^3); every CPU has its own slots, so no update races another. User space
 * drains a generation whole: it makes g + 1 current, waits for an RCU grace period (every
 * program that read g has returned), then reads table g & 1, whose slots of generation g
 * are final. No slot is ever deleted while a program may write it. 104 bytes.
 */
struct periscope_flow_slot {
	struct periscope_flow_key key;
	struct periscope_flow_value value;
};

/* Slots probed for a flow before it overflows. */
#define PERISCOPE_FLOW_PROBES 16

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
 * namespace with that namespace's id. 32 bytes.
 */
struct periscope_config {
	__u64 netns_cookie;
	__u32 netns_inode;
	__u32 flags;        /* enum periscope_config_flags */
	__u32 sample_rate;  /* with PERISCOPE_CFG_RECORDS: 1 in N packets; 0 and 1 mean every */
	__u16 dns_ports[4]; /* with PERISCOPE_CFG_DNS: ports that are DNS besides 53; 0 = unused */
	__u32 flow_slot_mask; /* with PERISCOPE_CFG_FLOWS: flow_slots - 1 (a power of two) */
};

/*
 * The `.data` global `periscope_netns` of the packet object: the namespace whose
 * devices an instance is attached to, written by user space after the load and
 * before the first attach (instances are loaded ahead of time, before the
 * namespace that takes one is known). 16 bytes.
 */
struct periscope_netns_slot {
	__u64 cookie;
	__u32 inode;
	__u32 _pad;
};

/* ---- DNS: payloads of DNS packets (packet.bpf.c, with PERISCOPE_CFG_DNS) ---------- */

/* The `version` byte of a DNS record. */
enum periscope_dns_version : __u8 {
	PERISCOPE_DNS_VERSION = 1,
};

/* How many bytes of a DNS packet's L4 payload a record carries at most. */
enum periscope_dns_limits : __u16 {
	PERISCOPE_DNS_PAYLOAD = 512,
};

/*
 * A TCP/UDP packet from or to port 53: the packet's identity (as in
 * periscope_packet) and the start of its L4 payload (for TCP, the DNS message's
 * 2-byte length prefix comes first). Written, in addition to the packet record,
 * when PERISCOPE_CFG_DNS is set; segments without payload (TCP handshake, ACKs)
 * get none. Only the first payload_len bytes of payload are written. 584 bytes.
 */
struct periscope_dns {
	__u8 kind;          /* PERISCOPE_RECORD_DNS */
	__u8 version;       /* PERISCOPE_DNS_VERSION */
	__u8 hook;          /* enum periscope_hook */
	__u8 direction;     /* enum periscope_direction */
	__u32 ifindex;
	__u64 ts_boot_ns;
	__u64 netns_cookie;
	__u32 netns_inode;
	__u16 ethertype;    /* 0x0800 or 0x86dd */
	__u8 l4_proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 _pad0;
	__u16 sport;
	__u16 dport;
	__u16 payload_len;  /* bytes of payload[] filled: min(L4 payload, PERISCOPE_DNS_PAYLOAD) */
	__u16 _pad1;
	__u8 saddr[16];     /* as in periscope_packet */
	__u8 daddr[16];
	__u8 payload[PERISCOPE_DNS_PAYLOAD];
};

/* ---- sockets: sockops, sk_msg/sk_skb, tcp_udp (fentry or tracepoints) ---------- */

/* The `version` byte of a socket record. */
enum periscope_socket_version : __u8 {
	PERISCOPE_SOCKET_VERSION = 1,
};

/* What happened to a socket (periscope_socket.event). */
enum periscope_socket_event : __u8 {
	/* connect() sent a SYN (process context: pid and comm are the caller's). */
	PERISCOPE_SOCK_CONNECT = 1,
	/* The handshake completed; role says which side. duration_ns: SYN sent ->
	 * established on the client (0 when the SYN was not seen). */
	PERISCOPE_SOCK_ESTABLISHED = 2,
	/* A new smoothed RTT sample (srtt_us, rttvar_us); rate-limited per socket. */
	PERISCOPE_SOCK_RTT = 3,
	/* A segment was retransmitted (total_retrans counts them so far). */
	PERISCOPE_SOCK_RETRANSMIT = 4,
	/* A TCP state change other than the ones above (old_state -> state). */
	PERISCOPE_SOCK_STATE = 5,
	/* The socket reached TCP_CLOSE: final bytes, retransmits, RTT; duration_ns is
	 * its life from connect/accept (0 when its start was not seen). */
	PERISCOPE_SOCK_CLOSE = 6,
	/* Data sent (size bytes; one sendmsg call, or one sk_msg message). */
	PERISCOPE_SOCK_SEND = 7,
	/* Data received (size bytes; one recvmsg call, or one sk_skb verdict). */
	PERISCOPE_SOCK_RECV = 8,
};

/* Which mechanism produced a socket or drop record (periscope_socket.hook). */
enum periscope_socket_hook : __u8 {
	PERISCOPE_SOCK_HOOK_SOCKOPS = 1,
	PERISCOPE_SOCK_HOOK_SK_MSG = 2,
	PERISCOPE_SOCK_HOOK_SK_SKB = 3,
	PERISCOPE_SOCK_HOOK_TRACEPOINT = 4,
	PERISCOPE_SOCK_HOOK_FENTRY = 5,
};

/* Which side of a connection the socket is (periscope_socket.role). */
enum periscope_socket_role : __u8 {
	PERISCOPE_ROLE_UNKNOWN = 0,
	PERISCOPE_ROLE_CLIENT = 1, /* active open: connect() */
	PERISCOPE_ROLE_SERVER = 2, /* passive open: accepted */
};

/*
 * One socket event. Addresses and ports are the socket's own view: local first,
 * remote second (for a client, local is the client). Fields an event does not
 * fill are zero. pid/tgid/comm are the task that ran the hook, and are zero for
 * events fired from softirq or timers (receive path, retransmit timer). 160 bytes.
 */
struct periscope_socket {
	__u8 kind;          /* PERISCOPE_RECORD_SOCKET */
	__u8 version;       /* PERISCOPE_SOCKET_VERSION */
	__u8 event;         /* enum periscope_socket_event */
	__u8 hook;          /* enum periscope_socket_hook */
	__u8 family;        /* AF_INET (2) or AF_INET6 (10) */
	__u8 protocol;      /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u8 role;          /* enum periscope_socket_role */
	__u8 state;         /* TCP state after the event (TCP_ESTABLISHED = 1 ...), 0 for UDP */
	__u8 old_state;     /* TCP state before a state change */
	__u8 _pad0[3];
	__u32 pid;          /* kernel pid (thread id) */
	__u32 tgid;         /* process id */
	__u32 netns_inode;  /* the socket's network namespace */
	__u64 ts_boot_ns;   /* bpf_ktime_get_boot_ns() */
	__u64 cookie;       /* bpf_get_socket_cookie(): one per socket for the boot */
	__u64 netns_cookie; /* the socket's namespace cookie, 0 where the hook cannot read it */
	__u64 cgroup_id;    /* cgroup v2 id of the task (or of the socket) */
	__u16 lport;        /* local port, host byte order */
	__u16 rport;        /* remote port, host byte order */
	__u32 _pad1;
	__u8 laddr[16];     /* local address; IPv4: first 4 bytes; network byte order */
	__u8 raddr[16];     /* remote address; ditto */
	__u32 srtt_us;      /* smoothed RTT, microseconds */
	__u32 rttvar_us;    /* RTT variance (mdev), microseconds */
	__u32 total_retrans;/* segments retransmitted over the socket's life so far */
	__u32 size;         /* SEND/RECV: bytes; RETRANSMIT: segments in this retransmission */
	__u64 bytes_sent;   /* CLOSE: bytes handed to the stack (tcp bytes_sent) */
	__u64 bytes_acked;  /* CLOSE: bytes the peer acknowledged */
	__u64 bytes_received; /* CLOSE: bytes received in order */
	__u64 duration_ns;  /* see enum periscope_socket_event */
	__u8 comm[16];      /* task command name, NUL-padded */
};

/* The `version` byte of a drop record. */
enum periscope_drop_version : __u8 {
	PERISCOPE_DROP_VERSION = 1,
};

/*
 * A packet the kernel dropped (tracepoint skb:kfree_skb), with the kernel's
 * reason (enum skb_drop_reason, named by user space from the kernel's BTF).
 * Only IPv4/IPv6 packets are reported. 64 bytes.
 */
struct periscope_drop {
	__u8 kind;          /* PERISCOPE_RECORD_DROP */
	__u8 version;       /* PERISCOPE_DROP_VERSION */
	__u8 family;        /* AF_INET or AF_INET6 */
	__u8 protocol;      /* IP protocol of the dropped packet */
	__u32 reason;       /* enum skb_drop_reason value */
	__u64 ts_boot_ns;
	__u32 netns_inode;  /* namespace of the device (else of the socket) */
	__u32 ifindex;      /* the device, 0 if none */
	__u16 sport;        /* TCP/UDP ports, host byte order */
	__u16 dport;
	__u32 len;          /* skb->len */
	__u8 saddr[16];
	__u8 daddr[16];
};

/*
 * Key of the cgroup_skb per-CPU hash `periscope_cgroup_counters`: one entry per
 * cgroup, direction and IP protocol. 16 bytes.
 */
struct periscope_cgroup_key {
	__u64 cgroup_id;    /* cgroup v2 id of the socket's cgroup */
	__u8 direction;     /* enum periscope_direction */
	__u8 family;        /* AF_INET or AF_INET6 */
	__u8 l4_proto;      /* IP protocol (IPv6: next header of the fixed header) */
	__u8 _pad[5];
};

/* Value of `periscope_cgroup_counters`: IP-level packets and bytes. 16 bytes. */
struct periscope_cgroup_counters {
	__u64 packets;
	__u64 bytes;        /* skb->len at the hook: the IP packet, no L2 header */
};

/* Single-entry per-CPU array `periscope_socket_stats` of every socket object. 24 bytes. */
struct periscope_socket_stats {
	__u64 records_lost;    /* failed ring-buffer reservations */
	__u64 sockmap_full;    /* sk_msg: sockets not added to the sockhash (map full) */
	__u64 table_full;      /* sockets whose start (pid, time) found no room */
	__u64 unmatched;       /* qdisc: dequeued packets whose enqueue was not found (the
	                        * queued table was full, or past MAX_BULK of one dequeue) */
};

/* Bits of periscope_socket_config.flags. */
enum periscope_socket_config_flags : __u32 {
	PERISCOPE_SOCK_CFG_SEND_RECV_UDP = 1, /* tcp_udp: a SEND/RECV record per UDP call */
	PERISCOPE_SOCK_CFG_SEND_RECV_TCP = 2, /* tcp_udp: a SEND/RECV record per TCP call */
	PERISCOPE_SOCK_CFG_DROPS = 4,         /* tcp_udp: drop records */
};

/*
 * The `.rodata` global `periscope_socket_config` of the socket objects (sockops,
 * sk_msg, tcp_udp), set by the loader before load. 16 bytes.
 */
struct periscope_socket_config {
	__u64 rtt_interval_ns; /* sockops: at most one RTT record per socket per interval; 0: none */
	__u32 flags;           /* enum periscope_socket_config_flags */
	__u32 _pad;
};

/* ---- bursts: inline microburst detection in packet.bpf.c ------------------------ */

/* The `kind` byte of a burst record (5: leaves 4 free for another packet-path record). */
enum periscope_burst_kind : __u8 {
	PERISCOPE_RECORD_BURST = 5,
};

/* The `version` byte of a burst record. */
enum periscope_burst_version : __u8 {
	PERISCOPE_BURST_VERSION = 1,
};

/* periscope_burst.event. */
enum periscope_burst_event : __u8 {
	/* The rate over the window crossed the threshold: start_ts_boot_ns is the
	 * estimated start, packets/bytes what the burst held when it was detected. */
	PERISCOPE_BURST_START = 1,
	/* The rate fell below the threshold x low_permille/1000: the whole burst. */
	PERISCOPE_BURST_END = 2,
};

/* periscope_burst_config.mode. */
enum periscope_burst_mode : __u32 {
	/* A burst is a window at or above thr_packets / thr_bytes. */
	PERISCOPE_BURST_FIXED = 0,
	/* ... or at or above k x a slowly moving baseline of the window's count,
	 * whichever is higher (the fixed thresholds are then the floor). */
	PERISCOPE_BURST_ADAPTIVE = 1,
};

/*
 * One burst on one device, direction and hook, as one CPU saw it (the detector
 * is per CPU; user space merges the CPUs' reports of one burst). Written to
 * `periscope_events`. Rates are per window: rate = peak_window_* x 1e9 / window_ns.
 * 80 bytes.
 */
struct periscope_burst {
	__u8 kind;           /* PERISCOPE_RECORD_BURST */
	__u8 version;        /* PERISCOPE_BURST_VERSION */
	__u8 event;          /* enum periscope_burst_event */
	__u8 direction;      /* enum periscope_direction */
	__u8 hook;           /* enum periscope_hook */
	__u8 _pad0[3];
	__u32 ifindex;
	__u32 cpu;           /* the CPU whose detector this is */
	__u64 netns_cookie;
	__u32 netns_inode;
	__u32 _pad1;
	__u64 start_ts_boot_ns; /* first dense bucket of the burst (bucket start) */
	__u64 end_ts_boot_ns;   /* END: last packet in a dense bucket; START: detection time */
	__u64 packets;          /* packets in the burst's dense buckets */
	__u64 bytes;
	__u32 peak_window_packets; /* most packets in one window during the burst */
	__u32 window_ns;           /* the window, to turn peak_window_* into rates */
	__u64 peak_window_bytes;
};

/*
 * The `.rodata` global `periscope_burst_config` of the packet object, set by the
 * loader before load; used with PERISCOPE_CFG_BURSTS. Thresholds are per window
 * (user space converts packets/s and bytes/s). 48 bytes.
 */
struct periscope_burst_config {
	__u64 bucket_ns;      /* width of one bucket */
	__u32 buckets;        /* buckets per window, 2 .. 32 */
	__u32 mode;           /* enum periscope_burst_mode */
	__u64 thr_bytes;      /* bytes per window that start a burst; 0: bytes not used */
	__u32 thr_packets;    /* packets per window that start a burst; 0: packets not used */
	__u32 k_x256;         /* adaptive: k x 256 */
	__u32 low_permille;   /* a burst ends below threshold x this / 1000 (hysteresis) */
	__u32 ewma_shift;     /* adaptive: baseline time constant, 2^shift buckets */
	__u64 _pad;
};

/* Single-entry per-CPU array `periscope_burst_stats`. 16 bytes. */
struct periscope_burst_stats {
	__u64 records_lost;   /* burst records whose ring-buffer reservation failed */
	__u64 state_full;     /* packets not checked: no room for their detector state */
};

/* ---- queue delay: qdisc enqueue -> dequeue per packet, in qdisc.bpf.c ----------- */

/* The `kind` byte of a queue record (9: far from the packet-path kinds, which may grow). */
enum periscope_queue_kind : __u8 {
	PERISCOPE_RECORD_QUEUE = 9,
};

/* The `version` byte of a queue record. */
enum periscope_queue_version : __u8 {
	PERISCOPE_QUEUE_VERSION = 1,
};

/* periscope_queue.event. */
enum periscope_queue_event : __u8 {
	/* A packet left the device's root qdisc toward the driver (qdisc:qdisc_dequeue). */
	PERISCOPE_QUEUE_DEQUEUE = 1,
	/* The kernel dropped a packet on the device with a queueing discipline's reason
	 * (skb:kfree_skb; the reasons user space selected). */
	PERISCOPE_QUEUE_DROP = 2,
};

/* periscope_queue_config.flags. */
enum periscope_queue_config_flags : __u32 {
	/* Report drops (PERISCOPE_QUEUE_DROP) whose reason is in drop_reasons. */
	PERISCOPE_QUEUE_CFG_DROPS = 1,
};

/*
 * The `.rodata` global `periscope_queue_config` of qdisc.bpf.c, set by the loader.
 * 40 bytes.
 */
struct periscope_queue_config {
	__u32 flags;            /* enum periscope_queue_config_flags */
	__u32 _pad;
	__u64 drop_reasons[4];  /* bit r set: report drops with reason r (r < 256) */
};

/*
 * One packet on one device's root qdisc: how long it waited (DEQUEUE), or a
 * drop (DROP). Written to `periscope_events`. Backlog: the qdisc's own counters
 * (q.qlen, qstats.backlog) right after this packet's enqueue (DEQUEUE) or at the
 * drop (DROP, the device's root qdisc); 0 for lockless qdiscs (pfifo_fast), which
 * keep them per CPU. 72 bytes. Failed reservations are counted in the object's
 * `periscope_socket_stats` (records_lost), as the socket objects count theirs.
 */
struct periscope_queue {
	__u8 kind;              /* PERISCOPE_RECORD_QUEUE */
	__u8 version;           /* PERISCOPE_QUEUE_VERSION */
	__u8 event;             /* enum periscope_queue_event */
	__u8 _pad0;
	__u32 ifindex;
	__u32 netns_inode;      /* the device's namespace */
	__u32 len;              /* skb->len: the frame as the qdisc counts it */
	__u64 netns_cookie;
	__u64 ts_boot_ns;       /* dequeue (or drop) time */
	__u64 delay_ns;         /* DEQUEUE: enqueue -> dequeue */
	__u32 backlog_bytes;
	__u32 backlog_packets;
	__u32 reason;           /* DROP: enum skb_drop_reason */
	__u32 _pad1;
	__u8 ifname[16];        /* the device's name at the time */
};

/* ---- workload: locality of packets (packet.bpf.c, PERISCOPE_CFG_LOCALITY) -------- */

/* Whether a packet is to or from the observing namespace's own stack, or forwarded through it
 * (periscope_dev_key.locality, periscope_packet.locality). */
enum periscope_locality : __u8 {
	/* Not classified: not IPv4/IPv6 (ARP, LLDP, ...), or PERISCOPE_CFG_LOCALITY off. */
	PERISCOPE_LOCALITY_UNKNOWN = 0,
	/* Received for an address of the device's namespace (or multicast/broadcast), or sent
	 * from one: the namespace's own stack is an end of it. */
	PERISCOPE_LOCALITY_LOCAL = 1,
	/* Any other IP packet: routed or bridged through the namespace. */
	PERISCOPE_LOCALITY_FORWARDED = 2,
};

/*
 * Key of the hash `periscope_local_addrs` (shared by every instance of a receiver): the
 * addresses of each namespace, kept by user space from rtnetlink (RTM_NEWADDR/RTM_DELADDR,
 * IFA_LOCAL and IFA_BROADCAST). The value is a __u8, 1. 24 bytes.
 */
struct periscope_local_key {
	__u64 netns_cookie;
	__u8 addr[16];      /* IPv4: first 4 bytes, rest zero; network byte order */
};

#endif /* PERISCOPE_H */
