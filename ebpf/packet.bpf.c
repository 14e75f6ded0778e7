// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * packet.bpf.c — per-packet observation at XDP (ingress) and TC/TCX (ingress and
 * egress): exact counters per device, direction and L4 protocol in a per-CPU hash,
 * and a periscope_packet record in a ring buffer for every packet, for 1 in
 * periscope_config.sample_rate packets, or for none (counters only); with
 * PERISCOPE_CFG_DNS, TCP/UDP packets from or to port 53 always get a record, and
 * those with payload also a periscope_dns record carrying up to 512 bytes of it; with
 * PERISCOPE_CFG_BURSTS, microburst detection per device and direction (burst_observe,
 * periscope_burst records in the same ring buffer); with PERISCOPE_CFG_FLOWS, packets and
 * bytes per 5-tuple in per-CPU flow slots (packet_flow.h); with PERISCOPE_CFG_LOCALITY, each
 * packet classified local or forwarded (part of the counter key and of the record). The header
 * parser is in packet_parse.h, the burst detector in packet_burst.h, the flow table in
 * packet_flow.h, the locality in packet_locality.h (headers of this file only).
 *
 * The programs never change what happens to a packet: XDP returns XDP_PASS, TC
 * returns TCX_NEXT (== TC_ACT_UNSPEC), i.e. "no opinion, ask the next program",
 * so periscope never overrides the verdict of another program attached after it.
 *
 * Records are submitted with BPF_RB_NO_WAKEUP: a wake-up per record made a TCX
 * program cost 1.68x a bare one, against 1.06x without (docs/design.md); the
 * reader polls the ring buffer on a timer instead. A full ring buffer drops the
 * newest records and counts nothing itself, so a failed reservation is counted
 * here, per device and in total.
 *
 * The namespace's identity (cookie and inode, keys of the counters and fields of every
 * record) is the writable global periscope_netns, set per instance by user space.
 *
 * CO-RE: vmlinux.h marks every struct with preserve_access_index, so the reads of
 * the context (struct xdp_md, struct __sk_buff) and of the packet headers below
 * are BTF field relocations that the loader resolves against the running
 * kernel's BTF.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "periscope.h"
#include "packet_parse.h"

/* TC verdict "continue": TCX_NEXT for TCX links, TC_ACT_UNSPEC for cls_bpf; both -1. */
#define PERISCOPE_TC_CONTINUE (-1)

/* Set by the loader (EbpfLoader::override_global) before load. Its flags and sample rate
 * are what the programs use; its netns_cookie/netns_inode are not (see periscope_netns). */
const volatile struct periscope_config periscope_config = {
	.flags = PERISCOPE_CFG_RECORDS,
};

/* The namespace whose devices this instance is attached to: written by user space after the
 * load, before the first attach (the `.data` map, one 16-byte value). Not in .rodata like the
 * flags: the agent loads and verifies instances ahead of time, before it knows which new
 * namespace will take one (a load costs tens of ms, most of a new namespace's attach
 * latency). A .data global is read with a plain load from the map value, like .rodata, but
 * without the verifier knowing its value; nothing branches on it. */
volatile struct periscope_netns_slot periscope_netns SEC(".data") = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* bytes; the loader may override */
} periscope_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct periscope_dev_key);
	__type(value, struct periscope_dev_counters);
} periscope_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct periscope_stats);
} periscope_stats SEC(".maps");

/* Where the packet is and what the hook knows about it. */
struct pkt_ctx {
	void *data;
	void *data_end;
	__u32 len;
	__u32 ifindex;
	__u8 hook;
	__u8 direction;
	void *ctx;          /* struct xdp_md * or struct __sk_buff *, for DNS payload copies */
};

/* The counters of `key`, inserted zeroed if new; NULL (counted in periscope_stats) when the
 * table has no room. */
static __always_inline struct periscope_dev_counters *
dev_counters(const struct periscope_dev_key *key)
{
	struct periscope_dev_counters *c = bpf_map_lookup_elem(&periscope_counters, key);

	if (!c) {
		struct periscope_dev_counters zero = {};
		__u32 z = 0;
		struct periscope_stats *s;

		/* Another CPU may have inserted it meanwhile: EEXIST is fine. */
		bpf_map_update_elem(&periscope_counters, key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&periscope_counters, key);
		if (c)
			return c;
		s = bpf_map_lookup_elem(&periscope_stats, &z);
		if (s)
			s->counters_map_full++;
	}
	return c;
}

