// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * packet.bpf.c — per-packet observation at XDP (ingress) and TC/TCX (ingress and
 * egress): exact counters per device, direction and L4 protocol in a per-CPU hash,
 * and a periscope_packet record in a ring buffer for every packet, for 1 in
 * periscope_config.sample_rate packets, or for none (counters only); with
 * PERISCOPE_CFG_DNS, TCP/UDP packets from or to port 53 always get a record, and
 * those with payload also a periscope_dns record carrying up to 512 bytes of it; with
 * PERISCOPE_CFG_BURSTS, microburst detection per device and direction (burst_observe below,
 * periscope_burst records in the same ring buffer).
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

/* Not in vmlinux.h: those are #defines in the UAPI headers. */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ICMPV6_ 58
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

/* TC verdict "continue": TCX_NEXT for TCX links, TC_ACT_UNSPEC for cls_bpf; both -1. */
#define PERISCOPE_TC_CONTINUE (-1)

/* How many VLAN tags and IPv6 extension headers the parser walks. */
#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT_HEADERS 4

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

/* The headers a packet record needs, parsed from the linear part of the packet. */
static __always_inline void parse(void *data, void *data_end, struct periscope_packet *rec)
{
	struct ethhdr *eth = data;
	void *cursor;
	__u16 proto;
	__u8 l4 = 0;
	int frag = 0;

	if ((void *)(eth + 1) > data_end) {
		rec->flags |= PERISCOPE_PKT_TRUNCATED;
		return;
	}
	proto = eth->h_proto;
	cursor = eth + 1;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vh = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vh + 1) > data_end) {
			rec->ethertype = bpf_ntohs(proto);
			rec->flags |= PERISCOPE_PKT_TRUNCATED;
			return;
		}
		if (!(rec->flags & PERISCOPE_PKT_VLAN)) {
			rec->flags |= PERISCOPE_PKT_VLAN;
			rec->vlan_id = bpf_ntohs(vh->h_vlan_TCI) & 0x0FFF;
		}
		proto = vh->h_vlan_encapsulated_proto;
		cursor = vh + 1;
	}
	rec->ethertype = bpf_ntohs(proto);
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		/* More tags than MAX_VLAN_TAGS. */
		rec->flags |= PERISCOPE_PKT_TRUNCATED;
		return;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cursor;
		__u8 ihl;

		if ((void *)(ip + 1) > data_end) {
			rec->flags |= PERISCOPE_PKT_TRUNCATED;
			return;
		}
		/* version/ihl is a bitfield in vmlinux.h: read the byte. */
		ihl = (*(__u8 *)ip & 0x0F) * 4;
		l4 = ip->protocol;
		__builtin_memcpy(rec->saddr, &ip->saddr, 4);
		__builtin_memcpy(rec->daddr, &ip->daddr, 4);
		if (ip->frag_off & bpf_htons(IP_OFFSET))
			frag = 1;
		if (ihl < sizeof(*ip)) {
			rec->l4_proto = l4;
			rec->flags |= PERISCOPE_PKT_TRUNCATED;
			return;
		}
		cursor = (void *)ip + ihl;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cursor;

		if ((void *)(ip6 + 1) > data_end) {
			rec->flags |= PERISCOPE_PKT_TRUNCATED;
			return;
		}
		l4 = ip6->nexthdr;
		__builtin_memcpy(rec->saddr, &ip6->saddr, 16);
		__builtin_memcpy(rec->daddr, &ip6->daddr, 16);
		cursor = ip6 + 1;

