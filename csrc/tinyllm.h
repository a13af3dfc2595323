/* tinyllm.h: the C API of tinyllm's CPU kernels, and the single source of the cffi cdef.
 *
 * tinyllm/backends/c_kernels.py reads this file, drops the preprocessor lines and
 * hands the declarations to cffi, so a signature lives here and nowhere else.
 * Every kernel has the name and the meaning of its twin in
 * tinyllm/backends/numpy_kernels.py (read that file for the maths); the tests
 * compare the two. Conventions:
 *   - float32, C-contiguous (row-major) arrays; sizes are passed explicitly;
 *   - token ids are int64; index loops use int64 so B*T*C never overflows;
 *   - outputs are written, never accumulated into, unless a comment says so.
 * Errors, one rule for this header and csrc/cuda/tinyllm_cuda.h: the Python side checks
 * shapes, dtypes and ranges before calling, and no function prints, aborts or exits; a
 * function that can fail says so by its return value, which the Python binding turns into
 * an exception. Here the kernels cannot fail (their inputs are checked and they allocate
 * nothing), so they validate nothing and return void or their result; only the BPE and
 * language-id functions, matmul_q_i8 and decode_block allocate, and they report running out of
 * memory by returning -1 (a count or status) or NULL (a handle), which the binding raises as
 * MemoryError.
 * Dimension letters: B batch, T time, C channels, V vocabulary, nh heads,
 * hs head size, N rows (= B*T).
 */
#ifndef TINYLLM_H
#define TINYLLM_H
#include <stdint.h>

/* matmul.c: out = op(a) @ op(b), batch times.
 * op(a) is (M, K): a is (M, K), or (K, M) when transpose_a. op(b) is (K, N): b is (K, N), or
 * (N, K) when transpose_b. out is (M, N). With batch > 1 each operand holds `batch` such
 * matrices back to back. */
void matmul(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
            int64_t K, int transpose_a, int transpose_b);

/* matmul_bf16.c: out = op(a) @ op(b) as matmul, in mixed precision: a and b are rounded to
 * bfloat16 (round to nearest even, subnormals to zero), the products summed in float32, out
 * float32. path picks the instructions: one of the CPU_* bits below that cpu_features() has
 * (CPU_AMX_BF16: tiles, matmul_amx.c; CPU_AVX512_BF16: vdpbf16ps), or 0:
 * the operands rounded to bfloat16 values and multiplied by the float32 matmul (same numbers, no
 * bf16 speed). A path the CPU lacks runs as the best one below it that it has, never as an
 * illegal instruction. */
void matmul_bf16(const float *a, const float *b, float *out, int64_t batch, int64_t M, int64_t N,
                 int64_t K, int transpose_a, int transpose_b, int path);
/* y (n,) = the bfloat16 bits of x (n,), rounded as matmul_bf16 rounds its operands. */
void f32_to_bf16(const float *x, uint16_t *y, int64_t n);

/* cpu.c: the CPU's features, asked at run time (cpuid, XCR0, and Linux's permission for AMX
 * tiles, which cpu_features requests; CPU_AVX2 is AVX2 with FMA and F16C); peak_flops times `iters`
 * iterations of an independent multiply-add loop of `kind` on every OpenMP thread and returns
 * FLOP/s (each thread's rate by its own CPU time, summed), 0 when the CPU lacks the
 * instructions. */
enum { CPU_AVX512 = 1, CPU_AVX512_BF16 = 2, CPU_AMX_BF16 = 4, CPU_AVX2 = 8,
       CPU_AVX512_VNNI = 16 };
enum { PEAK_FP32 = 0, PEAK_BF16 = 1, PEAK_AMX_BF16 = 2 };
int cpu_features(void);
double peak_flops(int kind, int64_t iters);

/* attention.c: causal flash attention. q (B, nh, Tq, hs); k, v (B, nh, Tk, hs), Tk >= Tq;
 * query i sits at position Tk - Tq + i. out (B, nh, Tq, hs); lse (B, nh, Tq) = log-sum-exp of
 * each query's scaled scores (scale 1/sqrt(hs)). Extra memory O(tile), never O(Tq * Tk). */
