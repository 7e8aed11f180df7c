/* Trilinear x2 upsampling (align_corners=False) of float32 (N*C, D, H, W) volumes, forward and
 * backward, as PyTorch computes them on a CPU with FMA, bit for bit (harness/ops/upsample.py).
 *
 * Per axis of input length n, output o in [0, 2n) reads (PyTorch's area_pixel_compute_source_index,
 * in float): s = max(0, 0.5 (o + 0.5) - 0.5), i0 = floor(s), l1 = s - i0, l0 = 1 - l1,
 * i1 = i0 + (i0 < n - 1). So interior outputs mix neighbours 1:3 (o = 2i: 0.25 x[i-1] + 0.75 x[i];
 * o = 2i + 1: 0.75 x[i] + 0.25 x[i+1]), o = 0 is x[0] and o = 2n - 1 is 0.75 x[n-1] + 0.25 x[n-1].
 *
 * Forward: PyTorch evaluates each output as the nest W inside H inside D, each level
 * fma(t0, l0, t1 * l1). The level below depends only on its own indices, so the nest is
 * separable: every W row is upsampled once (tW, H x 2W per D plane), then H (tH, 2H x 2W per D
 * plane), then D, with the same operations in the same order: identical bits at a fraction of
 * the work (PyTorch recomputes the inner levels for every output: 7 fma per output, here about 2).
 *
 * Backward: PyTorch scatters, for each output (od, oh, ow) in order and each of its 8 terms in
 * order (d, h, w; first term before second), acc = fma(wd * wh * ww, g, acc) into the input's
 * gradient (the weight products are exact: 0.25, 0.75 and 1 multiply without rounding). Here each
 * input element gathers the same terms in the same order (no write conflicts, so threads split
 * the rows); the rows' interior elements, which all see the pattern (2w-1: 0.25, 2w: 0.75,
 * 2w+1: 0.75, 2w+2: 0.25), as one vectorised loop. Terms of weight 0 (o = 0 onto input 1) are
 * skipped: adding fma(0, g, acc) leaves a finite acc as it is (it differs only where g is inf or NaN).
 *
 * Plain C with no Python or torch headers; the loops are compiled for AVX-512, AVX2 + FMA and a
 * baseline (function multiversioning, picked at load), fmaf in each.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* Per output o of an axis of n inputs: indices i0, i1 and weights l0, l1, as PyTorch computes them. */
typedef struct {
    int64_t *i0, *i1;
    float *l0, *l1;
} axis_t;

static int axis_init(axis_t *a, int64_t n) {
    a->i0 = malloc(2 * n * sizeof(int64_t));
    a->i1 = malloc(2 * n * sizeof(int64_t));
    a->l0 = malloc(2 * n * sizeof(float));
    a->l1 = malloc(2 * n * sizeof(float));
    if (!a->i0 || !a->i1 || !a->l0 || !a->l1) return -1;
    for (int64_t o = 0; o < 2 * n; o++) {
        float s = 0.5f * ((float)o + 0.5f) - 0.5f;
        if (s < 0.f) s = 0.f;
        int64_t i0 = (int64_t)floorf(s);
        if (i0 > n - 1) i0 = n - 1;
        float l1 = s - (float)i0;
        a->i0[o] = i0;
        a->i1[o] = i0 + (i0 < n - 1 ? 1 : 0);
        a->l1[o] = l1;
        a->l0[o] = 1.f - l1;
    }
    return 0;
}

static void axis_free(axis_t *a) {
    free(a->i0);
    free(a->i1);
    free(a->l0);
    free(a->l1);
}

/* One W row: r[0, 2W) from x[0, W). */
CLONES static void up_row(float *restrict r, const float *restrict x, int64_t W, const axis_t *a) {
    for (int64_t w = 1; w + 1 < W; w++) {
        r[2 * w] = fmaf(x[w - 1], 0.25f, x[w] * 0.75f);
        r[2 * w + 1] = fmaf(x[w], 0.75f, x[w + 1] * 0.25f);
    }
    const int64_t edge[4] = {0, 1, 2 * W - 2, 2 * W - 1};
    for (int k = 0; k < 4; k++) {
        const int64_t o = edge[k];
        r[o] = fmaf(x[a->i0[o]], a->l0[o], x[a->i1[o]] * a->l1[o]);
    }
}

/* out[j] = fma(p[j], l0, q[j] * l1) for j < n: one level of the nest over whole rows or planes. */
CLONES static void mix(float *restrict out, const float *restrict p, const float *restrict q, float l0, float l1, int64_t n) {
    for (int64_t j = 0; j < n; j++) out[j] = fmaf(p[j], l0, q[j] * l1);
}

