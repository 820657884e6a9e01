/*
 * One-pass kernels of the numeric profile (analytics/profile.py, _NumericAccumulator).
 *
 * They compute exactly what the NumPy route computes, bit for bit, on one batch of one column:
 * counts of NaN and infinities, min and max, the sum and the sum of squared deviations in NumPy's
 * own pairwise order (so means and variances do not depend on which route ran), and the histogram
 * counts through the same order-key buckets (_KeyMap) and bin table (_Binner). Where the NumPy route
 * makes five to eight passes over a batch with a temporary array each, these make two or three over
 * a batch that stays in the CPU cache.
 *
 * Built by `make setup` (cc -O3 -ffp-contract=off: no fused multiply-add, which would change the
 * rounding of the squared deviations) and loaded with ctypes, which releases the GIL during a call,
 * so the profile's threads run them in parallel. Without the library the NumPy route runs.
 */
#include <stdint.h>
#include <string.h>

#define PW_BLOCKSIZE 128

/* Hot loops are compiled twice, for AVX2 and for the baseline, and picked when the library loads. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* Each term of the sum of squared deviations, rounded as np.square(a - mean) rounds it. */
static inline double sq(double x, double mean)
{
    double d = x - mean;
    return d * d;
}

#define TERM_VALUE(x, mean) (x)
#define TERM_SQUARED_DEVIATION(x, mean) sq((x), (mean))

/*
 * NumPy's pairwise summation (numpy/_core/src/umath/loops_utils.h.src, pairwise_sum_DOUBLE) of
 * TERM(a[i], mean). One definition serves the sum and the sum of squared deviations, so their order
 * of additions, which sets their rounding, cannot drift apart.
 */
#define DEFINE_PAIRWISE(NAME, TERM)                                                                     \
    VECTOR_CLONES                                                                                       \
    static double NAME(const double *a, int64_t n, double mean)                                        \
    {                                                                                                   \
        (void)mean;                                                                                     \
        if (n < 8) {                                                                                    \
            double res = 0.;                                                                            \
            for (int64_t i = 0; i < n; i++) {                                                           \
                res += TERM(a[i], mean);                                                                \
            }                                                                                           \
            return res;                                                                                 \
        }                                                                                               \
        else if (n <= PW_BLOCKSIZE) {                                                                   \
            double r[8];                                                                                \
            int64_t i;                                                                                  \
            for (int j = 0; j < 8; j++) {                                                               \
                r[j] = TERM(a[j], mean);                                                                \
            }                                                                                           \
            for (i = 8; i < n - (n % 8); i += 8) {                                                      \
                for (int j = 0; j < 8; j++) {                                                           \
                    r[j] += TERM(a[i + j], mean);                                                       \
                }                                                                                       \
            }                                                                                           \
            double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));             \
            for (; i < n; i++) {                                                                        \
                res += TERM(a[i], mean);                                                                \
            }                                                                                           \
            return res;                                                                                 \
        }                                                                                               \
        else {                                                                                          \
            int64_t n2 = n / 2;                                                                         \
            n2 -= n2 % 8;                                                                               \
            return NAME(a, n2, mean) + NAME(a + n2, n - n2, mean);                                      \
        }                                                                                               \
    }

DEFINE_PAIRWISE(pairwise_sum, TERM_VALUE)
DEFINE_PAIRWISE(pairwise_sq, TERM_SQUARED_DEVIATION)

/*
 * Counts of the non-finite values of x[0..n): out_counts[0] NaN, [1] -inf, [2] +inf.
 * Returns how many values are not finite.
 */
int64_t mms_nonfinite(const double *x, int64_t n, int64_t *out_counts)
{
    int64_t nan = 0, neg = 0, pos = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        if (v - v != 0.0) { /* NaN or an infinity: inf - inf is NaN */
            if (v != v) {
                nan++;
            }
            else if (v < 0) {
                neg++;
            }
            else {
                pos++;
            }
        }
    }
    out_counts[0] = nan;
    out_counts[1] = neg;
    out_counts[2] = pos;
    return nan + neg + pos;
}

/* Copies the finite values of x[0..n) to out (in order); returns how many. */
int64_t mms_compact_finite(const double *x, int64_t n, double *out)
{
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        if (v - v == 0.0) {
            out[k++] = v;
        }
    }
    return k;
}

