// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_msg.bpf.c — application messages: a sockops program adds every established
 * TCP socket of the cgroup subtree to a sockhash; an sk_msg program on that
 * sockhash records each message the application sends (size, time, sending task,
 * cgroup) and an sk_skb stream verdict program records each chunk received. Both
 * return SK_PASS and never touch the data.
 *
 * Cost: sockets in a sockhash move onto the sockmap (psock) path, which adds work
 * to every send and receive of those sockets; this is why the receiver is opt-in.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "periscope.h"
#include "socket_common.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536); /* the loader may override */
	__type(key, __u64);         /* socket cookie */
	__type(value, __u32);       /* (a socket fd, as user space would write it) */
} periscope_sockhash SEC(".maps");

SEC("sockops")
int periscope_sockmap_add(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;
	if (op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET_ && skops->family != AF_INET6_)
		return 1;
	/* Also makes the kernel assign the cookie that sk_msg/sk_skb read back. */
	__u64 cookie = bpf_get_socket_cookie(skops);
	if (bpf_sock_hash_update(skops, &periscope_sockhash, &cookie, BPF_NOEXIST) != 0) {
		struct periscope_socket_stats *s = socket_stats();
		if (s)
			s->sockmap_full++;
	}
	return 1;
}

static __always_inline void fill_cookie(struct periscope_socket *r, struct sock *sk)
{
	r->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

/* The record of a message on a TCP socket, filled from its struct sock; 0 when it is not a
 * TCP socket or the ring buffer is full. */
static __always_inline struct periscope_socket *message_record(struct bpf_sock *bsk, __u8 event,
							       __u8 hook)
{
	if (!bsk)
		return 0;
	struct sock *sk = (struct sock *)bpf_skc_to_tcp_sock(bsk);
	if (!sk)
		return 0;
	struct periscope_socket *r = reserve_socket(event, hook);
	if (!r)
		return 0;
	fill_from_sock(r, sk);
	fill_cookie(r, sk);
	return r;
}

SEC("sk_msg")
int periscope_sk_msg(struct sk_msg_md *msg)
{
	struct periscope_socket *r =
		message_record(msg->sk, PERISCOPE_SOCK_SEND, PERISCOPE_SOCK_HOOK_SK_MSG);
	if (!r)
		return SK_PASS;
	__u64 id = bpf_get_current_pid_tgid();
	r->pid = (__u32)id;
	r->tgid = id >> 32;
	r->size = msg->size;
	submit_socket(r);
	return SK_PASS;
}

SEC("sk_skb/stream_verdict")
int periscope_sk_skb(struct __sk_buff *skb)
{
	struct periscope_socket *r =
		message_record(skb->sk, PERISCOPE_SOCK_RECV, PERISCOPE_SOCK_HOOK_SK_SKB);
	if (!r)
		return SK_PASS;
	r->size = skb->len;
	submit_socket(r);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
