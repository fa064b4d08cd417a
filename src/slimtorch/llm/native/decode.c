/* slimtorch native decode: one whole Llama token step per call, no Python in the loop.
 *
 * Built at first use by slimtorch/llm/native/__init__.py (cc -O3 -march=native -fopenmp) and
 * called through ctypes. The model is described by a flat array of int64 fields (sizes and
 * data pointers into tensors that Python keeps alive), laid out as the structs below; the
 * Python side writes the same layout (FIELDS_* constants there).
 *
 * Weight formats of one linear y = W x (W is [n, k], row-major):
 *   KIND_F32: fp32 [n, k].
 *   KIND_Q4:  4-bit codes q in 0..15, two per byte, [n, k/2]; inside every block of 32 inputs
 *             byte j holds q[j] (low nibble) and q[j + 16] (high nibble), the GGUF Q4_0 order.
 *             Per group of g inputs (g a multiple of 32) a bf16 scale s and zero z, each
 *             [n, k/g]: w = (q - 8) * s + z, i.e. slimtorch.llm.kernels.Int4Linear's numbers.
 *   KIND_Q8:  int8 [n, k] with one bf16 scale per row [n]: w = q * s.
 * Quantized weights meet activations quantized to int8 (symmetric, d = max|x| / 127) per
 * weight group (Q4) or per block of 32 (Q8), as llama.cpp's Q4_0 x Q8_0 dot products do, so
 * the inner loop is integer multiply-adds (AVX2 vpmaddubsw); Q4 converts to float once per
 * group, eight groups at a time. Sums of x per group are taken from the fp32 activations.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define KIND_F32 0
#define KIND_Q4 1
#define KIND_Q8 2
#define QBLOCK 32

typedef struct {
    int64_t kind, n, k, g; /* g: inputs per scale group (KIND_Q4) */
    int64_t w;             /* pointer: fp32 weights, Q4 codes or int8 weights */
    int64_t s;             /* pointer: bf16 scales [n, k/g] (Q4) or [n] (Q8); 0 for F32 */
    int64_t z;             /* pointer: bf16 zeros [n, k/g] (Q4); 0 otherwise */
} Lin;

typedef struct {
    int64_t norm1, norm2; /* pointers: fp32 [dim] RMSNorm weights */
    int64_t kv;           /* pointer: fp32 KV cache [2, batch, n_kv, max_len, head_dim] */
    Lin wq, wk, wv, wo, w1, w3, w2;
} Layer;

typedef struct {
    int64_t dim, n_layers, n_heads, n_kv, head_dim, hidden, vocab;
    int64_t cache_batch, cache_len; /* the KV buffers' batch and length */
    int64_t emb;                    /* pointer: fp32 [vocab, dim] */
    int64_t norm;                   /* pointer: fp32 [dim] */
    int64_t cos, sin;               /* pointers: fp32 [max_seq_len, head_dim], rotate-half */
    Lin head;
    Layer layers[];
} Model;

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#ifdef __AVX2__
static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}
static inline float hsum8(__m256 v);
#endif

/* Quantize x[k] to int8 per block of `blk` (a multiple of 32): dx[k/blk] the block scales,
 * sums[k/blk] the blocks' fp32 sums (may be NULL). Rounding: to nearest, ties to even. */
static void quantize_q8(const float *x, int64_t k, int64_t blk, int8_t *xq, float *dx,
                        float *sums) {
    for (int64_t b = 0; b < k / blk; b++) {
        const float *xb = x + b * blk;
        int8_t *qb = xq + b * blk;
#ifdef __AVX2__
        const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
        __m256 vmax = _mm256_setzero_ps(), vsum = _mm256_setzero_ps();
        for (int64_t j = 0; j < blk; j += 8) {
            __m256 v = _mm256_loadu_ps(xb + j);
            vmax = _mm256_max_ps(vmax, _mm256_and_ps(v, absmask));
            vsum = _mm256_add_ps(vsum, v);
        }
        float amax = hmax8(vmax), tot = hsum8(vsum);
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        const __m256 vinv = _mm256_set1_ps(inv);
        const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (int64_t j = 0; j < blk; j += 32) {
            __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j), vinv));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 8), vinv));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 16), vinv));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + j + 24), vinv));
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
            _mm256_storeu_si256((__m256i *)(qb + j), _mm256_permutevar8x32_epi32(p, perm));
        }