void attention_forward(const float *q, const float *k, const float *v, float *out, float *lse,
                       int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs);
/* dq (B, nh, Tq, hs), dk and dv (B, nh, Tk, hs) are overwritten. */
void attention_backward(const float *dout, const float *q, const float *k, const float *v,
                        const float *out, const float *lse, float *dq, float *dk, float *dv,
                        int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs);

/* attention.c: attention_forward / attention_backward in mixed precision (their tile products'
 * operands rounded to bfloat16, float32 sums; the softmax in float32), path as matmul_bf16's. */
void attention_forward_bf16(const float *q, const float *k, const float *v, float *out,
                            float *lse, int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs,
                            int path);
void attention_backward_bf16(const float *dout, const float *q, const float *k, const float *v,
                             const float *out, const float *lse, float *dq, float *dk, float *dv,
                             int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t hs, int path);
/* attention.c: causal self-attention (Tq = Tk = T) on the fused projection's layout, the head
 * copies of split_heads / merge_heads left out: q, k, v read in place from qkv (B, T, 3C),
 * C = nh * hs, head h at columns h * hs of each part; out (B, T, C), lse (B, nh, T); dout
 * (B, T, C) and dqkv (B, T, 3C), overwritten. path as attention_forward_bf16's (0: float32). */
void attention_qkv_forward(const float *qkv, float *out, float *lse, int64_t B, int64_t T,
                           int64_t nh, int64_t hs, int path);
void attention_qkv_backward(const float *dout, const float *qkv, const float *out,
                            const float *lse, float *dqkv, int64_t B, int64_t T, int64_t nh,
                            int64_t hs, int path);
/* decode.c: the kernels of a decoding step. path picks the instructions: CPU_AVX512, CPU_AVX2
 * (with FMA) or 0 (portable C); a path the CPU lacks runs as the best one below it that it has.
 * attention_decode: the newest Tq queries q (B, nh, Tq, hs) against a KV cache k_cache, v_cache
 * (B, nh, Tmax, hs) whose first Tk positions are filled (Tq <= Tk <= Tmax), read in place;
 * query i sits at position Tk - Tq + i. out (B, nh, Tq, hs), as attention_forward's.
 * gemv: out (M, N) = x (M, K) @ w (N, K)^T for the few rows of a decoding step (M = 1..16):
 * w, a Linear layer's weight, is streamed once for all M rows, its rows split over threads. */
void attention_decode(const float *q, const float *k_cache, const float *v_cache, float *out,
                      int64_t B, int64_t nh, int64_t Tq, int64_t Tk, int64_t Tmax, int64_t hs,
                      int path);
void gemv(const float *x, const float *w, float *out, int64_t M, int64_t N, int64_t K, int path);

/* quant.c, for a weight W (N, K) held as blocks of 32 along K (K % 32 == 0): q8_0 (q4 = 0): q
 * the int8 values (N, K); q4_0 (q4 = 1): q uint8 (N, K / 2), two 4-bit values a byte
 * (tinyllm/quant/formats.py); scale: the fp16 bits (N, K / 32); path one of QPATH_* (below:
 * the instructions of the widening; every path gives the same bits).
 * dequantize_q: out (N, K) = dequant(W), float32, bit for bit formats.dequantize.
 * matmul_q_f32: out (M, N) = x (M, K) @ dequant(W)^T, x float32 unquantized (a prefill's
 * product: the float32 GEMM's numbers on the widened W, which is never held whole). Returns 0,
 * or -1 when its scratch (a panel of W per thread, or a chunk of rows) could not be allocated. */
void dequantize_q(const void *q, const uint16_t *scale, float *out, int64_t N, int64_t K, int q4,
                  int path);
int matmul_q_f32(const float *x, const void *q, const uint16_t *scale, float *out, int64_t M,
                 int64_t N, int64_t K, int q4, int path);