/* `c`: the key's counters if the packet looked them up (a packet a flow slot took did not). */
static __always_inline void count_lost_record(const struct periscope_dev_key *key,
					      struct periscope_dev_counters *c)
{
	__u32 zero = 0;
	struct periscope_stats *s;

	if (!c)
		c = dev_counters(key);
	if (c)
		c->records_lost++;
	s = bpf_map_lookup_elem(&periscope_stats, &zero);
	if (s)
		s->records_lost++;
}

static __always_inline int is_dns(const struct periscope_packet *rec)
{
	if (rec->l4_proto != IPPROTO_UDP_ && rec->l4_proto != IPPROTO_TCP_)
		return 0;
	if (rec->sport == 53 || rec->dport == 53)
		return 1;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u16 port = periscope_config.dns_ports[i];

		if (port && (rec->sport == port || rec->dport == port))
			return 1;
	}
	return 0;
}


/* The extra periscope_dns record of a DNS packet: its identity and up to
 * PERISCOPE_DNS_PAYLOAD bytes of its L4 payload. */
static __always_inline void emit_dns(struct pkt_ctx *p, const struct periscope_packet *pkt,
				     const struct periscope_dev_key *key,
				     struct periscope_dev_counters *c)
{
	struct periscope_dns *rec;
	int off = dns_payload_offset(p->data, p->data_end, pkt);
	__u32 n;
	long err;

	if (off < 0 || (__u32)off >= p->len)
		return; /* no payload: handshake, ACK, or headers we do not walk */
	n = p->len - off;
	if (n > PERISCOPE_DNS_PAYLOAD)
		n = PERISCOPE_DNS_PAYLOAD;
	/* 1 <= n <= 512 here, in a form the verifier can see (clang drops a plain n == 0
	 * check it can prove redundant, and the helpers reject a possibly zero size): the
	 * barrier keeps clang from folding the mask away. */
	asm volatile("" : "+r"(n));
	n = ((n - 1) & (PERISCOPE_DNS_PAYLOAD - 1)) + 1;
	rec = bpf_ringbuf_reserve(&periscope_events, sizeof(*rec), 0);
	if (!rec) {
		count_lost_record(key, c);
		return;
	}
	if (p->hook == PERISCOPE_HOOK_XDP)
		err = bpf_xdp_load_bytes(p->ctx, off, rec->payload, n);
	else
		err = bpf_skb_load_bytes(p->ctx, off, rec->payload, n);
	if (err) {
		bpf_ringbuf_discard(rec, BPF_RB_NO_WAKEUP);
		return;
	}
	rec->kind = PERISCOPE_RECORD_DNS;
	rec->version = PERISCOPE_DNS_VERSION;
	rec->hook = p->hook;
	rec->direction = p->direction;
	rec->ifindex = p->ifindex;
	rec->ts_boot_ns = bpf_ktime_get_boot_ns();
	rec->netns_cookie = periscope_netns.cookie;
	rec->netns_inode = periscope_netns.inode;
	rec->ethertype = pkt->ethertype;
	rec->l4_proto = pkt->l4_proto;
	rec->_pad0 = 0;
	rec->sport = pkt->sport;
	rec->dport = pkt->dport;
	rec->payload_len = n;
	rec->_pad1 = 0;
	__builtin_memcpy(rec->saddr, pkt->saddr, 16);
	__builtin_memcpy(rec->daddr, pkt->daddr, 16);
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
}

#include "packet_burst.h"
#include "packet_flow.h"
#include "packet_locality.h"