/* tH plane of input plane d: 2H rows of 2W, from the plane's W rows upsampled into tw (H x 2W). */
static void up_plane(float *th, float *tw, const float *x, int64_t H, int64_t W, const axis_t *ah, const axis_t *aw) {
    for (int64_t h = 0; h < H; h++) up_row(tw + h * 2 * W, x + h * W, W, aw);
    for (int64_t o = 0; o < 2 * H; o++)
        mix(th + o * 2 * W, tw + ah->i0[o] * 2 * W, tw + ah->i1[o] * 2 * W, ah->l0[o], ah->l1[o], 2 * W);
}

/* y (nc, 2D, 2H, 2W) = trilinear x2 of x (nc, D, H, W). Returns 0, or -1 where memory ran out. */
int up_forward(const float *x, float *y, int64_t nc, int64_t D, int64_t H, int64_t W, int nthreads) {
    axis_t ad, ah, aw;
    int status = axis_init(&ad, D) | axis_init(&ah, H) | axis_init(&aw, W);
    const int64_t plane = 4 * H * W; /* one tH or output plane */
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && status == 0)
    {
        /* two tH planes (the two input planes an output plane reads; output planes come in
         * order, so each tH plane is built once per channel) and one plane of W rows */
        float *buf = status == 0 ? malloc((2 * plane + 2 * H * W) * sizeof(float)) : NULL;
        if (!buf) {
#pragma omp atomic write
            status = -1;
        }
#pragma omp for schedule(static)
        for (int64_t c = 0; c < nc; c++) {
            if (!buf) continue;
            float *slot[2] = {buf, buf + plane}, *tw = buf + 2 * plane;
            int64_t held[2] = {-1, -1};
            const float *xc = x + c * D * H * W;
            float *yc = y + c * 2 * D * plane;
            for (int64_t o = 0; o < 2 * D; o++) {
                const int64_t d[2] = {ad.i0[o], ad.i1[o]};
                for (int k = 0; k < 2; k++)
                    if (held[d[k] & 1] != d[k]) {
                        up_plane(slot[d[k] & 1], tw, xc + d[k] * H * W, H, W, &ah, &aw);
                        held[d[k] & 1] = d[k];
                    }
                mix(yc + o * plane, slot[d[0] & 1], slot[d[1] & 1], ad.l0[o], ad.l1[o], plane);
            }
        }
        free(buf);
    }
    axis_free(&ad);
    axis_free(&ah);
    axis_free(&aw);
    return status;
}

/* The terms an input index receives along one axis (D or H), in output order: up to 4 outputs,
 * each with one or two non-zero weights (two where i0 == i1 == i, at the last output). */
typedef struct {
    int n;
    int64_t o[4];
    int nw[4];
    float w[4][2];
} terms_t;

static void axis_terms(terms_t *t, int64_t n, const axis_t *a) {
    memset(t, 0, n * sizeof(terms_t));
    for (int64_t o = 0; o < 2 * n; o++) {
        const int64_t idx[2] = {a->i0[o], a->i1[o]};
        const float wt[2] = {a->l0[o], a->l1[o]};
        for (int k = 0; k < 2; k++) {
            if (wt[k] == 0.f) continue;
            terms_t *ti = &t[idx[k]];
            if (ti->n == 0 || ti->o[ti->n - 1] != o) {
                ti->o[ti->n] = o;
                ti->nw[ti->n++] = 0;
            }
            ti->w[ti->n - 1][ti->nw[ti->n - 1]++] = wt[k];
        }
    }
}

/* Along W every input w takes five slots of a padded output row P (P[0] = P[2W+1] = 0, P[1 + o]
 * = g[o]): A = P[2w] (output 2w-1), B = P[2w+1] (2w), C and C2 = P[2w+2] (2w+1, whose second
 * term lands on w only at the last input) and E = P[2w+3] (2w+2), with weights ws[slot][w]:
 * interior 0.25, 0.75, 0.75, 0, 0.25; w = 0: 0, 1, 0.75, 0, 0.25; w = W-1: 0.25, 0.75, 0.75,
 * 0.25, 0. A weight-0 slot adds fma(0, v, s) = s: every lane runs the same five terms. */
static void w_slots(float *ws, int64_t W, const axis_t *a) {
    memset(ws, 0, 5 * W * sizeof(float));
    for (int64_t o = 0; o < 2 * W; o++) {
        const int64_t idx[2] = {a->i0[o], a->i1[o]};
        const float wt[2] = {a->l0[o], a->l1[o]};
        for (int k = 0; k < 2; k++) {
            if (wt[k] == 0.f) continue;
            const int64_t w = idx[k], rel = o - (2 * w - 1); /* 0..3: A, B, C, E */
            const int slot = rel < 2 ? (int)rel : rel == 3 ? 4 : (ws[2 * W + w] != 0.f ? 3 : 2);
            ws[slot * W + w] = wt[k];
        }
    }
}