/* quant_i8.c: out (M, N) = x (M, K) @ dequant(W)^T, W as above, for decoding: x quantized to
 * int8 per block of 32 first (tinyllm/quant/formats.py matmul_q_i8 is the definition); q4 = 0
 * for q8_0, 1 for q4_0; path one of QPATH_* (quant_path(path) is what runs: the best the CPU
 * has at or below it). Returns 0, or -1 when the few bytes for quantized x could not be
 * allocated. quantize_rows_q8 is that quantization: qx (M, K), dx (M, K / 32), and
 * nc (M, K / 4) = -8 * the sum of each 4 bytes of qx, the same bytes on every path (path:
 * QPATH_PORTABLE's C loops, else AVX2's vectors where the CPU has them). */
enum { QPATH_PORTABLE = 0, QPATH_AVX2 = 1, QPATH_AVX512_VNNI = 2 };
int quant_path(int wanted);
int matmul_q_i8(const float *x, const void *q, const uint16_t *scale, float *out, int64_t M,
                int64_t N, int64_t K, int q4, int path);
void quantize_rows_q8(const float *x, int8_t *qx, float *dx, int32_t *nc, int64_t M, int64_t K,
                      int path);
/* matmul_q_i8_into: matmul_q_i8 with its scratch (quantized x) given: matmul_q_i8_scratch(M, K)
 * bytes, 4-byte aligned; it cannot fail. */
int64_t matmul_q_i8_scratch(int64_t M, int64_t K);
void matmul_q_i8_into(const float *x, const void *q, const uint16_t *scale, float *out, int64_t M,
                      int64_t N, int64_t K, int q4, int path, void *scratch);

/* decode_block.c: one transformer block of a decoding step (model.Block.forward with a KV cache
 * holding `start` positions), x (B, T, C) -> out (B, T, C), for B * T <= 16 new rows; its keys
 * and values are written into k_cache, v_cache (B, nh, Tmax, hs) at [start, start + T),
 * start + T <= Tmax. ln_1, ln_2: (C,). w: c_attn (3C, C), attn.c_proj (C, C), mlp.c_fc (4C, C),
 * mlp.c_proj (C, 4C), each float32 (fmt DECODE_FP32, scale NULL) or blocks of 32 as quant.c's
 * (DECODE_Q8_0, DECODE_Q4_0; C % 32 == 0). path as gemv's, qpath as matmul_q_i8's. Returns 0,
 * or -1 when its scratch (about 64 B T C bytes) could not be allocated. */
enum { DECODE_FP32 = 0, DECODE_Q8_0 = 1, DECODE_Q4_0 = 2 };
typedef struct {
    const void *w;            /* float (N, K); q8_0: int8 (N, K); q4_0: uint8 (N, K / 2) */
    const uint16_t *scale;    /* fp16 bits (N, K / 32); NULL for float32 */
    int fmt;
} decode_weight;
int decode_block(const float *x, float *out, const float *ln_1, const float *ln_2,
                 const decode_weight *w, float *k_cache, float *v_cache, int64_t B, int64_t T,
                 int64_t C, int64_t nh, int64_t start, int64_t Tmax, float eps, int path,
                 int qpath);
/* decode_step: a decoding step after the embeddings, x (B, T, C) -> logits (B, V) of each row's
 * last position: the L blocks as decode_block (block l: norms[2l], norms[2l + 1], w[4l..4l + 3],
 * caches[2l] its keys, caches[2l + 1] its values), then ln_f (norms[2L]) and the lm_head
 * (w[4L], (V, C)). Returns 0, or -1 when scratch memory could not be allocated. */
int decode_step(const float *x, float *logits, const float *const *norms, const decode_weight *w,
                float *const *caches, int64_t L, int64_t B, int64_t T, int64_t C, int64_t nh,
                int64_t V, int64_t start, int64_t Tmax, float eps, int path, int qpath);

/* heads.c: x (B, T, P, nh, hs), the fused projection's output, holds P parts (q, k, v: P = 3;
 * an attention output: P = 1). split_heads writes part p as out (B, nh, T, hs); merge_heads
 * writes x (B, nh, T, hs) into part p of out (B, T, P, nh, hs), leaving the other parts. */
