// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup_skb.bpf.c — L3 packets and bytes per cgroup, direction and IP protocol,
 * counted in the kernel at the cgroup_skb ingress and egress hooks. The cgroup is
 * the one of the socket the packet belongs to (bpf_skb_cgroup_id), so the count
 * holds whichever namespace or device the traffic uses. Lengths are skb->len at
 * the hook: the IP packet, without an L2 header. Both programs always return 1
 * (allow): periscope never filters.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "periscope.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct periscope_cgroup_key);
	__type(value, struct periscope_cgroup_counters);
} periscope_cgroup_counters SEC(".maps");

/* Packets not counted because the hash was full (index 0). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} periscope_cgroup_full SEC(".maps");

static __always_inline void count(struct __sk_buff *skb, __u8 direction)
{
	struct periscope_cgroup_key key = {};
	__u16 proto = bpf_ntohs(skb->protocol);
	__u8 l4 = 0;
	if (proto == ETH_P_IP) {
		key.family = 2;
		bpf_skb_load_bytes(skb, 9, &l4, 1);
	} else if (proto == ETH_P_IPV6) {
		key.family = 10;
		bpf_skb_load_bytes(skb, 6, &l4, 1);
	}
	key.cgroup_id = bpf_skb_cgroup_id(skb);
	key.direction = direction;
	key.l4_proto = l4;
	struct periscope_cgroup_counters *c = bpf_map_lookup_elem(&periscope_cgroup_counters, &key);
	if (!c) {
		struct periscope_cgroup_counters zero = {};
		if (bpf_map_update_elem(&periscope_cgroup_counters, &key, &zero, BPF_NOEXIST) != 0 &&
		    bpf_map_lookup_elem(&periscope_cgroup_counters, &key) == 0) {
			__u32 i = 0;
			__u64 *full = bpf_map_lookup_elem(&periscope_cgroup_full, &i);
			if (full)
				(*full)++;
			return;
		}
		c = bpf_map_lookup_elem(&periscope_cgroup_counters, &key);
		if (!c)
			return;
	}
	c->packets++;
	c->bytes += skb->len;
}

SEC("cgroup_skb/ingress")
int periscope_cgroup_ingress(struct __sk_buff *skb)
{
	count(skb, PERISCOPE_DIR_INGRESS);
	return 1;
}

SEC("cgroup_skb/egress")
int periscope_cgroup_egress(struct __sk_buff *skb)
{
	count(skb, PERISCOPE_DIR_EGRESS);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
