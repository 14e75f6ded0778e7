/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * packet_parse.h — packet.bpf.c's parser: the Ethernet, VLAN, IPv4/IPv6 and L4 headers a
 * periscope_packet record carries (parse), and where a DNS packet's payload starts
 * (dns_payload_offset). Included by packet.bpf.c only, after vmlinux.h, the libbpf headers
 * and periscope.h.
 */
#ifndef PERISCOPE_PACKET_PARSE_H
#define PERISCOPE_PACKET_PARSE_H

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

/* How many VLAN tags and IPv6 extension headers the parser walks. */
#define MAX_VLAN_TAGS 2
#define MAX_IPV6_EXT_HEADERS 4

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

#endif /* PERISCOPE_PACKET_PARSE_H */
