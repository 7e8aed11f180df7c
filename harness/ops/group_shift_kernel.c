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
 * Deep stages rotate short rows (W = 5-32 elements): two short runs per row cost more than the
 * row's bytes. Where the CPU has AVX-512 VBMI (checked at run time; the file builds without
 * -march flags), a row of up to 128 bytes is rotated in registers instead: a load, one byte
 * permute (vpermb / vpermi2b) and a store per 64 bytes.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GS_VBMI 1
#endif

#define BOX 10

typedef struct {
    const char *x;
    char *y;
    const int64_t *box;
    int64_t nbox, sample, es, k0, k1;  /* work items k = n * nbox + b, k0 <= k < k1 */
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

#ifdef GS_VBMI
static int use_vbmi = 0; /* off until gs_simd(1) finds the CPU has it */

static inline __mmask64 low_bytes(size_t n) { return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1); }

/* A whole rotated box of rows of L <= 128 bytes (B as in run_items, x and y already offset to
 * the box's first row): out[j] = in[(j + rot) % L] as one byte permute per 64 bytes. The index
 * is built once per box (deep stages have lines of 2-20 rows); the masked loads and stores at a
 * line's end touch only a row's L bytes (masked-off bytes never fault). */
__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static void rotate_box_vbmi(char *y, const char *x, const int64_t *B, int64_t es) {
    static const uint8_t iota[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                     16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                                     32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
                                     48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
    const int64_t L = B[8] * es, t0 = B[3] * es, t1 = B[5] * es, t2 = B[7] * es;
    /* idx[j] = j + rot, less L where that passes the row's end */
    const __m512i len = _mm512_set1_epi8((char)L);
    const __m512i r0 = _mm512_add_epi8(_mm512_loadu_si512(iota), _mm512_set1_epi8((char)(B[9] * es)));
    const __m512i r1 = _mm512_add_epi8(r0, _mm512_set1_epi8(64));
    const __m512i i0 = _mm512_mask_sub_epi8(r0, _mm512_cmpge_epu8_mask(r0, len), r0, len);
    const __m512i i1 = _mm512_mask_sub_epi8(r1, _mm512_cmpge_epu8_mask(r1, len), r1, len);
    const __mmask64 m = low_bytes(L <= 64 ? L : L - 64);
    /* The box's counts in locals: the stores may alias B (char data), which would otherwise be
     * reloaded, and the division redone, for every line. Rows of a line follow each other when
     * t2 == L: a row's whole-register load and store may then run into the rows after it,
     * which are rewritten next; only the rows within a register of the line's end are masked. */
    const int64_t n0 = B[2], n1 = B[4], n2 = B[6];
    const int64_t open = t2 != L ? 0 : n2 - (L <= 64 ? (64 + L - 1) / L : 1);
    for (int64_t a = 0; a < n0; a++)
        for (int64_t b = 0; b < n1; b++) {
            char *d = y + a * t0 + b * t1;
            const char *s = x + a * t0 + b * t1;
            int64_t k = 0;
            if (L <= 64)
                for (; k < open; k++, d += t2, s += t2)
                    _mm512_storeu_si512(d, _mm512_permutexvar_epi8(i0, _mm512_loadu_si512(s)));
            else
                for (; k < open; k++, d += t2, s += t2) {
                    const __m512i lo = _mm512_loadu_si512(s), hi = _mm512_loadu_si512(s + 64);
                    _mm512_storeu_si512(d, _mm512_permutex2var_epi8(lo, i0, hi));
                    _mm512_storeu_si512(d + 64, _mm512_permutex2var_epi8(lo, i1, hi));
                }
            if (L <= 64) {
                for (; k < n2; k++, d += t2, s += t2)
                    _mm512_mask_storeu_epi8(d, m, _mm512_permutexvar_epi8(i0, _mm512_maskz_loadu_epi8(m, s)));
            } else {
                for (; k < n2; k++, d += t2, s += t2) {
                    const __m512i lo = _mm512_loadu_si512(s), hi = _mm512_maskz_loadu_epi8(m, s + 64);
                    _mm512_storeu_si512(d, _mm512_permutex2var_epi8(lo, i0, hi));
                    _mm512_mask_storeu_epi8(d + 64, m, _mm512_permutex2var_epi8(lo, i1, hi));
                }
            }
        }
}
#endif

/* Rotated rows use registers where they can (see the top of the file). Returns the level in
 * use: 1 with AVX-512 VBMI, 0 without. want = 0 turns it off (tests compare both), 1 asks. */
int gs_simd(int want) {
#ifdef GS_VBMI
    __builtin_cpu_init();
    use_vbmi = want && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512vbmi");
    return use_vbmi;
#else
    (void)want;
    return 0;
#endif
}

static void *run_items(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t es = j->es;
    for (int64_t k = j->k0; k < j->k1; k++) {
        const int64_t *B = j->box + BOX * (k % j->nbox);
        int64_t base = (k / j->nbox) * j->sample;
#ifdef GS_VBMI
        if (B[9] && use_vbmi && B[8] * es <= 128) {
            rotate_box_vbmi(j->y + (base + B[1]) * es, j->x + (base + B[0]) * es, B, es);
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
 * caller keeps boxes small enough to balance). Returns 0, or -1 if a thread could not start
 * (its items are then done by the calling thread: the result is complete either way). */
int gs_permute(const void *x, void *y, const int64_t *box, int64_t nbox, int64_t nsample, int64_t sample,
               int64_t es, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    job_t jobs[64];
    int status = 0;
    int64_t items = nbox * nsample, total = sample * nsample, done = 0, k = 0;
    for (int t = 0; t < nthreads; t++) {  /* item ranges of about total / nthreads elements each */
        job_t J = {(const char *)x, (char *)y, box, nbox, sample, es, k, k};
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