void split_heads(const float *x, float *out, int64_t B, int64_t T, int64_t P, int64_t p,
                 int64_t nh, int64_t hs);
void merge_heads(const float *x, float *out, int64_t B, int64_t T, int64_t P, int64_t p,
                 int64_t nh, int64_t hs);

/* softmax.c: row-wise over the last axis. x, y, dy, dx: (N, C). */
void softmax_forward(const float *x, float *y, int64_t N, int64_t C);
void softmax_backward(const float *dy, const float *y, float *dx, int64_t N, int64_t C);

/* norm.c: RMSNorm. x, y, dy, dx: (N, C); weight, dweight: (C,); rstd: (N,).
 * rmsnorm_backward overwrites dx and dweight. */
void rmsnorm_forward(const float *x, const float *weight, float *y, float *rstd, int64_t N,
                     int64_t C, float eps);
void rmsnorm_backward(const float *dy, const float *x, const float *weight, const float *rstd,
                      float *dx, float *dweight, int64_t N, int64_t C);

/* activation.c: SiLU y = x * sigmoid(x), elementwise over n values. */
void silu_forward(const float *x, float *y, int64_t n);
void silu_backward(const float *dy, const float *x, float *dx, int64_t n);

/* embedding.c: out (N, C) = weight[ids]; ids (N,) in [0, V); weight (V, C).
 * embedding_backward overwrites dweight (V, C) with the sum of dout's rows per id. */
void embedding_forward(const int64_t *ids, const float *weight, float *out, int64_t N,
                       int64_t V, int64_t C);
void embedding_backward(const float *dout, const int64_t *ids, float *dweight, int64_t N,
                        int64_t V, int64_t C);

/* cross_entropy.c: logits (N, V), targets (N,) in [0, V) or -1 (ignored).
 * Forward writes lse (N,) and returns the mean of lse - logit[target] over kept rows
 * (0 when none is kept). Backward overwrites dlogits (N, V) with
 * (softmax - onehot) * dloss / n_kept, zero on ignored rows; no other (N, V) buffer. */
float cross_entropy_forward(const float *logits, const int64_t *targets, float *lse,
                            int64_t N, int64_t V);
void cross_entropy_backward(float dloss, const float *logits, const int64_t *targets,
                            const float *lse, float *dlogits, int64_t N, int64_t V);

/* elementwise.c: out = a + b over n values (the residual stream). */
void add_forward(const float *a, const float *b, float *out, int64_t n);

/* adamw.c: one AdamW step in place on param, m, v (n values each); step counts from 1. */
void adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int64_t step);
/* sum_of_squares: the sum of x[i]^2 over n values, in double (gradient clipping's norm). */
double sum_of_squares(const float *x, int64_t n);

/* threads.c: the number of OpenMP threads the kernels use (1 without OpenMP). */
int num_threads(void);

/* bpe.c: byte-level BPE for tinyllm/tokenizer/ (encode.py and train.py call these).
 * Token ids and ranks are int32 here (vocabularies stay far below 2^31).
 * A rank table maps token bytes to ranks: token i is bytes[offsets[i] : offsets[i + 1]]
 * with rank ranks[i], i < n, every token distinct; slots (n_slots,) is a power of two
 * larger than n, filled by bpe_table_build. */
typedef struct {
    const uint8_t *bytes;
    const int64_t *offsets;   /* (n + 1,) */
    const int32_t *ranks;     /* (n,) */
    int32_t *slots;           /* (n_slots,) */
    int64_t n;
    int64_t n_slots;
} bpe_table;
void bpe_table_build(const bpe_table *t);
/* Encode n_chunks chunks held back to back in text; chunk c ends at byte ends[c]. Every
 * single byte must be a token. Writes ids (capacity: ends[n_chunks - 1]) and id_ends
 * (n_chunks,): the ids of chunk c end at id_ends[c]. Returns the number of ids, -1 when
 * out of memory. */
