/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * socket_common.h — what the socket programs (sockops, sk_msg, tcp_udp) share:
 * the ring buffer and stats maps, the per-socket start table, and filling a
 * periscope_socket record from a struct sock.
 *
 * Reads of struct sock go through BPF_CORE_READ (bpf_probe_read_kernel with CO-RE
 * relocations), so they work on BTF pointers from tp_btf/fentry arguments and on
 * the tcp_sock that bpf_skc_to_tcp_sock returns in sockops and sk_msg alike.
 */
#ifndef PERISCOPE_SOCKET_COMMON_H
#define PERISCOPE_SOCKET_COMMON_H

#define AF_INET_ 2
#define AF_INET6_ 10
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_SYN_RECV_ 3
#define TCP_CLOSE_ 7

/* Set by the loader before load (EbpfLoader::override_global). */
const volatile struct periscope_socket_config periscope_socket_config = {
	.rtt_interval_ns = 1000000000ULL,
	.flags = PERISCOPE_SOCK_CFG_SEND_RECV_UDP | PERISCOPE_SOCK_CFG_DROPS,
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* bytes; the loader may override */
} periscope_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct periscope_socket_stats);
} periscope_socket_stats SEC(".maps");

/* What is remembered of a socket from its start until it closes (keyed by cookie). */
struct sock_start {
	__u64 ts_boot_ns;   /* connect() or accept time */
	__u64 last_rtt_ns;  /* when the last RTT record was written */
	__u64 cgroup_id;
	__u32 pid;
	__u32 tgid;
	char comm[16];
	__u8 role;
	__u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_start);
} periscope_sock_start SEC(".maps");

static __always_inline struct periscope_socket_stats *socket_stats(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&periscope_socket_stats, &zero);
}

/* A record the full ring buffer had no room for. */
static __always_inline void count_lost_record(void)
{
	struct periscope_socket_stats *s = socket_stats();
	if (s)
		s->records_lost++;
}

static __always_inline struct periscope_socket *reserve_socket(__u8 event, __u8 hook)
{
	struct periscope_socket *r = bpf_ringbuf_reserve(&periscope_events, sizeof(*r), 0);
	if (!r) {
		count_lost_record();
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = PERISCOPE_RECORD_SOCKET;
	r->version = PERISCOPE_SOCKET_VERSION;
	r->event = event;
	r->hook = hook;
	r->ts_boot_ns = bpf_ktime_get_boot_ns();
	return r;
}

static __always_inline void submit_socket(struct periscope_socket *r)
{
	/* The kernel's adaptive wake-up: only a record written while the reader had caught up
	 * wakes it (once; it then reads in batches every poll_interval), so an idle reader
	 * sleeps instead of polling and a first record is read at once. */
	bpf_ringbuf_submit(r, 0);
}

/* Addresses, ports, namespace and cgroup of a socket. */
static __always_inline void fill_from_sock(struct periscope_socket *r, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->family = family;
	r->protocol = BPF_CORE_READ(sk, sk_protocol);
	r->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET_) {
		__u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 d = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(r->laddr, &l, 4);
		__builtin_memcpy(r->raddr, &d, 4);
	} else if (family == AF_INET6_) {
		BPF_CORE_READ_INTO(&r->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&r->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
	r->netns_inode = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	r->netns_cookie = BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
	r->cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

/* TCP's own totals at the time of the record. */
static __always_inline void fill_tcp_stats(struct periscope_socket *r, struct sock *sk)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	r->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	r->rttvar_us = BPF_CORE_READ(tp, mdev_us) >> 2;
	r->total_retrans = BPF_CORE_READ(tp, total_retrans);
	r->bytes_sent = BPF_CORE_READ(tp, bytes_sent);
	r->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	r->bytes_received = BPF_CORE_READ(tp, bytes_received);
}

/* The current task, where the hook runs in process context. */
static __always_inline void fill_current(struct periscope_socket *r)
{
	__u64 id = bpf_get_current_pid_tgid();
	r->pid = (__u32)id;
	r->tgid = id >> 32;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
}

static __always_inline void fill_from_start(struct periscope_socket *r, struct sock_start *st)
{
	r->pid = st->pid;
	r->tgid = st->tgid;
	__builtin_memcpy(r->comm, st->comm, sizeof(r->comm));
	r->role = st->role;
}

/* Remembers a socket's start; counts when the table is full. */
static __always_inline struct sock_start *remember_start(__u64 cookie, __u8 role, int current_task)
{
	struct sock_start st = {};
	st.ts_boot_ns = bpf_ktime_get_boot_ns();
	st.role = role;
	if (current_task) {
		__u64 id = bpf_get_current_pid_tgid();
		st.pid = (__u32)id;
		st.tgid = id >> 32;
		bpf_get_current_comm(st.comm, sizeof(st.comm));
	}
	if (bpf_map_update_elem(&periscope_sock_start, &cookie, &st, BPF_NOEXIST) != 0) {
		struct sock_start *old = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
		if (old)
			return old;
		struct periscope_socket_stats *s = socket_stats();
		if (s)
			s->table_full++;
		return 0;
	}
	return bpf_map_lookup_elem(&periscope_sock_start, &cookie);
}

#endif /* PERISCOPE_SOCKET_COMMON_H */
