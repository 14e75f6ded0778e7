// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockops.bpf.c — the TCP lifecycle of every socket in a cgroup subtree (attached
 * to the cgroup v2 root by default, so: every socket of every namespace): connect,
 * established (both sides), RTT samples, retransmits, state changes and close,
 * each as a periscope_socket record keyed by the socket cookie.
 *
 * The connect callback runs in the connect() caller's context, so the client's
 * pid, tgid and command are taken there and kept (per cookie) for the records
 * that follow; callbacks fired from softirq or timers carry no task of their own.
 * The program only observes: it returns 1 and never changes a socket option.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "periscope.h"
#include "socket_common.h"

/* The callbacks a socket gets once it is connecting or established. */
#define WATCH_FLAGS \
	(BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG)

static __always_inline struct sock *sock_of(struct bpf_sock_ops *skops)
{
	struct bpf_sock *bsk = skops->sk;
	if (!bsk)
		return 0;
	return (struct sock *)bpf_skc_to_tcp_sock(bsk);
}

static __always_inline void emit(struct bpf_sock_ops *skops, struct sock *sk, __u64 cookie,
				 __u8 event, struct sock_start *st)
{
	struct periscope_socket *r = reserve_socket(event, PERISCOPE_SOCK_HOOK_SOCKOPS);
	if (!r)
		return;
	r->cookie = cookie;
	fill_from_sock(r, sk);
	r->state = skops->state;
	r->srtt_us = skops->srtt_us >> 3;
	r->total_retrans = skops->total_retrans;
	if (st) {
		fill_from_start(r, st);
		if (event == PERISCOPE_SOCK_ESTABLISHED && st->role == PERISCOPE_ROLE_CLIENT)
			r->duration_ns = r->ts_boot_ns - st->ts_boot_ns;
	}
	if (event == PERISCOPE_SOCK_RTT || event == PERISCOPE_SOCK_CLOSE ||
	    event == PERISCOPE_SOCK_ESTABLISHED)
		fill_tcp_stats(r, sk);
	if (event == PERISCOPE_SOCK_STATE || event == PERISCOPE_SOCK_CLOSE) {
		r->old_state = skops->args[0];
		r->state = skops->args[1];
	}
	if (event == PERISCOPE_SOCK_CLOSE && st)
		r->duration_ns = r->ts_boot_ns - st->ts_boot_ns;
	if (event == PERISCOPE_SOCK_RETRANSMIT)
		r->size = skops->args[1]; /* segments */
	submit_socket(r);
}

SEC("sockops")
int periscope_sockops(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	__u32 family = skops->family;
	if (family != AF_INET_ && family != AF_INET6_)
		return 1;
	struct sock *sk = sock_of(skops);
	if (!sk)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct sock_start *st;

	switch (op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		bpf_sock_ops_cb_flags_set(skops, WATCH_FLAGS);
		st = remember_start(cookie, PERISCOPE_ROLE_CLIENT, 1);
		emit(skops, sk, cookie, PERISCOPE_SOCK_CONNECT, st);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, WATCH_FLAGS);
		st = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
		if (!st)
			st = remember_start(cookie, PERISCOPE_ROLE_CLIENT, 0);
		emit(skops, sk, cookie, PERISCOPE_SOCK_ESTABLISHED, st);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		bpf_sock_ops_cb_flags_set(skops, WATCH_FLAGS);
		st = remember_start(cookie, PERISCOPE_ROLE_SERVER, 0);
		emit(skops, sk, cookie, PERISCOPE_SOCK_ESTABLISHED, st);
		break;
	case BPF_SOCK_OPS_RTT_CB: {
		__u64 interval = periscope_socket_config.rtt_interval_ns;
		if (!interval)
			break;
		st = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
		if (!st)
			break;
		__u64 now = bpf_ktime_get_boot_ns();
		if (st->last_rtt_ns && now - st->last_rtt_ns < interval)
			break;
		st->last_rtt_ns = now;
		emit(skops, sk, cookie, PERISCOPE_SOCK_RTT, st);
		break;
	}
	case BPF_SOCK_OPS_RETRANS_CB:
		st = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
		emit(skops, sk, cookie, PERISCOPE_SOCK_RETRANSMIT, st);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		st = bpf_map_lookup_elem(&periscope_sock_start, &cookie);
		if (skops->args[1] == TCP_CLOSE_) {
			emit(skops, sk, cookie, PERISCOPE_SOCK_CLOSE, st);
			bpf_map_delete_elem(&periscope_sock_start, &cookie);
		} else {
			emit(skops, sk, cookie, PERISCOPE_SOCK_STATE, st);
		}
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