static __always_inline void observe(struct pkt_ctx *p)
{
	/* Parsed on the stack first: the counter key needs the L4 protocol, and
	 * whether a record is written depends on sampling and on the ports. */
	struct periscope_packet pkt = {};
	struct periscope_dev_key key = {
		.netns_cookie = periscope_netns.cookie,
		.netns_inode = periscope_netns.inode,
		.ifindex = p->ifindex,
		.direction = p->direction,
		.hook = p->hook,
	};
	struct periscope_dev_counters *c = NULL;
	struct periscope_packet *rec;
	__u32 flags = periscope_config.flags;
	__u32 rate = periscope_config.sample_rate;
	int emit = 0;

	parse(p->data, p->data_end, &pkt);
	key.l4_proto = pkt.l4_proto;
	if (flags & PERISCOPE_CFG_LOCALITY)
		key.locality = packet_locality(&pkt, key.netns_cookie, p->direction);

	/* A packet a flow slot takes is counted there only (user space adds the slots to the
	 * device's totals); the rest here. */
	if (!(flags & PERISCOPE_CFG_FLOWS) || !flow_observe(&key, &pkt, p->len)) {
		c = dev_counters(&key);
		if (c) {
			c->packets++;
			c->bytes += p->len;
			if (flags & PERISCOPE_CFG_FLOWS) {
				c->flows_overflow_packets++;
				c->flows_overflow_bytes += p->len;
			}
		}
	}
	if (flags & PERISCOPE_CFG_BURSTS)
		burst_observe(&key, p->len);

	if (flags & PERISCOPE_CFG_RECORDS)
		emit = rate <= 1 || bpf_get_prandom_u32() % rate == 0;
	if ((flags & PERISCOPE_CFG_DNS) && is_dns(&pkt)) {
		emit = 1;
		emit_dns(p, &pkt, &key, c);
	}
	if (!emit)
		return;

	rec = bpf_ringbuf_reserve(&periscope_events, sizeof(*rec), 0);
	if (!rec) {
		count_lost_record(&key, c);
		return;
	}
	pkt.kind = PERISCOPE_RECORD_PACKET;
	pkt.version = PERISCOPE_PACKET_VERSION;
	pkt.hook = p->hook;
	pkt.direction = p->direction;
	pkt.ifindex = p->ifindex;
	pkt.ts_boot_ns = bpf_ktime_get_boot_ns();
	pkt.netns_cookie = key.netns_cookie;
	pkt.netns_inode = key.netns_inode;
	pkt.len = p->len;
	pkt.locality = key.locality;
	/* Reserved memory is not zeroed: the copy writes every byte. */
	__builtin_memcpy(rec, &pkt, sizeof(*rec));
	bpf_ringbuf_submit(rec, BPF_RB_NO_WAKEUP);
}

SEC("xdp")
int periscope_xdp(struct xdp_md *ctx)
{
	struct pkt_ctx p = {
		.data = (void *)(long)ctx->data,
		.data_end = (void *)(long)ctx->data_end,
		.ifindex = ctx->ingress_ifindex,
		.hook = PERISCOPE_HOOK_XDP,
		.direction = PERISCOPE_DIR_INGRESS,
		.ctx = ctx,
	};

	/* The linear part only: with multi-buffer XDP (frags) the frame is longer, but
	 * this program is loaded without BPF_F_XDP_HAS_FRAGS, so there are none. */
	p.len = (__u32)(p.data_end - p.data);
	observe(&p);
	return XDP_PASS;
}

static __always_inline int tc_observe(struct __sk_buff *skb, __u8 direction)
{
	struct pkt_ctx p = {
		.data = (void *)(long)skb->data,
		.data_end = (void *)(long)skb->data_end,
		/* At TC ingress and egress, skb->data is at the MAC header: len is L2. */
		.len = skb->len,
		.ifindex = skb->ifindex,
		.hook = PERISCOPE_HOOK_TC,
		.direction = direction,
		.ctx = skb,
	};

	observe(&p);
	return PERISCOPE_TC_CONTINUE;
}

SEC("classifier")
int periscope_tc_ingress(struct __sk_buff *skb)
{
	return tc_observe(skb, PERISCOPE_DIR_INGRESS);
}

SEC("classifier")
int periscope_tc_egress(struct __sk_buff *skb)
{
	return tc_observe(skb, PERISCOPE_DIR_EGRESS);
}

/* The kernel's name for the SPDX line above. It must be GPL-compatible for GPL-only
 * helpers (none used here yet; tracing programs will need them). */
char LICENSE[] SEC("license") = "Dual BSD/GPL";