#else
        float amax = 0.0f, tot = 0.0f;
        for (int64_t j = 0; j < blk; j++) {
            amax = fmaxf(amax, fabsf(xb[j]));
            tot += xb[j];
        }
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        for (int64_t j = 0; j < blk; j++) qb[j] = (int8_t)lrintf(xb[j] * inv);
#endif
        dx[b] = d;
        if (sums) sums[b] = tot;
    }
}

#ifdef __AVX2__
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#ifdef __AVX2__
static inline __m256 bf16x8(const uint16_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* acc + sum of u8 x s8 products of a and b in groups of four (VNNI when the CPU has it). */
static inline __m256i dot_u8s8(__m256i acc, __m256i a, __m256i b) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(acc, a, b);
#elif defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b),
                                                   _mm256_set1_epi16(1)));
#endif
}

/* int32 sums over one group of r blocks of 32: codes (16 bytes a block) times xq. */
static inline __attribute__((always_inline)) __m256i q4_group(const uint8_t *codes,
                                                              const int8_t *xq, const int r) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i acc = _mm256_setzero_si256();
    for (int b = 0; b < r; b++) {
        __m128i raw = _mm_loadu_si128((const __m128i *)(codes + 16 * b));
        __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), m4);
        acc = dot_u8s8(acc, q, _mm256_loadu_si256((const __m256i *)(xq + QBLOCK * b)));
    }
    return acc;
}

/* The 8 lane sums of p[0..7] as one vector (transpose-and-add). */
static inline __m256i sum8x8(const __m256i *p) {
    __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(p[4], p[5]), _mm256_hadd_epi32(p[6], p[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                            _mm256_permute2x128_si256(a, b, 0x31));
}
#endif

/* One output of a Q4 linear: activations quantized per group (xq, dx[group]) and their fp32
 * sums gsum[group]; w = q * s + (z - 8 s), so the group's dot product is
 * s * dx * sum(q * xq) + (z - 8 s) * sum(x). r = g / 32 is a compile-time constant in the
 * specialised copies below (the loops unroll). */
static inline __attribute__((always_inline)) float q4_row_r(
    const uint8_t *codes, const uint16_t *sc, const uint16_t *zc, const int8_t *xq,
    const float *dx, const float *gsum, int64_t ng, const int r) {
    const int64_t g = (int64_t)r * QBLOCK;
    int64_t gi = 0;
    float acc = 0.0f;
#ifdef __AVX2__
    __m256 vacc = _mm256_setzero_ps();
    const __m256 eight = _mm256_set1_ps(8.0f);
    for (; gi + 8 <= ng; gi += 8) {
        __m256i p[8];
        for (int u = 0; u < 8; u++)
            p[u] = q4_group(codes + (gi + u) * r * 16, xq + (gi + u) * g, r);
        __m256 dot = _mm256_cvtepi32_ps(sum8x8(p));
        __m256 s = bf16x8(sc + gi), z = bf16x8(zc + gi);
        vacc = _mm256_fmadd_ps(dot, _mm256_mul_ps(s, _mm256_loadu_ps(dx + gi)), vacc);
        vacc = _mm256_fmadd_ps(_mm256_fnmadd_ps(eight, s, z), _mm256_loadu_ps(gsum + gi), vacc);
    }
    for (; gi < ng; gi++) { /* leftover groups: one at a time */
        float s = bf16_to_f32(sc[gi]), z = bf16_to_f32(zc[gi]);
        __m256 dot = _mm256_cvtepi32_ps(q4_group(codes + gi * r * 16, xq + gi * g, r));
        vacc = _mm256_fmadd_ps(dot, _mm256_set1_ps(s * dx[gi]), vacc);
        acc += (z - 8.0f * s) * gsum[gi];
    }
    acc += hsum8(vacc);
#endif
    for (; gi < ng; gi++) {
        float s = bf16_to_f32(sc[gi]), z = bf16_to_f32(zc[gi]);
        int32_t isum = 0;
        for (int64_t b = gi * r; b < (gi + 1) * r; b++)
            for (int j = 0; j < 16; j++) {
                uint8_t c = codes[16 * b + j];
                isum += (c & 0x0F) * xq[QBLOCK * b + j] + (c >> 4) * xq[QBLOCK * b + j + 16];
            }
        acc += (float)isum * s * dx[gi] + (z - 8.0f * s) * gsum[gi];
    }
    return acc;
}

static float q4_row(const uint8_t *codes, const uint16_t *sc, const uint16_t *zc,
                    const int8_t *xq, const float *dx, const float *gsum, int64_t k, int64_t g) {
    int64_t ng = k / g;
    switch (g / QBLOCK) {
    case 1: return q4_row_r(codes, sc, zc, xq, dx, gsum, ng, 1);
    case 2: return q4_row_r(codes, sc, zc, xq, dx, gsum, ng, 2);
    case 4: return q4_row_r(codes, sc, zc, xq, dx, gsum, ng, 4);
    default: return q4_row_r(codes, sc, zc, xq, dx, gsum, ng, (int)(g / QBLOCK));
    }
}

static float q8_row(const int8_t *w, const int8_t *xq, const float *dx, int64_t k) {
#ifdef __AVX2__
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < k / QBLOCK; b++) {
        __m256i wv = _mm256_loadu_si256((const __m256i *)(w + QBLOCK * b));
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + QBLOCK * b));
        /* maddubs needs unsigned x signed: |w| times x with w's sign moved onto x */
        __m256i p = dot_u8s8(_mm256_setzero_si256(), _mm256_sign_epi8(wv, wv),
                             _mm256_sign_epi8(xv, wv));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dx[b]), acc);
    }
    return hsum8(acc);
