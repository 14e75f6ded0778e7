/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * packet_burst.h — packet.bpf.c's microburst detector (PERISCOPE_CFG_BURSTS): its
 * configuration, per-CPU state maps and burst_observe. Included by packet.bpf.c only, after
 * the ring buffer map (periscope_events) it writes periscope_burst records to.
 */
#ifndef PERISCOPE_PACKET_BURST_H
#define PERISCOPE_PACKET_BURST_H

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

#endif /* PERISCOPE_PACKET_BURST_H */