/* Min and max of n >= 1 values with no NaN, in 8 lanes (vectorised: minpd computes a < b ? a : b). */
VECTOR_CLONES
static void range_of(const double *x, int64_t n, double *out_low, double *out_high)
{
    double lo[8], hi[8];
    for (int j = 0; j < 8; j++) {
        lo[j] = hi[j] = x[0];
    }
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; j++) {
            double v = x[i + j];
            lo[j] = v < lo[j] ? v : lo[j];
            hi[j] = v > hi[j] ? v : hi[j];
        }
    }
    for (; i < n; i++) {
        double v = x[i];
        lo[0] = v < lo[0] ? v : lo[0];
        hi[0] = v > hi[0] ? v : hi[0];
    }
    double low = lo[0], high = hi[0];
    for (int j = 1; j < 8; j++) {
        low = lo[j] < low ? lo[j] : low;
        high = hi[j] > high ? hi[j] : high;
    }
    *out_low = low;
    *out_high = high;
}

/*
 * Sum (NumPy's pairwise order), min and max of n >= 1 values: out[0], out[1], out[2]. Returns 1
 * when the sum is finite, which proves every value finite (a NaN or an infinity would propagate),
 * else 0 without the min and max: the caller then drops the non-finite values and asks again.
 */
int mms_sum_range(const double *x, int64_t n, double *out)
{
    double total = pairwise_sum(x, n, 0.0);
    out[0] = total;
    if (total - total != 0.0) {
        return 0;
    }
    range_of(x, n, &out[1], &out[2]);
    return 1;
}

/* Min and max of n >= 1 finite values: out[1], out[2] (for a sum that overflowed, out[0] is kept). */
void mms_range(const double *x, int64_t n, double *out)
{
    range_of(x, n, &out[1], &out[2]);
}

/* Finds v's bin when an edge lies inside its bucket: searchsorted(edges, v, side="left"). */
static inline int64_t search_left(const double *edges, int64_t n_edges, double v)
{
    int64_t lo = 0, hi = n_edges;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (edges[mid] < v) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

#define LANES 4
#define MAX_LANE_BINS 4096
#define CHUNK 2048


/*
 * Stage one (vectorised): offsets[i] = bucket_of(x[i]) - base, clipped to 0..limit - 1.
 * The sign mask stands in for bits >> 63 (the same -1/0), which AVX2 has no 64-bit shift for.
 */
VECTOR_CLONES
static void offsets_of(const double *x, int64_t n, int shift, int64_t gap_low, int64_t gap_size, int64_t base,
                       int64_t limit, int32_t *offsets)
{
    for (int64_t i = 0; i < n; i++) {
        double v = x[i] + 0.0;
        int64_t bits;
        memcpy(&bits, &v, sizeof bits);
        int64_t sign = bits < 0 ? -1 : 0;
        uint64_t key = (uint64_t)(bits ^ (sign | INT64_MIN));
        int64_t shifted = (int64_t)(key >> shift);
        int64_t moved = shifted - gap_size;
        moved = moved > gap_low + 1 ? moved : gap_low + 1;
        shifted = (gap_size && shifted > gap_low) ? moved : shifted;
        int64_t offset = shifted - base;
        offset = offset < 0 ? 0 : offset;
        offset = offset > limit - 1 ? limit - 1 : offset;
        offsets[i] = (int32_t)offset;
    }
}

/*
 * _Binner.counts_and_range's histogram of n finite values, added to bins[0..n_bins): a value's
 * bucket (clipped to the table) gives its bin, or n_bins when an edge lies inside the bucket, and
 * then the bin is searchsorted(edges, v, side="left"). The buckets are computed a chunk at a time in
 * vector registers; the table holds 16-bit bins (n_bins < 65535) so it stays in the L1 cache; and
 * consecutive values count into LANES separate histograms, so an increment never waits for the one
 * before it on the same bin.
 * With with_m2, returns the sum of squared deviations from mean (NumPy's pairwise order).
 */
double mms_bin_table(const double *x, int64_t n, int shift, int64_t gap_low, int64_t gap_size, int64_t base,
                     const uint16_t *table, int64_t table_len, int64_t n_bins, const double *edges,
                     int64_t n_edges, int64_t *bins, double mean, int with_m2)
{
    int32_t offsets[CHUNK];
    uint32_t lanes[LANES][MAX_LANE_BINS + 1];
    if (n_bins > MAX_LANE_BINS) {
        for (int64_t start = 0; start < n; start += CHUNK) {
            int64_t m = n - start < CHUNK ? n - start : CHUNK;
            offsets_of(x + start, m, shift, gap_low, gap_size, base, table_len, offsets);
            for (int64_t i = 0; i < m; i++) {
                int64_t bin = table[offsets[i]];
                bins[bin == n_bins ? search_left(edges, n_edges, x[start + i]) : bin]++;
            }
        }
        return with_m2 ? pairwise_sq(x, n, mean) : 0.0;
    }
    for (int l = 0; l < LANES; l++) {
        memset(lanes[l], 0, sizeof(uint32_t) * (size_t)(n_bins + 1));
    }
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t m = n - start < CHUNK ? n - start : CHUNK;
        offsets_of(x + start, m, shift, gap_low, gap_size, base, table_len, offsets);
        /* Slot n_bins counts the values of buckets an edge cuts. */
        uint32_t cut_before = lanes[0][n_bins] + lanes[1][n_bins] + lanes[2][n_bins] + lanes[3][n_bins];
        int64_t i = 0;
        for (; i + LANES <= m; i += LANES) {
            for (int l = 0; l < LANES; l++) {
                lanes[l][table[offsets[i + l]]]++;
            }
        }
        for (; i < m; i++) {
            lanes[0][table[offsets[i]]]++;
        }
        if (lanes[0][n_bins] + lanes[1][n_bins] + lanes[2][n_bins] + lanes[3][n_bins] != cut_before) {
            /* Few in general (the buckets of the edges): each is placed by a binary search. */
            for (i = 0; i < m; i++) {
                if (table[offsets[i]] == n_bins) {
                    bins[search_left(edges, n_edges, x[start + i])]++;
                }
            }
        }
    }
    for (int l = 0; l < LANES; l++) {
        for (int64_t b = 0; b < n_bins; b++) {
            bins[b] += lanes[l][b];
        }
    }
    return with_m2 ? pairwise_sq(x, n, mean) : 0.0;
}

