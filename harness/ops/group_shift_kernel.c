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
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

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

static void *run_items(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t es = j->es;
    for (int64_t k = j->k0; k < j->k1; k++) {
        const int64_t *B = j->box + BOX * (k % j->nbox);
        int64_t base = (k / j->nbox) * j->sample;
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

/* y = the permutation of x given by the boxes, over nthreads threads (equal bytes each; the
 * caller keeps boxes small enough to balance). Returns 0, or -1 if a thread could not start
 * (its items are then done by the calling thread: the result is complete either way). */
int gs_permute(const void *x, void *y, const int64_t *box, int64_t nbox, int64_t nsample, int64_t sample,
               int64_t es, int nthreads) {
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 64) nthreads = 64;
    job_t jobs[64];
    pthread_t tid[64];
    int started[64] = {0}, status = 0;
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
    return status;
}
