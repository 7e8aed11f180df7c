/* Group Shift as one pass over the data (harness/ops/group_shift.py, realisation "kernel").
 *
 * The permutation of Eqs. 2-8 is, per sample, a list of boxes, each a 3-level nest of runs:
 * box = (src, dst, n0, t0, n1, t1, n2, t2, len, rot), in elements: for i0 < n0, i1 < n1, i2 < n2
 * the run of len elements at src + i0*t0 + i1*t1 + i2*t2 goes to dst + i0*t0 + i1*t1 + i2*t2
 * (source and output are both contiguous (N, C, D, H, W), so they share strides), rotated by
 * rot: out[j] = in[(j + rot) % len] (a W row moved by whole spatial groups). The same boxes
 * serve every sample, one sample (sample elements) apart. Every element is read and written
 * once, as by a clone; unlike one torch copy per box, a run costs nanoseconds, not a dispatch.
 * Byte-generic (element size es): the op moves whole elements, so any dtype works.
 *
 * Rotated rows: the deep and middle stages rotate short rows (W = 5-40 elements), where two
 * short runs per row cost more than the row's bytes. A rotated box's rows lie side by side (a
 * line of n2 rows is one stretch of n2*L bytes, and a box of whole H planes is one stretch over
 * its D planes), and within a stretch out[p] = in[p + r] where the row position q = p % L is
 * below L - r, else in[p + r - L]. So where the CPU has AVX-512BW (checked at run time; the file
 * builds without -march flags) each 64 output bytes are two masked loads, from p + r and from
 * p + r - L, and one store: a copy that reads two streams, its masks periodic in p with period
 * P = L / gcd(L, 64) (1 to 10 for the GSP nets' float rows of 5-160 elements), precomputed by
 * the caller.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GS_AVX512 1
#endif

#define BOX 10

typedef struct {
    const char *x;
    char *y;
    const int64_t *box;
    const uint64_t *masks; /* masks[rot * P + i]: the bytes block i of a row rotated by rot takes from p + r - L */
    int64_t nbox, sample, es, P, k0, k1;  /* work items k = n * nbox + b, k0 <= k < k1 */
} job_t;

/* One run of L bytes. The deep stages' runs are 4-32 bytes, where a call to memcpy costs more
 * than the data: short runs take fixed-size moves, the last one overlapping (source and output
 * are distinct buffers, so writing a byte twice is harmless), each a vector or scalar load/store. */
static inline void copy_run(char *d, const char *s, size_t L) {
    if (L > 256) {
        memcpy(d, s, L);
    } else if (L >= 32) {
        for (size_t b = 0; b + 32 < L; b += 32) memcpy(d + b, s + b, 32);
        memcpy(d + L - 32, s + L - 32, 32);
    } else if (L >= 16) {
        memcpy(d, s, 16);
        memcpy(d + L - 16, s + L - 16, 16);
    } else if (L >= 8) {
        memcpy(d, s, 8);
        memcpy(d + L - 8, s + L - 8, 8);
    } else if (L >= 4) {
        memcpy(d, s, 4);
        memcpy(d + L - 4, s + L - 4, 4);
    } else {
        for (size_t b = 0; b < L; b++) d[b] = s[b];
    }
}

/* n runs of L bytes, step bytes apart (one line of a box). */
static inline void copy_line(char *d, const char *s, size_t L, int64_t n, int64_t step) {
    for (int64_t k = 0; k < n; k++, d += step, s += step) copy_run(d, s, L);
}

/* n2 rotated rows: each output row is written front to back, so every cache line of the output
 * is filled in one go (two boxes writing the two halves of a row at different times cost twice
 * the memory traffic). */
static inline void rotate_line(char *d, const char *s, size_t L, size_t rot, int64_t n, int64_t step) {
    for (int64_t k = 0; k < n; k++, d += step, s += step) {
        copy_run(d, s + rot, L - rot);
        copy_run(d + L - rot, s, rot);
    }
}

#ifdef GS_AVX512
static int use_avx512 = 0; /* off until gs_simd(1) finds the CPU has it */

static inline __mmask64 low_bytes(int64_t n) { return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1); }

/* One stretch of len bytes of rotated rows of L bytes (d, s at its start; s already moved on by
 * the rotation r), as 64-byte blocks, block i taking the bytes of mask M[i % P] from p + r - L
 * and the rest from p + r (see the top of the file). Masked-off bytes are neither read nor
 * written (and never fault), so the loads stay inside the stretch's rows and the last block
 * writes only the stretch's bytes. (Blocks aligned to the output's cache lines measured no
 * faster.) */
__attribute__((target("avx512f,avx512bw")))
static inline void rotate_stretch(char *d, const char *s, int64_t len, int64_t L, const uint64_t *M, int64_t P) {
    int64_t p = 0, i = 0;
    for (; p + 64 <= len; p += 64) {
        const __mmask64 m = M[i];
        i = i + 1 == P ? 0 : i + 1;
        __m512i v = _mm512_maskz_loadu_epi8(~m, s + p);
        v = _mm512_mask_loadu_epi8(v, m, s + p - L);
        _mm512_storeu_si512(d + p, v);
    }
    if (p < len) {
        const __mmask64 tail = low_bytes(len - p), m = M[i];
        __m512i v = _mm512_maskz_loadu_epi8(~m & tail, s + p);
        v = _mm512_mask_loadu_epi8(v, m & tail, s + p - L);
        _mm512_mask_storeu_epi8(d + p, tail, v);
    }
}