#pragma unroll
		for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
			struct ipv6_opt_hdr *opt = cursor;

			if (l4 != 0 /* hop-by-hop */ && l4 != 43 /* routing */ &&
			    l4 != 44 /* fragment */ && l4 != 60 /* destination */)
				break;
			if ((void *)(opt + 1) > data_end) {
				rec->l4_proto = l4;
				rec->flags |= PERISCOPE_PKT_TRUNCATED;
				return;
			}
			if (l4 == 44) {
				struct frag_hdr *fh = cursor;

				if ((void *)(fh + 1) > data_end) {
					rec->l4_proto = l4;
					rec->flags |= PERISCOPE_PKT_TRUNCATED;
					return;
				}
				if (fh->frag_off & bpf_htons(0xFFF8))
					frag = 1;
				cursor = fh + 1;
			} else {
				cursor += (opt->hdrlen + 1) * 8;
			}
			l4 = opt->nexthdr;
		}
		if (l4 == 0 || l4 == 43 || l4 == 44 || l4 == 60) {
			rec->l4_proto = l4;
			rec->flags |= PERISCOPE_PKT_TRUNCATED;
			return;
		}
	} else {
		return;
	}

	rec->l4_proto = l4;
	if (frag) {
		rec->flags |= PERISCOPE_PKT_FRAGMENT;
		return;
	}

	if (l4 == IPPROTO_TCP_) {
		struct tcphdr *th = cursor;

		if ((void *)(th + 1) > data_end) {
			rec->flags |= PERISCOPE_PKT_TRUNCATED;
			return;
		}
		rec->sport = bpf_ntohs(th->source);
		rec->dport = bpf_ntohs(th->dest);
		/* The flags are bitfields in vmlinux.h: byte 13 of the header. */
		rec->tcp_flags = *((__u8 *)th + 13);
	} else if (l4 == IPPROTO_UDP_) {
		struct udphdr *uh = cursor;

		if ((void *)(uh + 1) > data_end) {
			rec->flags |= PERISCOPE_PKT_TRUNCATED;
			return;
		}
		rec->sport = bpf_ntohs(uh->source);
		rec->dport = bpf_ntohs(uh->dest);
	} else if (l4 == IPPROTO_ICMP_ || l4 == IPPROTO_ICMPV6_) {
		__u8 *icmp = cursor;

		if ((void *)(icmp + 2) > data_end) {
			rec->flags |= PERISCOPE_PKT_TRUNCATED;
			return;
		}
		rec->sport = icmp[0]; /* type */
		rec->dport = icmp[1]; /* code */
	}
}

static __always_inline void count_lost_record(struct periscope_dev_counters *c)
{
	__u32 zero = 0;
	struct periscope_stats *s;

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

/* Where the L4 payload of a parsed TCP/UDP packet starts (bytes from the MAC header), or
 * -1: Ethernet, up to MAX_VLAN_TAGS tags, IPv4 with options or IPv6 without extension
 * headers (DNS never needs them). */
static __always_inline int dns_payload_offset(void *data, void *data_end,
					      const struct periscope_packet *pkt)
{
	__u32 off = sizeof(struct ethhdr);
	__u8 *b;

	if (pkt->flags & (PERISCOPE_PKT_TRUNCATED | PERISCOPE_PKT_FRAGMENT))
		return -1;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		__u16 *proto = data + off - 2;

		if ((void *)(proto + 1) > data_end)
			return -1;
		if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
			break;
		off += sizeof(struct vlan_hdr);
	}
	if (off > 64)
		return -1;
	b = data + off;
	if (pkt->ethertype == ETH_P_IP) {
		if ((void *)(b + 1) > data_end)
			return -1;
		off += (*b & 0x0F) * 4;
	} else if (pkt->ethertype == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = (void *)b;

		if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != pkt->l4_proto)
			return -1;
		off += sizeof(*ip6);
	} else {
		return -1;
	}
	if (off > 128)
		return -1;
	b = data + off;
	if (pkt->l4_proto == IPPROTO_UDP_)
		return off + sizeof(struct udphdr);
	if ((void *)(b + 13) > data_end)
		return -1;
	return off + (b[12] >> 4) * 4; /* TCP data offset */
}

/* The extra periscope_dns record of a DNS packet: its identity and up to
 * PERISCOPE_DNS_PAYLOAD bytes of its L4 payload. */
