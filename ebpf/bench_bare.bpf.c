// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench_bare.bpf.c — the baseline of `bench-netdev`: the cheapest useful XDP
 * program, one per-CPU packet and byte counter and XDP_PASS. It parses nothing
 * and writes no record, so the cost of attaching any XDP program to a veth (the
 * driver then runs its own NAPI and converts each skb to an xdp_buff and back)
 * can be told apart from the cost of periscope's parsing, keying and records.
 * bench_bare_tc is the same for TCX (the `bare-tcx` mode): what the hook and any
 * program run cost on a veth, below which no TC program gets.
 * Not used by the agent.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct bench_bare_counter {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_bare_counter);
} bench_bare_counters SEC(".maps");

static __always_inline void count(__u64 len)
{
	__u32 zero = 0;
	struct bench_bare_counter *c = bpf_map_lookup_elem(&bench_bare_counters, &zero);

	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

SEC("xdp")
int bench_bare_xdp(struct xdp_md *ctx)
{
	count(ctx->data_end - ctx->data);
	return XDP_PASS;
}

SEC("classifier")
int bench_bare_tc(struct __sk_buff *skb)
{
	count(skb->len);
	return -1; /* TCX_NEXT: the packet goes on as if nothing were attached */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