/* A rotated box whose rows are contiguous (t2 == len), x and y at the box's first row: each
 * stretch of rows (a line; a box of whole H planes: all its D planes) by rotate_stretch. */
__attribute__((target("avx512f,avx512bw")))
static void rotate_box_avx512(char *y, const char *x, const int64_t *B, int64_t es, const uint64_t *M, int64_t P) {
    const int64_t L = B[8] * es, r = B[9] * es, t0 = B[3] * es;
    int64_t n0 = B[2], n1 = B[4], t1 = B[5] * es, len = B[6] * L;
    if (len == t1) { /* whole H planes: the D planes of the box follow each other */
        len *= n1;
        n1 = 1;
    }
    for (int64_t a = 0; a < n0; a++)
        for (int64_t b = 0; b < n1; b++) rotate_stretch(y + a * t0 + b * t1, x + a * t0 + b * t1 + r, len, L, M, P);
}
#endif

/* Rotated rows as masked 64-byte blocks where the CPU can (see the top of the file). Returns the
 * level in use: 1 with AVX-512BW, 0 without. want = 0 turns it off (tests compare both), 1 asks. */
int gs_simd(int want) {
#ifdef GS_AVX512
    __builtin_cpu_init();
    use_avx512 = want && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    return use_avx512;
#else
    (void)want;
    return 0;
#endif
}

static void *run_items(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t es = j->es;
    /* box b of sample n for k = n * nbox + b, stepped without a division per item (the deep
     * stages have hundreds of boxes of a few hundred bytes) */
    int64_t b = j->k0 % j->nbox, base = (j->k0 / j->nbox) * j->sample;
    for (int64_t k = j->k0; k < j->k1; k++, b = b + 1 == j->nbox ? (base += j->sample, 0) : b + 1) {
        const int64_t *B = j->box + BOX * b;
#ifdef GS_AVX512
        if (B[9] && use_avx512 && j->P && B[7] == B[8]) {
            rotate_box_avx512(j->y + (base + B[1]) * es, j->x + (base + B[0]) * es, B, es, j->masks + B[9] * j->P, j->P);
            continue;
        }
#endif
        for (int64_t i0 = 0; i0 < B[2]; i0++)
            for (int64_t i1 = 0; i1 < B[4]; i1++) {
                int64_t off = base + i0 * B[3] + i1 * B[5];
                char *d = j->y + (off + B[1]) * es;
                const char *s = j->x + (off + B[0]) * es;
                if (B[9])
                    rotate_line(d, s, (size_t)(B[8] * es), (size_t)(B[9] * es), B[6], B[7] * es);
                else
                    copy_line(d, s, (size_t)(B[8] * es), B[6], B[7] * es);
            }
    }
    return NULL;
}

/* 1 when built with OpenMP (threads from the team torch uses), 0 with a pthread per call. */
int gs_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* y = the permutation of x given by the boxes, over nthreads threads (equal bytes each; the
 * caller keeps boxes small enough to balance). masks: (W, P) block masks of rotated rows (W =
 * the row length in elements, P as at the top of the file; P = 0: rotated rows by runs). Returns
 * 0, or -1 if a thread could not start (its items are then done by the calling thread: the
 * result is complete either way). */
int gs_permute(const void *x, void *y, const int64_t *box, int64_t nbox, int64_t nsample, int64_t sample,
               int64_t es, const uint64_t *masks, int64_t P, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    job_t jobs[64];
    int status = 0;
    int64_t items = nbox * nsample, total = sample * nsample, done = 0, k = 0;
    for (int t = 0; t < nthreads; t++) {  /* item ranges of about total / nthreads elements each */
        job_t J = {(const char *)x, (char *)y, box, masks, nbox, sample, es, P, k, k};
        int64_t goal = total * (t + 1) / nthreads;
        while (k < items && (t == nthreads - 1 || done < goal)) {
            const int64_t *B = box + BOX * (k % nbox);
            done += B[2] * B[4] * B[6] * B[8];
            k++;
        }
        J.k1 = k;
        jobs[t] = J;
    }
#ifdef _OPENMP
    /* torch's own OpenMP team (the loader binds libgomp.so.1 to the copy torch loaded): its
     * threads are awake after the previous op, where a new pthread costs 30-55 us and a core
     * that may be asleep. */
#pragma omp parallel for num_threads(nthreads) schedule(static, 1)
    for (int t = 0; t < nthreads; t++) run_items(&jobs[t]);
#else
    pthread_t tid[64];
    int started[64] = {0};
    for (int t = 1; t < nthreads; t++) started[t] = pthread_create(&tid[t], NULL, run_items, &jobs[t]) == 0;
    run_items(&jobs[0]);
    for (int t = 1; t < nthreads; t++) {
        if (started[t]) {
            pthread_join(tid[t], NULL);
        } else {
            run_items(&jobs[t]);
            status = -1;
        }
    }
#endif
    return status;
}