int64_t bpe_encode_chunks(const bpe_table *t, const uint8_t *text, const int64_t *ends,
                          int64_t n_chunks, int32_t *ids, int64_t *id_ends);
/* Training: words are the unique chunks, back to back in text (word w ends at ends[w]),
 * seen counts[w] times; counts must outlive the trainer. NULL when out of memory. */
typedef struct bpe_trainer bpe_trainer;
bpe_trainer *bpe_trainer_new(const uint8_t *text, const int64_t *ends, const int64_t *counts,
                             int64_t n_words);
/* Up to n more merges, written to left[0:made], right[0:made]; the i-th merge ever made
 * creates token 256 + i. Returns made (< n when no pair is left), -1 when out of memory. */
int64_t bpe_trainer_merge(bpe_trainer *t, int64_t n, int32_t *left, int32_t *right);
void bpe_trainer_free(bpe_trainer *t);

/* langid.c: fastText supervised prediction, many lines per call (the definition is
 * tinyllm/curate/langid.py with fasttext/features.py; tests/test_c_langid.py holds
 * the two equal). A matrix has m rows of n floats, dense (rows != NULL) or product-quantized:
 * row i is norm_i times the concatenated centroids of its codes codes[i * nsubq + q], where
 * sub-quantizer q spans dsub values (the last one lastdsub) and its centroid c starts at
 * centroids[q * 256 * dsub + c * (that span)]; norm_i = norm_centroids[norm_codes[i]], or 1
 * when norm_codes is NULL. */
typedef struct {
    const float *rows;             /* (m, n), or NULL when quantized */
    const uint8_t *codes;          /* (m, nsubq) */
    const float *centroids;        /* (n * 256,) */
    const uint8_t *norm_codes;     /* (m,) or NULL */
    const float *norm_centroids;   /* (256,) */
    int64_t m, n;
    int32_t nsubq, dsub, lastdsub;
} langid_matrix;
/* Dictionary entry e (words first, then labels) is bytes[offsets[e] : offsets[e + 1]] of type
 * types[e] (0 word, 1 label); slots (n_slots, a power of two > size) is filled by
 * langid_model_build. An n-gram's bucket b is input row nwords + b, or with prune (bucket,)
 * row nwords + prune[b], dropped when prune[b] < 0. loss: 1 hs, 2 ns, 3 softmax, 4 ova;
 * tree_left/right (2 * nlabels - 1,) are the Huffman tree of hs (nodes < nlabels are leaves);
 * sigmoid (513,) is fastText's table for ns and ova; output_t (dim, nlabels), the dense output
 * matrix transposed, or NULL, speeds up softmax, ns and ova. */
typedef struct {
    const uint8_t *bytes;
    const int64_t *offsets;        /* (size + 1,) */
    const int8_t *types;           /* (size,) */
    int32_t *slots;                /* (n_slots,) */
    int64_t size, nwords, n_slots;
    int32_t minn, maxn, word_ngrams, bucket;
    const int32_t *prune;          /* (bucket,) or NULL */
    langid_matrix input, output;
    int32_t loss, nlabels;
    const int32_t *tree_left, *tree_right;
    const float *sigmoid;
    const float *output_t;
} langid_model;
void langid_model_build(const langid_model *m);
/* Line i is text[ends[i - 1] : ends[i]] (ends[-1] = 0); fastText's separators (space \t \n
 * \v \f \r \0) split its tokens, so lines may be joined with '\n'. For each line, up to
 * k >= 1 (label, log-probability) pairs best first go to labels[i * k :] and scores[i * k :],
 * counts[i] of them, each of probability >= threshold; the rest of the row is label -1, score
 * -INFINITY. Returns 0, or -1 when out of memory. */
int langid_predict(const langid_model *m, const uint8_t *text, const int64_t *ends,
                   int64_t n_lines, int32_t k, float threshold, int32_t *labels, float *scores,
                   int32_t *counts);