static __always_inline void emit_dns(struct pkt_ctx *p, const struct periscope_packet *pkt,
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
		count_lost_record(c);
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

/* ---- bursts (PERISCOPE_CFG_BURSTS) ------------------------------------------------------
 *
 * Per device, direction and hook, on each CPU: a ring of `buckets` buckets of `bucket_ns`
 * (the window) counting packets and bytes, kept as a running sum. A burst starts when the
 * window's count reaches the threshold (fixed, or k x a slowly moving baseline in adaptive
 * mode); its start is the oldest bucket of the run of "dense" buckets (each at least
 * threshold / buckets) that ends at the current one, so the packets that led up to the
 * detection are part of it. While it lasts, packets up to the last dense bucket count; it
 * ends when the window falls below threshold x low_permille / 1000 (hysteresis), at the
 * first packet after that (no timer: a burst followed by silence ends with the next packet).
 * The state is per CPU (no atomics); user space merges the CPUs' reports of one burst. */

#define BURST_MAX_BUCKETS 32

const volatile struct periscope_burst_config periscope_burst_config = {
	.bucket_ns = 100000,
	.buckets = 10,
	.thr_packets = 20,
	.low_permille = 500,
	.ewma_shift = 13,
};

struct burst_key {
	__u64 netns_cookie;
	__u32 netns_inode;
	__u32 ifindex;
	__u8 direction;
	__u8 hook;
	__u8 _pad[6];
};

struct burst_bucket {
	__u32 packets;
	__u32 bytes;
};

struct burst_state {
	__u64 cur;            /* bucket number (ts / bucket_ns) of the newest bucket */
	__u64 win_bytes;      /* sums over the window */
	__u32 win_packets;
	__u32 active;
	__u64 base_packets;   /* adaptive: EWMA of win_packets x 256 */
	__u64 base_bytes;     /* adaptive: EWMA of win_bytes x 256 */
	/* the open burst */
	__u64 start_ts;
	__u64 last_dense_ts;
	__u64 packets;        /* every packet since the start */
	__u64 bytes;
	__u64 dense_packets;  /* up to the last dense bucket */
	__u64 dense_bytes;
	__u64 peak_bytes;
	__u64 dense_thr_bytes;
	__u64 end_thr_bytes;
	__u32 peak_packets;
	__u32 dense_thr_packets;
	__u32 end_thr_packets;
	__u32 _pad;
	struct burst_bucket b[BURST_MAX_BUCKETS];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct burst_key);
	__type(value, struct burst_state);
} periscope_burst_state SEC(".maps");

