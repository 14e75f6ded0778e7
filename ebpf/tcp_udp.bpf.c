// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * tcp_udp.bpf.c — TCP and UDP as the socket layer sees them, from BTF-typed hooks:
 *
 *   lifecycle   tp_btf/inet_sock_set_state (connect, established, close, other states)
 *   retransmit  fentry/tcp_retransmit_skb        or tp_btf/tcp_retransmit_skb
 *   send/recv   fexit/{tcp,udp}_{sendmsg,recvmsg} or tp_btf/sock_{send,recv}_length
 *   drops       tp_btf/kfree_skb, with the kernel's drop reason
 *
 * fentry/fexit are preferred where the kernel allows them (no filtering of every
 * socket family in the program, one call per protocol); where the kernel refuses
 * them (lockdown, no trampolines) the receiver loads the tracepoint programs
 * instead. User space loads one family or the other, never both.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "periscope.h"
#include "socket_common.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* ---- lifecycle ---- */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(periscope_set_state, struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP_)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET_ && family != AF_INET6_)
		return 0;
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct sock_start *st;
	__u8 event;

	if (oldstate == TCP_CLOSE_ && newstate == TCP_SYN_SENT_) {
		/* connect(): process context. */
		st = remember_start(cookie, PERISCOPE_ROLE_CLIENT, 1);
		event = PERISCOPE_SOCK_CONNECT;
	} else if (newstate == TCP_ESTABLISHED_ && oldstate == TCP_SYN_SENT_) {
		st = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
		event = PERISCOPE_SOCK_ESTABLISHED;
	} else if (newstate == TCP_ESTABLISHED_ && oldstate == TCP_SYN_RECV_) {
		st = remember_start(cookie, PERISCOPE_ROLE_SERVER, 0);
		event = PERISCOPE_SOCK_ESTABLISHED;
	} else if (newstate == TCP_CLOSE_) {
		st = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
		event = PERISCOPE_SOCK_CLOSE;
	} else {
		st = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
		event = PERISCOPE_SOCK_STATE;
	}

	struct periscope_socket *r = reserve_socket(event, PERISCOPE_SOCK_HOOK_TRACEPOINT);
	if (r) {
		r->cookie = cookie;
		fill_from_sock(r, sk);
		r->old_state = oldstate;
		r->state = newstate;
		if (st) {
			fill_from_start(r, st);
			if (event == PERISCOPE_SOCK_CLOSE ||
			    (event == PERISCOPE_SOCK_ESTABLISHED && st->role == PERISCOPE_ROLE_CLIENT))
				r->duration_ns = r->ts_boot_ns - st->ts_boot_ns;
		}
		if (event == PERISCOPE_SOCK_ESTABLISHED || event == PERISCOPE_SOCK_CLOSE)
			fill_tcp_stats(r, sk);
		submit_socket(r);
	}
	if (event == PERISCOPE_SOCK_CLOSE)
		bpf_map_delete_elem(&periscope_sock_start, &cookie);
	return 0;
}

/* ---- retransmits ---- */