#else
    float acc = 0.0f;
    for (int64_t b = 0; b < k / QBLOCK; b++) {
        int32_t isum = 0;
        for (int j = 0; j < QBLOCK; j++) isum += w[QBLOCK * b + j] * xq[QBLOCK * b + j];
        acc += (float)isum * dx[b];
    }
    return acc;
#endif
}

static float f32_row(const float *w, const float *x, int64_t k) {
    int64_t j = 0;
    float tail = 0.0f;
#ifdef __AVX2__
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; j + 16 <= k; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
    }
    tail = hsum8(_mm256_add_ps(a0, a1));
#endif
    for (; j < k; j++) tail += w[j] * x[j];
    return tail;
}

/* y[n] = W x for one linear; scratch holds k int8 + k/32 floats + k/32 floats. */
static void linear(const Lin *L, const float *x, float *y, void *scratch, int threads) {
    int64_t n = L->n, k = L->k;
    if (L->kind == KIND_F32) {
        const float *w = (const float *)L->w;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
        for (int64_t r = 0; r < n; r++) y[r] = f32_row(w + r * k, x, k);
        return;
    }
    int8_t *xq = (int8_t *)scratch;
    float *dx = (float *)(xq + k);
    float *gsum = dx + k / QBLOCK;
    if (L->kind == KIND_Q4) {
        int64_t g = L->g, ng = k / g;
        quantize_q8(x, k, g, xq, dx, gsum);
        const uint8_t *codes = (const uint8_t *)L->w;
        const uint16_t *sc = (const uint16_t *)L->s, *zc = (const uint16_t *)L->z;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
        for (int64_t r = 0; r < n; r++)
            y[r] = q4_row(codes + r * (k / 2), sc + r * ng, zc + r * ng, xq, dx, gsum, k, g);
    } else {
        quantize_q8(x, k, QBLOCK, xq, dx, NULL);
        const int8_t *w = (const int8_t *)L->w;
        const uint16_t *sc = (const uint16_t *)L->s;
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
        for (int64_t r = 0; r < n; r++) y[r] = q8_row(w + r * k, xq, dx, k) * bf16_to_f32(sc[r]);
    }
}

static void rms_norm(const float *x, const float *w, float *y, int64_t n, float eps) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * r * w[i];
}

/* Rotate-half RoPE of one head in place: i pairs with i + hd/2. */
static void rope(float *v, const float *c, const float *s, int64_t hd) {
    int64_t h = hd / 2;
    for (int64_t i = 0; i < h; i++) {
        float a = v[i], b = v[i + h];
        v[i] = a * c[i] - b * s[i];
        v[i + h] = b * c[i + h] + a * s[i + h];
    }
}

/* Entry points (the ABI the Python side calls). */

int64_t slim_abi_version(void) { return 2; }

int64_t slim_has_avx2(void) {
#ifdef __AVX2__
    return 1;
#else
    return 0;
#endif
}