/* acc[w] += the terms of one padded output row P, in PyTorch's order: output by output (A, B,
 * C and C2, E), and within an output the k[] products of its D and H terms. One product (all
 * but the volume's last plane and row): the vectorised loop. */
CLONES static void gather_row1(float *restrict acc, const float *restrict P, const float *restrict ws, float k, int64_t W) {
    const float *wa = ws, *wb = ws + W, *wc = ws + 2 * W, *wc2 = ws + 3 * W, *we = ws + 4 * W;
    for (int64_t w = 0; w < W; w++) {
        float s = acc[w];
        s = fmaf(k * wa[w], P[2 * w], s);
        s = fmaf(k * wb[w], P[2 * w + 1], s);
        s = fmaf(k * wc[w], P[2 * w + 2], s);
        s = fmaf(k * wc2[w], P[2 * w + 2], s);
        s = fmaf(k * we[w], P[2 * w + 3], s);
        acc[w] = s;
    }
}

static void gather_row(float *acc, const float *P, const float *ws, const float *k, int nk, int64_t W) {
    if (nk == 1) {
        gather_row1(acc, P, ws, k[0], W);
        return;
    }
    const float *wa = ws, *wb = ws + W, *wc = ws + 2 * W, *wc2 = ws + 3 * W, *we = ws + 4 * W;
    for (int64_t w = 0; w < W; w++) {
        float s = acc[w];
        for (int q = 0; q < nk; q++) s = fmaf(k[q] * wa[w], P[2 * w], s);
        for (int q = 0; q < nk; q++) s = fmaf(k[q] * wb[w], P[2 * w + 1], s);
        for (int q = 0; q < nk; q++) {
            s = fmaf(k[q] * wc[w], P[2 * w + 2], s);
            s = fmaf(k[q] * wc2[w], P[2 * w + 2], s);
        }
        for (int q = 0; q < nk; q++) s = fmaf(k[q] * we[w], P[2 * w + 3], s);
        acc[w] = s;
    }
}

/* gx (nc, D, H, W) = the gradient of trilinear x2 given g (nc, 2D, 2H, 2W). Returns 0, or -1
 * where memory ran out. */
int up_backward(const float *g, float *gx, int64_t nc, int64_t D, int64_t H, int64_t W, int nthreads) {
    axis_t ad, ah, aw;
    int status = axis_init(&ad, D) | axis_init(&ah, H) | axis_init(&aw, W);
    terms_t *td = malloc(D * sizeof(terms_t)), *th = malloc(H * sizeof(terms_t));
    float *ws = malloc(5 * W * sizeof(float));
    if (!td || !th || !ws) status = -1;
    if (status == 0) {
        axis_terms(td, D, &ad);
        axis_terms(th, H, &ah);
        w_slots(ws, W, &aw);
    }
    const int64_t oplane = 4 * H * W, orow = 2 * W;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && status == 0)
    {
        float *P = status == 0 ? malloc((2 * W + 2) * sizeof(float)) : NULL;
        if (!P) {
#pragma omp atomic write
            status = -1;
        }
#pragma omp for collapse(2) schedule(static)
        for (int64_t c = 0; c < nc; c++)
            for (int64_t d = 0; d < D; d++) {
                if (!P) continue;
                const float *gc = g + c * 2 * D * oplane;
                const terms_t *Td = &td[d];
                for (int64_t h = 0; h < H; h++) {
                    float *acc = gx + ((c * D + d) * H + h) * W;
                    const terms_t *Th = &th[h];
                    memset(acc, 0, W * sizeof(float));
                    for (int i = 0; i < Td->n; i++)
                        for (int j = 0; j < Th->n; j++) {
                            float k[4];
                            int nk = 0;
                            for (int a = 0; a < Td->nw[i]; a++)
                                for (int b = 0; b < Th->nw[j]; b++) k[nk++] = Td->w[i][a] * Th->w[j][b];
                            P[0] = P[2 * W + 1] = 0.f;
                            memcpy(P + 1, gc + Td->o[i] * oplane + Th->o[j] * orow, orow * sizeof(float));
                            gather_row(acc, P, ws, k, nk, W);
                        }
                }
            }
        free(P);
    }
    free(td);
    free(th);
    free(ws);
    axis_free(&ad);
    axis_free(&ah);
    axis_free(&aw);
    return status;
}