/* One zeroed burst_state to insert from (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct burst_state);
} periscope_burst_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct periscope_burst_stats);
} periscope_burst_stats SEC(".maps");

static __always_inline int burst_dense(const struct burst_state *st, const struct burst_bucket *b)
{
	return (st->dense_thr_packets && b->packets >= st->dense_thr_packets) ||
	       (st->dense_thr_bytes && b->bytes >= st->dense_thr_bytes);
}

static __always_inline void burst_emit(const struct burst_key *key, const struct burst_state *st,
				       __u8 event, __u64 end_ts, __u64 packets, __u64 bytes)
{
	struct periscope_burst *r;
	__u32 zero = 0;

	r = bpf_ringbuf_reserve(&periscope_events, sizeof(*r), 0);
	if (!r) {
		struct periscope_burst_stats *s = bpf_map_lookup_elem(&periscope_burst_stats, &zero);

		if (s)
			s->records_lost++;
		return;
	}
	r->kind = PERISCOPE_RECORD_BURST;
	r->version = PERISCOPE_BURST_VERSION;
	r->event = event;
	r->direction = key->direction;
	r->hook = key->hook;
	r->_pad0[0] = 0;
	r->_pad0[1] = 0;
	r->_pad0[2] = 0;
	r->ifindex = key->ifindex;
	r->cpu = bpf_get_smp_processor_id();
	r->netns_cookie = key->netns_cookie;
	r->netns_inode = key->netns_inode;
	r->_pad1 = 0;
	r->start_ts_boot_ns = st->start_ts;
	r->end_ts_boot_ns = end_ts;
	r->packets = packets;
	r->bytes = bytes;
	r->peak_window_packets = st->peak_packets;
	r->window_ns = (__u32)(periscope_burst_config.bucket_ns * periscope_burst_config.buckets);
	r->peak_window_bytes = st->peak_bytes;
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

static __always_inline void burst_observe(const struct periscope_dev_key *dk, __u32 len)
{
	struct burst_key key = {
		.netns_cookie = dk->netns_cookie,
		.netns_inode = dk->netns_inode,
		.ifindex = dk->ifindex,
		.direction = dk->direction,
		.hook = dk->hook,
	};
	__u64 bucket_ns = periscope_burst_config.bucket_ns;
	__u32 n = periscope_burst_config.buckets;
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 bn, thr_b, steps;
	__u32 thr_p, idx, zero = 0;
	struct burst_state *st;
	struct burst_bucket *b;

	if (!bucket_ns || n < 2 || n > BURST_MAX_BUCKETS)
		return;
	st = bpf_map_lookup_elem(&periscope_burst_state, &key);
	if (!st) {
		struct burst_state *z = bpf_map_lookup_elem(&periscope_burst_zero, &zero);

		if (z)
			bpf_map_update_elem(&periscope_burst_state, &key, z, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&periscope_burst_state, &key);
		if (!st) {
			struct periscope_burst_stats *s =
				bpf_map_lookup_elem(&periscope_burst_stats, &zero);

			if (s)
				s->state_full++;
			return;
		}
		st->cur = now / bucket_ns;
	}

	/* Slide the window to the bucket of `now`, emptying the buckets it passes. */
	bn = now / bucket_ns;
	if (bn > st->cur) {
		steps = bn - st->cur;
		if (periscope_burst_config.mode == PERISCOPE_BURST_ADAPTIVE && !st->active) {
			/* The baseline follows the window's count (frozen during bursts). */
			__u32 sh = periscope_burst_config.ewma_shift & 31;
			__u64 w = steps > (1ULL << sh) ? (1ULL << sh) : steps;
			__s64 dp = ((__s64)st->win_packets << 8) - (__s64)st->base_packets;
			__s64 db = ((__s64)st->win_bytes << 8) - (__s64)st->base_bytes;

			st->base_packets += (dp * (__s64)w) >> sh;
			st->base_bytes += (db * (__s64)w) >> sh;
		}
		if (steps >= n) {
#pragma unroll
			for (int i = 0; i < BURST_MAX_BUCKETS; i++) {
				st->b[i].packets = 0;
				st->b[i].bytes = 0;
			}
			st->win_packets = 0;
			st->win_bytes = 0;
		} else {
			for (int i = 1; i < BURST_MAX_BUCKETS; i++) {
				if (i > steps)
					break;
				idx = ((st->cur + i) % n) & (BURST_MAX_BUCKETS - 1);
				st->win_packets -= st->b[idx].packets;
				st->win_bytes -= st->b[idx].bytes;
				st->b[idx].packets = 0;
				st->b[idx].bytes = 0;
			}
		}
		st->cur = bn;
	}
	idx = (bn % n) & (BURST_MAX_BUCKETS - 1);
	b = &st->b[idx];
	b->packets++;
	b->bytes += len;
	st->win_packets++;
	st->win_bytes += len;

	if (st->active) {
		st->packets++;
		st->bytes += len;
		if (burst_dense(st, b)) {
			st->dense_packets = st->packets;
			st->dense_bytes = st->bytes;
			st->last_dense_ts = now;
		}
		if (st->win_packets > st->peak_packets)
			st->peak_packets = st->win_packets;
		if (st->win_bytes > st->peak_bytes)
			st->peak_bytes = st->win_bytes;
		if ((!st->end_thr_packets || st->win_packets < st->end_thr_packets) &&
		    (!st->end_thr_bytes || st->win_bytes < st->end_thr_bytes)) {
			st->active = 0;
			burst_emit(&key, st, PERISCOPE_BURST_END, st->last_dense_ts,
				   st->dense_packets, st->dense_bytes);
		}
		return;
	}

	thr_p = periscope_burst_config.thr_packets;
	thr_b = periscope_burst_config.thr_bytes;
	if (periscope_burst_config.mode == PERISCOPE_BURST_ADAPTIVE) {
		__u64 k = periscope_burst_config.k_x256;
		__u64 ap = (k * st->base_packets) >> 16;
		__u64 ab = (k * st->base_bytes) >> 16;

		if (thr_p && ap > thr_p)
			thr_p = ap > 0xffffffffULL ? 0xffffffff : (__u32)ap;
		if (thr_b && ab > thr_b)
			thr_b = ab;
	}
	if (!((thr_p && st->win_packets >= thr_p) || (thr_b && st->win_bytes >= thr_b)))
		return;

	/* A burst: find where its run of dense buckets began. */
	st->active = 1;
	st->dense_thr_packets = thr_p ? (thr_p / n ? thr_p / n : 1) : 0;
	st->dense_thr_bytes = thr_b ? (thr_b / n ? thr_b / n : 1) : 0;
	st->end_thr_packets = (__u32)(((__u64)thr_p * periscope_burst_config.low_permille) / 1000);
	st->end_thr_bytes = (thr_b * periscope_burst_config.low_permille) / 1000;
	if (thr_p && !st->end_thr_packets)
		st->end_thr_packets = 1;
	if (thr_b && !st->end_thr_bytes)
		st->end_thr_bytes = 1;
	st->packets = 0;
	st->bytes = 0;
	st->start_ts = bn * bucket_ns;
	for (int i = 0; i < BURST_MAX_BUCKETS; i++) {
		struct burst_bucket *o;

		if (i >= n)
			break;
		idx = ((bn - i) % n) & (BURST_MAX_BUCKETS - 1);
		o = &st->b[idx];
		if (i > 0 && !burst_dense(st, o))
			break;
		st->packets += o->packets;
		st->bytes += o->bytes;
		st->start_ts = (bn - i) * bucket_ns;
	}
	st->dense_packets = st->packets;
	st->dense_bytes = st->bytes;
	st->last_dense_ts = now;
	st->peak_packets = st->win_packets;
	st->peak_bytes = st->win_bytes;
	burst_emit(&key, st, PERISCOPE_BURST_START, now, st->packets, st->bytes);
}

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
	struct periscope_dev_counters *c;
	struct periscope_packet *rec;
	__u32 flags = periscope_config.flags;
	__u32 rate = periscope_config.sample_rate;
	int emit = 0;

	parse(p->data, p->data_end, &pkt);
	key.l4_proto = pkt.l4_proto;

	c = bpf_map_lookup_elem(&periscope_counters, &key);
	if (!c) {
		struct periscope_dev_counters zero = {};

		/* Another CPU may have inserted it meanwhile: EEXIST is fine. */
		bpf_map_update_elem(&periscope_counters, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&periscope_counters, &key);
	}
	if (c) {
		c->packets++;
		c->bytes += p->len;
	} else {
		__u32 zero = 0;
		struct periscope_stats *s = bpf_map_lookup_elem(&periscope_stats, &zero);

		if (s)
			s->counters_map_full++;
	}
	if (flags & PERISCOPE_CFG_BURSTS)
		burst_observe(&key, p->len);

	if (flags & PERISCOPE_CFG_RECORDS)
		emit = rate <= 1 || bpf_get_prandom_u32() % rate == 0;
	if ((flags & PERISCOPE_CFG_DNS) && is_dns(&pkt)) {
		emit = 1;
		emit_dns(p, &pkt, c);
	}
	if (!emit)
		return;

	rec = bpf_ringbuf_reserve(&periscope_events, sizeof(*rec), 0);
	if (!rec) {
		count_lost_record(c);
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