/* y = W x for one linear described by 7 int64 fields (tests and micro-benchmarks). */
int slim_linear(const int64_t *lin, const float *x, float *y, int threads) {
    const Lin *L = (const Lin *)lin;
    void *scratch = malloc(L->k * 2 + 64);
    if (!scratch) return -1;
    linear(L, x, y, scratch, threads);
    free(scratch);
    return 0;
}

/* Logits for `token` at position `pos` (batch row 0 of the cache), caching its keys/values. */
int slim_decode_step(const int64_t *model, int64_t token, int64_t pos, float eps, float *logits,
                     int threads) {
    const Model *M = (const Model *)model;
    int64_t D = M->dim, H = M->n_heads, Hkv = M->n_kv, hd = M->head_dim, F = M->hidden;
    int64_t S = M->cache_len, B = M->cache_batch, rep = H / Hkv;
    if (token < 0 || token >= M->vocab || pos < 0 || pos >= S) return -2;
    int64_t kmax = D > F ? D : F;
    if (H * hd > kmax) kmax = H * hd;
    size_t floats = 2 * D + (H + 2 * Hkv) * hd + H * hd + 2 * F + (pos + 1) + D;
    float *buf = (float *)malloc(floats * sizeof(float) + kmax * 2 + 256);
    if (!buf) return -1;
    float *x = buf, *xn = x + D, *q = xn + D, *k = q + H * hd, *v = k + Hkv * hd;
    float *att = v + Hkv * hd, *g = att + H * hd, *u = g + F, *sc = u + F, *tmp = sc + pos + 1;
    void *scratch = (void *)(tmp + D);
    const float *cs = (const float *)M->cos + pos * hd, *sn = (const float *)M->sin + pos * hd;
    float inv_sqrt = 1.0f / sqrtf((float)hd);

    memcpy(x, (const float *)M->emb + token * D, D * sizeof(float));
    for (int64_t l = 0; l < M->n_layers; l++) {
        const Layer *Ly = &M->layers[l];
        rms_norm(x, (const float *)Ly->norm1, xn, D, eps);
        linear(&Ly->wq, xn, q, scratch, threads);
        linear(&Ly->wk, xn, k, scratch, threads);
        linear(&Ly->wv, xn, v, scratch, threads);
        float *kc = (float *)Ly->kv, *vc = kc + B * Hkv * S * hd; /* batch row 0 */
        for (int64_t h = 0; h < H; h++) rope(q + h * hd, cs, sn, hd);
        for (int64_t h = 0; h < Hkv; h++) {
            rope(k + h * hd, cs, sn, hd);
            memcpy(kc + (h * S + pos) * hd, k + h * hd, hd * sizeof(float));
            memcpy(vc + (h * S + pos) * hd, v + h * hd, hd * sizeof(float));
        }
        for (int64_t h = 0; h < H; h++) {
            const float *qh = q + h * hd, *kh = kc + (h / rep) * S * hd;
            const float *vh = vc + (h / rep) * S * hd;
            float mx = -INFINITY, tot = 0.0f;
            for (int64_t t = 0; t <= pos; t++) {
                sc[t] = f32_row(kh + t * hd, qh, hd) * inv_sqrt;
                mx = fmaxf(mx, sc[t]);
            }
            for (int64_t t = 0; t <= pos; t++) tot += (sc[t] = expf(sc[t] - mx));
            float *o = att + h * hd;
            memset(o, 0, hd * sizeof(float));
            for (int64_t t = 0; t <= pos; t++) {
                float p = sc[t] / tot;
                const float *vt = vh + t * hd;
                for (int64_t i = 0; i < hd; i++) o[i] += p * vt[i];
            }
        }
        linear(&Ly->wo, att, tmp, scratch, threads);
        for (int64_t i = 0; i < D; i++) x[i] += tmp[i];
        rms_norm(x, (const float *)Ly->norm2, xn, D, eps);
        linear(&Ly->w1, xn, g, scratch, threads);
        linear(&Ly->w3, xn, u, scratch, threads);
        for (int64_t i = 0; i < F; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        linear(&Ly->w2, g, tmp, scratch, threads);
        for (int64_t i = 0; i < D; i++) x[i] += tmp[i];
    }
    rms_norm(x, (const float *)M->norm, xn, D, eps);
    linear(&M->head, xn, logits, scratch, threads);
    free(buf);
    return 0;
}
