# Row-major BLAS wrappers over scipy.linalg.cython_blas, fused over float/double.
#
# BLAS is column-major; a row-major (M, N) matrix with leading dimension ld is
# the column-major (N, M) matrix with the same ld, i.e. its transpose. So the
# row-major product C = op(A) @ op(B) is the column-major C^T = op(B)^T op(A)^T:
# the wrappers swap the operands and pass the same transpose flags.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


cdef inline void gemm(char transa, char transb, int M, int N, int K,
                      floating alpha, const floating* A, int lda,
                      const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """C(M, N) = alpha * op(A)(M, K) @ op(B)(K, N) + beta * C, row-major."""
    if M <= 0 or N <= 0:
        return
    if floating is float:
        sgemm(&transb, &transa, &N, &M, &K, &alpha, <float*>B, &ldb,
              <float*>A, &lda, &beta, C, &ldc)
    else:
        dgemm(&transb, &transa, &N, &M, &K, &alpha, <double*>B, &ldb,
              <double*>A, &lda, &beta, C, &ldc)


cdef inline void vecmat(char transw, int K, int N, floating alpha, const floating* x,
                        const floating* W, int ldw, floating beta,
                        floating* y) noexcept nogil:
    """y(N) = alpha * x(K) @ op(W) + beta * y, row-major W.

    transw 'N': W is (K, N) with leading dimension ldw.
    transw 'T': W is (N, K) with leading dimension ldw, and y = x @ W^T.
    """
    cdef int inc = 1
    cdef char t
    cdef int m, n
    if N <= 0:
        return
    # row-major (K, N) W is column-major (N, K): y = W_cm x  -> 'N', m=N, n=K
    if transw == c'N':
        t = c'N'
        m = N
        n = K
    else:
        t = c'T'
        m = K
        n = N
    if floating is float:
        sgemv(&t, &m, &n, &alpha, <float*>W, &ldw, <float*>x, &inc, &beta, y, &inc)
    else:
        dgemv(&t, &m, &n, &alpha, <double*>W, &ldw, <double*>x, &inc, &beta, y, &inc)
