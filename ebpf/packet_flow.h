/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * packet_flow.h — packet.bpf.c's flow table (PERISCOPE_CFG_FLOWS): packets and bytes per
 * namespace, device, direction, hook and 5-tuple in the per-CPU hash `periscope_flows`, so
 * that per-flow series cost a hash update per packet instead of a ring-buffer record.
 * Included by packet.bpf.c only, after periscope.h and packet_parse.h.
 *
 * The table is never evicted here: user space reads it every counters_interval and deletes
 * the entries idle for longer than its idle timeout (receivers/src/netdev/flows.rs). When an
 * insert finds the table full, the packet is counted in its device's flows_overflow_packets
 * and flows_overflow_bytes (as well as in packets/bytes, like every packet): no count is lost
 * silently, and a device's flows plus its overflow add up to its counters.
 */
#ifndef PERISCOPE_PACKET_FLOW_H
#define PERISCOPE_PACKET_FLOW_H

#ifndef EEXIST
#define EEXIST 17
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	/* Entries; the loader sets the configured table size, or 1 when flows are off (a
	 * preallocated hash costs its whole size at load). */
	__uint(max_entries, 16384);
	__type(key, struct periscope_flow_key);
	__type(value, struct periscope_flow_value);
} periscope_flows SEC(".maps");

static __always_inline void flow_add(struct periscope_flow_value *v, __u32 len, __u8 tcp_flags,
				     __u64 now)
{
	/* Another CPU inserted the entry: this CPU's value starts zeroed. */
	if (!v->first_seen_ns)
		v->first_seen_ns = now;
	v->packets++;
	v->bytes += len;
	v->last_seen_ns = now;
	v->tcp_flags |= tcp_flags;
}

static __always_inline void flow_observe(const struct periscope_dev_key *dk,
					 const struct periscope_packet *pkt, __u32 len,
					 struct periscope_dev_counters *c)
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
	};
	struct periscope_flow_value *v;
	/* Tick-granular: first/last seen need no better, and an exact clock read (kvm-clock) was
	 * ~12 ns of the ~190 ns a flow update costs a program run (bpf_stats). */
	__u64 now = bpf_ktime_get_coarse_ns();
	long err;

	__builtin_memcpy(key.saddr, pkt->saddr, 16);
	__builtin_memcpy(key.daddr, pkt->daddr, 16);
	v = bpf_map_lookup_elem(&periscope_flows, &key);
	if (v) {
		flow_add(v, len, pkt->tcp_flags, now);
		return;
	}
	{
		struct periscope_flow_value init = {
			.packets = 1,
			.bytes = len,
			.first_seen_ns = now,
			.last_seen_ns = now,
			.tcp_flags = pkt->tcp_flags,
		};

		err = bpf_map_update_elem(&periscope_flows, &key, &init, BPF_NOEXIST);
	}
	if (!err)
		return;
	if (err == -EEXIST) {
		/* Another CPU inserted it meanwhile. */
		v = bpf_map_lookup_elem(&periscope_flows, &key);
		if (v) {
			flow_add(v, len, pkt->tcp_flags, now);
			return;
		}
	}
	/* -E2BIG: the table is full (or the entry went away again: user space evicted it). */
	if (c) {
		c->flows_overflow_packets++;
		c->flows_overflow_bytes += len;
	}
}

#endif /* PERISCOPE_PACKET_FLOW_H */