/* ngrams.c: the repetition counts of one document's n-gram hashes grams (G,), in text order
 * (the definition: repeat_stats in tinyllm/curate/clean.py). Writes repeat (G,): 1 where the
 * n-gram equals an earlier one; counts (G,) scratch; slots (n_slots,) scratch, n_slots a power
 * of two > G. Returns the largest number of occurrences of one n-gram, and sets *at to the
 * first position of the earliest n-gram that occurs that often. */
int64_t ngram_repeats(const uint64_t *grams, int64_t G, int64_t *slots, int64_t n_slots,
                      int32_t *counts, uint8_t *repeat, int64_t *at);

/* clean.c: clean.normalize after its NFC and Unicode-space steps, for n_docs documents
 * text[ends[d - 1] : ends[d]] (UTF-8, ends[-1] = 0; ctype as below): document d's result goes
 * to out[out_ends[d - 1] : out_ends[d]]; out needs ends[n_docs - 1] bytes (results only shrink). */
void normalize_texts(const uint8_t *text, const int64_t *ends, int64_t n_docs, const uint8_t *ctype,
                     uint8_t *out, int64_t *out_ends);
/* clean.c: clean.quality_reason for n_docs normalized documents, document d being
 * text[ends[d - 1] : ends[d]] (UTF-8; ends[-1] = 0). ctype (0x110000,) classes each code point:
 * bit 1 str.isspace, bit 2 a letter (re [^\W\d_]). Writes reasons (n_docs,): 0 when a document
 * passes, else the QUALITY_ code of the first rule it fails (+ n for the n-gram rules). Limits
 * of 0 turn a rule off; top_share and dup_share (max_n + 1,) hold each n's share, 0 for none.
 * Returns 0, or -1 when out of memory. */
enum { QUALITY_EMPTY = 1, QUALITY_TOO_FEW_WORDS = 2, QUALITY_TOO_MANY_WORDS = 3,
       QUALITY_MEAN_WORD_LENGTH = 4, QUALITY_ALPHA_FRACTION = 5, QUALITY_DUP_LINES = 6,
       QUALITY_DUP_LINE_CHARS = 7, QUALITY_DUP_PARAGRAPHS = 8, QUALITY_DUP_PARAGRAPH_CHARS = 9,
       QUALITY_TOP_NGRAM = 1000, QUALITY_DUP_NGRAM = 2000 };
typedef struct {
    double min_words, max_words, min_mean_word_length, max_mean_word_length, min_alpha_fraction;
    double max_dup_line_fraction, max_dup_line_char_fraction;
    double max_dup_paragraph_fraction, max_dup_paragraph_char_fraction;
    int64_t max_n;
    const double *top_share, *dup_share;
} quality_limits;
int quality_reasons(const uint8_t *text, const int64_t *ends, int64_t n_docs, const uint8_t *ctype,
                    const quality_limits *limits, int32_t *reasons);

/* minhash.c: MinHash signatures (the definition: MinHasher.signatures in
 * tinyllm/curate/minhash.py) of n_docs lower-cased documents, document d being
 * text[ends[d - 1] : ends[d]] (UTF-8, ends[-1] = 0), with word ngram-gram shingles and the P
 * hash functions (a_j x + b_j mod 2**64) >> 32. Writes sig (n_docs, P), all 0xFFFFFFFF for a
 * document without words, and empty (n_docs,): 1 for those. Returns 0, or -1 when out of memory. */
int minhash_signatures(const uint8_t *text, const int64_t *ends, int64_t n_docs, int32_t ngram,
                       const uint64_t *a, const uint64_t *b, int32_t P, uint32_t *sig,
                       uint8_t *empty);
/* minhash.c: the shingles themselves (minhash.shingle_values with bits=64), document by document:
 * in text order, or with sets = 1 each document's distinct values ascending (shingle_sets);
 * counts[d] of them for document d, values needing ends[n_docs - 1] / 2 + n_docs entries at
 * most. Returns 0, or -1 when out of memory. */
int minhash_shingles(const uint8_t *text, const int64_t *ends, int64_t n_docs, int32_t ngram,
                     int32_t sets, uint64_t *values, int64_t *counts);

#endif