/*
 * _FineHistogram.add's counts: bucket - base of n finite values (all inside the map's range), added
 * to counts[0..n_counts) (out-of-range offsets are clipped, which the caller's widening rules out).
 * With with_m2, returns the sum of squared deviations from mean.
 */
double mms_bin_fine(const double *x, int64_t n, int shift, int64_t gap_low, int64_t gap_size, int64_t base,
                    int64_t *counts, int64_t n_counts, double mean, int with_m2)
{
    int32_t offsets[CHUNK];
    for (int64_t start = 0; start < n; start += CHUNK) {
        int64_t m = n - start < CHUNK ? n - start : CHUNK;
        offsets_of(x + start, m, shift, gap_low, gap_size, base, n_counts, offsets);
        for (int64_t i = 0; i < m; i++) {
            counts[offsets[i]]++;
        }
    }
    return with_m2 ? pairwise_sq(x, n, mean) : 0.0;
}

/* The sum of squared deviations of x[0..n) from mean (NumPy's pairwise order). */
double mms_m2(const double *x, int64_t n, double mean)
{
    return pairwise_sq(x, n, mean);
}

/*
 * _DistinctSketch.add: each finite value's 64-bit mix (splitmix64's finaliser of its bits, -0.0
 * folded into 0.0) picks one of the 2**precision registers by its top bits and offers the rank of
 * the rest (leading zeros of the remaining 64 - precision bits, plus one); a register keeps the
 * largest rank offered.
 */
void mms_hll_add(const double *x, int64_t n, int precision, int64_t *registers)
{
    const int rest_bits = 64 - precision;
    const uint64_t rest_mask = (UINT64_C(1) << rest_bits) - 1;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i] + 0.0;
        uint64_t mix;
        memcpy(&mix, &v, sizeof mix);
        mix ^= mix >> 30;
        mix *= UINT64_C(0xBF58476D1CE4E5B9);
        mix ^= mix >> 27;
        mix *= UINT64_C(0x94D049BB133111EB);
        mix ^= mix >> 31;
        uint64_t reg = mix >> rest_bits;
        uint64_t rest = mix & rest_mask;
        /* rank = rest_bits + 1 - bit length of rest (rest_bits + 1 when rest is 0) */
        int64_t rank = rest ? (int64_t)__builtin_clzll(rest) - (64 - rest_bits) + 1 : rest_bits + 1;
        if (rank > registers[reg]) {
            registers[reg] = rank;
        }
    }
}

