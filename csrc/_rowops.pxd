# The hand-written C kernels shared by fastrnn._rnn and fastrnn._lm: the one-row
# products of csrc/_vecmat.h and the vectorised elementwise loops of
# csrc/_elementwise.h, with fused float/double wrappers.
from cython cimport floating
from libc.stdint cimport int32_t

cdef extern from "_elementwise.h" nogil:
    void fastrnn_tanh_f32(const float* z, float* h, Py_ssize_t n) noexcept
    void fastrnn_tanh_f64(const double* z, double* h, Py_ssize_t n) noexcept
    void fastrnn_dtanh_f32(float* dz, const float* dh, const float* h, Py_ssize_t n) noexcept
    void fastrnn_dtanh_f64(double* dz, const double* dh, const double* h,
                           Py_ssize_t n) noexcept
    double fastrnn_softmax_xent_f32(float* O, const int32_t* Y, Py_ssize_t n, Py_ssize_t V,
                                    float scale, double* rowloss) noexcept
    double fastrnn_softmax_xent_f64(double* O, const int32_t* Y, Py_ssize_t n, Py_ssize_t V,
                                    double scale, double* rowloss) noexcept
    void fastrnn_bias_scatter_f32(const float* dZ, Py_ssize_t N, Py_ssize_t ld,
                                  Py_ssize_t j0, Py_ssize_t j1, float* db,
                                  const int32_t* ids, float* dW, Py_ssize_t ldw, Py_ssize_t D,
                                  int accumulate) noexcept
    void fastrnn_bias_scatter_f64(const double* dZ, Py_ssize_t N, Py_ssize_t ld,
                                  Py_ssize_t j0, Py_ssize_t j1, double* db,
                                  const int32_t* ids, double* dW, Py_ssize_t ldw, Py_ssize_t D,
                                  int accumulate) noexcept
    void fastrnn_gather_f32(const float* W, const int32_t* ids, const float* bias, float* z,
                            Py_ssize_t n, Py_ssize_t H) noexcept
    void fastrnn_gather_f64(const double* W, const int32_t* ids, const double* bias,
                            double* z, Py_ssize_t n, Py_ssize_t H) noexcept
    double fastrnn_sumsq_f32(const float* g, Py_ssize_t n) noexcept
    double fastrnn_sumsq_f64(const double* g, Py_ssize_t n) noexcept
    int fastrnn_all_finite_f32(const float* x, Py_ssize_t n) noexcept
    int fastrnn_all_finite_f64(const double* x, Py_ssize_t n) noexcept

cdef extern from "_vecmat.h" nogil:
    void fastrnn_vecmat_f32(const float* x, const float* W, Py_ssize_t ldw, float* y,
                            Py_ssize_t K, Py_ssize_t N, int accumulate) noexcept
    void fastrnn_vecmat_f64(const double* x, const double* W, Py_ssize_t ldw, double* y,
                            Py_ssize_t K, Py_ssize_t N, int accumulate) noexcept
    void fastrnn_matvec_f32(const float* W, const float* x, float* y, Py_ssize_t M,
                            Py_ssize_t N) noexcept
    void fastrnn_matvec_f64(const double* W, const double* x, double* y, Py_ssize_t M,
                            Py_ssize_t N) noexcept


cdef inline void _vecmat(const floating* x, const floating* W, Py_ssize_t ldw, floating* y,
                         Py_ssize_t K, Py_ssize_t N, int accumulate) noexcept nogil:
    """y(N) = x(K) @ W(K, N) (+ y if accumulate), W row-major, leading dimension ldw."""
    if floating is float:
        fastrnn_vecmat_f32(x, W, ldw, y, K, N, accumulate)
    else:
        fastrnn_vecmat_f64(x, W, ldw, y, K, N, accumulate)


cdef inline void _vecmatT(const floating* x, const floating* W, floating* y, Py_ssize_t M,
                          Py_ssize_t N) noexcept nogil:
    """y(M) = x(N) @ W(M, N)^T, W row-major contiguous."""
    if floating is float:
        fastrnn_matvec_f32(W, x, y, M, N)
    else:
        fastrnn_matvec_f64(W, x, y, M, N)


