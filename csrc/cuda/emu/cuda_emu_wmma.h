/* cuda_emu_wmma.h: the emulator's nvcuda::wmma (tensor-core tiles, the TF32 subset)
 * for the matmul kernels.
 * Part of cuda_emu.h, which includes it (inside its hidden-visibility region, after the
 * device-side definitions it uses): include cuda_emu.h, never this file. It includes no system
 * header of its own, since those must stay outside the hidden region.
 */
#ifndef TINYLLM_CUDA_EMU_WMMA_H
#define TINYLLM_CUDA_EMU_WMMA_H
#ifndef TINYLLM_CUDA_EMU_H
#error "include cuda_emu.h, which includes cuda_emu_wmma.h"
#endif

/* ------------------------------------------------------------------------------------------
 * nvcuda::wmma, the TF32 subset: m16n16k8 tiles, matrix_a/matrix_b in precision::tf32 (stored
 * as float), float accumulators.
 *
 * On hardware a fragment is spread over the 32 lanes of a warp in an undocumented layout,
 * each lane holding a few elements. Here every lane holds the whole tile, row-major
 * (x[r * cols + c], num_elements = rows * cols), whatever the fragment's layout parameter,
 * and load/store/mma are done redundantly by every lane (32 times the arithmetic). Loops over
 * x[i] that treat every element alike (such as converting to TF32) therefore behave as on
 * hardware; code that assumes which element of the tile x[i] is does not port either way.
 * As documented for CUDA, load_matrix_sync, store_matrix_sync and mma_sync wait for the whole
 * warp (all 32 lanes) before they act; the pointer must be 32-byte aligned and ldm a
 * multiple of 4 floats (checked: a launch failure otherwise). */
namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

/* rows x cols of each fragment of an m x n x k product */
template <class Use, int M, int N, int K>
struct fragment_shape;
template <int M, int N, int K>
struct fragment_shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct fragment_shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct fragment_shape<accumulator, M, N, K> {
    static constexpr int rows = M, cols = N;
};

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
    static_assert(M == 16 && N == 16 && K == 8, "the emulator has the TF32 shape m16n16k8 only");
    static_assert(std::is_same<Use, accumulator>::value ? std::is_same<T, float>::value
                                                        : std::is_same<T, precision::tf32>::value,
                  "matrix_a and matrix_b are precision::tf32, accumulators float");
    static_assert(std::is_same<Use, accumulator>::value == std::is_same<Layout, void>::value,
                  "matrix_a and matrix_b take row_major or col_major; accumulators no layout");

  public:
    static constexpr int rows = fragment_shape<Use, M, N, K>::rows;
    static constexpr int cols = fragment_shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    float x[num_elements];
};

/* cvt.rna.tf32.f32: round to the nearest float with 10 mantissa bits, ties away from zero
 * (adding half a unit to the magnitude's bits carries into the kept bits exactly then);
 * infinities and NaNs pass through. */
inline float __float_to_tf32(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    if ((bits & 0x7f800000u) != 0x7f800000u) bits = (bits + 0x1000u) & ~0x1fffu;
    memcpy(&x, &bits, 4);
    return x;
}

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout> &f, float value) {
    for (float &v : f.x) v = value;
}

namespace detail {
inline void check_tile_pointer(const char *name, const float *p, unsigned ldm, emu::Site site) {
    if ((uintptr_t)p % 32 != 0)
        emu::fail(site, "%s: pointer %p is not 32-byte aligned", name, (const void *)p);
    if (ldm % 4 != 0) emu::fail(site, "%s: ldm %u is not a multiple of 4", name, ldm);
}
/* Element (r, c) of a tile stored with leading dimension ldm. */
inline size_t tile_offset(int r, int c, unsigned ldm, bool row_major) {
    return row_major ? (size_t)r * ldm + c : (size_t)c * ldm + r;
}
}  // namespace detail

template <class Use, int M, int N, int K, class Layout>
void load_matrix_sync(fragment<Use, M, N, K, precision::tf32, Layout> &f, const float *p,
                      unsigned ldm, emu::Site site = {}) {
    detail::check_tile_pointer("wmma::load_matrix_sync", p, ldm, site);
    emu::warp_collective("wmma::load_matrix_sync", 0xffffffffu, 0, site);
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.x[r * f.cols + c] =
                p[detail::tile_offset(r, c, ldm, std::is_same<Layout, row_major>::value)];
}
template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ldm,
                      layout_t layout, emu::Site site = {}) {
    detail::check_tile_pointer("wmma::load_matrix_sync", p, ldm, site);
    emu::warp_collective("wmma::load_matrix_sync", 0xffffffffu, 0, site);
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            f.x[r * f.cols + c] = p[detail::tile_offset(r, c, ldm, layout == mem_row_major)];
}
template <int M, int N, int K>
void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ldm,
                       layout_t layout, emu::Site site = {}) {
    detail::check_tile_pointer("wmma::store_matrix_sync", p, ldm, site);
    emu::warp_collective("wmma::store_matrix_sync", 0xffffffffu, 0, site);
    for (int r = 0; r < f.rows; r++)
        for (int c = 0; c < f.cols; c++)
            p[detail::tile_offset(r, c, ldm, layout == mem_row_major)] = f.x[r * f.cols + c];
}

/* d = a b + c in float. Tensor cores read only the TF32 bits of a and b (the 13 low mantissa
 * bits are ignored: convert with __float_to_tf32 to round instead); products of two TF32
 * numbers are exact in float, the sums are rounded in k order (hardware's order and internal
 * rounding are unspecified, so the last bit can differ). d may be c. */
template <int M, int N, int K, class LayoutA, class LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float> &d,
              const fragment<matrix_a, M, N, K, precision::tf32, LayoutA> &a,
              const fragment<matrix_b, M, N, K, precision::tf32, LayoutB> &b,
              const fragment<accumulator, M, N, K, float> &c, emu::Site site = {}) {
    emu::warp_collective("wmma::mma_sync", 0xffffffffu, 0, site);
    auto tf32_bits = [](float v) {
        uint32_t bits;
        memcpy(&bits, &v, 4);
        bits &= ~0x1fffu;
        memcpy(&v, &bits, 4);
        return v;
    };
    float sum[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.x[i * N + j];
            for (int k = 0; k < K; k++) s += tf32_bits(a.x[i * K + k]) * tf32_bits(b.x[k * N + j]);
            sum[i * N + j] = s;
        }
    memcpy(d.x, sum, sizeof sum);
}

}  // namespace wmma
}  // namespace nvcuda

#endif /* TINYLLM_CUDA_EMU_WMMA_H */