/*
 * The label join of the performance partials (analytics/_arrow_partials.py, _label_positions): for
 * each request id, the position of the label with the same id, or -1 (no label, or a NULL id).
 *
 * Strings come as Arrow lays them out: 64-bit offsets into a data buffer and a validity byte per row
 * (NULL: every row valid). `table` is 2**bits zeroed slots, at least twice the labels: each holds
 * the top 32 bits of a label's hash and its position plus one, so a probe compares the bytes only
 * when the hashes agree. Returns 0, or 1 when a valid id appears twice among the labels (the query's
 * join would then repeat the request's row, which the caller leaves to the query).
 */
static inline uint64_t id_hash(const uint8_t *p, int64_t len)
{
    uint64_t h = (uint64_t)len * UINT64_C(0x9E3779B97F4A7C15);
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * UINT64_C(0xBF58476D1CE4E5B9);
        h ^= h >> 31;
    }
    if (len > 0) {
        uint64_t w = 0;
        memcpy(&w, p, (size_t)len);
        h = (h ^ w) * UINT64_C(0xBF58476D1CE4E5B9);
        h ^= h >> 31;
    }
    h ^= h >> 30;
    h *= UINT64_C(0xBF58476D1CE4E5B9);
    h ^= h >> 27;
    h *= UINT64_C(0x94D049BB133111EB);
    h ^= h >> 31;
    return h;
}

/* The slot holding the label with these bytes, or the empty slot where it would go. */
static inline uint64_t id_slot(const uint64_t *table, uint64_t mask, uint64_t h, const uint8_t *p, int64_t len,
                               const int64_t *label_offsets, const uint8_t *label_data)
{
    const uint64_t tag = h >> 32;
    for (uint64_t slot = h & mask;; slot = (slot + 1) & mask) {
        const uint64_t held = table[slot];
        if (held == 0) {
            return slot;
        }
        if ((held >> 32) == tag) {
            const int64_t j = (int64_t)(held & UINT64_C(0xFFFFFFFF)) - 1;
            if (label_offsets[j + 1] - label_offsets[j] == len
                && memcmp(label_data + label_offsets[j], p, (size_t)len) == 0) {
                return slot;
            }
        }
    }
}

int mms_join_ids(const int64_t *offsets, const uint8_t *data, const uint8_t *valid, int64_t n,
                 const int64_t *label_offsets, const uint8_t *label_data, const uint8_t *label_valid,
                 int64_t n_labels, uint64_t *table, int bits, int64_t *out_position)
{
    const uint64_t mask = (UINT64_C(1) << bits) - 1;
    for (int64_t i = 0; i < n_labels; i++) {
        if (label_valid && !label_valid[i]) {
            continue;
        }
        const uint8_t *p = label_data + label_offsets[i];
        const int64_t len = label_offsets[i + 1] - label_offsets[i];
        const uint64_t h = id_hash(p, len);
        const uint64_t slot = id_slot(table, mask, h, p, len, label_offsets, label_data);
        if (table[slot] != 0) {
            return 1;
        }
        table[slot] = ((h >> 32) << 32) | (uint64_t)(i + 1);
    }
    /* Requests in blocks: every slot of a block is fetched before the first is probed, so the
     * cache misses of the table (megabytes, read at random) overlap instead of queueing. */
    enum { BLOCK = 16 };
    uint64_t hashes[BLOCK];
    for (int64_t first = 0; first < n; first += BLOCK) {
        const int64_t end = first + BLOCK < n ? first + BLOCK : n;
        for (int64_t i = first; i < end; i++) {
            hashes[i - first] = id_hash(data + offsets[i], offsets[i + 1] - offsets[i]);
            __builtin_prefetch(&table[hashes[i - first] & mask]);
        }
        for (int64_t i = first; i < end; i++) {
            out_position[i] = -1;
            if (valid && !valid[i]) {
                continue;
            }
            const uint8_t *p = data + offsets[i];
            const int64_t len = offsets[i + 1] - offsets[i];
            const uint64_t slot = id_slot(table, mask, hashes[i - first], p, len, label_offsets, label_data);
            if (table[slot] != 0) {
                out_position[i] = (int64_t)(table[slot] & UINT64_C(0xFFFFFFFF)) - 1;
            }
        }
    }
    return 0;
}