cdef inline void _tanh_vec(const floating* z, floating* h, Py_ssize_t n) noexcept nogil:
    """h = tanh(z), elementwise over n values (vectorised approximation for float)."""
    if floating is float:
        fastrnn_tanh_f32(z, h, n)
    else:
        fastrnn_tanh_f64(z, h, n)


cdef extern from "_pgemm.h" nogil:
    void fastrnn_pack_f32(const float* src, Py_ssize_t ld, int trans, Py_ssize_t K,
                          Py_ssize_t N, Py_ssize_t nr, float* dst) noexcept
    void fastrnn_pack_f64(const double* src, Py_ssize_t ld, int trans, Py_ssize_t K,
                          Py_ssize_t N, Py_ssize_t nr, double* dst) noexcept
    Py_ssize_t fastrnn_pgemm_nr_f32() noexcept
    Py_ssize_t fastrnn_pgemm_nr_f64() noexcept
    int fastrnn_pgemm_level() noexcept
    void fastrnn_pgemm_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                           Py_ssize_t lda, const float* Bp, float* C, Py_ssize_t ldc,
                           int accumulate, const float* bias) noexcept
    void fastrnn_pgemm_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                           Py_ssize_t lda, const double* Bp, double* C, Py_ssize_t ldc,
                           int accumulate, const double* bias) noexcept


cdef inline Py_ssize_t _pack_width(floating dummy) noexcept nogil:
    """Panel width of the packed-gemm variant this CPU runs."""
    if floating is float:
        return fastrnn_pgemm_nr_f32()
    else:
        return fastrnn_pgemm_nr_f64()


cdef inline Py_ssize_t _packed_size(Py_ssize_t K, Py_ssize_t N, floating dummy) noexcept nogil:
    """Values in the packed form of a K x N matrix."""
    cdef Py_ssize_t nr = _pack_width(dummy)
    return K * ((N + nr - 1) // nr) * nr


cdef inline void _pack(const floating* src, Py_ssize_t ld, int trans, Py_ssize_t K,
                       Py_ssize_t N, Py_ssize_t nr, floating* dst) noexcept nogil:
    """Pack B = src (K, N) (or src^T when trans) into K x nr column panels."""
    if floating is float:
        fastrnn_pack_f32(src, ld, trans, K, N, nr, dst)
    else:
        fastrnn_pack_f64(src, ld, trans, K, N, nr, dst)


cdef inline void _pgemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                        Py_ssize_t lda, const floating* Bp, floating* C, Py_ssize_t ldc,
                        int accumulate, const floating* bias) noexcept nogil:
    """C(M, N) = (C if accumulate, else bias or 0) + A(M, K) @ B(K, N), B packed by
    _pack; bias (N,) may be NULL."""
    if floating is float:
        fastrnn_pgemm_f32(M, N, K, A, lda, Bp, C, ldc, accumulate, bias)
    else:
        fastrnn_pgemm_f64(M, N, K, A, lda, Bp, C, ldc, accumulate, bias)


cdef extern from "_pgemm.h" nogil:
    void fastrnn_tngemm_f32(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* A,
                            Py_ssize_t lda, const float* B, Py_ssize_t ldb, float* C,
                            Py_ssize_t ldc, int accumulate) noexcept
    void fastrnn_tngemm_f64(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const double* A,
                            Py_ssize_t lda, const double* B, Py_ssize_t ldb, double* C,
                            Py_ssize_t ldc, int accumulate) noexcept


cdef inline void _tngemm(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const floating* A,
                         Py_ssize_t lda, const floating* B, Py_ssize_t ldb, floating* C,
                         Py_ssize_t ldc, int accumulate) noexcept nogil:
    """C(M, N) (+)= A^T B, A (K, M) and B (K, N) row-major, read in place."""
    if floating is float:
        fastrnn_tngemm_f32(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
    else:
        fastrnn_tngemm_f64(M, N, K, A, lda, B, ldb, C, ldc, accumulate)
