/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * packet_locality.h — part of packet.bpf.c (included once, after the maps it needs): whether
 * a packet is to or from the device's namespace's own stack (local) or forwarded through it
 * (routed or bridged), with PERISCOPE_CFG_LOCALITY.
 *
 * A received packet is local when its destination is an address of the device's namespace,
 * multicast or broadcast; a sent packet when its source is an address of the namespace. The
 * addresses are the hash periscope_local_addrs, shared by every instance and kept by user
 * space from rtnetlink. One hash lookup per IP packet (24-byte key). What it cannot know:
 * addresses rewritten by NAT after or before the hook (SNAT on egress makes a masqueraded
 * packet look local at the uplink; an un-DNATed reply arriving at the node's address looks
 * local there too), and packets in the few milliseconds between an address being added and
 * user space writing it here.
 */
#ifndef PERISCOPE_PACKET_LOCALITY_H
#define PERISCOPE_PACKET_LOCALITY_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	/* BPF_F_NO_PREALLOC: memory for the addresses there are, not for 16384 of them. */
	__uint(map_flags, 1);
	__type(key, struct periscope_local_key);
	__type(value, __u8);
} periscope_local_addrs SEC(".maps");

static __always_inline __u8 packet_locality(const struct periscope_packet *pkt, __u64 cookie,
					    __u8 direction)
{
	struct periscope_local_key k = { .netns_cookie = cookie };
	const __u8 *addr = direction == PERISCOPE_DIR_INGRESS ? pkt->daddr : pkt->saddr;

	if (pkt->ethertype == ETH_P_IP) {
		__u32 a4;

		__builtin_memcpy(&a4, addr, 4);
		if (a4 == 0)
			return PERISCOPE_LOCALITY_UNKNOWN; /* header cut off, or 0.0.0.0 */
		/* 224.0.0.0/4 multicast and 255.255.255.255: for every stack on the link. */
		if (addr[0] >= 224 && (addr[0] < 240 || a4 == 0xffffffff))
			return PERISCOPE_LOCALITY_LOCAL;
		__builtin_memcpy(k.addr, addr, 4);
	} else if (pkt->ethertype == ETH_P_IPV6) {
		if (addr[0] == 0xff)
			return PERISCOPE_LOCALITY_LOCAL; /* multicast */
		__builtin_memcpy(k.addr, addr, 16);
	} else {
		return PERISCOPE_LOCALITY_UNKNOWN;
	}
	return bpf_map_lookup_elem(&periscope_local_addrs, &k) ? PERISCOPE_LOCALITY_LOCAL
							       : PERISCOPE_LOCALITY_FORWARDED;
}

#endif /* PERISCOPE_PACKET_LOCALITY_H */
