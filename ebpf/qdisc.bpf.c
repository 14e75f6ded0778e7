// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * qdisc.bpf.c — how long each packet waits in a device's transmit queue (its root
 * qdisc), and the drops of queueing disciplines:
 *
 *   tp_btf/qdisc_enqueue  the packet entered the root qdisc (fires only when the
 *                         qdisc accepted it): its skb pointer -> enqueue time and
 *                         the qdisc's backlog, in an LRU hash
 *   tp_btf/qdisc_dequeue  the qdisc handed packets to the driver (a bulk dequeue
 *                         chains them through skb->next): each one found in the
 *                         hash gives a record with its delay
 *   tp_btf/kfree_skb      a drop whose reason user space selected (the qdisc
 *                         reasons): a record with the device and reason
 *
 * Tracepoints are global: one attachment sees every device of every namespace; the
 * records carry the device's namespace (dev->nd_net) and name. Devices without a
 * queue (noqueue: veth, bridge, lo by default) never enqueue, so they cost nothing
 * here and have no samples; packets a lockless qdisc sends straight to the driver
 * when it is empty (TCQ_F_CAN_BYPASS, pfifo_fast) are not enqueued either.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "periscope.h"

/* The most packets of one bulk dequeue that are matched (the rest are counted as unmatched
 * and age out of the LRU). */
#define MAX_BULK 16

/* Set by the loader before load (EbpfLoader::override_global). */
const volatile struct periscope_queue_config periscope_queue_config = {
	.flags = PERISCOPE_QUEUE_CFG_DROPS,
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

/* A packet in a queue: when it entered, and the backlog it made. */
struct queued {
	__u64 ts_boot_ns;
	__u32 backlog_bytes;
	__u32 backlog_packets;
};

/* skb pointer -> struct queued. LRU: entries of packets freed inside a qdisc (a
 * reset, a drop at dequeue) make room for new ones instead of filling it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* the loader sets max_queued */
	__type(key, __u64);
	__type(value, struct queued);
} periscope_queued SEC(".maps");

static __always_inline void count_lost_record(void)
{
	__u32 zero = 0;
	struct periscope_socket_stats *s = bpf_map_lookup_elem(&periscope_socket_stats, &zero);
	if (s)
		s->records_lost++;
}

/* Dequeued packets that give no sample: counted, never silent. */
static __always_inline void count_unmatched(__u64 n)
{
	__u32 zero = 0;
	struct periscope_socket_stats *s = bpf_map_lookup_elem(&periscope_socket_stats, &zero);
	if (s)
		s->unmatched += n;
}

/* The device's namespace and name. */
static __always_inline void fill_device(struct periscope_queue *r, struct net_device *dev)
{
	r->ifindex = BPF_CORE_READ(dev, ifindex);
	r->netns_inode = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	r->netns_cookie = BPF_CORE_READ(dev, nd_net.net, net_cookie);
	bpf_probe_read_kernel(r->ifname, sizeof(r->ifname), &dev->name);
}

static __always_inline struct periscope_queue *reserve(__u8 event, __u64 now)
{
	struct periscope_queue *r = bpf_ringbuf_reserve(&periscope_events, sizeof(*r), 0);
	if (!r) {
		count_lost_record();
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = PERISCOPE_RECORD_QUEUE;
	r->version = PERISCOPE_QUEUE_VERSION;
	r->event = event;
	r->ts_boot_ns = now;
	return r;
}

SEC("tp_btf/qdisc_enqueue")
int BPF_PROG(periscope_qdisc_enqueue, struct Qdisc *q, const struct netdev_queue *txq,
	     struct sk_buff *skb)
{
	__u64 key = (__u64)skb;
	struct queued v = {
		.ts_boot_ns = bpf_ktime_get_boot_ns(),
		.backlog_bytes = BPF_CORE_READ(q, qstats.backlog),
		.backlog_packets = BPF_CORE_READ(q, q.qlen),
	};
	bpf_map_update_elem(&periscope_queued, &key, &v, BPF_ANY);
	return 0;
}

/* One dequeued packet: a record if its enqueue was seen. */
static __always_inline void dequeued(struct sk_buff *skb, __u64 now)
{
	__u64 key = (__u64)skb;
	struct queued *v = bpf_map_lookup_elem(&periscope_queued, &key);
	if (!v) {
		count_unmatched(1);
		return;
	}
	struct queued seen = *v;
	bpf_map_delete_elem(&periscope_queued, &key);
	struct periscope_queue *r = reserve(PERISCOPE_QUEUE_DEQUEUE, now);
	if (!r)
		return;
	r->delay_ns = now > seen.ts_boot_ns ? now - seen.ts_boot_ns : 0;
	r->backlog_bytes = seen.backlog_bytes;
	r->backlog_packets = seen.backlog_packets;
	r->len = BPF_CORE_READ(skb, len);
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (dev)
		fill_device(r, dev);
	/* The kernel's adaptive wake-up (as the socket objects): only a record written while
	 * the reader had caught up wakes it; it then reads in batches every poll_interval. */
	bpf_ringbuf_submit(r, 0);
}

SEC("tp_btf/qdisc_dequeue")
int BPF_PROG(periscope_qdisc_dequeue, struct Qdisc *q, const struct netdev_queue *txq,
	     int packets, struct sk_buff *skb)
{
	if (!skb)
		return 0;
	__u64 now = bpf_ktime_get_boot_ns();
	struct sk_buff *s = skb;
	for (int i = 0; i < MAX_BULK; i++) {
		dequeued(s, now);
		if (i + 1 >= packets)
			break;
		s = BPF_CORE_READ(s, next);
		if (!s)
			break;
	}
	if (packets > MAX_BULK)
		count_unmatched(packets - MAX_BULK);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(periscope_queue_drop, struct sk_buff *skb, void *location,
	     enum skb_drop_reason reason)
{
	if (!(periscope_queue_config.flags & PERISCOPE_QUEUE_CFG_DROPS))
		return 0;
	__u32 why = (__u32)reason;
	if (why >= 256)
		return 0;
	if (!(periscope_queue_config.drop_reasons[(why >> 6) & 3] & (1ULL << (why & 63))))
		return 0;
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	if (!dev)
		return 0;
	/* A packet dropped from inside a queue leaves no entry behind. */
	__u64 key = (__u64)skb;
	bpf_map_delete_elem(&periscope_queued, &key);
	struct periscope_queue *r = reserve(PERISCOPE_QUEUE_DROP, bpf_ktime_get_boot_ns());
	if (!r)
		return 0;
	r->reason = why;
	r->len = BPF_CORE_READ(skb, len);
	r->backlog_bytes = BPF_CORE_READ(dev, qdisc, qstats.backlog);
	r->backlog_packets = BPF_CORE_READ(dev, qdisc, q.qlen);
	fill_device(r, dev);
	bpf_ringbuf_submit(r, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
