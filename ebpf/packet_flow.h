/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * packet_flow.h — packet.bpf.c's flow table (PERISCOPE_CFG_FLOWS): packets and bytes per
 * namespace, device, direction, hook, locality and 5-tuple, in per-CPU slots
 * (struct periscope_flow_slot in periscope.h has the scheme). Included by packet.bpf.c only,
 * after periscope.h and packet_parse.h.
 *
 * Why slots and not a hash map: a BPF hash lookup cost ~40-70 ns per program run here
 * (BPF_PROG_TEST_RUN: counters only 75 ns a run, counters plus a per-CPU hash of flows
 * 145 ns), and a packet on a veth runs two programs. An array slot is an inlined address
 * computation; the hash below and a 64-byte compare are a few ns. A packet that a slot
 * takes is not counted in periscope_counters as well (one table per packet): user space
 * adds every drained flow to its device's totals.
 *
 * Whether a flow has a slot: flow_observe returns 1 if a slot took the packet, 0 if every
 * probed slot is taken by other flows of this generation (the caller counts the packet in
 * periscope_counters and in the device's flows_overflow_*): no count is lost silently.
 */
#ifndef PERISCOPE_PACKET_FLOW_H
#define PERISCOPE_PACKET_FLOW_H

/* Generation g writes periscope_flows_<g & 1>; the loader sets the slots per table
 * (flow_slots), or 1 when flows are off (an array costs its whole size at load). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct periscope_flow_slot);
} periscope_flows_0 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct periscope_flow_slot);
} periscope_flows_1 SEC(".maps");

/* The current generation (one u32), advanced by user space before each drain. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} periscope_flow_generation SEC(".maps");

/* 64-bit multiply-xorshift over the key's eight words: spreads flows that differ in one
 * port or address byte over the table; not a defence against chosen collisions (those
 * overflow, counted). */
static __always_inline __u64 flow_hash(const __u64 *w)
{
	__u64 h = 0;

#pragma unroll
	for (int i = 0; i < 8; i++) {
		h = (h ^ w[i]) * 0x9E3779B97F4A7C15ULL;
		h ^= h >> 29;
	}
	return h;
}

static __always_inline int flow_key_eq(const __u64 *a, const __u64 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) |
		(a[5] ^ b[5]) | (a[6] ^ b[6]) | (a[7] ^ b[7])) == 0;
}

/* Returns 1 if a slot of the current generation counted the packet, 0 if none had room. */
static __always_inline int flow_observe(const struct periscope_dev_key *dk,
					const struct periscope_packet *pkt, __u32 len)
{
	struct periscope_flow_key key = {
		.netns_cookie = dk->netns_cookie,
		.netns_inode = dk->netns_inode,
		.ifindex = dk->ifindex,
		.direction = dk->direction,
		.hook = dk->hook,
		.l4_proto = pkt->l4_proto,
		.ip_version = pkt->ethertype == ETH_P_IP ? 4 : pkt->ethertype == ETH_P_IPV6 ? 6 : 0,
		.sport = pkt->sport,
		.dport = pkt->dport,
		.locality = dk->locality,
	};
	const __u64 *w = (const __u64 *)&key;
	__u32 zero = 0, mask = periscope_config.flow_slot_mask;
	__u32 *genp, gen, idx;
	__u64 h, now;

	__builtin_memcpy(key.saddr, pkt->saddr, 16);
	__builtin_memcpy(key.daddr, pkt->daddr, 16);
	genp = bpf_map_lookup_elem(&periscope_flow_generation, &zero);
	if (!genp)
		return 0;
	gen = *genp;
	h = flow_hash(w);
	/* Tick-granular: first/last seen need no better (an exact clock read cost ~12 ns). */
	now = bpf_ktime_get_coarse_ns();
#pragma unroll
	for (int i = 0; i < PERISCOPE_FLOW_PROBES; i++) {
		struct periscope_flow_slot *s;

		/* Triangular steps (+0, +1, +3, +6, ...): distinct slots in a power-of-two table,
		 * without the runs of taken slots that linear probing grows. */
		idx = ((__u32)h + i * (i + 1) / 2) & mask;
		/* Two call sites, one map each: the verifier inlines a lookup only when a call
		 * site always sees the same map. The empty asm statements differ (their operand),
		 * so clang cannot sink the two calls into one call on a selected map (it did:
		 * every probe was then an out-of-line helper call). */
		if (gen & 1) {
			s = bpf_map_lookup_elem(&periscope_flows_1, &idx);
			asm volatile("" ::"i"(1));
		} else {
			s = bpf_map_lookup_elem(&periscope_flows_0, &idx);
			asm volatile("" ::"i"(0));
		}
		if (!s)
			return 0;
		if (s->value.generation != gen || !s->value.packets) {
			/* Free (a slot of an older generation, drained): take it. */
			__builtin_memcpy(&s->key, &key, sizeof(key));
			s->value.packets = 1;
			s->value.bytes = len;
			s->value.first_seen_ns = now;
			s->value.last_seen_ns = now;
			s->value.tcp_flags = pkt->tcp_flags;
			s->value.generation = gen;
			return 1;
		}
		if (flow_key_eq((const __u64 *)&s->key, w)) {
			s->value.packets++;
			s->value.bytes += len;
			s->value.last_seen_ns = now;
			s->value.tcp_flags |= pkt->tcp_flags;
			return 1;
		}
	}
	return 0;
}

#endif /* PERISCOPE_PACKET_FLOW_H */