static __always_inline void retransmit(struct sock *sk, __u8 hook)
{
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct periscope_socket *r = reserve_socket(PERISCOPE_SOCK_RETRANSMIT, hook);
	if (!r)
		return;
	r->cookie = cookie;
	fill_from_sock(r, sk);
	r->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	struct sock_start *st = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
	if (st)
		fill_from_start(r, st);
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	r->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	r->total_retrans = BPF_CORE_READ(tp, total_retrans);
	r->size = 1;
	submit_socket(r);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(periscope_tp_retransmit, const struct sock *sk, const struct sk_buff *skb)
{
	retransmit((struct sock *)sk, PERISCOPE_SOCK_HOOK_TRACEPOINT);
	return 0;
}

SEC("fentry/tcp_retransmit_skb")
int BPF_PROG(periscope_fentry_retransmit, struct sock *sk, struct sk_buff *skb, int segs)
{
	retransmit(sk, PERISCOPE_SOCK_HOOK_FENTRY);
	return 0;
}

/* ---- send / receive ---- */

static __always_inline void send_recv(struct sock *sk, int len, __u8 event, __u8 hook)
{
	if (len <= 0)
		return;
	/* Every sendmsg/recvmsg of every socket family comes here: filter with direct loads
	 * from the BTF-typed argument (CO-RE relocated, no bpf_probe_read_kernel call). */
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET_ && family != AF_INET6_)
		return;
	__u8 proto = sk->sk_protocol;
	__u32 flags = periscope_socket_config.flags;
	if (proto == IPPROTO_UDP_) {
		if (!(flags & PERISCOPE_SOCK_CFG_SEND_RECV_UDP))
			return;
	} else if (proto == IPPROTO_TCP_) {
		if (!(flags & PERISCOPE_SOCK_CFG_SEND_RECV_TCP))
			return;
	} else {
		return;
	}
	struct periscope_socket *r = reserve_socket(event, hook);
	if (!r)
		return;
	r->cookie = bpf_get_socket_cookie(sk);
	fill_from_sock(r, sk);
	fill_current(r);
	r->size = len;
	submit_socket(r);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(periscope_tp_send, struct sock *sk, int ret, int flags)
{
	send_recv(sk, ret, PERISCOPE_SOCK_SEND, PERISCOPE_SOCK_HOOK_TRACEPOINT);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(periscope_tp_recv, struct sock *sk, int ret, int flags)
{
	send_recv(sk, ret, PERISCOPE_SOCK_RECV, PERISCOPE_SOCK_HOOK_TRACEPOINT);
	return 0;
}

SEC("fexit/tcp_sendmsg")
int BPF_PROG(periscope_fexit_tcp_send, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	send_recv(sk, ret, PERISCOPE_SOCK_SEND, PERISCOPE_SOCK_HOOK_FENTRY);
	return 0;
}

SEC("fexit/tcp_recvmsg")
int BPF_PROG(periscope_fexit_tcp_recv, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	     int *addr_len, int ret)
{
	send_recv(sk, ret, PERISCOPE_SOCK_RECV, PERISCOPE_SOCK_HOOK_FENTRY);
	return 0;
}

SEC("fexit/udp_sendmsg")
int BPF_PROG(periscope_fexit_udp_send, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	send_recv(sk, ret, PERISCOPE_SOCK_SEND, PERISCOPE_SOCK_HOOK_FENTRY);
	return 0;
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(periscope_fexit_udp_recv, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	     int *addr_len, int ret)
{
	send_recv(sk, ret, PERISCOPE_SOCK_RECV, PERISCOPE_SOCK_HOOK_FENTRY);
	return 0;
}

/* ---- drops ---- */

SEC("tp_btf/kfree_skb")
int BPF_PROG(periscope_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	if (!(periscope_socket_config.flags & PERISCOPE_SOCK_CFG_DROPS))
		return 0;
	/* 0: not dropped yet, 1: consumed (kernels that report those here). */
	if ((__u32)reason <= 1)
		return 0;
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	if (proto != ETH_P_IP && proto != ETH_P_IPV6)
		return 0;
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct periscope_drop *r = bpf_ringbuf_reserve(&periscope_events, sizeof(*r), 0);
	if (!r) {
		count_lost_record();
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = PERISCOPE_RECORD_DROP;
	r->version = PERISCOPE_DROP_VERSION;
	r->reason = reason;
	r->ts_boot_ns = bpf_ktime_get_boot_ns();
	r->len = BPF_CORE_READ(skb, len);
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev) {
		r->ifindex = BPF_CORE_READ(dev, ifindex);
		r->netns_inode = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	} else {
		struct sock *sk = BPF_CORE_READ(skb, sk);
		if (sk)
			r->netns_inode = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	__u8 l4 = 0;
	if (proto == ETH_P_IP) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) == 0) {
			r->family = AF_INET_;
			l4 = ip.protocol;
			__builtin_memcpy(r->saddr, &ip.saddr, 4);
			__builtin_memcpy(r->daddr, &ip.daddr, 4);
			if (th == (__u16)~0U || th <= nh)
				th = nh + ip.ihl * 4;
		}
	} else {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) == 0) {
			r->family = AF_INET6_;
			l4 = ip6.nexthdr;
			__builtin_memcpy(r->saddr, &ip6.saddr, 16);
			__builtin_memcpy(r->daddr, &ip6.daddr, 16);
			if (th == (__u16)~0U || th <= nh)
				th = nh + sizeof(ip6);
		}
	}
	r->protocol = l4;
	if (l4 == IPPROTO_TCP_ || l4 == IPPROTO_UDP_) {
		__u16 ports[2];
		if (bpf_probe_read_kernel(ports, sizeof(ports), head + th) == 0) {
			r->sport = bpf_ntohs(ports[0]);
			r->dport = bpf_ntohs(ports[1]);
		}
	}
	bpf_ringbuf_submit(r, 0); /* adaptive wake-up, as submit_socket */
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
